"""Playbooks: what happens when an alert is raised. Actions are directory writes made with
the playbook as actor (``playbook:<id>``), so every one is an audit event naming it:

* ``open_incident`` — an incident on the finding's subjects, the alert attached;
* ``lock_credential`` / ``lock_principal`` — a lock on the key or the person;
* ``lock_vendor`` — a lock on the principal's vendor (for an internal principal, the
  principal instead: a playbook never locks the internal org);
* ``notify`` — send the alert to the sinks whatever its severity.

The incident is opened first so that the locks are linked to it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from garrison.detect.observation import Finding
from garrison.detect.rules import Playbook
from garrison.domain.locks import LockKind
from garrison.errors import Conflict, GarrisonError
from garrison.store import Directory, alerts
from garrison.store.snapshot import Snapshot

log = logging.getLogger("garrison.alerts")

# How far before the first hostile event an incident opened by a playbook starts looking.
INCIDENT_LOOKBACK_S = 24 * 3600.0


@dataclass(frozen=True, slots=True)
class Outcome:
    notify: bool
    actions: tuple[dict[str, Any], ...]
    locked: bool


def _subjects(finding: Finding, facts: Snapshot) -> tuple[str | None, str | None, str | None]:
    """(credential id, principal id, vendor org id) the finding is about, as far as known."""
    credential = facts.credentials.get(finding.credential_id or "")
    key = credential.id if credential is not None else None
    principal_id = finding.principal_id or (credential.principal_id if credential else None)
    principal = facts.principals.get(principal_id or "")
    org = facts.orgs.get(principal.org_id) if principal is not None else None
    vendor = org.id if org is not None and org.vendor is not None else None
    return key, principal.id if principal is not None else None, vendor


def run(
    playbooks: tuple[Playbook, ...],
    finding: Finding,
    alert_id: str,
    facts: Snapshot,
    directory_for: Callable[[str], Directory],
    now: float,
) -> Outcome:
    matching = [pb for pb in playbooks if pb.matches(finding.rule_id, finding.severity)]
    if not matching:
        return Outcome(False, (), False)
    key, principal, vendor = _subjects(finding, facts)
    taken: list[dict[str, Any]] = []
    notify = False
    locked = False
    incident_id: str | None = None
    reason = f"alert {alert_id}: {finding.title}"
    for pb in matching:
        d = directory_for(f"playbook:{pb.id}")
        ordered = sorted(pb.actions, key=lambda a: a != "open_incident")
        for action in ordered:
            try:
                if action == "notify":
                    notify = True
                    continue
                if action == "open_incident":
                    if incident_id is None:
                        incident_id = d.open_incident(
                            f"{finding.title} ({finding.subject_kind} {finding.subject_id})"[:200],
                            now=now,
                            since=min(finding.at - INCIDENT_LOOKBACK_S, now),
                            vendors=[vendor] if vendor else [],
                            principals=[principal] if principal else [],
                            credentials=[key] if key else [],
                        )
                    result: dict[str, Any] = {"incident_id": incident_id}
                else:
                    target = {
                        "lock_credential": (LockKind.CREDENTIAL, key),
                        "lock_principal": (LockKind.PRINCIPAL, principal),
                        "lock_vendor": (
                            (LockKind.VENDOR, vendor) if vendor else (LockKind.PRINCIPAL, principal)
                        ),
                    }[action]
                    kind, ref = target
                    if ref is None:
                        result = {"skipped": "the finding names no such target"}
                    else:
                        try:
                            lock = d.create_lock(
                                kind, ref, reason=reason, now=now, incident=incident_id
                            )
                            result = {"lock_id": lock["id"], "kind": kind.value, "target": ref}
                            locked = True
                        except Conflict:
                            result = {"already_locked": ref, "kind": kind.value}
                            locked = True
                entry = {"playbook": pb.id, "action": action, **result}
                alerts.update(d, alert_id, now=now, action=entry, incident_id=incident_id)
                taken.append(entry)
            except GarrisonError as exc:  # an action failing must not stop the others
                log.error("playbook %s action %s failed: %s", pb.id, action, exc)
                taken.append({"playbook": pb.id, "action": action, "error": str(exc)})
    return Outcome(notify, tuple(taken), locked)
