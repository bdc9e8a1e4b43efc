"""The pure rule: only a person's own key (enrolled or self, made by them) approves."""

from __future__ import annotations

from garrison.domain import Credential, Level, Principal, PrincipalKind, Reason, Status
from garrison.domain.provenance import approval_refusal, is_own

PERSON = Principal(
    "p1",
    "dee",
    "org",
    PrincipalKind.HUMAN,
    Level.INTERNAL,
    frozenset(),
    Status.ACTIVE,
    frozenset({"approver"}),
)
BOT = Principal(
    "s1", "bot", "org", PrincipalKind.SERVICE, Level.INTERNAL, frozenset(), Status.ACTIVE
)


def key(provenance: str, created_by: str | None, owner: str = "p1") -> Credential:
    return Credential(
        "k", owner, b"\0" * 32, 0.0, None, (), provenance=provenance, created_by=created_by
    )


def test_only_enrolled_or_self_keys_made_by_the_holder_are_their_own() -> None:
    assert is_own(key("enrolled", "p1"), PERSON)
    assert is_own(key("self", "p1"), PERSON)
    for prov, by in (
        ("service", "admin"),
        ("break-glass", "cli:root@h"),
        ("legacy", "p1"),
        ("legacy", None),
        ("enrolled", "admin"),
        ("self", "admin"),
    ):
        assert not is_own(key(prov, by), PERSON), (prov, by)
    assert not is_own(key("enrolled", "s1", owner="s1"), BOT)  # never a service account


def test_an_approval_from_a_key_the_requester_made_is_refused() -> None:
    assert approval_refusal(key("enrolled", "p1"), PERSON, "p9") is None
    assert approval_refusal(key("service", "p9"), PERSON, "p9") is Reason.APPROVAL_CREDENTIAL
    assert approval_refusal(None, PERSON, "p9") is Reason.APPROVAL_CREDENTIAL
    assert approval_refusal(key("legacy", "p9"), PERSON, "p9") is Reason.APPROVAL_CREDENTIAL
