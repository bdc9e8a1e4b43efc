"""``garrison key create SVC --bind-cert client.pem``: the CLI reads the certificate, sends
only its thumbprint (the private key, even in the same file, stays on this machine), and the
listings show the thumbprint."""

from __future__ import annotations

from pathlib import Path

from garrison.domain import PrincipalKind
from garrison.identity.cert_binding import thumbprint
from tests.cli.conftest import Served
from tests.support.certs import der, issue, make_ca


def test_a_key_is_bound_to_the_certificate_file(served: Served, tmp_path: Path) -> None:
    served.make_principal("batch", kind=PrincipalKind.SERVICE, key=False)
    ca = make_ca(tmp_path / "pki", "clients-ca")
    cert_file, key_file = tmp_path / "client.pem", tmp_path / "client-key.pem"
    expected = thumbprint(der(issue(ca, cert_file, key_file, name="batch", client=True)))
    # Certificate and private key in one file, as many tools keep them.
    combined = tmp_path / "combined.pem"
    combined.write_bytes(cert_file.read_bytes() + key_file.read_bytes())

    made = served.as_json("key", "create", "batch", "--bind-cert", str(combined))
    assert made["cert_thumbprint"] == expected
    shown = served.ok("key", "create", "batch", "--bind-cert", str(cert_file))
    assert f"x5t#S256 {expected}" in shown

    listed = served.as_json("key", "list", "--principal", "batch")
    assert [k["cert_thumbprint"] for k in listed] == [expected, expected]
    created = served.wait_for_event(
        "credential.created", lambda e: e["credential_id"] == made["id"]
    )
    assert created["data"]["cert_thumbprint"] == expected
    # The private key never left: not in the audit log, not in what the server keeps.
    secret_line = key_file.read_text().splitlines()[1]
    assert secret_line.encode() not in served.raw_audit()


def test_what_is_not_a_certificate_is_refused_before_any_call(
    served: Served, tmp_path: Path
) -> None:
    served.make_principal("batch", kind=PrincipalKind.SERVICE, key=False)
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    err = served.usage_error("key", "create", "batch", "--bind-cert", str(junk))
    assert "no certificate in it" in err
    err = served.usage_error("key", "create", "--self", "--bind-cert", str(junk))
    assert "--bind-cert is for a service account" in err
    assert served.as_json("key", "list", "--principal", "batch") == []
