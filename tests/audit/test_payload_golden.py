"""Golden records: the typed payloads write, byte for byte, the ``data`` the directory's
producers wrote before they had payloads (``golden_payloads.json`` was captured from the
dictionaries the producers built by hand). A scenario drives the producers through the
directory's public functions with ids made deterministic, and every record it writes must
match its golden ``data`` bytes: the encoding version is unchanged and the tree hashes the
same bytes.

Regenerate (only when a record is meant to change, with a new encoding version):
``GARRISON_WRITE_GOLDEN=1 pytest tests/audit/test_payload_golden.py``.
"""

from __future__ import annotations

import itertools
import os
import secrets
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from garrison.audit.events import EventName
from garrison.audit.payloads import UNTYPED_YET, payload_of
from garrison.bootstrap import init, open_directory
from garrison.detect.engine import Verdict
from garrison.detect.observation import Finding, Severity
from garrison.domain import AuthStyle, Level, OrgKind, PrincipalKind, UpstreamApi, VendorStatus
from garrison.domain.incidents import IncidentStatus
from garrison.domain.locks import LockKind
from garrison.domain.provenance import Provenance
from garrison.store import Directory, alerts, enrollment, invitations, locks
from garrison.store.audit_rows import audit_rows

GOLDEN = Path(__file__).with_name("golden_payloads.json")
NOW = 1_800_000_000.0
DAY = 86_400.0
ORIGIN = {"admin": "mallory", "credential_id": "k-1", "client_address": "10.0.0.9"}


