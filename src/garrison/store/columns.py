"""How directory values are stored in their columns: sorted JSON lists of strings (networks,
compartments, roles, extra fields) and a vendor's terms on its org row. No queries here."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from garrison.domain import Level, Network, VendorStatus, VendorTerms
from garrison.domain.networks import parse_network
from garrison.domain.request_fields import extra_field_allowed


def json_list(values: Iterable[Any]) -> str:
    """A column's stored form of a set of values: their strings, sorted, as JSON."""
    return orjson.dumps(sorted(str(v) for v in values)).decode()


def parse_networks(text: str) -> tuple[Network, ...]:
    return tuple(parse_network(n) for n in orjson.loads(text))


def parse_compartments(text: str) -> frozenset[str]:
    return frozenset(orjson.loads(text))


def parse_extra_fields(raw: str | None) -> frozenset[str]:
    """The stored list, filtered again: a hand-edited row cannot smuggle a never-forwarded
    field in (and cannot stop the snapshot from loading either)."""
    names = orjson.loads(raw) if raw else []
    return frozenset(n for n in names if isinstance(n, str) and extra_field_allowed(n))


def terms_of(row: Any) -> VendorTerms:
    """The terms stored on an org row (a vendor without a contract is never usable)."""
    return VendorTerms(
        sponsor_id=row.sponsor_id or "",
        contract_start=row.contract_start if row.contract_start is not None else 0.0,
        contract_end=row.contract_end if row.contract_end is not None else 0.0,
        networks=parse_networks(row.networks),
        seat_limit=row.seat_limit or 0,
        ceiling_level=Level(row.ceiling_level if row.ceiling_level is not None else 0),
        ceiling_compartments=parse_compartments(row.ceiling_compartments),
        status=VendorStatus(row.status),
        security_review_at=row.security_review_at,
        agreement_ref=row.agreement_ref,
    )
