"""Who may do what on the admin API: the permission table, vendor-manager scopes and the
decisions ``authorize`` takes. Pure: values are built here, no servers."""

from __future__ import annotations

import ipaddress

import pytest

from garrison.admin.authz import (
    PERMISSIONS,
    SELF_FORBIDDEN,
    Action,
    Reach,
    authorize,
    reach,
    roles_of,
    scope_of,
)
from garrison.domain import (
    Level,
    Org,
    OrgKind,
    Principal,
    PrincipalKind,
    Reason,
    Status,
    VendorStatus,
    VendorTerms,
)
from garrison.domain.roles import Role

INTERNAL = "org_internal"
ACME = "org_acme"  # a vendor sponsored by the internal vendor-manager
BETA = "org_beta"  # a vendor sponsored by someone else
GAMMA = "org_gamma"  # another vendor sponsored by someone else

# Reading actions, by their name (the table may grow: a new "read-..." action is a read).
READS = frozenset(a for a in Action if a.value.startswith("read"))
# What a vendor-manager does in their scope (at least this, always scoped).
VENDOR_MANAGER_ACTIONS = frozenset(
    {
        Action.READ,
        Action.SUSPEND_VENDOR,
        Action.CREATE_PRINCIPAL,
        Action.SET_PRINCIPAL_STATUS,
        Action.CREATE_KEY,
        Action.REVOKE_KEY,
        Action.ROTATE_KEY,
    }
)
# ...and what is never theirs, in scope or not.
NOT_FOR_VENDOR_MANAGERS = frozenset(
    {
        Action.READ_MODELS,
        Action.CREATE_ORG,
        Action.CREATE_VENDOR,
        Action.UPDATE_VENDOR,
        Action.ACTIVATE_VENDOR,
        Action.OFFBOARD_VENDOR,
        Action.SET_PRINCIPAL_ACCESS,
        Action.CREATE_CANARY,
        Action.WRITE_MODEL,
    }
)


def terms(sponsor_id: str) -> VendorTerms:
    return VendorTerms(
        sponsor_id=sponsor_id,
        contract_start=0.0,
        contract_end=4_000_000_000.0,
        networks=(ipaddress.ip_network("127.0.0.0/8"),),
        seat_limit=10,
        ceiling_level=Level.INTERNAL,
        ceiling_compartments=frozenset(),
        status=VendorStatus.ACTIVE,
    )


def person(
    pid: str, org_id: str = INTERNAL, roles: frozenset[str] | set[str] = frozenset()
) -> Principal:
    return Principal(
        id=pid,
        name=pid.removeprefix("prn_"),
        org_id=org_id,
        kind=PrincipalKind.HUMAN,
        clearance=Level.INTERNAL,
        compartments=frozenset(),
        status=Status.ACTIVE,
        roles=frozenset(roles),
    )


ORGS: dict[str, Org] = {
    INTERNAL: Org(INTERNAL, "internal", OrgKind.INTERNAL),
    ACME: Org(ACME, "acme", OrgKind.VENDOR, terms("prn_vm_int")),
    BETA: Org(BETA, "beta", OrgKind.VENDOR, terms("prn_secadmin")),
    GAMMA: Org(GAMMA, "gamma", OrgKind.VENDOR, terms("prn_secadmin")),
}

SECADMIN = person("prn_secadmin", roles={"security-admin"})
AUDITOR = person("prn_auditor", roles={"auditor"})
APPROVER = person("prn_approver", roles={"approver"})
NOBODY = person("prn_nobody")
VM_INT = person("prn_vm_int", roles={"vendor-manager"})  # internal, sponsors acme
VM_INT_NONE = person("prn_vm_lonely", roles={"vendor-manager"})  # internal, sponsors nothing
VM_BETA = person("prn_vm_beta", org_id=BETA, roles={"vendor-manager"})  # a beta employee


# ── the permission table ─────────────────────────────────────────────────────────────────
def test_every_role_has_a_row_and_every_reach_is_known() -> None:
    assert set(PERMISSIONS) == set(Role)
    for row in PERMISSIONS.values():
        assert set(row) <= set(Action)
        assert set(row.values()) <= set(Reach)


# Approving access is the approver role's alone (a security-admin who approves holds it too).
APPROVER_ONLY = frozenset({Action.APPROVE_ACCESS})
APPROVER_ACTIONS = frozenset({Action.READ_ACCESS, Action.APPROVE_ACCESS, Action.REVOKE_GRANT})


def test_security_admin_may_do_everything_everywhere() -> None:
    assert PERMISSIONS[Role.SECURITY_ADMIN] == {
        a: Reach.ALL for a in Action if a not in APPROVER_ONLY
    }
    assert not reach(SECADMIN, Action.APPROVE_ACCESS, frozenset()).allowed
    for action in set(Action) - APPROVER_ONLY:
        decision = reach(SECADMIN, action, frozenset())
        assert decision.allowed, action
        assert decision.reason is Reason.ALLOWED
        assert decision.orgs is None  # every org


