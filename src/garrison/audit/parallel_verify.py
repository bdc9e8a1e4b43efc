"""Verification on every core: the fast path for a log that turns out intact.

The log is cut into aligned chunks of ``CHUNK`` leaves. Worker processes each read their
chunks from the database (the SQLite file, or PostgreSQL by its libpq URL), re-hash every
record, check every record's own index, its stored hash and its copied columns, and return
the chunk's perfect subtree root, or — for a chunk holding a checkpoint or witness size, or
the tail — the chunk's compact edge at each such size. The parent joins the chunks into the
tree (the prefix before a chunk is a whole number of chunks, so its edge and
the chunk's inner edge form the compact tree at any size inside the chunk) and checks every
root. Anything amiss, or a log whose seqs are not 1..n, and the caller runs the sequential
``verify_log``, which names the exact index and kind.
"""

from __future__ import annotations

import hashlib
import multiprocessing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from garrison.audit.checkpoint import Checkpoint
from garrison.audit.columns import DERIVED_COLUMNS, record_columns
from garrison.audit.merkle import CompactTree
from garrison.audit.sqlite_reader import connect_read_only, is_pg_source
from garrison.audit.verify import VerifyReport, _check_checkpoints, _check_witness, _claimed_index

# Leaves per chunk: a power of two (chunks must be aligned subtrees) large enough that the
# per-chunk overhead vanishes, small enough to spread a modest log over the cores.
CHUNK_BITS = 15
CHUNK = 1 << CHUNK_BITS
_sha256 = hashlib.sha256
_CHUNK_SQL = (
    f"SELECT seq, record, leaf_hash, {', '.join(DERIVED_COLUMNS)}"  # noqa: S608 (fixed names)
    " FROM audit_events WHERE seq > ? AND seq <= ? ORDER BY seq"
)


@dataclass(frozen=True, slots=True)
class _ChunkResult:
    start: int
    count: int
    clean: bool
    root: bytes | None  # the chunk's root when it is whole (CHUNK leaves)
    edges: dict[int, tuple[bytes, ...]]  # size (absolute) → inner compact edge at that size


def _verify_chunk(args: tuple[str, int, int, tuple[int, ...]]) -> _ChunkResult:
    source, start, end, sizes = args
    conn = connect_read_only(source)
    sql = _CHUNK_SQL.replace("?", "%s") if is_pg_source(source) else _CHUNK_SQL
    try:
        rows = conn.execute(sql, (start, end)).fetchall()
    finally:
        conn.close()
    count = len(rows)
    records = [r[1] for r in rows]
    try:
        hashes = [_sha256(b"\x00" + r).digest() for r in records]
    except TypeError:  # a record no longer stored as a BLOB: the sequential verifier reports it
        return _ChunkResult(start, count, False, None, {})
    clean = count == end - start and rows[-1][0] == end if count else False
    if clean:
        stored = [r[2] for r in rows]
        clean = (
            stored == hashes
            and all(_claimed_index(rec) == start + k for k, rec in enumerate(records))
            and record_columns(records) == [tuple(r[3:]) for r in rows]
        )
    inner = CompactTree()
    edges: dict[int, tuple[bytes, ...]] = {}
    done = 0
    for size in sizes:
        inner.extend(hashes[done : size - start])
        done = size - start
        edges[size] = inner.edge
    inner.extend(hashes[done:])
    return _ChunkResult(start, count, clean, inner.edge[0] if count == CHUNK else None, edges)


def verify_parallel(
    path: Path | str,
    count: int,
    checkpoints: Sequence[Checkpoint],
    keys: Mapping[str, Ed25519PublicKey],
    *,
    witness: Sequence[Checkpoint] = (),
    jobs: int = 2,
) -> VerifyReport | None:
    """A report when the log is intact, else ``None`` (run the sequential verifier)."""
    report = VerifyReport(checkpoints=len(checkpoints), witness_checkpoints=len(witness))
    if count == 0:
        return None
    signed = _check_checkpoints(checkpoints, keys, report)
    witnessed = _check_witness(witness, keys, report)
    if report.problems:
        return None
    interesting = sorted(set(signed) | set(witnessed))
    if interesting and interesting[-1] > count:
        return None  # truncated: let the sequential verifier say where
    tasks = []
    for start in range(0, count, CHUNK):
        end = min(start + CHUNK, count)
        sizes = tuple(s for s in interesting if start < s <= end)
        if end == count and end - start < CHUNK and end not in sizes:
            sizes = (*sizes, end)
        tasks.append((str(path), start, end, sizes))
    # spawn, not fork: the caller may have threads (fork with threads can deadlock).
    context = multiprocessing.get_context("spawn")
    with context.Pool(jobs) as pool:
        results = pool.map(_verify_chunk, tasks, chunksize=1)
    prefix = CompactTree()
    roots: dict[int, str] = {}
    for result in results:
        if not result.clean:
            return None
        for size, inner in result.edges.items():
            if size - result.start < CHUNK:  # inside the chunk: prefix edge + inner edge
                roots[size] = CompactTree(size, prefix.edge + inner).root().hex()
        if result.root is not None:
            prefix.append_subtree(result.root, CHUNK_BITS)
            if result.start + CHUNK in result.edges:  # a size on the chunk's end
                roots[result.start + CHUNK] = prefix.root().hex()
    for size in interesting:
        cp = signed.get(size)
        wcp = witnessed.get(size)
        if (cp is not None and roots.get(size) != cp.root) or (
            wcp is not None and roots.get(size) != wcp.root
        ):
            return None
    report.events = count
    report.root = roots.get(count, prefix.root().hex()) if count else CompactTree().root().hex()
    report.last_signed_size = max(signed, default=0)
    return report
