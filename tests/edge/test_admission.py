"""Tests for ``garrison.edge.admission``: the one admission step of both planes
(authenticate → locks), on a mocked request and a hand-built snapshot."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from aiohttp.test_utils import make_mocked_request

from garrison.audit import AuditEvent
from garrison.domain import (
    Credential,
    Level,
    Network,
    Org,
    OrgKind,
    Principal,
    PrincipalKind,
    Reason,
    Status,
)
from garrison.domain.locks import Lock, LockKind, LockSet
from garrison.domain.snapshot import Snapshot
from garrison.edge.admission import Caller, PersonRefusal, admit, admit_person
from garrison.edge.client_address import ForwardedHeader
from garrison.edge.process import ProcessState
from garrison.gateway.limits import GatewayLimits
from garrison.gateway.state import GatewayState
from garrison.identity.keys import issue_key
from garrison.identity.token_auth import TokenAuth
from garrison.policy.engine import PolicyEngine

PEPPER = bytes(range(32))
NOW = 1_700_000_000.0
ADDRESS = ipaddress.ip_address("192.0.2.10")
ISSUED = issue_key(PEPPER)
TOKEN = ISSUED.token.reveal()
ORG = Org(id="o-1", name="us", kind=OrgKind.INTERNAL)
PERSON = Principal(
    id="p-1",
    name="alice",
    org_id=ORG.id,
    kind=PrincipalKind.HUMAN,
    clearance=Level.RESTRICTED,
    compartments=frozenset(),
    status=Status.ACTIVE,
)
KEY = Credential(
    id=ISSUED.key_id,
    principal_id=PERSON.id,
    secret_hash=ISSUED.secret_hash,
    created_at=NOW - 60,
    expires_at=None,
    networks=(),
)


class NoAudit:
    async def append(self, event: AuditEvent) -> None:
        raise AssertionError("admission records nothing itself")

    def append_later(self, event: AuditEvent) -> None:
        raise AssertionError("admission records nothing itself")

    async def integrate(self) -> None:
        raise AssertionError("admission records nothing itself")


@dataclass
class Process:
    """The narrow view of the process, filled by hand."""

    snapshot: Snapshot
    pepper: bytes = PEPPER
    audit: NoAudit = field(default_factory=NoAudit)
    clock: Callable[[], float] = time.time
    policy: PolicyEngine | None = None
    tokens: TokenAuth | None = None
    data_url: str | None = None
    trusted_proxies: tuple[Network, ...] = ()
    forwarded_header: ForwardedHeader = ForwardedHeader.X_FORWARDED_FOR
    limits: GatewayLimits = field(default_factory=GatewayLimits)


def lock(kind: LockKind, target: str) -> Lock:
    network = ipaddress.ip_network(target) if kind is LockKind.NETWORK else None
    return Lock(
        id=f"l-{kind.value}",
        kind=kind,
        target=target,
        reason="test",
        created_by="p-admin",
        created_at=NOW - 1,
        network=network,
    )


def process(*locks: Lock) -> ProcessState:
    snapshot = Snapshot(
        version=1,
        orgs=MappingProxyType({ORG.id: ORG}),
        principals=MappingProxyType({PERSON.id: PERSON}),
        credentials=MappingProxyType({KEY.id: KEY}),
        models=MappingProxyType({}),
        locks=LockSet.build(locks),
    )
    return Process(snapshot)


def caller(state: ProcessState, authorization: str | None, *, include_global: bool) -> Caller:
    headers = {} if authorization is None else {"Authorization": authorization}
    request = make_mocked_request("GET", "/v1/models", headers=headers)
    return admit(request, state, NOW, ADDRESS, include_global=include_global)


def test_the_data_plane_state_is_a_process_state() -> None:
    """What the composition root relies on (mypy checks the assignment)."""
    view: Callable[[GatewayState], ProcessState] = lambda state: state  # noqa: E731
    assert view is not None


def test_a_good_key_is_admitted_and_named() -> None:
    found = caller(process(), f"Bearer {TOKEN}", include_global=True)
    assert found.refusal is None and found.lock is None
    assert found.principal == PERSON
    assert found.credential_id == KEY.id
    assert found.session is None and found.address == ADDRESS


def test_a_lock_on_the_key_person_org_or_network_refuses_as_locked() -> None:
    for kind, target in (
        (LockKind.CREDENTIAL, KEY.id),
        (LockKind.PRINCIPAL, PERSON.id),
        (LockKind.VENDOR, ORG.id),
        (LockKind.NETWORK, "192.0.2.0/24"),
    ):
        found = caller(process(lock(kind, target)), f"Bearer {TOKEN}", include_global=False)
        assert found.refusal is Reason.LOCKED, kind
        assert found.lock is not None and found.lock.kind is kind


def test_a_global_lockdown_covers_the_data_plane_not_the_admin_plane() -> None:
    state = process(lock(LockKind.ALL, "*"))
    assert caller(state, f"Bearer {TOKEN}", include_global=True).refusal is Reason.LOCKED
    assert caller(state, f"Bearer {TOKEN}", include_global=False).refusal is None


def test_a_stranger_is_refused_as_unauthenticated_whatever_the_locks() -> None:
    """Locks are looked at only once the caller is known: a wrong secret from a locked
    network gets the 401 reason, so a stranger learns nothing of the locks."""
    state = process(lock(LockKind.NETWORK, "192.0.2.0/24"), lock(LockKind.ALL, "*"))
    wrong = TOKEN[:-1] + ("A" if TOKEN[-1] != "A" else "B")
    found = caller(state, f"Bearer {wrong}", include_global=True)
    assert found.refusal is Reason.CREDENTIAL_BAD_SECRET and found.lock is None
    assert found.credential_id is None
    missing = caller(state, None, include_global=True)
    assert missing.refusal is Reason.CREDENTIAL_MISSING and missing.lock is None


def test_a_token_where_this_process_takes_none_is_refused() -> None:
    found = caller(process(), "DPoP some.token.here", include_global=True)
    assert found.refusal is Reason.TOKEN_KID_UNKNOWN
    assert found.principal is None and found.lock is None


# ── a person with no credential yet (the sign-in exchange) ───────────────────────────────
def test_a_person_in_standing_and_unlocked_is_admitted_to_sign_in() -> None:
    assert admit_person(process().snapshot, PERSON, NOW, ADDRESS) is None


def test_a_lock_on_the_person_org_or_network_refuses_a_sign_in_as_locked() -> None:
    for kind, target in (
        (LockKind.PRINCIPAL, PERSON.id),
        (LockKind.VENDOR, ORG.id),
        (LockKind.NETWORK, "192.0.2.0/24"),
    ):
        found = admit_person(process(lock(kind, target)).snapshot, PERSON, NOW, ADDRESS)
        assert found is not None and found.reason is Reason.LOCKED, kind
        assert found.lock is not None and found.lock.kind is kind


def test_a_global_lockdown_leaves_sign_in_open_so_admins_can_lift_it() -> None:
    assert admit_person(process(lock(LockKind.ALL, "*")).snapshot, PERSON, NOW, ADDRESS) is None


def test_a_disabled_person_is_refused_before_any_lock_is_named() -> None:
    disabled = replace(PERSON, status=Status.DISABLED)
    found = admit_person(
        process(lock(LockKind.PRINCIPAL, PERSON.id)).snapshot, disabled, NOW, ADDRESS
    )
    assert found == PersonRefusal(Reason.PRINCIPAL_INACTIVE)
