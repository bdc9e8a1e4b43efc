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
    clock: Callable[[], float],
    enforce: Callable[[], None],
) -> Outcome:
    """Run the matching playbooks. Locks come first, each stamped when it is written, and
    ``enforce`` (load the new snapshot) is called as soon as they are; the incident, the
    links and the bookkeeping follow."""
    matching = [pb for pb in playbooks if pb.matches(finding.rule_id, finding.severity)]
    if not matching:
        return Outcome(False, (), False)
    key, principal, vendor = _subjects(finding, facts)
    taken: list[tuple[Directory, dict[str, Any]]] = []
    notify = any("notify" in pb.actions for pb in matching)
    locked = False
    reason = f"alert {alert_id}: {finding.title}"
    targets = {
        "lock_credential": (LockKind.CREDENTIAL, key),
        "lock_principal": (LockKind.PRINCIPAL, principal),
        "lock_vendor": (LockKind.VENDOR, vendor) if vendor else (LockKind.PRINCIPAL, principal),
    }
    lock_ids: list[str] = []
    for pb in matching:
        d = directory_for(f"playbook:{pb.id}")
        for action in pb.actions:
            if action not in targets:
                continue
            kind, ref = targets[action]
            entry: dict[str, Any] = {"playbook": pb.id, "action": action}
            if ref is None:
                entry["skipped"] = "the finding names no such target"
            else:
                try:
                    lock = d.create_lock(kind, ref, reason=reason, now=clock())
                    entry.update(lock_id=lock["id"], kind=kind.value, target=ref)
                    lock_ids.append(lock["id"])
                    locked = True
                except Conflict:
                    entry.update(already_locked=ref, kind=kind.value)
                    locked = True
                except Exception as exc:  # an action failing must not stop the others
                    log.error("playbook %s action %s failed: %s", pb.id, action, exc)
                    entry["error"] = (
                        type(exc).__name__ if not isinstance(exc, GarrisonError) else str(exc)
                    )
            taken.append((d, entry))
    if lock_ids:
        enforce()
    incident_id: str | None = None
    for pb in matching:
        if "open_incident" not in pb.actions:
            continue
        d = directory_for(f"playbook:{pb.id}")
        entry = {"playbook": pb.id, "action": "open_incident"}
        try:
            if incident_id is None:
                now = clock()
                incident_id = d.open_incident(
                    f"{finding.title} ({finding.subject_kind} {finding.subject_id})"[:200],
                    now=now,
                    since=min(finding.at - INCIDENT_LOOKBACK_S, now),
                    vendors=[vendor] if vendor else [],
                    principals=[principal] if principal else [],
                    credentials=[key] if key else [],
                )
                for lock_id in lock_ids:
                    link_lock(d, lock_id, incident_id, now=clock())
            entry["incident_id"] = incident_id
        except Exception as exc:
            log.error("playbook %s could not open an incident: %s", pb.id, exc)
            entry["error"] = str(exc) if isinstance(exc, GarrisonError) else type(exc).__name__
        taken.append((d, entry))
    for d, entry in taken:
        try:
            alerts.update(d, alert_id, now=clock(), action=entry, incident_id=incident_id)
        except Exception as exc:
            log.error("recording playbook action on %s failed: %s", alert_id, exc)
    return Outcome(notify, tuple(entry for _, entry in taken), locked)


def link_lock(d: Directory, lock_id: str, incident_id: str, *, now: float) -> None:
    from garrison.store.locks import link_incident

    link_incident(d, lock_id, incident_id, now=now)