def test_auditor_reads_everything_and_changes_nothing() -> None:
    assert PERMISSIONS[Role.AUDITOR] == {a: Reach.ALL for a in READS}
    for action in Action:
        decision = reach(AUDITOR, action, frozenset())
        if action in READS:
            assert decision.allowed and decision.orgs is None, action
        else:
            assert not decision.allowed, action
            assert decision.reason is Reason.ADMIN_ROLE


def test_approver_may_only_decide_access() -> None:
    assert PERMISSIONS[Role.APPROVER] == {a: Reach.ALL for a in APPROVER_ACTIONS}
    for action in Action:
        decision = reach(APPROVER, action, frozenset())
        if action in APPROVER_ACTIONS:
            assert decision.allowed and decision.orgs is None, action
        else:
            assert not decision.allowed, action
            assert decision.reason is Reason.ADMIN_ROLE


def test_vendor_manager_may_take_only_the_scoped_actions() -> None:
    row = PERMISSIONS[Role.VENDOR_MANAGER]
    assert set(row) >= VENDOR_MANAGER_ACTIONS
    assert not set(row) & NOT_FOR_VENDOR_MANAGERS
    assert set(row.values()) == {Reach.SCOPE}  # never every org
    scope = frozenset({ACME})
    for action in Action:
        decision = reach(VM_INT, action, scope)
        if action in row:
            assert decision.allowed, action
            assert decision.orgs == scope, action
        else:
            assert not decision.allowed, action
            assert decision.reason is Reason.ADMIN_ROLE


@pytest.mark.parametrize("action", sorted(NOT_FOR_VENDOR_MANAGERS))
def test_vendor_manager_is_refused_the_rest_even_in_scope(action: Action) -> None:
    decision = authorize(VM_INT, action, frozenset({ACME}), target_org=ACME)
    assert not decision.allowed
    assert decision.reason is Reason.ADMIN_ROLE


def test_the_widest_reach_of_several_roles_wins() -> None:
    both = person("prn_both", roles={"vendor-manager", "auditor"})
    decision = reach(both, Action.READ, frozenset({ACME}))
    assert decision.allowed and decision.orgs is None  # the auditor reads everything
    # ...but the auditor adds no write: creating a key stays scoped.
    decision = reach(both, Action.CREATE_KEY, frozenset({ACME}))
    assert decision.allowed and decision.orgs == frozenset({ACME})
    mixed = person("prn_mixed", roles={"approver", "auditor"})
    assert not reach(mixed, Action.CREATE_KEY, frozenset()).allowed


def test_unknown_role_strings_are_ignored() -> None:
    odd = person("prn_odd", roles={"root", "superuser", "Security-Admin"})
    assert roles_of(odd) == frozenset()
    decision = reach(odd, Action.READ, frozenset())
    assert not decision.allowed
    assert decision.reason is Reason.ADMIN_NO_ROLE
    assert roles_of(person("prn_x", roles={"auditor", "root"})) == {Role.AUDITOR}


# ── scope_of ─────────────────────────────────────────────────────────────────────────────
def test_scope_of_a_vendor_employee_is_their_own_vendor() -> None:
    assert scope_of(VM_BETA, ORGS) == {BETA}


def test_scope_of_an_internal_vendor_manager_is_the_vendors_they_sponsor() -> None:
    assert scope_of(VM_INT, ORGS) == {ACME}  # never their own (internal) org
    orgs = {**ORGS, GAMMA: Org(GAMMA, "gamma", OrgKind.VENDOR, terms(VM_INT.id))}
    assert scope_of(VM_INT, orgs) == {ACME, GAMMA}


def test_scope_of_a_vendor_employee_includes_what_they_sponsor() -> None:
    # (The directory only lets internal people sponsor; the scope rule itself is a union.)
    orgs = {**ORGS, GAMMA: Org(GAMMA, "gamma", OrgKind.VENDOR, terms(VM_BETA.id))}
    assert scope_of(VM_BETA, orgs) == {BETA, GAMMA}


def test_scope_of_an_internal_vendor_manager_who_sponsors_none_is_empty() -> None:
    assert scope_of(VM_INT_NONE, ORGS) == frozenset()
    for action in VENDOR_MANAGER_ACTIONS:
        for target in (INTERNAL, ACME, BETA, None):
            decision = authorize(VM_INT_NONE, action, frozenset(), target_org=target)
            assert not decision.allowed
            assert decision.reason is Reason.ADMIN_SCOPE


