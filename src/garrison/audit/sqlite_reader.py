"""Reading the audit log back: rows in leaf order, checkpoints, proofs, queries — from the
embedded SQLite file (``AuditReader(path)``) or a PostgreSQL database
(``open_reader(database_url)``); the SQL is the same, written with ``?`` placeholders."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from garrison.audit.checkpoint import Checkpoint, CheckpointError
from garrison.audit.columns import DERIVED_COLUMNS
from garrison.audit.merkle import LeafHashes, consistency_proof, inclusion_proof, leaf_hash
from garrison.audit.verify import IndexedRow, Row

# Rows fetched per round trip while streaming the log (memory stays flat on huge logs).
READ_BATCH = 10_000
_INDEXED_ROWS = (
    f"SELECT seq, record, leaf_hash, {', '.join(DERIVED_COLUMNS)}"  # noqa: S608 (fixed names)
    " FROM audit_events ORDER BY seq"
)


def stored_bytes(value: object) -> bytes:
    """A ``record`` or ``leaf_hash`` cell as bytes, whatever an edit left in it: TEXT is
    encoded, NULL is empty, a number is its digits (``bytes(n)`` would allocate n zero
    bytes — a row edited to hold 10**12 must not exhaust memory)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    if isinstance(value, memoryview):
        return value.tobytes()
    return b"" if value is None else str(value).encode()


def is_pg_source(source: str | Path) -> bool:
    """A log named by a libpq URL (PostgreSQL) rather than a SQLite file."""
    return isinstance(source, str) and source.startswith(("postgresql://", "postgres://"))


def connect_read_only(source: str | Path) -> Any:
    """A read-only DB-API connection to the log ``source`` (a SQLite file or a libpq URL)."""
    if is_pg_source(source):
        import psycopg  # only a PostgreSQL log loads the driver

        return psycopg.connect(
            str(source), autocommit=True, options="-c default_transaction_read_only=on"
        )
    return sqlite3.connect(f"file:{source}?mode=ro", uri=True)


def read_errors() -> tuple[type[Exception], ...]:
    """The errors reading a log can raise (a database's, not a verdict on the log)."""
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a dependency
        return (OSError, sqlite3.Error)
    return (OSError, sqlite3.Error, psycopg.Error)


class AuditReader:
    def __init__(self, path: Path | str) -> None:
        self.pg = is_pg_source(path)
        if not self.pg and not Path(path).exists():
            raise FileNotFoundError(f"no audit database at {path}")
        # Where the log is: the SQLite file, or the libpq URL (parallel verify reopens it).
        self.path: Path | str = path if self.pg else Path(path)
        self._conn = connect_read_only(path)

    def _q(self, sql: str, args: Sequence[Any] = ()) -> Any:
        if self.pg:
            sql = sql.replace("?", "%s")
        return self._conn.execute(sql, args)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> AuditReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def count(self) -> int:
        return int(self._q("SELECT count(*) FROM audit_events").fetchone()[0])

    def pending(self) -> int:
        """Directory changes waiting in the audit outbox for a leaf index (0 for a log from
        before the outbox existed)."""
        exists = (
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'audit_outbox'"
            if self.pg
            else "SELECT count(*) FROM sqlite_master WHERE name = 'audit_outbox'"
        )
        if not self._q(exists).fetchone()[0]:
            return 0
        return int(self._q("SELECT count(*) FROM audit_outbox").fetchone()[0])

    def rows(self) -> Iterator[Row]:
        """Every row in leaf order: (seq, record, stored leaf hash)."""
        return self._stream("SELECT seq, record, leaf_hash FROM audit_events ORDER BY seq")

    def indexed_rows(self) -> Iterator[IndexedRow]:
        """Every row in leaf order with the columns copied from its record after the leaf
        hash (what ``verify_log`` checks them against)."""
        return self._stream(_INDEXED_ROWS)

    def _stream(self, sql: str) -> Iterator[Any]:
        if self.pg:
            # A server-side cursor: the rows come READ_BATCH at a time, not all at once.
            with self._conn.transaction(), self._conn.cursor(name="audit_rows") as named:
                named.itersize = READ_BATCH
                named.execute(sql)
                yield from named  # bytea is bytes
            return
        cur = self._conn.execute(sql)
        while True:
            batch = cur.fetchmany(READ_BATCH)
            if not batch:
                return
            yield from batch

    def rows_range(self, start: int, end: int) -> list[Row]:
        """Rows at leaf positions [start, end) (by order, whatever their seq says)."""
        cur = self._q(
            "SELECT seq, record, leaf_hash FROM audit_events ORDER BY seq LIMIT ? OFFSET ?",
            (end - start, start),
        )
        return [
            (int(q), stored_bytes(r), None if h is None else stored_bytes(h)) for q, r, h in cur
        ]

    def checkpoints(self) -> list[Checkpoint]:
        """The stored checkpoints in order; a row that is not a checkpoint (edited, garbled)
        is a stand-in that fails verification, so the verifier reports it."""
        out: list[Checkpoint] = []
        query = "SELECT seq, body FROM audit_checkpoints ORDER BY seq"
        for seq, body in self._q(query):
            try:
                out.append(Checkpoint.from_dict(orjson.loads(stored_bytes(body))))
            except (orjson.JSONDecodeError, CheckpointError, TypeError) as exc:
                out.append(Checkpoint.damaged(f"stored checkpoint {seq} is not one: {exc}"))
        return out

    def leaf_hashes(self, size: int) -> list[bytes]:
        """Leaf hashes of the first ``size`` events, recomputed from the records."""
        out: list[bytes] = []
        for _, record, _ in self.rows():
            if len(out) >= size:
                break
            out.append(leaf_hash(record))
        return out

    def find(self, ref: str) -> tuple[int, bytes] | None:
        """An event by leaf index (a number) or by request id (its first event)."""
        if ref.isdigit():
            row = self._q(
                "SELECT seq, record FROM audit_events WHERE seq = ?", (int(ref) + 1,)
            ).fetchone()
        else:
            row = self._q(
                "SELECT seq, record FROM audit_events WHERE request_id = ? ORDER BY seq LIMIT 1",
                (ref,),
            ).fetchone()
        return None if row is None else (int(row[0]) - 1, stored_bytes(row[1]))

    def query(
        self,
        *,
        after_seq: int = 0,
        since: float | None = None,
        principals: Sequence[str] | None = None,
        model: str | None = None,
        limit: int | None = None,
    ) -> list[tuple[int, bytes]]:
        where = ["seq > ?"]
        args: list[Any] = [after_seq]
        if since is not None:
            where.append("at >= ?")
            args.append(since)
        if principals is not None:
            where.append(f"principal_id IN ({','.join('?' * len(principals))})")
            args.extend(principals)
        if model is not None:
            where.append("model = ?")
            args.append(model)
        # Only fixed column names and placeholders are joined in; values go as parameters.
        clause = " AND ".join(where)
        sql = f"SELECT seq, record FROM audit_events WHERE {clause} ORDER BY seq"  # noqa: S608
        if limit is not None:
            sql = f"SELECT * FROM ({sql} DESC LIMIT {int(limit)}) AS q ORDER BY seq"  # noqa: S608
        return [(int(s), stored_bytes(r)) for s, r in self._q(sql, args)]

    def principal_names(self) -> dict[str, str]:
        """Principal id → name, for showing people by name (the records hold ids)."""
        return {str(i): str(n) for i, n in self._q("SELECT id, name FROM principals")}

    def principal_ids(self, name_or_org: str, *, by_org: bool) -> list[str]:
        if by_org:
            rows = self._q(
                "SELECT p.id FROM principals p JOIN orgs o ON o.id = p.org_id"
                " WHERE o.name = ? OR o.id = ?",
                (name_or_org, name_or_org),
            )
        else:
            rows = self._q(
                "SELECT id FROM principals WHERE name = ? OR id = ?", (name_or_org, name_or_org)
            )
        return [r[0] for r in rows]


