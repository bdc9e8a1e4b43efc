"""The admin CLI on a 403 ``step_up_required``: it retries once with this machine's session,
says exactly which command to run when it cannot ask (no terminal, or ``--no-input``), and
at a terminal offers to run ``garrison login --max-age 600`` and retries the call once.

The sessions are tokens issued in-process with the gateway's signer into a session file (the
sign-in through a real provider is tests/e2e/test_oidc_signin.py); everything else goes
through the CLI and the admin API.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from garrison.cli.client import STEP_UP_COMMAND, AdminClient, ApiError
from garrison.cli.main import cli
from garrison.identity.access_tokens import SessionClaims, issue_access_token
from garrison.identity.client_session import ClientSession, save_session
from garrison.identity.dpop import generate_proof_key
from garrison.identity.step_up import MFA_FRESH_S
from tests.admin.test_step_up_api import pending_change
from tests.support.admin import admin_call, make_admin
from tests.support.world import World

pytestmark = pytest.mark.e2e


def store_session(world: World, path: Path, name: str, *, fresh: bool) -> Path:
    """``name``'s session file: with MFA from just now (``fresh``) or from too long ago."""
    (pid,) = [p.id for p in world.gateway.state.snapshot.principals.values() if p.name == name]
    key = generate_proof_key()
    now = time.time()
    tokens = world.gateway.state.tokens
    assert tokens is not None
    token = issue_access_token(
        tokens.signer,
        SessionClaims(
            principal_id=pid,
            session_id=f"ses_{name}_{int(fresh)}",
            jkt=key.thumbprint(),
            amr=("pwd", "otp", "mfa"),
            acr=None,
            auth_time=now - 5 if fresh else now - MFA_FRESH_S - 60,
            idp_issuer="https://idp.example",
            idp_subject=f"{name}-sub",
            issued_at=now,
            expires_at=now + 600,
            roles=("security-admin",),
        ),
    )
    session = ClientSession(
        access_token=token,
        expires_at=now + 600,
        dpop_private_jwk=key.as_dict(private=True),
        gateway_url=world.base,
    )
    return save_session(session, path)


