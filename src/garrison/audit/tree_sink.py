"""The audit sink's recipe, whatever the database: the one front door of the audit log.

Each batch is one write transaction: rows committed by other writers since the last batch
are folded into the tree first; then waiting rows of the audit *outbox* (directory changes:
admin changes, locks, alerts, incidents, keys — each written there in its change's own
transaction, without a leaf index), oldest first, then the batch's own events, become the
next leaves: encoded with their index, hashed, appended to the compact tree, inserted into
``audit_events`` (the outbox rows deleted in the same transaction, so each is integrated
exactly once whoever integrates). At most once per ``CHECKPOINT_INTERVAL_S`` while events
flow, and at close, a signed checkpoint is written in the same transaction, chained to the
newest one *stored* (by any writer), and then published to the witness. After the commit
*every* record it committed — outbox and own alike — goes, in leaf order, to the listeners
(detection) and the exporters (JSON lines, syslog); ``commit_batch`` lets the audit writer
acknowledge the batch's appends between the commit and that hand-on.

Leaf order is decided here, inside the writer's transaction, so all a database must give is
one lock that the transaction takes first and holds to its commit: SQLite's ``BEGIN
IMMEDIATE`` (``sqlite_sink``), a PostgreSQL transaction-scoped advisory lock (``pg_sink``).
Each database's sink says how to connect, begin, commit and roll back; the rest is here.
The low-level leaf writing is ``garrison.audit.leaves`` (hazmat: only the sinks import it).
"""

from __future__ import annotations

import abc
import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Generic, TypeVar, cast

import orjson

from garrison.audit.checkpoint import CHECKPOINT_INTERVAL_S, GENESIS_PREV, Checkpoint, Signer
from garrison.audit.events import AuditEvent
from garrison.audit.exporters import EXPORT_CATCH_UP_CHUNK, EXPORT_CATCH_UP_MAX, Exporter
from garrison.audit.leaves import (
    Committed,
    Conn,
    Dialect,
    TreeStateError,
    append,
    fold,
    outbox_waiting,
)
from garrison.audit.merkle import CompactTree, leaf_hash
from garrison.audit.sqlite_reader import stored_bytes
from garrison.audit.witness import DirectoryWitness

log = logging.getLogger("garrison.audit")

# Outbox rows integrated per transaction: with the batch's own events (at most
# ``AUDIT_BATCH_MAX``) this bounds how long one commit holds the write lock; a longer
# backlog drains over the next transactions.
AUDIT_OUTBOX_BATCH_MAX = 2_000
# Leaf hashes read and written to the witness per step (2 MiB): a witness configured on a
# large existing log catches up without holding all of its hashes at once.
WITNESS_LEAVES_CHUNK = 65_536

_INSERT_CAPTURE = "INSERT INTO audit_captures (request_id, at, sealed) VALUES (?, ?, ?)"
_INSERT_CHECKPOINT = "INSERT INTO audit_checkpoints (tree_size, at, body, edge) VALUES (?, ?, ?, ?)"
_NEWEST = "SELECT body, edge FROM audit_checkpoints ORDER BY seq DESC LIMIT 1"


def newest_checkpoint(conn: Conn) -> Checkpoint | None:
    """The checkpoint stored last, by any process."""
    row = conn.execute(_NEWEST).fetchone()
    return None if row is None else Checkpoint.from_dict(orjson.loads(stored_bytes(row[0])))


def load_tree(conn: Conn, dialect: Dialect) -> tuple[CompactTree, Checkpoint | None]:
    """The tree as of the newest checkpoint, then every row after it folded in."""
    row = conn.execute(_NEWEST).fetchone()
    tree = CompactTree()
    checkpoint = None
    if row is not None:
        checkpoint = Checkpoint.from_dict(orjson.loads(stored_bytes(row[0])))
        edge = stored_bytes(row[1])
        tree = CompactTree(
            checkpoint.tree_size, [edge[i : i + 32] for i in range(0, len(edge), 32)]
        )
        if tree.root().hex() != checkpoint.root:
            raise TreeStateError("newest checkpoint's edge does not give its root")
    fold(conn, tree, dialect)
    return tree, checkpoint


# Where a sink's log is, as its database takes it (a file path, a database URL).
TargetT = TypeVar("TargetT")