def open_reader(database_url: str) -> AuditReader:
    """A reader of the log in ``database_url`` (``sqlite:///…`` or ``postgresql+psycopg://…``)."""
    import sqlalchemy as sa

    url = sa.engine.make_url(database_url)
    if url.get_backend_name() == "postgresql":
        return AuditReader(url.set(drivername="postgresql").render_as_string(hide_password=False))
    if url.get_backend_name() != "sqlite" or not url.database:
        raise ValueError("the audit log is in SQLite or PostgreSQL")
    return AuditReader(Path(url.database))


@dataclass(frozen=True, slots=True)
class InclusionBundle:
    index: int
    record: bytes
    proof: list[bytes]
    checkpoint: Checkpoint

    def to_dict(self, public_keys: dict[str, str]) -> dict[str, Any]:
        return {
            "v": 1,
            "type": "inclusion",
            "index": self.index,
            "record": self.record.decode(),
            "leaf_hash": leaf_hash(self.record).hex(),
            "proof": [p.hex() for p in self.proof],
            "checkpoint": self.checkpoint.to_dict(),
            "public_keys": public_keys,
        }


def prove_inclusion(
    reader: AuditReader, index: int, record: bytes, hashes: LeafHashes | None = None
) -> InclusionBundle:
    """An inclusion proof of leaf ``index`` against the newest checkpoint that covers it."""
    checkpoints = [cp for cp in reader.checkpoints() if cp.tree_size > index]
    if not checkpoints:
        raise LookupError(f"event {index} is not covered by a signed checkpoint yet")
    cp = checkpoints[-1]
    source = hashes or LeafHashes(reader.leaf_hashes(cp.tree_size))
    return InclusionBundle(index, record, inclusion_proof(index, cp.tree_size, source), cp)


def prove_consistency(reader: AuditReader, old: int, new: int) -> dict[str, Any]:
    by_size = {cp.tree_size: cp for cp in reader.checkpoints()}
    if old not in by_size or new not in by_size:
        sizes = ", ".join(str(s) for s in sorted(by_size))
        raise LookupError(f"both sizes must be signed checkpoints (available: {sizes})")
    source = LeafHashes(reader.leaf_hashes(new))
    return {
        "v": 1,
        "type": "consistency",
        "old": by_size[old].to_dict(),
        "new": by_size[new].to_dict(),
        "proof": [p.hex() for p in consistency_proof(old, new, source)],
    }
