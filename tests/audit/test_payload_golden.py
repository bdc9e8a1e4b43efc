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
import socket
import threading
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from garrison import bootstrap
from garrison.audit.events import EventName
from garrison.audit.payloads import payload_of
from garrison.audit.payloads_identity import SessionStarted
from garrison.bootstrap import init, open_directory
from garrison.detect.engine import Verdict
from garrison.detect.observation import Finding, Severity
from garrison.domain import AuthStyle, Level, OrgKind, PrincipalKind, UpstreamApi, VendorStatus
from garrison.domain.access import ACCESS_REQUEST_TTL_S
from garrison.domain.incidents import IncidentStatus
from garrison.domain.locks import LockKind
from garrison.domain.provenance import Provenance
from garrison.respond.monitor import Monitor
from garrison.store import (
    Directory,
    access,
    alerts,
    changes,
    enrollment,
    identity_links,
    invitations,
    locks,
)
from garrison.store.audit_rows import audit_rows

GOLDEN = Path(__file__).with_name("golden_payloads.json")
NOW = 1_800_000_000.0
DAY = 86_400.0
ORIGIN = {"admin": "mallory", "credential_id": "k-1", "client_address": "10.0.0.9"}


def _deterministic_hex(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every id the scenario makes (``new_id``, key ids, codes' ids) is a counter. Only on
    this test's thread: a thread an earlier test in this worker left running (a detection
    worker, a shared-limits replica) that makes an id meanwhile gets a real one and does not
    move the counter."""
    counter = itertools.count(1)
    real, mine = secrets.token_hex, threading.get_ident()

    def token_hex(n: int | None = 32) -> str:
        if threading.get_ident() != mine:
            return real(n)
        return f"{next(counter):0{2 * int(n or 32)}x}"

    monkeypatch.setattr(secrets, "token_hex", token_hex)
    monkeypatch.setattr(socket, "gethostname", lambda: "golden-host")


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
    _access(d)
    _changes(d, admin)
    _enrollment(d, admin, bobs_code.code.reveal())
    _host(d, tmp_path)
    rows = audit_rows()
    with d.engine.connect() as conn:
        found = conn.execute(
            sa.select(rows.c.name, rows.c.record)
            .where((rows.c.at >= NOW) | (rows.c.name == EventName.SYSTEM_INITIALIZED.value))
            .order_by(rows.c.pending, rows.c.seq)
        ).all()
    d.engine.dispose()
    # Paths under the test's own directory differ per run: named by a fixed stand-in.
    where = str(tmp_path).encode()
    return [
        (r.name, orjson.dumps(orjson.loads(r.record)["data"]).replace(where, b"/TMP"))
        for r in found
    ]


def _as(d: Directory, actor: str, origin: dict[str, Any] | None = ORIGIN) -> Directory:
    return Directory(d.engine, actor=actor, pepper=d.pepper, sealer=d.sealer, origin=origin)


def _access(d: Directory) -> None:
    """Just-in-time access: a critical model, a requester and two approvers; a request
    approved twice (approved, then granted) and its grant revoked, one denied, one
    cancelled, one lapsed."""
    d.create_model(
        "crit",
        upstream_url="http://127.0.0.1:9/v1",
        upstream_model="up-crit",
        api=UpstreamApi.OPENAI,
        auth_style=AuthStyle.NONE,
        level=Level.CRITICAL,
        now=NOW + 40,
    )
    asker = d.create_principal(
        "cat", org="internal", kind=PrincipalKind.HUMAN, clearance=Level.CRITICAL, now=NOW + 40
    )
    first, second = (
        d.create_principal(
            name,
            org="internal",
            kind=PrincipalKind.HUMAN,
            clearance=Level.INTERNAL,
            roles=["approver"],
            now=NOW + 40,
        )
        for name in ("apa", "apb")
    )
    cat = _as(d, asker)
    asked = access.request_access(cat, "crit", duration_s=3600.0, reason="INC-7", now=NOW + 41)
    access.approve(_as(d, first), asked["id"], now=NOW + 42)
    granted = access.approve(_as(d, second), asked["id"], now=NOW + 43)
    access.revoke_grant(
        _as(d, second), granted["grant_id"], reason="done early", now=NOW + 44, allowed_all=True
    )
    asked = access.request_access(cat, "crit", duration_s=60.0, reason="again", now=NOW + 45)
    access.deny(_as(d, first), asked["id"], reason="not needed", now=NOW + 46)
    asked = access.request_access(cat, "crit", duration_s=60.0, reason="third", now=NOW + 47)
    access.cancel(cat, asked["id"], now=NOW + 48)
    asked = access.request_access(cat, "crit", duration_s=60.0, reason="late", now=NOW + 49)
    access.approve(_as(d, first), asked["id"], now=NOW + 49 + ACCESS_REQUEST_TTL_S)


def _changes(d: Directory, admin: Directory) -> None:
    """Two-person changes: proposed and denied, proposed and approved, one closed with
    nothing left to change, and a policy set put in force."""
    other = _as(d, "trent")
    denied = changes.propose(admin, "principal-update", "ann", {}, "raise ann", now=NOW + 60)
    changes.deny(other, denied["id"], now=NOW + 61)
    approved = changes.propose(admin, "service-key", "svc", {}, "a key", now=NOW + 62)
    changes.approve_only(other, approved["id"], now=NOW + 63)
    idle = changes.propose(admin, "model-update", "gpt", {}, "lower gpt", now=NOW + 64)
    changes.close_unchanged(other, idle["id"], now=NOW + 65)
    changes.set_policy(other, "policies: []\n", now=NOW + 66, proposed_by="mallory")


def _enrollment(d: Directory, admin: Directory, used_code: str) -> None:
    """Refused redemptions (an unknown code; a used code with a key presented), an
    identity linked by a first sign-in, and a session recorded."""
    with pytest.raises(enrollment.EnrollRefused):
        enrollment.redeem(d, "not-a-code", now=NOW + 70, address="10.9.9.8")
    with pytest.raises(enrollment.EnrollRefused):
        enrollment.redeem(
            d, used_code, now=NOW + 71, address="10.9.9.7", presented_key="gk_0000000000000009"
        )
    d.create_principal(
        "dee", org="internal", kind=PrincipalKind.HUMAN, clearance=Level.INTERNAL, now=NOW + 72
    )
    code = invitations.invite(admin, "dee", now=NOW + 72)
    link = identity_links.redeem_for_link(
        d,
        code.code.reveal(),
        issuer="https://idp.example",
        subject="sub-dee",
        provider="corp",
        may_assert=lambda person, org: True,
        now=NOW + 73,
        address="10.9.9.6",
    )
    session = identity_links.SessionRecord(
        id="ses_golden",
        principal_id=link.principal_id,
        issuer="https://idp.example",
        subject="sub-dee",
        provider="corp",
        jkt="jkt-1",
        amr=("pwd", "mfa"),
        acr=None,
        roles=(),
        issued_at=NOW + 74,
        expires_at=NOW + 974,
        address="10.9.9.6",
    )
    # What the token endpoint (``admin.session_api``) records of an exchange.
    started = SessionStarted(
        client_address="10.9.9.6",
        jkt="jkt-1",
        provider="corp",
        issuer="https://idp.example",
        person="dee@example.com",
        principal_id=link.principal_id,
        session_id="ses_golden",
        amr=["pwd", "mfa"],
        acr=None,
        auth_time=NOW + 70,
        expires_at=NOW + 974,
        roles=["approver"],
        roles_dropped=["security-admin"],
    )
    identity_links.record_session(d.engine, session, request_id="req-1", started=started)


def _host(d: Directory, tmp_path: Path) -> None:
    """The host's events written through the directory: break glass, and the detector's
    rules file loaded, then refused."""
    d.create_principal(
        "root",
        org="internal",
        kind=PrincipalKind.HUMAN,
        clearance=Level.INTERNAL,
        roles=["security-admin"],
        now=NOW + 80,
    )
    bootstrap.recover_admin_key(d, "root", now=NOW + 80)
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES_GOOD)
    monitor = Monitor(
        engine=d.engine,
        directory_for=lambda actor: _as(d, actor, None),
        facts=lambda: None,  # type: ignore[arg-type,return-value]
        after_write=lambda: None,
        rules_path=rules,
        clock=lambda: NOW + 90,
    )
    monitor._load_rules(initial=True)  # what start() does first (no worker thread here)
    rules.write_text(RULES_BAD)
    os.utime(rules, (NOW, NOW))
    monitor._load_rules()  # what the worker does when the file changed


RULES_GOOD = """
rules:
  - id: marker-one
    title: Marker one in a prompt
    level: high
    detector: content
    patterns: ["(?i)purple-elephant"]
"""
RULES_BAD = """
rules:
  - id: marker-three
    title: Marker three in a prompt
    level: high
    detector: content
    patterns: ["(unclosed"]
"""


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


# Written by a running process (the gateway, its admin API, its audit writer and clock), not
# through the directory: ``test_payload_golden_process`` holds the golden bytes of
# ``gateway.*``, ``admin.denied``/``read``, ``session.refused`` (and ``enrollment.refused``
# at the door); ``test_payloads`` those of ``request.*`` and ``ended_elsewhere``.
IN_PROCESS = frozenset(
    {
        EventName.REQUEST_ALLOWED,
        EventName.REQUEST_DENIED,
        EventName.REQUEST_COMPLETED,
        EventName.GATEWAY_STARTED,
        EventName.GATEWAY_STOPPED,
        EventName.CLOCK_JUMPED,
        EventName.CLOCK_AGREED,
        EventName.AUDIT_RECOVERED,
        EventName.ADMIN_DENIED,
        EventName.ADMIN_READ,
        EventName.ADMIN_FAILED,
        EventName.SESSION_REFUSED,
    }
)


def test_the_golden_records_name_every_event_written_through_the_directory() -> None:
    names = {name for name, _ in _golden()}
    assert set(EventName) - IN_PROCESS <= names


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
