"""The access rule of the data plane: clearance dominance, deny by default.

A principal may use a model only when its clearance level is at least the model's level and
its compartments include every one of the model's. The Cedar engine (a later issue) replaces
this function behind the same signature; this stays as the reference model it is checked
against.
"""

from __future__ import annotations

from dataclasses import dataclass

from garrison.domain import Model, Principal, Reason, VendorTerms


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reasons: tuple[Reason, ...]


ALLOW = Decision(True, (Reason.ALLOWED,))


def decide(principal: Principal, model: Model, vendor: VendorTerms | None = None) -> Decision:
    """``vendor``: the terms of the principal's vendor, whose ceiling no clearance exceeds."""
    reasons: list[Reason] = []
    if vendor is not None and not vendor.ceiling_allows(model.level, model.compartments):
        reasons.append(Reason.VENDOR_CEILING)
    if principal.clearance < model.level:
        reasons.append(Reason.CLEARANCE_LEVEL)
    if not model.compartments <= principal.compartments:
        reasons.append(Reason.CLEARANCE_COMPARTMENT)
    if reasons:
        return Decision(False, tuple(reasons))
    return ALLOW
