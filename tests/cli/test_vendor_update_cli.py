"""`garrison vendor update` from the command line, through the admin API."""

from __future__ import annotations

import json
import time

import pytest

from garrison.domain import Level, PrincipalKind, VendorStatus
from tests.cli.conftest import Served

pytestmark = pytest.mark.e2e


def test_vendor_update_changes_terms_and_refuses_narrowing_with_a_clear_line(
    served: Served,
) -> None:
    d, now = served.directory, time.time()
    d.create_vendor(
        "acme",
        sponsor="admin",
        contract_start=now,
        contract_end=now + 365 * 86400,
        networks=["10.1.0.0/16"],
        seat_limit=2,
        ceiling_level=Level.INTERNAL,
        now=now,
    )
    d.set_vendor_status("acme", VendorStatus.ACTIVE, now=now)
    d.create_principal(
        "vic", org="acme", kind=PrincipalKind.HUMAN, clearance=Level.INTERNAL, now=now
    )
    d.create_key("vic", now=now)  # a live key inside 10.1.0.0/16

    err = served.refused("vendor", "update", "acme", "--network", "10.9.0.0/16")
    assert "rule vendor-networks" in err
    assert json.loads(served.query("SELECT networks FROM orgs WHERE name = 'acme'")[0][0]) == [
        "10.1.0.0/16"
    ]
    done = served.run("vendor", "update", "acme", "--seats", "5", "--agreement", "MSA-9")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"seat_limit": 5, "agreement_ref": "MSA-9"}
