"""The vocabulary of Garrison as plain, frozen types. No I/O here."""

from garrison.domain.levels import Level
from garrison.domain.reasons import Reason
from garrison.domain.secret import Secret
from garrison.domain.types import (
    AuthStyle,
    Credential,
    Model,
    Network,
    Org,
    OrgKind,
    Principal,
    PrincipalKind,
    Status,
    UpstreamApi,
)
from garrison.domain.vendor import (
    TRANSITIONS,
    IllegalTransition,
    VendorStatus,
    VendorTerms,
    check_transition,
)

__all__ = [
    "TRANSITIONS",
    "AuthStyle",
    "Credential",
    "IllegalTransition",
    "Level",
    "Model",
    "Network",
    "Org",
    "OrgKind",
    "Principal",
    "PrincipalKind",
    "Reason",
    "Secret",
    "Status",
    "UpstreamApi",
    "VendorStatus",
    "VendorTerms",
    "check_transition",
]
