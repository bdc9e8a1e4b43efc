"""Hazmat: the low-level writing of audit leaves. Only the sinks (``garrison.audit.tree_sink``
and its two databases, ``sqlite_sink`` and ``pg_sink``) import this module (a test holds the
fence); everything else reaches the log through its recipe, the sink (and, for directory
changes, the outbox the sink drains).

Every function takes a DB-API connection *inside the caller's write transaction*, the
database's ``Dialect`` (placeholder style, how a batch of rows is inserted) and the
in-memory tree, and keeps the two in step: row ``seq`` is leaf ``seq - 1``, and the tree
holds exactly the rows below ``tree.size``. This is the only code that inserts into
``audit_events`` and so the only code that assigns leaf indices. Nothing here commits, so a
failure anywhere rolls the rows back with the caller's transaction (the caller restores the
tree it copied first).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from garrison.audit.columns import DERIVED_COLUMNS
from garrison.audit.events import AuditEvent, EncodedRecord, EventName
from garrison.audit.insert_chunks import chunk_sizes
from garrison.audit.merkle import CompactTree, leaf_hash
from garrison.audit.sqlite_reader import stored_bytes
from garrison.errors import AuditRecordInvalid

_INSERT_HEAD = (
    "INSERT INTO audit_events"
    " (seq, at, name, request_id, principal_id, credential_id, model, record, leaf_hash) VALUES "
)
_ROW = "(?, ?, ?, ?, ?, ?, ?, ?, ?)"
# The columns of a leaf row, in the order ``append`` builds them.
LEAF_COLUMNS = (
    "seq",
    "at",
    "name",
    "request_id",
    "principal_id",
    "credential_id",
    "model",
    "record",
    "leaf_hash",
)
# The columns between seq and record are the record's fields the verifier checks them against.
assert LEAF_COLUMNS[1:-2] == DERIVED_COLUMNS

log = logging.getLogger("garrison.audit")

_SELECT_OUTBOX = (
    "SELECT seq, at, name, request_id, principal_id, credential_id, model, record"
    " FROM audit_outbox ORDER BY seq LIMIT ?"
)


class TreeStateError(Exception):
    """The stored checkpoint does not match its own edge: the log was tampered with."""


@dataclass(frozen=True, slots=True)
class Committed:
    """What one transaction added to the log, in leaf order from ``first``."""

    first: int
    records: list[bytes]
    # Aligned with ``records``; ``None`` where an outbox record cannot be read back.
    events: list[AuditEvent | None]


Conn = Any  # a DB-API connection with ``execute`` (sqlite3, psycopg): typed by each sink
Rows = Sequence[tuple[object, ...]]


@dataclass(frozen=True, slots=True)
class Dialect:
    """What differs between the databases for the leaf code: the placeholder the driver
    takes (``?`` for sqlite3, ``%s`` for psycopg) and how a batch of rows is inserted."""

    name: str
    placeholder: str
    insert_rows: Callable[[Conn, Rows], None]

    def sql(self, text: str) -> str:
        """``text`` written with ``?`` placeholders, in this driver's style."""
        return text if self.placeholder == "?" else _restyle(text, self.placeholder)


@functools.cache
def _restyle(text: str, placeholder: str) -> str:
    return text.replace("?", placeholder)


@functools.cache
def _insert_sql(rows: int) -> str:
    return _INSERT_HEAD + ",".join([_ROW] * rows)


def insert_chunked(conn: Conn, rows: Rows) -> None:
    """SQLite: one statement per chunk, not per row: the driver releases and retakes the GIL
    once per statement (that contention was the audit path's main cost). Chunk sizes are
    powers of two (``insert_chunks``), so only ten statement shapes are ever prepared."""
    start = 0
    for size in chunk_sizes(len(rows)):
        chunk = rows[start : start + size]
        conn.execute(_insert_sql(size), [value for row in chunk for value in row])
        start += size


SQLITE = Dialect("sqlite", "?", insert_chunked)

# The batch's rows as one INSERT of nine arrays (binary parameters: records go as raw
# bytes): one statement whatever the batch size, sent in the pipeline with the commit, so a
# batch costs three round trips (lock + fold, outbox, insert + commit), not one per step.
_PG_INSERT = (
    "INSERT INTO audit_events"
    " (seq, at, name, request_id, principal_id, credential_id, model, record, leaf_hash)"
    " SELECT * FROM unnest(%b::int4[], %b::float8[], %b::text[], %b::text[], %b::text[],"
    " %b::text[], %b::text[], %b::bytea[], %b::bytea[])"
)
assert _PG_INSERT.count("%b") == len(LEAF_COLUMNS)


def insert_arrays(conn: Conn, rows: Rows) -> None:
    """PostgreSQL (psycopg): the batch's rows in one statement, a column at a time, as
    arrays (``%b``: binary parameters)."""
    if not rows:
        return
    conn.execute(_PG_INSERT, [list(column) for column in zip(*rows, strict=True)])


