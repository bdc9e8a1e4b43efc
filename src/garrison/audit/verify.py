"""Verify a whole log: recompute the tree from the stored records and check every signed
checkpoint and every witness copy against it. Pure: rows and checkpoints in, a report out.

What each kind of tampering looks like here:

* **modified** — a record's hash differs from its stored leaf hash, or (when the attacker
  also rewrote that) the rebuilt root differs from the next signed checkpoint;
* **deleted** / **inserted** / **reordered** — records name their own leaf index ``i``; a row
  whose ``i`` runs ahead, falls behind, or comes back later locates the change exactly;
  seq gaps are deletions too;
* **truncated** — a signed checkpoint (or a witness copy) covers more events than exist;
* **bad_signature** / **broken_chain** — a checkpoint that does not verify, or whose
  ``prev`` does not name the checkpoint before it (one removed, inserted or replaced);
* **rewritten** — a witness copy published outside the database disagrees with the tree
  rebuilt at its size: the whole log and its checkpoints were replaced, even if the forgery
  is self-consistent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from garrison.audit.checkpoint import GENESIS_PREV, Checkpoint, CheckpointError, verify_checkpoint
from garrison.audit.merkle import CompactTree, leaf_hash

Row = tuple[int, bytes, bytes | None]  # (seq, record, stored leaf hash)


@dataclass(frozen=True, slots=True)
class Problem:
    kind: str
    index: int | None
    detail: str


@dataclass(slots=True)
class VerifyReport:
    events: int = 0
    checkpoints: int = 0
    witness_checkpoints: int = 0
    root: str = ""
    last_signed_size: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first_bad_index(self) -> int | None:
        indices = [p.index for p in self.problems if p.index is not None]
        return min(indices) if indices else None

    @property
    def unsigned_tail(self) -> int:
        return max(0, self.events - self.last_signed_size)


def _check_checkpoints(
    checkpoints: Sequence[Checkpoint], keys: Mapping[str, Ed25519PublicKey], report: VerifyReport
) -> dict[int, Checkpoint]:
    valid: dict[int, Checkpoint] = {}
    prev_digest = GENESIS_PREV
    prev_size = 0
    for cp in checkpoints:
        try:
            verify_checkpoint(cp, keys)
        except CheckpointError as exc:
            report.problems.append(Problem("bad_signature", None, str(exc)))
            prev_digest = cp.digest()
            continue
        if cp.prev != prev_digest:
            report.problems.append(
                Problem(
                    "broken_chain",
                    None,
                    f"checkpoint of size {cp.tree_size} does not follow the one before it "
                    "(a checkpoint was removed, inserted or replaced)",
                )
            )
        if cp.tree_size < prev_size:
            report.problems.append(
                Problem(
                    "broken_chain",
                    cp.tree_size,
                    f"checkpoint sizes go backwards ({prev_size} then {cp.tree_size})",
                )
            )
        prev_digest, prev_size = cp.digest(), cp.tree_size
        valid[cp.tree_size] = cp
        report.last_signed_size = max(report.last_signed_size, cp.tree_size)
    return valid


def _check_witness(
    witness: Sequence[Checkpoint], keys: Mapping[str, Ed25519PublicKey], report: VerifyReport
) -> dict[int, Checkpoint]:
    out: dict[int, Checkpoint] = {}
    for cp in witness:
        try:
            verify_checkpoint(cp, keys)
        except CheckpointError as exc:
            report.problems.append(Problem("bad_signature", None, f"witness copy: {exc}"))
            continue
        out[cp.tree_size] = cp
    return out


class _IndexTracker:
    """Locates deletions, insertions and reorders from the records' own indices."""

    def __init__(self, report: VerifyReport) -> None:
        self.report = report
        self.gaps: list[tuple[int, int, int]] = []  # (missing from, to, at position)

    def see(self, position: int, claimed: int) -> None:
        if claimed == position:
            return
        if claimed > position:
            self.gaps.append((position, claimed, position))
            return
        for n, (start, end, at) in enumerate(self.gaps):
            if start <= claimed < end:
                self.report.problems.append(
                    Problem("reordered", at, f"event {claimed} was moved to position {position}")
                )
                self.gaps[n] = (start, claimed, at) if claimed > start else (claimed + 1, end, at)
                if self.gaps[n][0] >= self.gaps[n][1]:
                    del self.gaps[n]
                return
        self.report.problems.append(
            Problem(
                "inserted", position, f"position {position} holds a record naming index {claimed}"
            )
        )

    def finish(self) -> None:
        for start, end, at in self.gaps:
            self.report.problems.append(
                Problem(
                    "deleted", at, f"events {start}..{end - 1} are missing before position {at}"
                )
            )


def verify_log(
    rows: Iterable[Row],
    checkpoints: Sequence[Checkpoint],
    keys: Mapping[str, Ed25519PublicKey],
    *,
    witness: Sequence[Checkpoint] = (),
    progress: Callable[[int], None] | None = None,
) -> VerifyReport:
    report = VerifyReport(checkpoints=len(checkpoints), witness_checkpoints=len(witness))
    signed = _check_checkpoints(checkpoints, keys, report)
    witnessed = _check_witness(witness, keys, report)
    tracker = _IndexTracker(report)
    tree = CompactTree()
    position = 0
    last_good = 0
    expected_seq = 1
    for seq, record, stored in rows:
        if seq != expected_seq:
            report.problems.append(
                Problem(
                    "deleted", position, f"rows {expected_seq}..{seq - 1} are missing (seq gap)"
                )
            )
        expected_seq = seq + 1
        lh = leaf_hash(record)
        if stored is not None and stored != lh:
            report.problems.append(Problem("modified", position, "record does not match its hash"))
        try:
            claimed = orjson.loads(record)["i"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            report.problems.append(Problem("modified", position, "record is not a valid event"))
        else:
            if isinstance(claimed, int):
                tracker.see(position, claimed)
        tree.append(lh)
        position += 1
        size = position
        cp = signed.get(size)
        if cp is not None:
            if tree.root().hex() != cp.root:
                report.problems.append(
                    Problem(
                        "modified",
                        last_good,
                        f"events in [{last_good}, {size}) do not give the root signed at "
                        f"size {size}",
                    )
                )
            else:
                last_good = size
        wcp = witnessed.get(size)
        if wcp is not None and tree.root().hex() != wcp.root:
            report.problems.append(
                Problem(
                    "rewritten",
                    0,
                    f"the witness copy of the checkpoint at size {size} disagrees with this log: "
                    "it was replaced or rewritten",
                )
            )
        if progress is not None and position % 10_000 == 0:
            progress(position)
    tracker.finish()
    report.events = position
    report.root = tree.root().hex()
    for size in sorted(set(signed) | set(witnessed)):
        if size > position:
            source = "a signed checkpoint" if size in signed else "the witness"
            report.problems.append(
                Problem(
                    "truncated",
                    position,
                    f"the log has {position} events but {source} covers {size}",
                )
            )
            break
    # Problems of one cause repeat (a deletion also breaks the next root): keep them all,
    # ordered by where they are, so the first line names the first bad index.
    report.problems.sort(key=lambda p: p.index if p.index is not None else -1)
    return report
