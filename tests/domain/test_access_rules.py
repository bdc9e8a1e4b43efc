"""Just-in-time access rules (pure; no I/O): the lifecycle of a request, when a set of
approvals is enough, and the instants a grant covers.

    pending ──▶ approved | denied | cancelled | expired      (every other step is refused)

Approvals for a critical model: two distinct approvers, at least one internal, and for a
vendor's principal the vendor's sponsor among them. A grant covers [starts_at, expires_at).
"""

from __future__ import annotations

import itertools
import math

import pytest

from garrison.domain import Level
from garrison.domain.access import (
    ACCESS_REQUEST_TTL_S,
    ACCESS_TRANSITIONS,
    CRITICAL_APPROVALS,
    GRANT_MAX_DURATION_S,
    AccessStatus,
    Approver,
    Grant,
    IllegalAccessTransition,
    approvals_satisfied,
    check_access_transition,
)
from garrison.errors import BadRequest

NOW = 1_800_000_000.0
HOUR = 3600.0

# ── constants ────────────────────────────────────────────────────────────────────────────


def test_the_documented_limits() -> None:
    assert ACCESS_REQUEST_TTL_S == 1 * HOUR
    assert dict(GRANT_MAX_DURATION_S) == {Level.CRITICAL: 8 * HOUR}
    assert CRITICAL_APPROVALS == 2


# ── the lifecycle ────────────────────────────────────────────────────────────────────────
ALLOWED = {
    (AccessStatus.PENDING, AccessStatus.APPROVED),
    (AccessStatus.PENDING, AccessStatus.DENIED),
    (AccessStatus.PENDING, AccessStatus.CANCELLED),
    (AccessStatus.PENDING, AccessStatus.EXPIRED),
}
ALL_PAIRS = list(itertools.product(AccessStatus, AccessStatus))


def test_the_table_covers_every_status_and_only_pending_moves() -> None:
    assert set(ACCESS_TRANSITIONS) == set(AccessStatus)
    assert {(a, b) for a, targets in ACCESS_TRANSITIONS.items() for b in targets} == ALLOWED
    terminal = [s for s in AccessStatus if not ACCESS_TRANSITIONS[s]]
    assert set(terminal) == set(AccessStatus) - {AccessStatus.PENDING}


@pytest.mark.parametrize(("current", "target"), sorted(ALLOWED), ids=str)
def test_a_pending_request_may_be_decided_every_way(
    current: AccessStatus, target: AccessStatus
) -> None:
    check_access_transition(current, target)  # no exception


@pytest.mark.parametrize(
    ("current", "target"), [pair for pair in ALL_PAIRS if pair not in ALLOWED], ids=str
)
def test_every_other_step_is_refused_naming_the_rule(
    current: AccessStatus, target: AccessStatus
) -> None:
    with pytest.raises(IllegalAccessTransition) as caught:
        check_access_transition(current, target)
    assert isinstance(caught.value, BadRequest)
    assert caught.value.code == "illegal_transition"
    message = str(caught.value)
    assert "access-lifecycle" in message
    assert current.value in message and target.value in message


def test_statuses_are_their_stored_strings() -> None:
    assert {s.value for s in AccessStatus} == {
        "pending",
        "approved",
        "denied",
        "cancelled",
        "expired",
    }


# ── when approvals are enough ────────────────────────────────────────────────────────────
A = Approver("prn_a", org_internal=True)
B = Approver("prn_b", org_internal=True)
S = Approver("prn_sponsor", org_internal=True)  # the vendor's sponsor (internal, as usual)
X = Approver("prn_x", org_internal=False)  # an approver outside the internal org
Y = Approver("prn_y", org_internal=False)
S_OUT = Approver("prn_sponsor", org_internal=False)  # the sponsor, not counted as internal

TRUTH_TABLE: list[tuple[str, list[Approver], str | None, bool]] = [
    # (case, approvers, vendor sponsor, enough?)
    ("nobody", [], None, False),
    ("one internal approver", [A], None, False),
    ("the same approver twice", [A, A], None, False),
    ("the same approver three times", [A, A, A], None, False),
    ("two distinct internal approvers", [A, B], None, True),
    ("three distinct internal approvers", [A, B, S], None, True),
    ("one internal and one outside", [A, X], None, True),
    ("one outside and one internal", [X, A], None, True),
    ("two outside approvers", [X, Y], None, False),
    ("the same id, once internal once not", [X, Approver("prn_x", True)], None, False),
    # a vendor principal's request: the sponsor must be among them
    ("vendor: two internal, sponsor absent", [A, B], S.id, False),
    ("vendor: sponsor and an internal approver", [S, A], S.id, True),
    ("vendor: internal approver then sponsor", [A, S], S.id, True),
    ("vendor: sponsor twice", [S, S], S.id, False),
    ("vendor: sponsor alone", [S], S.id, False),
    ("vendor: sponsor (outside) and an outsider", [S_OUT, X], S.id, False),
    ("vendor: sponsor (outside) and an internal approver", [S_OUT, A], S.id, True),
    ("vendor: three approvers, sponsor last", [A, B, S], S.id, True),
    ("vendor: three approvers, no sponsor", [A, B, X], S.id, False),
]


