"""Red-team regression: a TLS private key that every local user can read. The gateway's own
key files are refused when others can read them; the listener's TLS key and an upstream's
client key (whoever holds one is the gateway, to its clients or to the upstream) were taken
as they were. Now refused in one line at start and at registration."""

from __future__ import annotations

from pathlib import Path

from tests.cli.conftest import garrison
from tests.cli.test_serve_tls_cli import _config
from tests.support.certs import issue, make_ca


def test_a_listener_key_readable_by_others_stops_the_start(tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "pki")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    issue(ca, cert, key)
    key.chmod(0o644)
    config = _config(tmp_path, f'tls_cert_file = "{cert}"\ntls_key_file = "{key}"\n')
    result = garrison("serve", "--config", str(config))
    assert result.returncode == 2, result.stderr
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert lines == [
        f"error: [gateway] tls_key_file {key}: readable by other users (mode 644); "
        f"run `chmod 600 {key}`"
    ]


async def test_an_upstream_client_key_readable_by_others_is_refused_at_registration(
    tmp_path: Path,
) -> None:
    from tests.support.admin import admin_call
    from tests.support.world import start_world, stop_world

    ca = make_ca(tmp_path / "pki", "client-ca")
    cert, key = tmp_path / "client.pem", tmp_path / "client-key.pem"
    issue(ca, cert, key, name="garrison-gateway", client=True)
    key.chmod(0o604)
    world = await start_world(tmp_path / "w")
    try:
        body = {
            "name": "mtls",
            "upstream_url": "https://127.0.0.1:9/v1",
            "upstream_model": "m",
            "level": "internal",
            "tls_client_cert_file": str(cert),
            "tls_client_key_file": str(key),
        }
        status, answer = await admin_call(world, world.admin_key, "POST", "/models", body)
        assert status == 400, answer
        assert "readable by other users" in answer["error"]["message"]
        key.chmod(0o640)  # a group (ssl-cert) may read it
        status, answer = await admin_call(world, world.admin_key, "POST", "/models", body)
        assert status == 201, answer
    finally:
        await stop_world(world)
