"""Verify a whole log: recompute the tree from the stored records and check every signed
checkpoint and every witness copy against it. Pure: rows and checkpoints in, a report out.

What each kind of tampering looks like here:

* **modified** — a record's hash differs from its stored leaf hash, or (when the attacker
  also rewrote that) the rebuilt root differs from the next signed checkpoint: then the
  witness's copy of the leaf hashes, once it rebuilds that signed root, names the exact
  records (without a witness the finding is the signed range);
* **deleted** / **inserted** / **reordered** — records name their own leaf index ``i``; a row
  whose ``i`` runs ahead, falls behind, or comes back later locates the change exactly;
  seq gaps are deletions too;
* **truncated** — a signed checkpoint (or a witness copy) covers more events than exist;
* **bad_signature** / **broken_chain** — a checkpoint that does not verify, or whose
  ``prev`` does not name the checkpoint before it (one removed, inserted or replaced);
* **column_mismatch** — a column copied from the record for queries (``principal_id``,
  ``at`` …; see ``garrison.audit.columns``) no longer says what the record says: the event
  is hidden from the timelines, reports and searches that select on it (checked when the
  rows carry their columns, as ``garrison audit verify`` reads them);
* **rewritten** — a witness copy published outside the database disagrees with the tree
  rebuilt at its size: the whole log and its checkpoints were replaced, even if the forgery
  is self-consistent.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from garrison.audit.checkpoint import GENESIS_PREV, Checkpoint, CheckpointError, verify_checkpoint
from garrison.audit.columns import Columns, differing, record_columns
from garrison.audit.findings import (
    IndexedRow,
    Problem,
    Row,
    VerifyReport,
    tidy,
    witness_findings,
)
from garrison.audit.merkle import CompactTree

__all__ = ["IndexedRow", "Problem", "Row", "VerifyReport", "verify_log", "witness_findings"]


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
    """Locates deletions, insertions and reorders from the records' own indices.

    It follows the offset between the index a record claims and its position. A lasting
    rise means events are missing (deleted), a lasting fall means extra records (inserted),
    and an offset that comes back to where it was means records swapped places (reordered).
    Only changes of the offset are kept, so a damaged log costs memory per damage, not per row.
    """

    # Offset changes remembered; past this the log is garbage and the first ones suffice.
    MAX_CHANGES = 10_000

    def __init__(self, report: VerifyReport) -> None:
        self.report = report
        self.offset = 0
        self.changes: list[tuple[int, int, int]] = []  # (position, old offset, new offset)

    def see(self, position: int, claimed: int) -> None:
        offset = claimed - position
        if offset != self.offset:
            if len(self.changes) < self.MAX_CHANGES:
                self.changes.append((position, self.offset, offset))
            self.offset = offset

    def finish(self) -> None:
        changes = self.changes
        i = 0
        while i < len(changes):
            position, before, after = changes[i]
            back = next((j for j in range(i + 1, len(changes)) if changes[j][2] == before), None)
            if back is not None and after != before:
                end = changes[back][0]
                self.report.problems.append(
                    Problem(
                        "reordered", position, f"records {position}..{end - 1} are out of order"
                    )
                )
                i = back + 1
                continue
            # k forged records at `position`, after which the offset settles k lower.
            settle = next(
                (
                    j
                    for j in range(i + 1, len(changes))
                    if changes[j][2] == before - (changes[j][0] - position)
                    and changes[j][0] > position
                ),
                None,
            )
            if (
                settle is not None
                and all(changes[m][0] < changes[settle][0] for m in range(i, settle))
                and changes[settle][0] - position <= len(changes)
            ):
                count = changes[settle][0] - position
                self.report.problems.append(
                    Problem(
                        "inserted", position, f"{count} record(s) slipped in at position {position}"
                    )
                )
                i = settle + 1
                continue
            if after > before:
                self.report.problems.append(
                    Problem(
                        "deleted",
                        position,
                        f"{after - before} event(s) missing before position {position}",
                    )
                )
            else:
                # The offset falls at the first record after the slipped-in ones, which
                # claimed indices already taken: they start `before - after` positions back.
                count = before - after
                self.report.problems.append(
                    Problem(
                        "inserted",
                        position - count,
                        f"{count} record(s) slipped in at position {position - count}",
                    )
                )
            i += 1


# Records hashed per step: large enough for list comprehensions to pay, small enough to
# keep memory flat on a log of any size.
_BATCH = 8192
_sha256 = hashlib.sha256


def _as_bytes(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    return b"" if value is None else str(value).encode()


def _claimed_index(record: bytes) -> int | None:
    """The record's own ``"i"``. Keys are sorted and every top-level key after ``"i"``
    holds a string or a number, so the last ``,"i":`` is the top-level one."""
    k = record.rfind(b',"i":')
    if k < 0:
        return None
    end = record.find(b",", k + 5)
    try:
        return int(record[k + 5 : end])
    except ValueError:
        return None


def _check_roots(
    tree: CompactTree,
    signed: dict[int, Checkpoint],
    witnessed: dict[int, Checkpoint],
    report: VerifyReport,
    state: dict[str, int],
) -> tuple[int, int] | None:
    """Compare the root at this size with any checkpoint signed or witnessed there; return
    the range a failed signed root implicates."""
    size = tree.size
    cp = signed.get(size)
    wcp = witnessed.get(size)
    if cp is None and wcp is None:
        return None
    root = tree.root().hex()
    bad: tuple[int, int] | None = None
    if cp is not None:
        if root != cp.root:
            start = state["last_good"]
            report.problems.append(
                Problem(
                    "modified",
                    start,
                    f"events in [{start}, {size}) do not give the root signed at size {size}",
                    end=size,
                )
            )
            bad = (start, size)
        else:
            state["last_good"] = size
    if wcp is not None:
        if root == wcp.root:
            state["witness_good"] = size
        elif cp is None or root == cp.root:
            # The database's own checkpoints agree with the rebuilt tree but the copy kept
            # outside does not: the log and its checkpoints were replaced together. (Where the
            # stored checkpoint fails too, the change is local and reported as such above.)
            start = state["witness_good"]
            report.problems.append(
                Problem(
                    "rewritten",
                    start,
                    f"the witness copy of the checkpoint at size {size} disagrees with this log "
                    f"from index {start} on: the log and its checkpoints were replaced",
                )
            )
    return bad


# Records named one by one in a failed signed range located with the witness's leaf hashes;
# past this the rest of the range is one finding (a rewritten log needs no longer list).
MAX_LOCATED = 1000


def _locate_with_leaves(
    anchor: CompactTree, lo: int, signed_root: str, records: Sequence[bytes], copy: bytes
) -> list[int] | None:
    """Positions in [lo, lo + len(records)) whose record does not give the witness's leaf
    hash, or ``None`` when the witness's hashes for the range are missing or do not rebuild
    the signed root from ``anchor`` (the verified tree at ``lo``): then they prove nothing."""
    count = len(records)
    if len(copy) != 32 * count:
        return None
    hashes = [copy[k : k + 32] for k in range(0, len(copy), 32)]
    tree = anchor.copy()
    tree.extend(hashes)
    if tree.root().hex() != signed_root:
        return None
    return [
        lo + k
        for k, record in enumerate(records)
        if _sha256(b"\x00" + _as_bytes(record)).digest() != hashes[k]
    ]


def verify_log(
    rows: Iterable[Row | IndexedRow],
    checkpoints: Sequence[Checkpoint],
    keys: Mapping[str, Ed25519PublicKey],
    *,
    witness: Sequence[Checkpoint] = (),
    progress: Callable[[int], None] | None = None,
    reread: Callable[[int, int], Iterable[Row]] | None = None,
    leaves: Callable[[int, int], bytes] | None = None,
) -> VerifyReport:
    """Rows may carry their copied columns (``IndexedRow``): each is then checked against
    its record. ``reread(start, end)`` gives rows at positions [start, end) again; with it, a range
    whose signed root fails is re-read record by record to locate the change exactly.
    ``leaves(start, end)`` gives the witness's copy of those leaf hashes (see
    ``garrison.audit.witness``): with both, a record changed together with its stored leaf
    hash is named by its index."""
    report = VerifyReport(checkpoints=len(checkpoints), witness_checkpoints=len(witness))
    signed = _check_checkpoints(checkpoints, keys, report)
    witnessed = _check_witness(witness, keys, report)
    tracker = _IndexTracker(report)
    tree = CompactTree()
    targets = sorted(set(signed) | set(witnessed))
    state = {"last_good": 0, "witness_good": 0}
    records: list[bytes] = []
    stored_hashes: list[bytes | None] = []
    seqs: list[int] = []
    # Each row's copied columns (empty when the rows came without them).
    copies: list[Columns] = []

    last_signed = max(signed, default=0)
    # The rebuilt tree at the last size whose signed root held: where a failed range starts.
    anchor = {"tree": CompactTree()}

    def detail(start: int, batch: Sequence[bytes], into: _IndexTracker) -> None:
        for k, record in enumerate(batch):
            claimed = _claimed_index(record)
            if claimed is None:
                report.problems.append(
                    Problem("modified", start + k, "record is not a valid event")
                )
            elif claimed - (start + k) != into.offset:
                into.see(start + k, claimed)

    def flush() -> None:
        start = tree.size
        try:
            hashes = [_sha256(b"\x00" + r).digest() for r in records]
        except TypeError:
            # A record that is not a BLOB any more (rewritten as TEXT, NULL …): hash what is
            # there; its stored hash and the signed root will not match.
            records[:] = [_as_bytes(r) for r in records]
            hashes = [_sha256(b"\x00" + r).digest() for r in records]
        suspect = stored_hashes != hashes
        modified: set[int] = set()
        if suspect:
            for k, (computed, stored) in enumerate(zip(hashes, stored_hashes, strict=True)):
                if stored is not None and stored != computed:
                    modified.add(k)
                    report.problems.append(
                        Problem("modified", start + k, "record does not match its hash")
                    )
        # Signed ranges are guarded by their roots, so there only the batch's ends are read
        # for their indices (that is what keeps verification fast); any doubt, and the
        # unsigned tail, get every record's index checked.
        end = start + len(records) - 1
        if (
            suspect
            or end >= last_signed
            or _claimed_index(records[0]) != start + tracker.offset
            or _claimed_index(records[-1]) != end + tracker.offset
        ):
            detail(start, records, tracker)
        if copies and copies[0]:
            _check_columns(start, records, modified)
        tree.extend(hashes)
        records.clear()
        stored_hashes.clear()
        seqs.clear()
        copies.clear()
        bad = _check_roots(tree, signed, witnessed, report, state)
        if bad is not None and reread is not None:
            # A root failed where every record matched its stored hash and its batch ends:
            # read that range again, record by record, to say exactly what changed.
            local = _IndexTracker(report)
            lo, hi = bad
            local.offset = 0
            again = [_as_bytes(r) for _, r, _ in reread(lo, hi)]
            found = len(report.problems)
            detail(lo, again, local)
            local.finish()
            if len(report.problems) == found and leaves is not None:
                _name_modified(lo, hi, again)
        if state["last_good"] == tree.size:
            anchor["tree"] = tree.copy()

    def _check_columns(start: int, batch: Sequence[bytes], modified: set[int]) -> None:
        """Every copied column against its record: the batch at once, row by row only
        where the two differ (a record already found modified is that finding alone)."""
        expected = record_columns(batch)
        if expected == copies:
            return
        for k, (want, have) in enumerate(zip(expected, copies, strict=True)):
            names = differing(want, have) if have and k not in modified else []
            if names:
                report.problems.append(
                    Problem(
                        "column_mismatch",
                        start + k,
                        f"row seq {seqs[k]}: column(s) {', '.join(names)} differ from the "
                        "hashed record (queries selecting on them miss or misplace the event)",
                    )
                )

    def _name_modified(lo: int, hi: int, again: Sequence[bytes]) -> None:
        """Every record in place, yet the signed root fails: the witness's leaf hashes (once
        they rebuild that root) name the records changed with their stored hash."""
        assert leaves is not None
        changed = _locate_with_leaves(anchor["tree"], lo, signed[hi].root, again, leaves(lo, hi))
        if changed is None:
            return
        for index in changed[:MAX_LOCATED]:
            report.problems.append(
                Problem(
                    "modified",
                    index,
                    "record changed together with its stored leaf hash (the witness's leaf "
                    "hash, which rebuilds the signed root, differs)",
                )
            )
        if len(changed) > MAX_LOCATED:
            first = changed[MAX_LOCATED]
            report.problems.append(
                Problem(
                    "modified",
                    first,
                    f"{len(changed) - MAX_LOCATED} more changed record(s) in [{first}, {hi})",
                    end=hi,
                )
            )

    position = 0
    expected_seq = 1
    next_target = targets.pop(0) if targets else -1
    for row in rows:
        seq, record, stored = row[0], row[1], row[2]
        if seq != expected_seq:
            report.problems.append(
                Problem(
                    "deleted", position, f"rows {expected_seq}..{seq - 1} are missing (seq gap)"
                )
            )
        expected_seq = seq + 1
        records.append(record)
        stored_hashes.append(stored)
        seqs.append(seq)
        copies.append(row[3:])
        position += 1
        if position == next_target or len(records) >= _BATCH:
            flush()
            while next_target != -1 and next_target <= position:
                next_target = targets.pop(0) if targets else -1
            if progress is not None:
                progress(position)
    if records:
        flush()
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
    report.problems = tidy(report.problems)
    return report
