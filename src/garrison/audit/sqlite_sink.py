"""The embedded audit sink: SQLite (WAL, ``synchronous=FULL``) plus the Merkle tree — the
one front door of the audit log.

It uses the ``sqlite3`` driver directly rather than SQLAlchemy: this is the one write on the
hot path, and the driver's ``executemany`` + ``commit`` is the whole job. The tables
themselves are created by the Alembic migrations like every other.

Each batch is one transaction: rows committed by other writers since the last batch are
folded into the tree first; then waiting rows of the audit *outbox* (directory changes:
admin changes, locks, alerts, incidents, keys — each written there in its change's own
transaction, without a leaf index), oldest first, then the batch's own events, become the
next leaves: encoded with their index, hashed, appended to the compact tree, inserted into
``audit_events`` (the outbox rows deleted in the same transaction, so each is integrated
exactly once whoever integrates). At most once per ``CHECKPOINT_INTERVAL_S`` while events
flow, and at close, a signed checkpoint is written in the same transaction and then published
to the witness. After the commit *every* record it committed — outbox and own alike — goes,
in leaf order, to the listeners (detection) and the exporters (JSON lines, syslog).

Recipe and hazmat: the low-level leaf writing lives in ``garrison.audit.leaves``, which only
this module imports; nothing else inserts into ``audit_events``. Leaf order is decided here,
inside the writer's transaction, not by whichever directory write happened to hold the
database lock — so a database without SQLite's global write lock (PostgreSQL) needs only a
lock on this transaction (e.g. ``SELECT … FOR UPDATE`` on a tree-head row).

Who integrates the outbox is in ``garrison.audit.outbox``.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import cast

import orjson

from garrison.audit.checkpoint import CHECKPOINT_INTERVAL_S, GENESIS_PREV, Checkpoint, Signer
from garrison.audit.events import AuditEvent
from garrison.audit.exporters import Exporter
from garrison.audit.leaves import Committed, TreeStateError, append, fold, outbox_waiting
from garrison.audit.merkle import CompactTree, leaf_hash
from garrison.audit.sqlite_reader import stored_bytes
from garrison.audit.witness import DirectoryWitness
from garrison.private_files import prepare_sqlite_file
from garrison.store.db import apply_sqlite_pragmas, truncate_wal

log = logging.getLogger("garrison.audit")

# The writer gives up on a locked database sooner than directory writers do, so a stuck
# lock turns into refused calls (503) well inside the caller's append timeout.
AUDIT_SQLITE_BUSY_TIMEOUT_MS = 1000
# Outbox rows integrated per transaction: with the batch's own events (at most
# ``AUDIT_BATCH_MAX``) this bounds how long one commit holds the write lock; a longer
# backlog drains over the next transactions.
AUDIT_OUTBOX_BATCH_MAX = 2_000

_INSERT_CAPTURE = "INSERT INTO audit_captures (request_id, at, sealed) VALUES (?, ?, ?)"
_INSERT_CHECKPOINT = "INSERT INTO audit_checkpoints (tree_size, at, body, edge) VALUES (?, ?, ?, ?)"


# Prepared statements the audit connection keeps (the driver's LRU cache, default 128): the
# ten INSERT shapes, the capture and checkpoint inserts and the fold, probe and checkpoint
# reads, with room to spare. A bound on memory whatever statement shapes turn up.
AUDIT_CACHED_STATEMENTS = 32

# Leaf hashes read and written to the witness per step (2 MiB): a witness configured on a
# large existing log catches up without holding all of its hashes at once.
WITNESS_LEAVES_CHUNK = 65_536


def newest_checkpoint(conn: sqlite3.Connection) -> Checkpoint | None:
    """The checkpoint stored last, by any process."""
    row = conn.execute("SELECT body FROM audit_checkpoints ORDER BY seq DESC LIMIT 1").fetchone()
    return None if row is None else Checkpoint.from_dict(orjson.loads(row[0]))


def load_tree(conn: sqlite3.Connection) -> tuple[CompactTree, Checkpoint | None]:
    """The tree as of the newest checkpoint, then every row after it folded in."""
    row = conn.execute(
        "SELECT body, edge FROM audit_checkpoints ORDER BY seq DESC LIMIT 1"
    ).fetchone()
    tree = CompactTree()
    checkpoint = None
    if row is not None:
        checkpoint = Checkpoint.from_dict(orjson.loads(row[0]))
        edge = stored_bytes(row[1])
        tree = CompactTree(
            checkpoint.tree_size, [edge[i : i + 32] for i in range(0, len(edge), 32)]
        )
        if tree.root().hex() != checkpoint.root:
            raise TreeStateError("newest checkpoint's edge does not give its root")
    fold(conn, tree)
    return tree, checkpoint


class SqliteAuditSink:
    def __init__(
        self,
        path: Path,
        *,
        signer: Signer | None = None,
        witness: DirectoryWitness | None = None,
        exporters: Sequence[Exporter] = (),
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._exporters = list(exporters)
        # Called in the writer thread after each commit with (first leaf index, events);
        # they must not block (the detection service only queues).
        self._listeners: list[Callable[[int, Sequence[AuditEvent]], None]] = []
        self._path = path
        self._signer = signer
        self._witness = witness
        self._clock = clock
        # Paces the periodic checkpoint (injected: a test decides when checkpoints happen).
        self._monotonic = monotonic
        self._conn: sqlite3.Connection | None = None
        self.tree = CompactTree()
        self._last: Checkpoint | None = None
        self._last_at = 0.0

    def open(self) -> None:
        conn = self._connection()
        self.tree, self._last = load_tree(conn)
        self._last_at = self._monotonic()
        if (
            self._witness is not None
            and self._last is not None
            and self._witness.latest_size() < self._last.tree_size
        ):
            # Stored but never published (the process ended between the two): publish now.
            log.warning("witness is behind the log: publishing the newest checkpoint again")
            self._committed(self._last)

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            prepare_sqlite_file(self._path)
            conn = sqlite3.connect(
                self._path,
                isolation_level=None,
                check_same_thread=False,
                cached_statements=AUDIT_CACHED_STATEMENTS,
            )
            apply_sqlite_pragmas(conn, AUDIT_SQLITE_BUSY_TIMEOUT_MS)
            self._conn = conn
        return self._conn

    @property
    def checkpoint_due(self) -> bool:
        last_size = self._last.tree_size if self._last else 0
        return self._signer is not None and self.tree.size > last_size

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction with rows from other processes folded in first; on any
        failure it rolls back and the in-memory tree returns to where it was."""
        conn = self._connection()
        saved = self.tree.copy()
        try:
            conn.execute("BEGIN IMMEDIATE")
            fold(conn, self.tree)
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            self.tree = saved
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def add_listener(self, listener: Callable[[int, Sequence[AuditEvent]], None]) -> None:
        self._listeners.append(listener)

    def write_batch(self, events: Sequence[AuditEvent]) -> None:
        """Commit waiting outbox rows and then ``events`` as the next leaves (``events`` may
        be empty: the outbox alone); returns once durable, else raises."""
        self._commit(events, force_checkpoint=False)

    def outbox_waiting(self) -> bool:
        """Directory changes are waiting in the outbox (one indexed read, no lock)."""
        return outbox_waiting(self._connection())

    def probe(self) -> None:
        """Raise unless a write transaction can be taken now (used while the log is down).
        Then the WAL is folded back and cut to nothing where it can be: a full disk's
        recovery needs the space the failed writes grew it to."""
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
        with contextlib.suppress(sqlite3.Error):
            truncate_wal(conn)

    def checkpoint(self) -> None:
        """Integrate the outbox, then sign and store a checkpoint of everything written so
        far (if anything is new)."""
        self._commit((), force_checkpoint=True)

    def _commit(self, events: Sequence[AuditEvent], *, force_checkpoint: bool) -> None:
        published: Checkpoint | None = None
        with self._transaction() as conn:
            done = append(conn, self.tree, events, outbox_max=AUDIT_OUTBOX_BATCH_MAX)
            captures = [(e.request_id, e.at, e.capture) for e in events if e.capture is not None]
            if captures:
                conn.executemany(_INSERT_CAPTURE, captures)
            if self.checkpoint_due and (
                force_checkpoint or self._monotonic() - self._last_at >= CHECKPOINT_INTERVAL_S
            ):
                published = self._checkpoint(conn)
        if published is not None:
            self._committed(published)
        if done.records:
            self._deliver(done)

    def _deliver(self, done: Committed) -> None:
        """Every committed record, in leaf order, to the listeners and the exporters."""
        if self._listeners:
            for first, run in _runs(done):
                for listener in self._listeners:
                    try:
                        listener(first, run)
                    except Exception as exc:  # a listener failing must not fail the commit
                        log.error("audit listener failed: %s", exc)
        for exporter in self._exporters:
            try:
                exporter.export(done.records)
            except Exception as exc:  # the copy may fail; the durable log stands
                log.error("audit exporter %s failed: %s", type(exporter).__name__, exc)

    def _checkpoint(self, conn: sqlite3.Connection) -> Checkpoint | None:
        """Sign the tree, chained to the newest checkpoint *stored* (read inside this write
        transaction): another process on the same database may have signed since this one
        last did, and chaining to our own last checkpoint would fork the chain."""
        assert self._signer is not None
        newest = newest_checkpoint(conn)
        if newest is not None and newest.tree_size >= self.tree.size:
            self._last = newest  # another process already signed everything there is
            return None
        prev = newest.digest() if newest is not None else GENESIS_PREV
        cp = self._signer.sign(self.tree.size, self.tree.root(), self._clock(), prev)
        conn.execute(
            _INSERT_CHECKPOINT,
            (cp.tree_size, cp.at, orjson.dumps(cp.to_dict()), b"".join(self.tree.edge)),
        )
        return cp

    def _committed(self, checkpoint: Checkpoint) -> None:
        self._last = checkpoint
        self._last_at = self._monotonic()
        if self._witness is not None:
            try:
                self._publish_leaves(self._witness, checkpoint.tree_size)
            except (OSError, sqlite3.Error) as exc:  # the checkpoint copy still goes out
                log.error("witness leaf hashes not published: %s", exc)
            try:
                self._witness.publish(checkpoint)
            except OSError as exc:
                log.error("witness publish failed: %s", exc)

    def _publish_leaves(self, witness: DirectoryWitness, size: int) -> None:
        """Give the witness the leaf hashes it lacks up to ``size`` (read back from the log
        as just committed): what lets the verifier name the exact record changed."""
        have = witness.leaf_count()
        while have < size:
            end = min(size, have + WITNESS_LEAVES_CHUNK)
            rows = self._connection().execute(
                "SELECT leaf_hash, CASE WHEN length(leaf_hash) = 32 THEN NULL ELSE record END"
                " FROM audit_events WHERE seq > ? AND seq <= ? ORDER BY seq",
                (have, end),
            )
            hashes = b"".join(
                leaf_hash(stored_bytes(record)) if record is not None else stored_bytes(lh)
                for lh, record in rows
            )
            if len(hashes) != 32 * (end - have):
                raise sqlite3.DatabaseError(f"audit rows {have + 1}..{end} are not all there")
            witness.publish_leaves(have, hashes)
            have = end

    def close(self, *, final: bool = True) -> None:
        """Stop writing. ``final`` (a writer's stop): integrate, checkpoint and fold the WAL
        into the database file first; a host command's brief integration skips that."""
        if self._conn is not None:
            if final:
                try:
                    self.checkpoint()
                except Exception as exc:  # closing must not hang on a broken database
                    log.error("final checkpoint failed: %s", exc)
                try:
                    # Fold the WAL into the database file: a clean stop leaves one file.
                    self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                except sqlite3.Error as exc:
                    log.error("WAL checkpoint at close failed: %s", exc)
            self._conn.close()
            self._conn = None
        for exporter in self._exporters:
            exporter.close()