@pytest.mark.parametrize(
    ("approvers", "sponsor", "enough"),
    [c[1:] for c in TRUTH_TABLE],
    ids=[c[0] for c in TRUTH_TABLE],
)
def test_approvals_truth_table(
    approvers: list[Approver], sponsor: str | None, enough: bool
) -> None:
    assert approvals_satisfied(approvers, vendor_sponsor=sponsor) is enough


def test_the_default_need_is_the_critical_count() -> None:
    assert approvals_satisfied([A, B], vendor_sponsor=None) is approvals_satisfied(
        [A, B], vendor_sponsor=None, needed=CRITICAL_APPROVALS
    )


@pytest.mark.parametrize(
    ("approvers", "needed", "enough"),
    [
        ([A], 1, True),
        ([X], 1, False),  # one is enough only if it is internal
        ([A, B], 3, False),
        ([A, B, A], 3, False),
        ([A, B, X], 3, True),
        ([X, Y, Approver("prn_z", False)], 3, False),
    ],
    ids=["one-of-one", "one-outsider", "two-of-three", "dup-of-three", "three", "no-internal"],
)
def test_other_counts(approvers: list[Approver], needed: int, enough: bool) -> None:
    assert approvals_satisfied(approvers, vendor_sponsor=None, needed=needed) is enough


POOL = (A, B, S, X, Y, S_OUT)


@pytest.mark.parametrize("sponsor", [None, S.id], ids=["internal-requester", "vendor-requester"])
def test_order_never_matters_and_repeats_never_help(sponsor: str | None) -> None:
    """Over every list of up to three approvers from the pool: any order gives the same
    answer, and repeating an approver never turns a refusal into enough."""
    for size in range(4):
        for approvers in itertools.product(POOL, repeat=size):
            answer = approvals_satisfied(list(approvers), vendor_sponsor=sponsor)
            for order in itertools.permutations(approvers):
                assert approvals_satisfied(list(order), vendor_sponsor=sponsor) is answer
            if not answer:
                for extra in approvers:
                    repeated = [*approvers, extra]
                    assert approvals_satisfied(repeated, vendor_sponsor=sponsor) is False


def test_enough_means_every_rule_holds() -> None:
    """An independent statement of the rule, checked over every list of up to four."""
    for size in range(5):
        for approvers in itertools.product(POOL, repeat=size):
            for sponsor in (None, S.id):
                ids = {a.id for a in approvers}
                expected = (
                    len(ids) >= CRITICAL_APPROVALS
                    and any(a.org_internal for a in approvers)
                    and (sponsor is None or sponsor in ids)
                )
                got = approvals_satisfied(list(approvers), vendor_sponsor=sponsor)
                assert got is expected, (approvers, sponsor)


# ── the instants a grant covers ──────────────────────────────────────────────────────────
GRANT = Grant("gnt_1", "prn_a", "mdl_1", starts_at=NOW, expires_at=NOW + 2 * HOUR)


@pytest.mark.parametrize(
    ("at", "active"),
    [
        (NOW - HOUR, False),
        (math.nextafter(NOW, -math.inf), False),  # just before it starts
        (NOW, True),  # the start is covered
        (math.nextafter(NOW, math.inf), True),
        (NOW + HOUR, True),
        (math.nextafter(NOW + 2 * HOUR, -math.inf), True),  # the last instant
        (NOW + 2 * HOUR, False),  # the end is not
        (NOW + 3 * HOUR, False),
    ],
    ids=["before", "just-before", "start", "just-after-start", "middle", "last", "end", "after"],
)
def test_grant_active_boundaries(at: float, active: bool) -> None:
    assert GRANT.active(at) is active


def test_an_empty_window_covers_nothing() -> None:
    empty = Grant("gnt_0", "prn_a", "mdl_1", starts_at=NOW, expires_at=NOW)
    assert not any(empty.active(t) for t in (NOW - 1, NOW, NOW + 1))


def test_a_grant_is_immutable() -> None:
    with pytest.raises(AttributeError):
        GRANT.expires_at = NOW + 100 * HOUR  # type: ignore[misc]
