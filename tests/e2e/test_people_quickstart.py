"""docs/quickstart.md, "People: sign-in through your identity provider", command by command
against the real OpenID provider of the tests (tests/idp): the blocks there need the
reader's own provider and a person at its sign-in page, so the docs test skips them and this
test runs the same commands instead.

An admin adds and invites a person (the CLI; the second admin approves), the person runs
`garrison login --device --code …` (the CLI as a process; "her browser" approves the device
code at the provider), calls the restricted model with the `openai` client through
`garrison.client` exactly as the docs write it, a copied token is refused, the admin lists
her sessions and a lock on her ends them.
"""

# The providers and the world are test_oidc_signin's fixtures, imported: their names are
# the test function's parameters by design.
# ruff: noqa: F811

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from garrison.cli.main import cli
from tests.e2e.test_oidc_signin import (  # noqa: F401 - fixtures, with their providers
    USERS,
    idp,
    machine,
    vendor_idp,
    world,
)
from tests.support.callers import approve_as_second_admin
from tests.support.idp import Browser, node_missing_reason
from tests.support.world import World

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(node_missing_reason() is not None, reason=str(node_missing_reason())),
]

# Generous on a loaded machine: the device flow polls the provider every few seconds.
LOGIN_TIMEOUT_S = 90


async def admin(world: World, *args: str) -> str:
    """One admin command, as ana (the world's first admin) types it."""
    env = {"GARRISON_ADMIN_URL": world.base, "GARRISON_ADMIN_KEY": world.admin_key}
    result = await asyncio.to_thread(CliRunner(env=env).invoke, cli, list(args))
    assert result.exit_code == 0, result.output
    return str(result.output)


def ask_model() -> str:
    """The docs' Python block, as written (the session comes from GARRISON_SESSION_FILE)."""
    from openai import OpenAI

    import garrison.client

    client = OpenAI(
        base_url=garrison.client.base_url("/v1"),
        api_key="garrison",
        http_client=garrison.client.http_client(),
        max_retries=0,
    )
    try:
        answer = client.chat.completions.create(
            model="cyber-model", messages=[{"role": "user", "content": "hi"}]
        )
        return str(answer.choices[0].message.content)
    finally:
        client.close()


async def device_login(world: World, code: str, session: Path) -> str:
    """`garrison login --device --code CODE` as a process; carol approves the device code at
    the provider in her browser when the CLI prints it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GARRISON_")}
    env |= {"GARRISON_SESSION_FILE": str(session), "GARRISON_SOURCE_ADDRESS": machine()}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "garrison.cli.main",
        "login",
        "--device",
        "--gateway",
        world.base,
        "--code",
        code,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None and proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stderr.readline(), LOGIN_TIMEOUT_S)
        found = re.search(r"open (\S+) and enter", line.decode())
        assert found, line
        browser = Browser("u-carol", USERS["u-carol"].password, USERS["u-carol"].otp)
        try:
            await asyncio.to_thread(browser.approve_device, found.group(1))
        finally:
            browser.close()
        out, err = await asyncio.wait_for(proc.communicate(), LOGIN_TIMEOUT_S)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def test_the_people_section_of_the_quickstart(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import openai

    # An admin adds the person (proposed: restricted clearance), a second admin approves,
    # then the invitation's code is issued.
    out = await admin(
        world,
        *("user", "add", "carol5", "--org", "internal", "--clearance", "restricted"),
        *("--compartment", "cyber"),
    )
    (change,) = set(re.findall(r"chg_[0-9a-f]+", out))
    await approve_as_second_admin(world, change)
    await world.reload()
    out = await admin(world, "user", "invite", "carol5")
    (code,) = set(re.findall(r"ge_[A-Za-z0-9_-]+", out))

    # She signs in with the device flow, once with the code.
    session = tmp_path / "carol-laptop" / "session.json"
    signed = await device_login(world, code, session)
    assert "signed in as carol5" in signed and "with MFA" in signed, signed
    assert "eyJ" not in signed  # the token is stored, never printed

    # The restricted model through the openai client, with the docs' own lines.
    monkeypatch.setenv("GARRISON_SESSION_FILE", str(session))
    assert await asyncio.to_thread(ask_model)

    # The token copied off her machine: refused, with the DPoP challenge.
    token = json.loads(session.read_text())["access_token"]
    async with httpx.AsyncClient(timeout=10) as client:
        copied = await client.post(
            world.base + "/v1/chat/completions",
            headers={"authorization": f"DPoP {token}"},
            json={"model": "cyber-model", "messages": []},
        )
    assert copied.status_code == 401
    assert copied.headers["www-authenticate"].startswith("DPoP ")

    # The admin sees her session (never its token), and a lock on her ends it.
    listed = await admin(world, "sessions", "list", "--principal", "carol5", "--json")
    rows = json.loads(listed)
    assert len(rows) == 1 and rows[0]["live"] and "mfa" in rows[0]["amr"]
    assert token not in listed
    await admin(world, "lock", "principal", "carol5", "--reason", "suspected phishing, INC-311")
    await world.reload()
    with pytest.raises(openai.PermissionDeniedError):
        await asyncio.to_thread(ask_model)
