"""The admin CLI presents a client certificate (``garrison --client-cert/--client-key``,
``GARRISON_CLIENT_CERT``/``GARRISON_CLIENT_KEY``, ``[admin] client_cert_file``/
``client_key_file``), so a service account whose key is bound to a certificate (mTLS) can
use admin commands. Over real TLS; set-up through the admin API before TLS is turned on.
Without the certificate, or with another one, the key is refused with its reason; no
message shows key material."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from garrison.cli.main import cli
from garrison.identity.cert_binding import thumbprint
from tests.support.certs import Ca, der, issue, make_ca
from tests.support.mtls import bound_service_key, denied_reasons, restart_over_tls
from tests.support.world import World, start_world, stop_world

pytestmark = pytest.mark.e2e


@dataclass
class Scene:
    world: World
    server_ca: Ca
    pki: Path
    bound_key: str

    @property
    def admin_url(self) -> str:
        return f"https://127.0.0.1:{self.world.gateway.port}"

    def files(self, name: str) -> tuple[Path, Path]:
        return self.pki / f"{name}.pem", self.pki / f"{name}-key.pem"


@pytest.fixture
async def scene(tmp_path: Path) -> AsyncIterator[Scene]:
    world = await start_world(tmp_path / "w")
    try:
        pki = tmp_path / "pki"
        pki.mkdir()
        clients_ca = make_ca(pki, "clients-ca")
        good = issue(clients_ca, pki / "good.pem", pki / "good-key.pem", name="ops", client=True)
        issue(clients_ca, pki / "other.pem", pki / "other-key.pem", name="ops-b", client=True)
        # A service account holds no admin role (rule service-roles); it uses the admin
        # commands open to every principal (its own keys, access requests).
        bound = await bound_service_key(world, "ops-bot", thumbprint(der(good)))
        server_ca = await restart_over_tls(world, pki, clients_ca)
        yield Scene(world, server_ca, pki, bound["key"])
    finally:
        await stop_world(world)


async def _cli(scene: Scene, *args: str, **env: str) -> Result:
    environment = {
        "GARRISON_ADMIN_URL": scene.admin_url,
        "GARRISON_ADMIN_KEY": scene.bound_key,
        "SSL_CERT_FILE": str(scene.server_ca.file),
        "GARRISON_CONFIG": str(scene.pki / "no-config.toml"),
        "GARRISON_CLIENT_CERT": "",
        "GARRISON_CLIENT_KEY": "",
        **env,
    }
    return await asyncio.to_thread(CliRunner().invoke, cli, list(args), env=environment)


def _no_secrets(scene: Scene, result: Result) -> None:
    shown = result.output
    for name in ("good", "other"):
        _, key = scene.files(name)
        assert key.read_text().splitlines()[1] not in shown
    assert scene.bound_key not in shown
    assert "Traceback" not in shown


async def test_a_bound_service_account_runs_admin_commands_with_its_certificate(
    scene: Scene,
) -> None:
    cert, key = scene.files("good")
    result = await _cli(
        scene,
        "--client-cert",
        str(cert),
        "--client-key",
        str(key),
        "access",
        "list",
        "--mine",
        "--json",
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == []
    _no_secrets(scene, result)


async def test_the_certificate_can_come_from_the_environment(scene: Scene) -> None:
    cert, key = scene.files("good")
    result = await _cli(
        scene,
        "access",
        "list",
        "--mine",
        "--json",
        GARRISON_CLIENT_CERT=str(cert),
        GARRISON_CLIENT_KEY=str(key),
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == []


async def test_the_certificate_can_come_from_the_config(scene: Scene, tmp_path: Path) -> None:
    cert, key = scene.files("good")
    config = tmp_path / "garrison.toml"
    config.write_text(
        f'[storage]\ndatabase_url = "sqlite:///{tmp_path}/x.db"\nkey_dir = "{tmp_path}/keys"\n'
        f'[admin]\nurl = "{scene.admin_url}"\n'
        f'client_cert_file = "{cert}"\nclient_key_file = "{key}"\n'
    )
    result = await _cli(scene, "access", "list", "--mine", "--json", GARRISON_CONFIG=str(config))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == []


@pytest.mark.parametrize(
    ("holder", "reason"), [(None, "credential.cert_missing"), ("other", "credential.cert_mismatch")]
)
async def test_without_its_certificate_the_bound_key_is_refused(
    scene: Scene, holder: str | None, reason: str
) -> None:
    args: list[str] = []
    if holder is not None:
        cert, key = scene.files(holder)
        args = ["--client-cert", str(cert), "--client-key", str(key)]
    result = await _cli(scene, *args, "access", "list", "--mine", "--json")
    assert result.exit_code == 3, result.output  # refused (docs/cli.md, "Exit codes")
    assert [reason] in await denied_reasons(scene.world, "admin.denied")
    _no_secrets(scene, result)


async def test_a_key_file_that_does_not_load_is_named_never_shown(scene: Scene) -> None:
    cert, _ = scene.files("good")
    _, wrong = scene.files("other")  # a real private key, not the certificate's
    result = await _cli(
        scene, "--client-cert", str(cert), "--client-key", str(wrong), "access", "list"
    )
    assert result.exit_code != 0
    assert f"cannot load {cert} with the key in {wrong}" in " ".join(result.output.split())
    _no_secrets(scene, result)
    result = await _cli(scene, "--client-key", str(wrong), "access", "list")
    assert result.exit_code == 2 and "--client-key needs --client-cert" in result.output