def _runs(done: Committed) -> Iterator[tuple[int, list[AuditEvent]]]:
    """(first leaf index, events) for each run of readable events (an outbox record this
    version cannot read back is exported but not handed to detection)."""
    if None not in done.events:  # the usual case: one run, no copy
        yield done.first, cast("list[AuditEvent]", done.events)
        return
    run: list[AuditEvent] = []
    start = done.first
    for offset, event in enumerate(done.events):
        if event is None:
            if run:
                yield start, run
            run, start = [], done.first + offset + 1
        else:
            run.append(event)
    if run:
        yield start, run


def integrate_outbox(path: Path, *, exporters: Sequence[Exporter] = ()) -> int:
    """Integrate every waiting outbox row now, from a process without an audit writer of its
    own (the CLI: ``garrison.audit.outbox`` says when), exporting what it commits. Signs no
    checkpoint (the host's CLI need not hold the signing key): the next gateway does.
    Returns the number of records integrated."""
    sink = SqliteAuditSink(path, exporters=exporters)
    try:
        sink.open()
        before = sink.tree.size
        while sink.outbox_waiting():
            size = sink.tree.size
            sink.write_batch(())
            if sink.tree.size == size:
                break  # only rows that are no record are left (kept as evidence)
        return sink.tree.size - before
    finally:
        sink.close(final=False)