class TreeSink(abc.ABC, Generic[TargetT]):
    """The recipe; a subclass gives the database: ``_connection``, ``_begin``, ``_commit_tx``,
    ``_rollback``, ``probe``, ``_release`` and the driver's error type ``_db_error``. It is
    made with its ``target`` (what ``_connection`` connects to) and the recipe's options."""

    dialect: Dialect
    _db_error: type[Exception] = Exception

    def __init__(
        self,
        target: TargetT,
        *,
        signer: Signer | None = None,
        witness: DirectoryWitness | None = None,
        exporters: Sequence[Exporter] = (),
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._target = target
        self._exporters = list(exporters)
        # Called in the writer thread after each commit with (first leaf index, events);
        # they must not block (the detection service only queues).
        self._listeners: list[Callable[[int, Sequence[AuditEvent]], None]] = []
        self._signer = signer
        self._witness = witness
        self._clock = clock
        # Paces the periodic checkpoint (injected: a test decides when checkpoints happen).
        self._monotonic = monotonic
        self.tree = CompactTree()
        self._last: Checkpoint | None = None
        self._last_at = 0.0

    # -- what each database gives ------------------------------------------------------
    @abc.abstractmethod
    def _connection(self) -> Any: ...

    @abc.abstractmethod
    def _begin(self, conn: Any) -> None:
        """Start the write transaction and take the log's one write lock."""
        ...

    @abc.abstractmethod
    def _commit_tx(self, conn: Any) -> None: ...

    @abc.abstractmethod
    def _rollback(self, conn: Any) -> None: ...

    def _batch_scope(self, conn: Any) -> contextlib.AbstractContextManager[Any]:
        """What one batch transaction runs inside (PostgreSQL: a pipeline, so statements
        whose results are not read go with the next round trip)."""
        return contextlib.nullcontext()

    @abc.abstractmethod
    def _release(self, *, final: bool) -> None:
        """Close the connection (``final``: after the closing checkpoint)."""
        ...

    @abc.abstractmethod
    def probe(self) -> None: ...

    # -- the recipe ----------------------------------------------------------------------
    def open(self) -> None:
        conn = self._connection()
        try:
            self.tree, self._last = load_tree(conn, self.dialect)
        finally:
            self._rollback(conn)  # a read only: end it (PostgreSQL opened a transaction)
        self._last_at = self._monotonic()
        self._catch_up_exporters()
        if (
            self._witness is not None
            and self._last is not None
            and self._witness.latest_size() < self._last.tree_size
        ):
            # Stored but never published (the process ended between the two): publish now.
            log.warning("witness is behind the log: publishing the newest checkpoint again")
            self._committed(self._last)

    def _catch_up_exporters(self) -> None:
        """Hand an exporter that can say where it stopped (``resume_after``: the JSON-lines
        file) the log's records after that point: the ones a process killed between its
        commit and its hand-on never exported (``garrison.audit.exporters``). Records it
        already holds (another process sharing it exported them meanwhile) are skipped by
        its ``append_missing``."""
        for exporter in self._exporters:
            resume = getattr(exporter, "resume_after", None)
            append = getattr(exporter, "append_missing", None)
            if resume is None or append is None:
                continue
            try:
                last = resume()
            except OSError as exc:  # the file's lock held elsewhere, or the file unreadable
                log.error(
                    "audit export catch-up skipped: %s; `garrison audit export` writes what "
                    "the file misses",
                    exc,
                )
                continue
            if last is None or last + 1 >= self.tree.size:
                continue
            missing = self.tree.size - (last + 1)
            if missing > EXPORT_CATCH_UP_MAX:
                log.warning(
                    "audit export is %d records behind the log (after index %d): not replayed "
                    "at start; `garrison audit export` writes them",
                    missing,
                    last,
                )
                continue
            log.warning(
                "audit export: appending %d records committed after index %d", missing, last
            )
            try:
                self._export_range(append, last + 1, self.tree.size)
            except (OSError, self._db_error) as exc:  # the copy may fail; the log stands
                log.error(
                    "audit export catch-up failed: %s; `garrison audit export` writes the "
                    "records after index %d",
                    exc,
                    last,
                )

    def _export_range(
        self, append: Callable[[Sequence[tuple[int, bytes]]], int], first: int, end: int
    ) -> None:
        """Stored records with leaf index in [first, end), in leaf order, in chunks, as
        ``(leaf index, record)`` pairs (``seq`` is the leaf index plus one)."""
        conn = self._connection()
        try:
            while first < end:
                stop = min(end, first + EXPORT_CATCH_UP_CHUNK)
                rows = conn.execute(
                    self.dialect.sql(
                        "SELECT seq, record FROM audit_events WHERE seq > ? AND seq <= ? "
                        "ORDER BY seq"
                    ),
                    (first, stop),
                ).fetchall()
                append([(seq - 1, stored_bytes(record)) for seq, record in rows])
                first = stop
        finally:
            self._rollback(conn)

    @property
    def checkpoint_due(self) -> bool:
        last_size = self._last.tree_size if self._last else 0
        return self._signer is not None and self.tree.size > last_size

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Any]:
        """One write transaction with rows from other processes folded in first; on any
        failure it rolls back and the in-memory tree returns to where it was."""
        conn = self._connection()
        saved = self.tree.copy()
        try:
            with self._batch_scope(conn):
                self._begin(conn)
                fold(conn, self.tree, self.dialect)
                yield conn
                self._commit_tx(conn)
        except BaseException:
            self.tree = saved
            self._rollback(conn)
            raise

    def add_listener(self, listener: Callable[[int, Sequence[AuditEvent]], None]) -> None:
        self._listeners.append(listener)

    def write_batch(self, events: Sequence[AuditEvent]) -> None:
        """Commit waiting outbox rows and then ``events`` as the next leaves (``events`` may
        be empty: the outbox alone), then hand them on; returns once durable and handed on,
        else raises."""
        self.commit_batch(events)()

    def commit_batch(self, events: Sequence[AuditEvent]) -> Callable[[], None]:
        """``write_batch`` in two steps: commit (returns once durable, else raises), then the
        returned function hands on what was committed — the new checkpoint to the witness,
        every record to the listeners and exporters — and never raises. The audit writer
        acknowledges the appends between the two (their callers wait for durability only);
        it calls the function before it takes the next batch, so records reach the
        listeners and exporters in leaf order as before."""
        return self._commit(events, force_checkpoint=False)

    def outbox_waiting(self) -> bool:
        """Directory changes are waiting in the outbox (one indexed read, no lock)."""
        conn = self._connection()
        try:
            return outbox_waiting(conn)
        finally:
            self._rollback(conn)

    def checkpoint(self) -> None:
        """Integrate the outbox, then sign and store a checkpoint of everything written so
        far (if anything is new)."""
        self._commit((), force_checkpoint=True)()

    def _commit(
        self, events: Sequence[AuditEvent], *, force_checkpoint: bool
    ) -> Callable[[], None]:
        published: Checkpoint | None = None
        sql = self.dialect.sql
        with self._transaction() as conn:
            done = append(
                conn, self.tree, events, outbox_max=AUDIT_OUTBOX_BATCH_MAX, dialect=self.dialect
            )
            captures = [(e.request_id, e.at, e.capture) for e in events if e.capture is not None]
            if captures:
                conn.cursor().executemany(sql(_INSERT_CAPTURE), captures)
            if self.checkpoint_due and (
                force_checkpoint or self._monotonic() - self._last_at >= CHECKPOINT_INTERVAL_S
            ):
                published = self._checkpoint(conn)
        if published is not None:
            # The chain's state now (the next batch's checkpoint is paced from it); the
            # witness's copy goes out with the hand-on.
            self._last = published
            self._last_at = self._monotonic()

        def hand_on() -> None:
            if published is not None:
                self._publish(published)
            if done.records:
                self._deliver(done)

        return hand_on

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

    def _checkpoint(self, conn: Any) -> Checkpoint | None:
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
            self.dialect.sql(_INSERT_CHECKPOINT),
            (cp.tree_size, cp.at, orjson.dumps(cp.to_dict()), b"".join(self.tree.edge)),
        )
        return cp

    def _committed(self, checkpoint: Checkpoint) -> None:
        self._last = checkpoint
        self._last_at = self._monotonic()
        self._publish(checkpoint)

    def _publish(self, checkpoint: Checkpoint) -> None:
        """The witness's copy of ``checkpoint`` (and the leaf hashes it lacks); a failure is
        logged (the next checkpoint, or the next start, publishes again)."""
        if self._witness is not None:
            try:
                self._publish_leaves(self._witness, checkpoint.tree_size)
            except (OSError, TreeStateError, self._db_error) as exc:  # the copy still goes out
                log.error("witness leaf hashes not published: %s", exc)
            try:
                self._witness.publish(checkpoint)
            except OSError as exc:
                log.error("witness publish failed: %s", exc)

    def _publish_leaves(self, witness: DirectoryWitness, size: int) -> None:
        """Give the witness the leaf hashes it lacks up to ``size`` (the records read back
        from the log as just committed, hashed): what lets the verifier name the exact record
        changed."""
        have = witness.leaf_count()
        conn = self._connection()
        try:
            while have < size:
                end = min(size, have + WITNESS_LEAVES_CHUNK)
                # From the records, as the tree is folded (``leaves.fold``): the copy is of
                # the leaves the checkpoint signed, not of a stored hash an edit made differ.
                rows = conn.execute(
                    self.dialect.sql(
                        "SELECT record FROM audit_events WHERE seq > ? AND seq <= ? ORDER BY seq"
                    ),
                    (have, end),
                ).fetchall()
                hashes = b"".join(leaf_hash(stored_bytes(record)) for (record,) in rows)
                if len(hashes) != 32 * (end - have):
                    raise TreeStateError(f"audit rows {have + 1}..{end} are not all there")
                witness.publish_leaves(have, hashes)
                have = end
        finally:
            self._rollback(conn)

    def close(self, *, final: bool = True) -> None:
        """Stop writing. ``final`` (a writer's stop): integrate and checkpoint first; a host
        command's brief integration skips that."""
        if final and self._has_connection():
            try:
                self.checkpoint()
            except Exception as exc:  # closing must not hang on a broken database
                log.error("final checkpoint failed: %s", exc)
        self._release(final=final)
        for exporter in self._exporters:
            exporter.close()

    @abc.abstractmethod
    def _has_connection(self) -> bool: ...


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


def integrate_with(sink: TreeSink[Any]) -> int:
    """Integrate every waiting outbox row now, from a process without an audit writer of its
    own (the CLI: ``garrison.audit.outbox`` says when), exporting what it commits. Signs no
    checkpoint (the host's CLI need not hold the signing key): the next gateway does.
    Returns the number of records integrated."""
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