def _deterministic_hex(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every id the scenario makes (``new_id``, key ids, codes' ids) is a counter."""
    counter = itertools.count(1)
    monkeypatch.setattr(secrets, "token_hex", lambda n=32: f"{next(counter):0{2 * int(n)}x}")


def _scenario(tmp_path: Path) -> list[tuple[str, bytes]]:
    """Drive the directory's producers; the ``(name, data bytes)`` of each record written
    at or after ``NOW``, in the order written."""
    settings = init(tmp_path / "data").settings
    d = open_directory(settings, actor="test")
    admin = Directory(d.engine, actor="mallory", pepper=d.pepper, sealer=d.sealer, origin=ORIGIN)
    d.create_org("research", OrgKind.INTERNAL, now=NOW)
    d.create_principal(
        "ann", org="internal", kind=PrincipalKind.HUMAN, clearance=Level.INTERNAL, now=NOW
    )
    admin.create_principal(
        "sec",
        org="internal",
        kind=PrincipalKind.HUMAN,
        clearance=Level.RESTRICTED,
        compartments=["cyber", "bio"],
        roles=["security-admin"],
        now=NOW,
    )
    d.create_principal(
        "svc",
        org="internal",
        kind=PrincipalKind.SERVICE,
        clearance=Level.INTERNAL,
        owner="ann",
        now=NOW,
    )
    d.update_principal("ann", now=NOW + 1, clearance=Level.RESTRICTED, compartments=["cyber"])
    made = d.create_key("svc", now=NOW + 2, networks=["10.0.0.0/8"], note="ci")
    admin.create_key(
        "svc",
        now=NOW + 2,
        provenance=Provenance.SERVICE,
        cert_thumbprint="A" * 43,
    )
    rotated = d.rotate_key(made.key.key_id, now=NOW + 3, grace_s=60.0, reason="routine")
    d.rotate_key(rotated.key.key_id, now=NOW + 3)
    person_key = d.create_key("ann", now=NOW + 4)
    d.revoke_key(person_key.key.key_id, now=NOW + 4, reason="lost")
    second = d.create_key("ann", now=NOW + 5)
    invitations.rotate_person_key(d, second.key.key_id, now=NOW + 5, reason="suspected")
    invitations.invite(admin, "ann", now=NOW + 6)
    d.create_principal(
        "bob", org="internal", kind=PrincipalKind.HUMAN, clearance=Level.INTERNAL, now=NOW + 6
    )
    bobs = d.create_key("bob", now=NOW + 6)
    bobs_code = invitations.rotate_person_key(
        admin, bobs.key.key_id, now=NOW + 6, reason="rotation"
    )
    assert bobs_code is not None
    d.create_model(
        "gpt",
        upstream_url="http://127.0.0.1:9/v1",
        upstream_model="up-small",
        api=UpstreamApi.OPENAI,
        auth_style=AuthStyle.BEARER,
        level=Level.INTERNAL,
        compartments=["cyber"],
        upstream_key="sk-upstream-1",
        extra_fields=["seed"],
        now=NOW + 7,
    )
    d.create_model(
        "local",
        upstream_url="http://127.0.0.1:9/v1",
        upstream_model="up-local",
        api=UpstreamApi.ANTHROPIC,
        auth_style=AuthStyle.NONE,
        level=Level.PUBLIC,
        now=NOW + 7,
    )
    d.update_model("gpt", now=NOW + 8, upstream_model="up-large", level=Level.RESTRICTED)
    d.reseal_upstream_keys(d.sealer, now=NOW + 8)
    d.create_vendor(
        "acme",
        sponsor="ann",
        contract_start=NOW - DAY,
        contract_end=NOW + 30 * DAY,
        networks=["10.1.0.0/16"],
        seat_limit=3,
        ceiling_level=Level.RESTRICTED,
        ceiling_compartments=["cyber"],
        now=NOW + 9,
    )
    d.set_vendor_status("acme", VendorStatus.ACTIVE, now=NOW + 9)
    d.create_principal(
        "vera",
        org="acme",
        kind=PrincipalKind.SERVICE,
        clearance=Level.INTERNAL,
        owner="ann",
        now=NOW + 10,
    )
    d.create_key("vera", now=NOW + 10)
    d.update_vendor("acme", now=NOW + 11, contract_end=NOW + 5 * DAY, seat_limit=2)
    d.rotate_vendor_keys("acme", now=NOW + 12, reason="contained")
    d.set_vendor_status("acme", VendorStatus.SUSPENDED, now=NOW + 13, reason="review")
    d.set_vendor_status("acme", VendorStatus.OFFBOARDED, now=NOW + 14, reason="ended")
    d.create_vendor(
        "beta",
        sponsor="ann",
        contract_start=NOW - DAY,
        contract_end=NOW + 30 * DAY,
        networks=["10.3.0.0/16"],
        seat_limit=1,
        ceiling_level=Level.INTERNAL,
        security_review_at=NOW + DAY,
        agreement_ref="MSA-7",
        now=NOW + 15,
    )
    d.set_vendor_status("beta", VendorStatus.ACTIVE, now=NOW + 15)
    d.set_vendor_status("beta", VendorStatus.EXPIRED, now=NOW + 16, reason="contract")
    _respond(d, admin)
    enrollment.redeem(d, bobs_code.code.reveal(), now=NOW + 31, address="10.9.9.9")
    rows = audit_rows()
    with d.engine.connect() as conn:
        found = conn.execute(
            sa.select(rows.c.name, rows.c.record)
            .where(rows.c.at >= NOW)
            .order_by(rows.c.pending, rows.c.seq)
        ).all()
    d.engine.dispose()
    return [(r.name, orjson.dumps(orjson.loads(r.record)["data"])) for r in found]


def _respond(d: Directory, admin: Directory) -> None:
    """The responders' producers: locks, alerts and incidents."""
    incident = d.open_incident(
        "keys seen from two networks",
        now=NOW + 20,
        since=NOW,
        principals=["bob"],
        vendors=["acme"],
    )
    d.update_incident(incident, now=NOW + 21, status=IncidentStatus.CONTAINED, note="locked")
    d.update_incident(incident, now=NOW + 21, note="waiting on the vendor")
    lock = d.create_lock(
        LockKind.PRINCIPAL, "bob", reason="suspicious", now=NOW + 22, incident=incident
    )
    d.create_lock(LockKind.MODEL, "gpt", reason="review", now=NOW + 22, ttl_s=600.0)
    d.lift_lock(lock["id"], reason="cleared", now=NOW + 23)
    lockdown = admin.create_lock(LockKind.ALL, "*", reason="drill", now=NOW + 24)
    admin.lift_lock(lockdown["id"], reason="drill over", now=NOW + 24)
    d.lift_lock(lockdown["id"], reason="drill over", now=NOW + 25)
    locks.adopt_emergency_lock(
        d,
        {
            "id": "lck_emergency0001",
            "kind": "principal",
            "target": "prn_0000000000000006",
            "target_name": "ann",
            "reason": "placed while the log was down",
            "created_by": "mallory",
            "created_at": NOW + 26,
            "expires_at": None,
        },
        now=NOW + 27,
    )
    finding = Finding(
        rule_id="credential.multi_network",
        title="a key used from two networks",
        severity=Severity.HIGH,
        subject_kind="principal",
        subject_id="prn_0000000000000006",
        reason="credential.multi_network",
        at=NOW + 27,
        evidence=(3, 5),
        data={"networks": ["10.0.0.0/8", "192.168.0.0/16"]},
        principal_id="prn_0000000000000006",
    )
    alert_id, _ = alerts.record(d, Verdict(finding, "k", True), now=NOW + 28)
    alerts.update(admin, alert_id, now=NOW + 29, status="acked", note="looking")
    alerts.update(d, alert_id, now=NOW + 29, action={"playbook": "lock", "lock_id": "l"})
    alerts.update(d, alert_id, now=NOW + 30, status="resolved")


@pytest.fixture
def written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, bytes]]:
    _deterministic_hex(monkeypatch)
    return _scenario(tmp_path)


def _golden() -> list[tuple[str, bytes]]:
    return [(name, data.encode()) for name, data in orjson.loads(GOLDEN.read_bytes())]


def test_every_record_the_producers_write_is_its_golden_bytes(
    written: list[tuple[str, bytes]],
) -> None:
    if os.environ.get("GARRISON_WRITE_GOLDEN"):
        GOLDEN.write_bytes(
            orjson.dumps([(n, d.decode()) for n, d in written], option=orjson.OPT_INDENT_2) + b"\n"
        )
    assert written == _golden()


def test_the_golden_records_name_every_directory_event() -> None:
    names = {name for name, _ in _golden()}
    typed = set(EventName) - UNTYPED_YET
    directory = {n for n in typed if not n.value.startswith("request.")}
    assert directory <= names


@pytest.mark.parametrize(("name", "data"), _golden(), ids=lambda v: v if isinstance(v, str) else "")
def test_a_golden_record_reads_back_into_its_payload_and_writes_the_same_bytes(
    name: str, data: bytes
) -> None:
    fields: dict[str, Any] = orjson.loads(data)
    origin = fields.pop("origin", None)
    payload = payload_of(name, fields)
    again = payload.as_data()
    if origin is not None:
        again["origin"] = origin
    assert orjson.dumps(again) == data
