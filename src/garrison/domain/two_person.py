"""Which admin changes take two people: pure rules over ``{field: [before, after]}``.

Sensitive: raising a clearance, adding a compartment or a role to a principal (or creating
one with any of them), re-enabling someone who holds a role, any change to a
security-admin, lowering a model's level or removing its compartments, re-pointing a model
or changing its ``auth_style``. ``store.changes`` keeps the proposals.
"""

from __future__ import annotations

from typing import Any

from garrison.domain.levels import Level
from garrison.domain.roles import Role
from garrison.domain.types import Status


def principal_change_is_sensitive(
    changes: dict[str, Any], *, held_roles: frozenset[str] = frozenset()
) -> bool:
    """Raising a clearance, adding a compartment or adding a role takes two admins
    (``changes`` is ``{field: [before, after]}``); so does re-enabling someone who holds a
    role (``held_roles``: before the change), and any change at all to a security-admin."""
    if changes and Role.SECURITY_ADMIN.value in held_roles:
        return True
    if held_roles and "status" in changes and changes["status"][1] == Status.ACTIVE.value:
        return True
    if "clearance" in changes:
        before, after = changes["clearance"]
        if Level.parse(after) > Level.parse(before):
            return True
    for field in ("compartments", "roles"):
        if field in changes:
            before, after = changes[field]
            if set(after) - set(before):
                return True
    return False


def new_principal_is_sensitive(clearance: Level, compartments: Any, roles: Any) -> bool:
    """Creating someone above the internal level, in a compartment or with a role is a raise
    from nothing, and takes two admins like any raise."""
    return clearance > Level.INTERNAL or bool(list(compartments)) or bool(list(roles))


# Fields of a model whose change redirects its traffic (and its upstream credential).
MODEL_ROUTING_FIELDS = ("upstream_url", "upstream_model", "api")


def model_change_is_sensitive(changes: dict[str, Any]) -> bool:
    """Lowering a model's level, removing a compartment, re-pointing it (URL, upstream model,
    API) or changing how its credential is sent (``auth_style``) takes two admins."""
    if any(field in changes for field in (*MODEL_ROUTING_FIELDS, "auth_style")):
        return True
    if "level" in changes:
        before, after = changes["level"]
        if Level.parse(after) < Level.parse(before):
            return True
    if "compartments" in changes:
        before, after = changes["compartments"]
        return bool(set(before) - set(after))
    return False
