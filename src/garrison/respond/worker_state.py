"""What the detection worker stores besides its cursor: the engine's state as a bounded,
compressed blob, and the findings whose playbooks and notices are still to run (so that a
worker killed between storing an alert and acting on it does not leave it unacted)."""

from __future__ import annotations

import logging
import zlib
from typing import Any

import orjson

from garrison.detect.base import STATE_SUBJECTS_MAX
from garrison.detect.engine import DetectionEngine
from garrison.detect.observation import Finding, Severity

log = logging.getLogger("garrison.detect")

# The stored state's ceiling (compressed): one row read at every takeover and written about
# once a second. Each detector already keeps at most ``STATE_SUBJECTS_MAX`` subjects; past
# this size the subjects kept are cut by ``STATE_SHRINK`` until it fits (the least recently
# active forgotten first).
STATE_MAX_BYTES = 8 * 1024 * 1024
STATE_SHRINK = 4
# zlib level: state is JSON with many repeated ids; level 1 takes most of the gain for a
# fraction of the CPU of the default.
STATE_ZLIB_LEVEL = 1


def encode_state(
    engine: DetectionEngine,
    *,
    limit: int = STATE_SUBJECTS_MAX,
    max_bytes: int = STATE_MAX_BYTES,
) -> bytes:
    """The engine's state, compressed, at most ``max_bytes`` (subjects cut until it fits)."""
    while True:
        blob = zlib.compress(orjson.dumps(engine.state(limit)), STATE_ZLIB_LEVEL)
        if len(blob) <= max_bytes or limit == 0:
            return blob
        log.warning("detector state over %d bytes: keeping %d subjects", max_bytes, limit)
        limit //= STATE_SHRINK


def decode_state(blob: bytes | None) -> dict[str, Any] | None:
    """The stored state, or ``None`` (none stored, or unreadable: logged, start afresh)."""
    if not blob:
        return None
    try:
        state = orjson.loads(zlib.decompress(blob))
    except (zlib.error, orjson.JSONDecodeError) as exc:
        log.error("stored detector state unreadable (%s): detectors start afresh", exc)
        return None
    return state if isinstance(state, dict) else None


def finding_to_dict(alert_id: str, finding: Finding) -> dict[str, Any]:
    return {
        "alert_id": alert_id,
        "rule_id": finding.rule_id,
        "title": finding.title,
        "severity": int(finding.severity),
        "subject_kind": finding.subject_kind,
        "subject_id": finding.subject_id,
        "reason": finding.reason,
        "at": finding.at,
        "evidence": list(finding.evidence),
        "data": finding.data,
        "principal_id": finding.principal_id,
        "org_id": finding.org_id,
        "credential_id": finding.credential_id,
    }


def finding_from_dict(d: dict[str, Any]) -> tuple[str, Finding]:
    return str(d["alert_id"]), Finding(
        rule_id=d["rule_id"],
        title=d["title"],
        severity=Severity(int(d["severity"])),
        subject_kind=d["subject_kind"],
        subject_id=d["subject_id"],
        reason=d["reason"],
        at=float(d["at"]),
        evidence=tuple(d.get("evidence") or ()),
        data=d.get("data") or {},
        principal_id=d.get("principal_id"),
        org_id=d.get("org_id"),
        credential_id=d.get("credential_id"),
    )