POSTGRES = Dialect("postgresql", "%s", insert_arrays)

# Other writers' rows are folded from their records, hashed again here: the tree, and so
# every checkpoint signed from it, holds what the records say, never a stored hash an edit
# made differ (the verifier rebuilds the tree from the records too). A stored hash that
# disagrees is logged as it is folded, so the edit is seen while it happens.
# Bounded above by the log's head, read first: PostgreSQL plans a prepared statement once
# for any parameters, and for an open range (``seq > $1``) it expects a third of the table
# and scans all of it, once per commit (each commit slower than the last); a closed range is
# planned as the index lookup it is. With nothing to fold (one writer) the head is enough.
_HEAD = "SELECT max(seq) FROM audit_events"
_FOLD = "SELECT seq, record, leaf_hash FROM audit_events WHERE seq > ? AND seq <= ? ORDER BY seq"


def fold(conn: Conn, tree: CompactTree, dialect: Dialect = SQLITE) -> int:
    """Append rows beyond ``tree.size`` (committed by another process) to the tree, each
    leaf hashed from its record."""
    head = conn.execute(_HEAD).fetchone()[0] or 0
    if head <= tree.size:
        return 0
    count = 0
    for seq, record, stored in conn.execute(dialect.sql(_FOLD), (tree.size, head)):
        if seq != tree.size + 1:
            raise TreeStateError(f"audit row {seq} follows {tree.size}: rows are missing")
        lh = leaf_hash(stored_bytes(record))
        if stored is not None and stored_bytes(stored) != lh:
            log.error(
                "audit row %s: its record does not give its stored leaf hash (one of them was "
                "edited after the commit); folded from the record",
                seq,
            )
        tree.append(lh)
        count += 1
    return count


def outbox_waiting(conn: Conn) -> bool:
    return conn.execute("SELECT 1 FROM audit_outbox LIMIT 1").fetchone() is not None


def _event_of(record: bytes) -> AuditEvent | None:
    """The event an outbox record holds, for the listeners (which read fields); ``None`` if
    it cannot be read back (a name this version does not know): the record is still
    integrated and exported, detection skips it."""
    try:
        r = orjson.loads(record)
        return AuditEvent(
            EventName(r["name"]),
            at=float(r["at"]),
            actor=r.get("actor"),
            request_id=r.get("request_id"),
            principal_id=r.get("principal_id"),
            credential_id=r.get("credential_id"),
            model=r.get("model"),
            data=r.get("data") or {},
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


def append(
    conn: Conn,
    tree: CompactTree,
    events: Sequence[AuditEvent],
    *,
    outbox_max: int,
    dialect: Dialect = SQLITE,
) -> Committed:
    """Take up to ``outbox_max`` outbox rows (oldest first), then ``events``, as the next
    leaves: insert them into ``audit_events``, delete the taken outbox rows, append every
    leaf to ``tree``."""
    first = tree.size
    rows: list[tuple[object, ...]] = []
    records: list[bytes] = []
    committed: list[AuditEvent | None] = []
    taken = (
        conn.execute(dialect.sql(_SELECT_OUTBOX), (outbox_max,)).fetchall() if outbox_max else []
    )
    done: list[int] = []
    for seq, at, name, request_id, principal_id, credential_id, model, unindexed in taken:
        try:
            parts = EncodedRecord.from_unindexed(stored_bytes(unindexed))
        except AuditRecordInvalid:
            # Not written by the directory (an edit of the database): left where it is, as
            # evidence, rather than stopping the log (and with it every call).
            log.error("audit outbox row %s is not a record: left in the outbox", seq)
            continue
        index = tree.size
        record = parts.record(index)
        lh = leaf_hash(record)
        tree.append(lh)
        rows.append(
            (index + 1, at, name, request_id, principal_id, credential_id, model, record, lh)
        )
        records.append(record)
        committed.append(_event_of(record))
        done.append(seq)
    if done:
        _delete_outbox(conn, done, dialect)
    for e in events:
        index = tree.size
        record = e.encode(index)
        lh = leaf_hash(record)
        tree.append(lh)
        rows.append(
            (
                index + 1,
                e.at,
                e.name.value,
                e.request_id,
                e.principal_id,
                e.credential_id,
                e.model,
                record,
                lh,
            )
        )
        records.append(record)
        committed.append(e)
    dialect.insert_rows(conn, rows)
    return Committed(first, records, committed)


def _delete_outbox(conn: Conn, seqs: Sequence[int], dialect: Dialect) -> None:
    """Delete the integrated outbox rows: one statement per ``insert_chunks`` chunk (a
    bounded number of statement shapes, whatever the count)."""
    start = 0
    for size in chunk_sizes(len(seqs)):
        marks = ",".join(["?"] * size)
        sql = f"DELETE FROM audit_outbox WHERE seq IN ({marks})"  # noqa: S608 (placeholders only)
        conn.execute(dialect.sql(sql), list(seqs[start : start + size]))
        start += size