@pytest.fixture
async def stale(world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """approver2 (security-admin) signed in on this machine, but not recently with MFA."""
    make_admin(world, "approver2", ["security-admin"])
    await world.reload()
    path = tmp_path / "session.json"
    monkeypatch.setenv("GARRISON_SESSION_FILE", str(path))
    monkeypatch.delenv("GARRISON_ADMIN_KEY", raising=False)
    monkeypatch.setenv("GARRISON_ADMIN_URL", world.base)
    return store_session(world, path, "approver2", fresh=False)


async def _run(*args: str, **kw: Any) -> Any:
    return await asyncio.to_thread(CliRunner().invoke, cli, list(args), **kw)


async def test_without_a_terminal_the_cli_says_which_command_to_run(
    world: World, stale: Path
) -> None:
    change = await pending_change(world, "p-stepup")
    result = await _run("change", "approve", change)  # CliRunner: stdin is no terminal
    assert result.exit_code != 0
    # The CLI's own line (the server's message names the command too): what, then again.
    assert f"To continue: run `{STEP_UP_COMMAND}`" in result.output, result.output
    assert "then run this command again" in result.output
    assert f"garrison login --max-age {MFA_FRESH_S}" == STEP_UP_COMMAND
    assert "Traceback" not in result.output
    status, pending = await admin_call(world, world.admin_key, "GET", "/changes")
    assert status == 200 and any(c["id"] == change for c in pending), pending  # not approved


async def test_no_input_never_asks_even_at_a_terminal(
    world: World, stale: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[str] = []
    monkeypatch.setattr("garrison.cli.client._stdin_is_terminal", lambda: True)

    def ask(question: str) -> bool:
        asked.append(question)
        return False

    monkeypatch.setattr("garrison.cli.client._ask", ask)
    change = await pending_change(world, "p-noinput")
    # At a "terminal", the CLI asks (and a "no" leaves the call refused)...
    result = await _run("change", "approve", change)
    assert result.exit_code != 0 and len(asked) == 1, result.output
    asked.clear()
    # ...with --no-input (or GARRISON_NO_INPUT=1) it never does.
    result = await _run("--no-input", "change", "approve", change)
    assert result.exit_code != 0, result.output
    assert f"To continue: run `{STEP_UP_COMMAND}`" in result.output, result.output
    assert asked == []
    result = await _run("change", "approve", change, env={"GARRISON_NO_INPUT": "1"})
    assert result.exit_code != 0 and asked == [], result.output


async def test_at_a_terminal_it_offers_the_sign_in_and_retries_once(
    world: World, stale: Path
) -> None:
    change = await pending_change(world, "p-interactive")
    asked: list[str] = []
    logins: list[str] = []

    def ask(question: str) -> bool:
        asked.append(question)
        return True

    def login(gateway: str) -> None:
        # What `garrison login --max-age 600` leaves behind: a fresh MFA session.
        logins.append(gateway)
        store_session(world, stale, "approver2", fresh=True)

    client = AdminClient(
        world.base, None, session_path=stale, ask=ask, step_up_login=login, interactive=lambda: True
    )
    try:
        result = await asyncio.to_thread(client.post, f"/changes/{change}/approve", {})
    finally:
        client.close()
    assert "result" in result, result  # approved and applied
    assert len(asked) == 1 and STEP_UP_COMMAND in asked[0]
    assert logins == [world.base]


async def test_declining_the_sign_in_says_what_to_run(world: World, stale: Path) -> None:
    change = await pending_change(world, "p-declined")
    client = AdminClient(
        world.base,
        None,
        session_path=stale,
        ask=lambda _q: False,
        step_up_login=lambda _g: pytest.fail("no sign-in after a no"),
        interactive=lambda: True,
    )
    try:
        with pytest.raises(ApiError) as refused:
            await asyncio.to_thread(client.post, f"/changes/{change}/approve", {})
    finally:
        client.close()
    assert refused.value.error_type == "step_up_required" and STEP_UP_COMMAND in str(refused.value)


async def test_a_retry_that_still_needs_step_up_is_not_retried_again(
    world: World, stale: Path
) -> None:
    """The sign-in did not help (the provider did not ask for MFA): one retry, then the
    refusal, never a loop."""
    change = await pending_change(world, "p-loop")
    logins: list[str] = []
    client = AdminClient(
        world.base,
        None,
        session_path=stale,
        ask=lambda _q: True,
        step_up_login=logins.append,
        interactive=lambda: True,
    )
    try:
        with pytest.raises(ApiError) as refused:
            await asyncio.to_thread(client.post, f"/changes/{change}/approve", {})
    finally:
        client.close()
    assert refused.value.error_type == "step_up_required" and len(logins) == 1


async def test_a_key_refused_for_step_up_is_retried_with_this_machines_session(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key carries no MFA: with a fresh session on this machine the CLI retries with it."""
    key = make_admin(world, "approver2", ["security-admin"])
    await world.reload()
    path = store_session(world, tmp_path / "session.json", "approver2", fresh=True)
    monkeypatch.setenv("GARRISON_SESSION_FILE", str(path))
    calls: list[str] = []
    client = AdminClient(world.base, key, interactive=lambda: False)
    original = client._call_once

    def counting(*args: Any) -> Any:
        calls.append(args[1])
        if len(calls) == 1:  # the key's call: as a gateway with OIDC answers it
            raise ApiError(403, "a key carries no MFA", "step_up_required")
        return original(*args)

    monkeypatch.setattr(client, "_call_once", counting)
    try:
        assert (await asyncio.to_thread(client.get, "/whoami"))["name"] == "approver2"
    finally:
        client.close()
    assert len(calls) == 2
