"""What detectors read: one audit event reduced to the fields they use, and what they emit.

An ``Obs`` is built from an in-memory ``AuditEvent`` (the live stream: its typed payload)
or from a stored record (catching up after falling behind: its data read back into the same
payload, ``garrison.audit.payloads.payload_of``); either way detectors see the same fields.
"""

from __future__ import annotations

import enum
import functools
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from garrison.audit.events import AuditEvent, EventFacts
from garrison.audit.payloads import payload_of
from garrison.domain.networks import parse_address


class Severity(enum.IntEnum):
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4

    @classmethod
    def parse(cls, text: str) -> Severity:
        try:
            return cls[text.strip().upper()]
        except KeyError:
            names = ", ".join(s.name.lower() for s in cls)
            raise ValueError(f"unknown level {text!r} (expected one of: {names})") from None

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class Obs:
    index: int  # the event's leaf index in the audit log (-1 when unknown)
    name: str
    at: float
    principal_id: str | None
    credential_id: str | None
    model: str | None
    org_id: str | None = None
    address: str | None = None
    status: int | None = None
    reasons: tuple[str, ...] = ()
    tokens_in: int = 0
    tokens_out: int = 0
    # The public id of a key that did not authenticate (unknown id, wrong secret, revoked).
    presented_key_id: str | None = None
    # Content rules that matched the request's prompt in flight (rule ids; never the text).
    content_flags: tuple[str, ...] = ()
    outcome: str | None = None

    @property
    def key(self) -> str | None:
        """The key this event is about, whether or not it authenticated."""
        return self.credential_id or self.presented_key_id

    @classmethod
    def of(
        cls,
        index: int,
        name: str,
        at: float,
        top: Mapping[str, Any],
        facts: EventFacts,
    ) -> Obs:
        """An observation from a record's top-level fields and its typed payload."""
        return cls._made(
            index,
            name,
            at,
            top.get("principal_id"),
            top.get("credential_id"),
            top.get("model"),
            facts,
        )

    @classmethod
    def from_event(cls, index: int, event: AuditEvent) -> Obs:
        facts = event.payload
        if facts is None:  # built with a data dictionary: read as its stored record would be
            facts = payload_of(event.name.value, event.data)
        return cls._made(
            index,
            event.name.value,
            event.at,
            event.principal_id,
            event.credential_id,
            event.model,
            facts,
        )

    @classmethod
    def _made(
        cls,
        index: int,
        name: str,
        at: float,
        principal_id: str | None,
        credential_id: str | None,
        model: str | None,
        facts: EventFacts,
    ) -> Obs:
        return cls(
            index,
            name,
            at,
            principal_id,
            credential_id,
            model,
            facts.org_id,
            facts.client_address,
            facts.status,
            facts.reasons,
            facts.tokens_in or 0,
            facts.tokens_out or 0,
            facts.presented_key_id,
            facts.content_flags,
            facts.outcome,
        )

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Obs:
        name = str(record["name"])
        return cls.of(
            int(record.get("i", -1)),
            name,
            float(record["at"]),
            record,
            payload_of(name, record.get("data") or {}),
        )


@dataclass(frozen=True, slots=True)
class Finding:
    rule_id: str
    title: str
    severity: Severity
    # What the finding is about: "credential", "principal", "vendor", "address", "model".
    subject_kind: str
    subject_id: str
    reason: str  # a short code, e.g. "credential.multi_network"
    at: float
    evidence: tuple[int, ...] = ()  # leaf indices of the events that show it
    data: dict[str, Any] = field(default_factory=dict)
    # The principal and vendor involved, when known (for playbooks and incidents).
    principal_id: str | None = None
    org_id: str | None = None
    credential_id: str | None = None


# Addresses whose network is remembered: parsing one costs ~9 µs, and a deployment's callers
# come from far fewer addresses than this (the bound caps memory).
NETWORK_CACHE = 65536


@functools.lru_cache(maxsize=NETWORK_CACHE)
def network_of(address: str, prefix_v4: int, prefix_v6: int) -> str | None:
    """The network an address belongs to at the given granularity (e.g. its /24)."""
    try:
        ip = parse_address(address)
    except ValueError:
        return None
    prefix = prefix_v4 if ip.version == 4 else prefix_v6
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))
