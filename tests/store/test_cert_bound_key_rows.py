"""A certificate binding is part of the key: set at creation (service accounts only), kept
by every rotation (the admin's and a vendor-wide containment), and in the snapshot the
gateway authenticates against."""

from __future__ import annotations

from pathlib import Path

import pytest

from garrison.bootstrap import init, open_directory
from garrison.domain import Level, PrincipalKind, VendorStatus
from garrison.errors import BadRequest
from garrison.store import CreatedKey, Directory, load_snapshot

NOW = 1_800_000_000.0
DAY = 86400.0
THUMB = "q3OPdLp1AV5fWsxM2yL3ukc3q8FJIUIj0k8kJ0Zp2iY"


@pytest.fixture
def d(tmp_path: Path) -> Directory:
    dr = open_directory(init(tmp_path / "data").settings, actor="test")
    dr.create_principal(
        "alice", org="internal", kind=PrincipalKind.HUMAN, clearance=Level.INTERNAL, now=NOW
    )
    dr.create_vendor(
        "acme",
        sponsor="alice",
        contract_start=NOW - DAY,
        contract_end=NOW + 30 * DAY,
        networks=["10.1.0.0/16"],
        seat_limit=3,
        ceiling_level=Level.INTERNAL,
        now=NOW,
    )
    dr.set_vendor_status("acme", VendorStatus.ACTIVE, now=NOW)
    for name, org in (("batch", "internal"), ("acme-bot", "acme")):
        dr.create_principal(
            name, org=org, kind=PrincipalKind.SERVICE, clearance=Level.INTERNAL, now=NOW
        )
    return dr


def _bound(d: Directory, key_id: str) -> str | None:
    snap = load_snapshot(d.engine, d.sealer)
    return snap.credentials[key_id].cert_thumbprint


def test_the_binding_is_in_the_snapshot(d: Directory) -> None:
    bound = d.create_key("batch", now=NOW, cert_thumbprint=THUMB)
    plain = d.create_key("batch", now=NOW)
    assert _bound(d, bound.key.key_id) == THUMB
    assert _bound(d, plain.key.key_id) is None


@pytest.mark.parametrize("bad", ["", "x" * 42, "x" * 44, "=" * 43, "é" * 43])
def test_only_a_thumbprint_binds(d: Directory, bad: str) -> None:
    with pytest.raises(BadRequest, match="x5t#S256"):
        d.create_key("batch", now=NOW, cert_thumbprint=bad)


def test_a_person_key_is_never_bound(d: Directory) -> None:
    with pytest.raises(BadRequest, match="only a service account"):
        d.create_key("alice", now=NOW, cert_thumbprint=THUMB)


def test_a_rotation_keeps_the_binding(d: Directory) -> None:
    old = d.create_key("batch", now=NOW, cert_thumbprint=THUMB)
    new = d.rotate_key(old.key.key_id, now=NOW + 1)
    assert _bound(d, new.key.key_id) == THUMB


def test_a_vendor_wide_rotation_keeps_the_binding(d: Directory) -> None:
    old = d.create_key("acme-bot", now=NOW, cert_thumbprint=THUMB)
    issued = d.rotate_vendor_keys("acme", now=NOW + 1, reason="contained")
    (new,) = [k for k in issued if isinstance(k, CreatedKey)]
    assert new.key.key_id != old.key.key_id
    assert _bound(d, new.key.key_id) == THUMB
