"""``garrison model add|update --tls-*``: a model's own CA bundle and client certificate,
set, shown, replaced and removed through the CLI; bad settings refused in one line."""

from __future__ import annotations

from pathlib import Path

from tests.cli.conftest import Served
from tests.support.certs import issue, make_ca


def test_tls_files_are_set_shown_and_cleared(served: Served, tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "pki", "upstream-ca")
    cert, key = tmp_path / "client.pem", tmp_path / "client-key.pem"
    issue(ca, cert, key, name="garrison", client=True)
    served.ok(
        "model", "add", "secure", "--upstream-url", "https://127.0.0.1:8443/v1",
        "--tls-ca-file", str(ca.file),
        "--tls-client-cert-file", str(cert), "--tls-client-key-file", str(key),
    )  # fmt: skip
    models = {m["name"]: m for m in served.as_json("model", "list")}
    assert models["secure"]["tls_ca_file"] == str(ca.file)
    assert models["secure"]["tls_client_cert_file"] == str(cert)
    assert models["secure"]["tls_client_key_file"] == str(key)

    changed = served.as_json("model", "update", "secure", "--no-upstream-tls")
    before, after = changed["changes"]["upstream_tls"]
    assert before["tls_ca_file"] == str(ca.file) and after is None
    models = {m["name"]: m for m in served.as_json("model", "list")}
    assert models["secure"]["tls_ca_file"] is None


def test_bad_tls_settings_are_refused(served: Served, tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "pki")
    url = "https://127.0.0.1:8443/v1"
    line = served.refused("model", "add", "a", "--upstream-url", url, "--tls-ca-file", "ca.pem")
    assert "tls_ca_file: must be an absolute path" in line
    line = served.refused(
        "model", "add", "b", "--upstream-url", url, "--tls-client-cert-file", str(ca.file)
    )
    assert "go together" in line
    missing = tmp_path / "missing.pem"
    line = served.refused("model", "add", "c", "--upstream-url", url, "--tls-ca-file", str(missing))
    assert f"tls_ca_file {missing}: no such file" in line
    line = served.refused(
        "model", "add", "d", "--upstream-url", "http://127.0.0.1:8080/v1",
        "--tls-ca-file", str(ca.file),
    )  # fmt: skip
    assert "https://" in line
