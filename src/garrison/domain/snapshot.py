"""The immutable in-memory view of the directory that the data plane reads: a frozen type.

Building one from the database lives in ``garrison.store.snapshot``; this module only names
the shape, so policy, detection and the planes can read a snapshot without loading the store.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from garrison.domain.access import Grant
from garrison.domain.locks import EMPTY_LOCKS, LockSet
from garrison.domain.types import Credential, Model, Org, Principal


@dataclass(frozen=True, slots=True)
class Snapshot:
    version: int
    orgs: MappingProxyType[str, Org]
    principals: MappingProxyType[str, Principal]
    credentials: MappingProxyType[str, Credential]
    models: MappingProxyType[str, Model]  # by client-facing name
    locks: LockSet = EMPTY_LOCKS  # unlifted locks (expired ones still listed; they check)
    # Unrevoked, unexpired grants by (principal id, model id).
    grants: Mapping[tuple[str, str], tuple[Grant, ...]] = field(
        default_factory=lambda: MappingProxyType({})
    )
    # The organisation's policy set in force (Cedar text) and its version (0: none).
    policy_version: int = 0
    policy_text: str = ""

    def has_grant(self, principal_id: str, model_id: str, now: float) -> bool:
        found = self.grants.get((principal_id, model_id))
        return found is not None and any(g.active(now) for g in found)

    @classmethod
    def empty(cls) -> Snapshot:
        empty: MappingProxyType[str, Any] = MappingProxyType({})
        return cls(0, empty, empty, empty, empty)