def test_scope_of_needs_the_vendor_manager_role() -> None:
    # A sponsor without the role, and other admins, act on no scope (they have reach or nothing).
    sponsor_only = person("prn_vm_int")  # same id as acme's sponsor, no role
    assert scope_of(sponsor_only, ORGS) == frozenset()
    sponsor_auditor = person("prn_vm_int", roles={"auditor"})
    assert scope_of(sponsor_auditor, ORGS) == frozenset()
    assert scope_of(SECADMIN, ORGS) == frozenset()  # sponsors beta and gamma, but not a VM
    beta_employee = person("prn_someone", org_id=BETA, roles={"approver"})
    assert scope_of(beta_employee, ORGS) == frozenset()


def test_scope_of_an_org_missing_from_the_snapshot_is_empty() -> None:
    ghost = person("prn_ghost", org_id="org_gone", roles={"vendor-manager"})
    assert scope_of(ghost, ORGS) == frozenset()


# ── authorize ────────────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize("action", sorted(VENDOR_MANAGER_ACTIONS))
def test_vendor_manager_acts_in_scope(action: Action) -> None:
    scope = scope_of(VM_INT, ORGS)
    decision = authorize(VM_INT, action, scope, target_org=ACME, target_principal="prn_x")
    assert decision.allowed
    assert decision.reason is Reason.ALLOWED


@pytest.mark.parametrize("action", sorted(VENDOR_MANAGER_ACTIONS))
def test_out_of_scope_and_nonexistent_targets_are_refused_identically(action: Action) -> None:
    scope = scope_of(VM_INT, ORGS)
    elsewhere = authorize(VM_INT, action, scope, target_org=BETA, target_principal="prn_b")
    internal = authorize(VM_INT, action, scope, target_org=INTERNAL, target_principal="prn_i")
    missing = authorize(VM_INT, action, scope, target_org=None, target_principal=None)
    assert elsewhere == internal == missing
    assert not missing.allowed
    assert missing.reason is Reason.ADMIN_SCOPE


def test_all_reaching_admins_learn_a_target_does_not_exist_from_the_directory() -> None:
    # target_org None: allowed here, so that the directory answers "does not exist".
    for admin, action in ((SECADMIN, Action.CREATE_KEY), (AUDITOR, Action.READ)):
        decision = authorize(admin, action, frozenset(), target_org=None)
        assert decision.allowed
        assert decision.orgs is None


def test_security_admin_may_not_change_their_own_access() -> None:
    assert Action.SET_PRINCIPAL_ACCESS in SELF_FORBIDDEN
    own = authorize(
        SECADMIN,
        Action.SET_PRINCIPAL_ACCESS,
        frozenset(),
        target_org=INTERNAL,
        target_principal=SECADMIN.id,
    )
    assert not own.allowed
    assert own.reason is Reason.ADMIN_SELF
    other = authorize(
        SECADMIN,
        Action.SET_PRINCIPAL_ACCESS,
        frozenset(),
        target_org=INTERNAL,
        target_principal=AUDITOR.id,
    )
    assert other.allowed


def test_self_rule_covers_access_only() -> None:
    # Everything else on one's own principal is a normal action (e.g. a status change, which
    # the directory bounds with the last-security-admin rule).
    for action in set(Action) - SELF_FORBIDDEN - APPROVER_ONLY:
        decision = authorize(
            SECADMIN, action, frozenset(), target_org=INTERNAL, target_principal=SECADMIN.id
        )
        assert decision.allowed, action


def test_no_roles_is_refused_before_anything_else() -> None:
    for action in Action:
        decision = authorize(
            NOBODY, action, frozenset({ACME}), target_org=ACME, target_principal=NOBODY.id
        )
        assert not decision.allowed
        assert decision.reason is Reason.ADMIN_NO_ROLE


def test_role_refusal_comes_before_scope_and_self() -> None:
    # An auditor changing their own access: the role lacks it (not "self").
    decision = authorize(
        AUDITOR,
        Action.SET_PRINCIPAL_ACCESS,
        frozenset(),
        target_org=INTERNAL,
        target_principal=AUDITOR.id,
    )
    assert decision.reason is Reason.ADMIN_ROLE
    # A vendor-manager creating a model in a vendor outside their scope: the role lacks it.
    decision = authorize(VM_INT, Action.WRITE_MODEL, frozenset({ACME}), target_org=BETA)
    assert decision.reason is Reason.ADMIN_ROLE


def test_action_without_a_target_for_scoped_admins_is_out_of_scope() -> None:
    # A scoped admin naming nothing gets no "all orgs" pass.
    decision = authorize(VM_INT, Action.CREATE_KEY, frozenset({ACME}))
    assert not decision.allowed
    assert decision.reason is Reason.ADMIN_SCOPE
    assert authorize(SECADMIN, Action.CREATE_CANARY, frozenset()).allowed
