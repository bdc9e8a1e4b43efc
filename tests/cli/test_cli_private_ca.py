"""The admin CLI over HTTPS with a private CA: it trusts the bundle ``SSL_CERT_FILE`` names
(docs/operations.md), while proxy variables stay unread (they would receive the admin key)."""

from __future__ import annotations

from pathlib import Path

from tests.cli.conftest import garrison, served_gateway
from tests.support.certs import issue, make_ca


def test_the_cli_trusts_the_private_ca_named_by_ssl_cert_file(tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "pki")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    issue(ca, cert, key)
    key.chmod(0o600)
    for served in served_gateway(tmp_path / "data", tls_cert_file=cert, tls_key_file=key):
        url = f"https://127.0.0.1:{served.gateway.port}"
        config = str(served.config)
        trusted = garrison(
            "--config", config, "whoami", url=url, env={"SSL_CERT_FILE": str(ca.file)}
        )
        assert trusted.returncode == 0, trusted.stderr
        assert "admin" in trusted.stdout
        untrusted = garrison("--config", config, "whoami", url=url, env={"SSL_CERT_FILE": None})
        assert untrusted.returncode != 0
        assert "Traceback" not in untrusted.stderr
        broken = garrison(
            "--config", config, "whoami", url=url, env={"SSL_CERT_FILE": str(tmp_path / "none")}
        )
        assert broken.returncode != 0
        assert "SSL_CERT_FILE" in broken.stderr and "Traceback" not in broken.stderr
