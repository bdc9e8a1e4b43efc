"""``garrison login`` keeps two URLs: the gateway's (model calls: ``garrison curl``,
``garrison.client``) and the admin API's (admin commands). With the admin API on its own
listener (``[admin] listen``) they differ: the person signs in at the admin listener, and
the admin API announces the data plane's URL. Through a real provider (tests/idp) and the
CLI; set-up through the admin API."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from garrison.cli.main import cli
from tests.e2e.test_oidc_signin import machine, person
from tests.support.idp import Browser, User, node_missing_reason
from tests.support.idp_world import idp_fixtures, restart_with
from tests.support.world import World

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(node_missing_reason() is not None, reason=str(node_missing_reason())),
]

USERS = {"u-lena": User("pw-lena", otp="121212"), "u-omar": User("pw-omar", otp="343434")}


idp, world = idp_fixtures(USERS)


async def _admin_apart(world: World) -> None:
    """The same deployment, restarted with the admin API on a listener of its own."""
    await restart_with(world, dataclasses.replace(world.settings, admin_listen="127.0.0.1:0"))
    assert world.gateway.admin_http is not None
    assert world.admin_base != world.base


async def _cli(monkeypatch: pytest.MonkeyPatch, *args: str) -> Result:
    return await asyncio.to_thread(CliRunner().invoke, cli, list(args))


async def _login(
    world: World, user: str, code: str, session: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    browser = Browser(user, USERS[user].password, USERS[user].otp)
    monkeypatch.setattr("webbrowser.open", browser.open)
    monkeypatch.setenv("GARRISON_SOURCE_ADDRESS", machine())
    try:
        # Pointed at the admin API only, as a config with [admin] listen points the CLI.
        args = ["login", "--admin", world.admin_base, "--code", code]
        result = await _cli(monkeypatch, *args, "--session-file", str(session))
    finally:
        browser.close()
    assert result.exit_code == 0, result.output
    stored: dict[str, Any] = json.loads(session.read_text())
    return stored


async def _uses_both(world: World, session: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Model calls go to the data plane...
    result = await _cli(monkeypatch, "curl", "/v1/models", "--session", str(session))
    assert result.exit_code == 0, result.output
    assert "data" in json.loads(result.stdout)
    # ...admin commands to the admin API (no key, no config: the session says where).
    monkeypatch.setenv("GARRISON_SESSION_FILE", str(session))
    monkeypatch.delenv("GARRISON_ADMIN_KEY", raising=False)
    monkeypatch.delenv("GARRISON_ADMIN_URL", raising=False)
    missing = session.parent / "no-config.toml"
    result = await _cli(monkeypatch, "whoami", "--config", str(missing), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["name"] == "lena"


async def test_with_an_admin_listener_the_session_keeps_both_urls(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = await person(world, "lena", roles=["auditor"])
    await _admin_apart(world)
    session = tmp_path / "session.json"
    stored = await _login(world, "u-lena", code, session, monkeypatch)
    assert stored["gateway_url"] == world.base  # announced by the admin API
    assert stored["admin_url"] == world.admin_base
    await _uses_both(world, session, monkeypatch)


async def test_with_one_listener_both_urls_are_the_same(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = await person(world, "lena", roles=["auditor"])
    session = tmp_path / "session.json"
    stored = await _login(world, "u-lena", code, session, monkeypatch)
    assert stored["gateway_url"] == stored["admin_url"] == world.base
    await _uses_both(world, session, monkeypatch)


async def test_an_explicit_gateway_url_wins_over_the_announced_one(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = await person(world, "lena", roles=["auditor"])
    await _admin_apart(world)
    session = tmp_path / "session.json"
    alias = world.base.replace("127.0.0.1", "localhost")
    monkeypatch.setenv("GARRISON_GATEWAY_URL", alias)
    stored = await _login(world, "u-lena", code, session, monkeypatch)
    assert stored["gateway_url"] == alias and stored["admin_url"] == world.admin_base
