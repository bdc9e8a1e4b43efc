"""Admin roles a principal may hold (what each may do: ``garrison.admin.authz``)."""

from __future__ import annotations

import enum


class Role(enum.StrEnum):
    SECURITY_ADMIN = "security-admin"
    AUDITOR = "auditor"
    VENDOR_MANAGER = "vendor-manager"
    APPROVER = "approver"


# The only role a vendor's own people may hold (managing their own vendor's seats).
VENDOR_ROLES = frozenset({Role.VENDOR_MANAGER})
