"""What verification finds: the report, its problems, and the pure rules that tidy them and
read a witness's absence, damage or shortness. Pure (``garrison.audit.verify`` builds the
report; the CLI adds the witness findings)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from garrison.audit.checkpoint import Checkpoint

Row = tuple[int, bytes, bytes | None]  # (seq, record, stored leaf hash)
# A row with its copied columns after the leaf hash (``garrison.audit.columns``: at, name,
# request_id, principal_id, credential_id, model), which the verifier checks too.
IndexedRow = tuple[int, bytes, bytes | None, object, object, object, object, object, object]


@dataclass(frozen=True, slots=True)
class Problem:
    kind: str
    index: int | None
    detail: str
    # Set when the finding covers a range [index, end) rather than naming one index.
    end: int | None = None


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


def tidy(problems: list[Problem]) -> list[Problem]:
    """One line per finding, the most exact first: a failed signed range is dropped when a
    finding inside it already names the index; a shortfall explained by deletions found is
    not also called truncation; the rest is ordered by index."""
    exact = [p for p in problems if p.end is None]
    kept: list[Problem] = []
    seen: set[tuple[str, int | None]] = set()
    deleted = any(p.kind == "deleted" for p in problems)
    for p in problems:
        start, end = p.index, p.end
        if (
            start is not None
            and end is not None
            and any(
                q.index is not None and start <= q.index < end and q.kind != "rewritten"
                for q in exact
            )
        ):
            continue
        if p.kind == "truncated" and deleted:
            continue
        if (p.kind, p.index) in seen:
            continue
        seen.add((p.kind, p.index))
        kept.append(p)
    kept.sort(key=lambda p: p.index if p.index is not None else -1)
    return kept


def witness_findings(
    checkpoints: Sequence[Checkpoint],
    *,
    present: bool,
    copies: Sequence[Checkpoint],
    damaged: Sequence[str] = (),
) -> list[Problem]:
    """What a configured witness says by its absence, damage or shortness.

    A witness receives every checkpoint the database stores, right after the commit: the
    newest one may be missing (published a moment later, or lost to a crash and published
    again at the next start), nothing older may — from the witness's first copy on (a witness
    configured later never saw the older ones, so a witness cut from the head is only seen as
    long as its first copy is the log's first checkpoint). A deleted or emptied witness is a
    finding: it is the copy that makes a replaced log visible."""
    problems: list[Problem] = []
    if checkpoints and not (present and (copies or damaged)):
        problems.append(
            Problem(
                "witness_missing",
                None,
                f"a witness is configured but holds nothing, while the log has "
                f"{len(checkpoints)} checkpoint(s): it was deleted, emptied or never written",
            )
        )
        return problems
    for line in damaged:
        problems.append(Problem("witness_damaged", None, f"not a checkpoint: {line}"))
    sizes = {cp.tree_size for cp in copies}
    # Owed: every checkpoint from the witness's first copy on (a witness configured later
    # never saw the older ones), but the newest.
    first = min(sizes, default=0)
    owed = [size for size in sorted({cp.tree_size for cp in checkpoints})[:-1] if size >= first]
    missing = [size for size in owed if size not in sizes]
    if missing:
        problems.append(
            Problem(
                "witness_behind",
                None,
                f"the witness lacks {len(missing)} checkpoint(s) the log has (sizes "
                f"{missing[0]}…{missing[-1]}): it was truncated or lost writes",
            )
        )
    return problems
