"""Who may do what on the admin API: roles, actions and scopes. Pure: no I/O.

    role             reach   actions
    security-admin   all     everything
    auditor          all     read the directory, the model registry, locks and incidents;
                             change nothing
    vendor-manager   scope   read, add people and service accounts (no roles), enable and
                             disable them, create / revoke / rotate their keys (never a
                             canary: retiring one is a security-admin's), suspend
                             the vendor, lock its keys, people or the vendor itself — in
                             the vendors of their scope only (lifting is for a
                             security-admin)
    approver         all     read, approve and deny access requests; revoke grants
    (anyone)         own     ask for access, list and cancel their own requests, list and
                             give up their own grants

A vendor-manager's scope is their own org when it is a vendor, plus every vendor they
sponsor. Clearances, compartments and roles are changed by a security-admin only, and never
on their own principal (the insider acting alone). A vendor-manager adding someone chooses a
clearance, but the vendor's ceiling (enforced by the directory) bounds it.

Everything not in the table is refused; each refusal carries a reason code.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from garrison.domain import Org, Principal, Reason
from garrison.domain.roles import Role


class Action(enum.StrEnum):
    READ = "read"  # orgs, vendors, principals, keys and reports
    READ_MODELS = "read-models"
    CREATE_ORG = "create-org"
    CREATE_VENDOR = "create-vendor"
    UPDATE_VENDOR = "update-vendor"
    ACTIVATE_VENDOR = "activate-vendor"
    SUSPEND_VENDOR = "suspend-vendor"
    OFFBOARD_VENDOR = "offboard-vendor"
    CREATE_PRINCIPAL = "create-principal"
    SET_PRINCIPAL_STATUS = "set-principal-status"
    SET_PRINCIPAL_ACCESS = "set-principal-access"  # clearance, compartments, roles
    CREATE_KEY = "create-key"
    CREATE_CANARY = "create-canary"
    RETIRE_CANARY = "retire-canary"  # revoke or rotate a canary key (security-admin only)
    REVOKE_KEY = "revoke-key"
    ROTATE_KEY = "rotate-key"
    WRITE_MODEL = "write-model"
    READ_LOCKS = "read-locks"
    LOCK = "lock"  # a credential, principal or vendor
    LOCK_WIDE = "lock-wide"  # a model, a network, everything
    UNLOCK = "unlock"
    READ_INCIDENTS = "read-incidents"
    MANAGE_INCIDENTS = "manage-incidents"
    READ_ACCESS = "read-access"  # every access request and grant (own ones: anyone)
    APPROVE_ACCESS = "approve-access"  # approve or deny access requests
    REVOKE_GRANT = "revoke-grant"  # anyone's grant (own ones: anyone)
    APPROVE_CHANGE = "approve-change"  # the second admin of a two-person change
    READ_POLICY = "read-policy"  # the policy set, explain
    READ_ALERTS = "read-alerts"  # alerts and /metrics
    MANAGE_ALERTS = "manage-alerts"  # acknowledge, resolve
    WRITE_POLICY = "write-policy"  # propose a policy set


class Reach(enum.Enum):
    ALL = "all"
    SCOPE = "scope"


_VENDOR_MANAGER = {
    a: Reach.SCOPE
    for a in (
        Action.READ,
        Action.SUSPEND_VENDOR,
        Action.CREATE_PRINCIPAL,
        Action.SET_PRINCIPAL_STATUS,
        Action.CREATE_KEY,
        Action.REVOKE_KEY,
        Action.ROTATE_KEY,
        Action.LOCK,
    )
}
# Approving access is the approver role's alone: a security-admin who should approve holds
# that role too (the rule: "two distinct approvers holding the approver role").
_APPROVER_ONLY = frozenset({Action.APPROVE_ACCESS})
PERMISSIONS: Mapping[Role, Mapping[Action, Reach]] = {
    Role.SECURITY_ADMIN: {a: Reach.ALL for a in Action if a not in _APPROVER_ONLY},
    Role.AUDITOR: {
        a: Reach.ALL
        for a in (
            Action.READ,
            Action.READ_MODELS,
            Action.READ_LOCKS,
            Action.READ_INCIDENTS,
            Action.READ_ACCESS,
            Action.READ_POLICY,
            Action.READ_ALERTS,
        )
    },
    Role.VENDOR_MANAGER: _VENDOR_MANAGER,
    Role.APPROVER: {
        a: Reach.ALL for a in (Action.READ_ACCESS, Action.APPROVE_ACCESS, Action.REVOKE_GRANT)
    },
}
# Actions on a principal's access that nobody may take on their own principal.
SELF_FORBIDDEN = frozenset({Action.SET_PRINCIPAL_ACCESS})


def roles_of(principal: Principal) -> frozenset[Role]:
    known = {r.value for r in Role}
    return frozenset(Role(r) for r in principal.roles if r in known)


def scope_of(admin: Principal, orgs: Mapping[str, Org]) -> frozenset[str]:
    """The vendor org ids a vendor-manager acts on: their own vendor and those they sponsor."""
    if Role.VENDOR_MANAGER not in roles_of(admin):
        return frozenset()
    own = orgs.get(admin.org_id)
    scope = {admin.org_id} if own is not None and own.vendor is not None else set()
    scope.update(
        org.id
        for org in orgs.values()
        if org.vendor is not None and org.vendor.sponsor_id == admin.id
    )
    return frozenset(scope)


@dataclass(frozen=True, slots=True)
class AdminDecision:
    allowed: bool
    reason: Reason
    # For an allowed read: None means every org; a set means only those orgs.
    orgs: frozenset[str] | None = None


def reach(admin: Principal, action: Action, scope: frozenset[str]) -> AdminDecision:
    """Whether ``admin`` may take ``action`` at all, and over which orgs."""
    roles = roles_of(admin)
    if not roles:
        return AdminDecision(False, Reason.ADMIN_NO_ROLE)
    reaches = {PERMISSIONS[r][action] for r in roles if action in PERMISSIONS[r]}
    if Reach.ALL in reaches:
        return AdminDecision(True, Reason.ALLOWED, None)
    if Reach.SCOPE in reaches:
        return AdminDecision(True, Reason.ALLOWED, scope)
    return AdminDecision(False, Reason.ADMIN_ROLE)


def authorize(
    admin: Principal,
    action: Action,
    scope: frozenset[str],
    *,
    target_org: str | None = None,
    target_principal: str | None = None,
) -> AdminDecision:
    """May ``admin`` take ``action`` on something in ``target_org``?

    ``target_org`` None means the target does not exist: only an admin whose reach is every
    org learns that (the directory then says so); anyone else is refused as out of scope,
    exactly as for a target that exists elsewhere (no oracle).
    """
    decision = reach(admin, action, scope)
    if not decision.allowed:
        return decision
    if action in SELF_FORBIDDEN and target_principal == admin.id:
        return AdminDecision(False, Reason.ADMIN_SELF)
    if decision.orgs is not None and (target_org is None or target_org not in decision.orgs):
        return AdminDecision(False, Reason.ADMIN_SCOPE)
    return decision
