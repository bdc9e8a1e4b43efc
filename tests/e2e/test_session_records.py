"""Sign-in sessions recorded in the directory, listed, and locked one at a time, through a
real OpenID provider (tests/idp) and the public interfaces only: the person signs in from
two machines; the admin lists the sessions (API and CLI, never a token); a lock naming one
session cuts its stream and refuses its calls while the other session works on; the token
carries the session's roles, which the directory can only narrow further.
"""

# The providers and the world are test_oidc_signin's fixtures, imported: their names are
# the test functions' parameters by design.
# ruff: noqa: F811

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.test_oidc_signin import (  # noqa: F401 - fixtures, with their providers
    USERS,
    _chat,
    idp,
    person,
    sign_in,
    vendor_idp,
    with_session,
    world,
)
from tests.support.admin import admin_call
from tests.support.callers import approve_as_second_admin
from tests.support.idp import node_missing_reason
from tests.support.world import World

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(node_missing_reason() is not None, reason=str(node_missing_reason())),
]


@dataclass
class StreamRun:
    started: threading.Event = field(default_factory=threading.Event)
    chunks: int = 0
    completed: bool = False
    error: BaseException | None = None


def _stream(session_path: Path, run: StreamRun) -> None:
    import openai

    import garrison.client

    client = openai.OpenAI(
        base_url=garrison.client.base_url("/v1", session_path),
        api_key="garrison",
        max_retries=0,
        http_client=garrison.client.http_client(session_path),
    )
    try:
        stream = client.chat.completions.create(
            model="m-slow-stream", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        with stream:
            for _ in stream:
                run.chunks += 1
                if run.chunks == 3:
                    run.started.set()
        run.completed = True
    except openai.APIError as exc:
        run.error = exc
    finally:
        run.started.set()
        client.close()


async def _two_sessions(world: World, tmp_path: Path) -> tuple[Path, dict[str, Any], Path]:
    code = await person(world, "carol2")
    laptop = await sign_in(world, "u-carol", USERS, tmp_path / "laptop", code=code)
    desktop = await sign_in(world, "u-carol", USERS, tmp_path / "desktop")
    return Path(laptop["session_file"]), laptop, Path(desktop["session_file"])


@pytest.fixture(autouse=True)
def _dirs(tmp_path: Path) -> None:
    (tmp_path / "laptop").mkdir()
    (tmp_path / "desktop").mkdir()


async def test_sessions_are_recorded_and_listed_without_any_token(
    world: World, tmp_path: Path
) -> None:
    laptop_path, laptop, desktop_path = await _two_sessions(world, tmp_path)
    status, rows = await admin_call(
        world, world.admin_key, "GET", "/sessions", params={"principal": "carol2"}
    )
    assert status == 200, rows
    assert len(rows) == 2 and laptop["session_id"] in {r["id"] for r in rows}
    row = next(r for r in rows if r["id"] == laptop["session_id"])
    stored = json.loads(laptop_path.read_text())
    from garrison.identity.client_session import load_session

    assert row["jkt"] == load_session(laptop_path).proof_key().thumbprint()
    assert row["subject"] == "u-carol" and row["provider"] and row["live"] is True
    assert "mfa" in row["amr"] and row["roles"] == []
    assert row["expires_at"] > row["issued_at"]
    text = json.dumps(rows)
    assert stored["access_token"] not in text and "eyJ" not in text
    # The CLI shows the same, never a token.
    from click.testing import CliRunner

    from garrison.cli.main import cli

    env = {"GARRISON_ADMIN_URL": world.base, "GARRISON_ADMIN_KEY": world.admin_key}
    result = await asyncio.to_thread(
        CliRunner(env=env).invoke, cli, ["sessions", "list", "--principal", "carol2", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert {r["id"] for r in json.loads(result.output)} == {r["id"] for r in rows}
    assert "eyJ" not in result.output
    # Each start is one session.started event naming the session as the credential.
    await world.settle()
    started = [e for e in world.events("session.started") if e["principal_id"]]
    assert {e["credential_id"] for e in started} >= {r["id"] for r in rows}
    assert stored["access_token"] not in world.raw_audit().decode()
    # Bad input: the API's own error shape.
    status, everyone = await admin_call(world, world.admin_key, "GET", "/sessions")
    assert status == 200 and {r["id"] for r in rows} <= {r["id"] for r in everyone}
    status, body = await admin_call(
        world, world.admin_key, "GET", "/sessions", params={"principal": "nobody"}
    )
    assert status == 404 and body["error"]["type"] == "not_found", body
    assert desktop_path.exists()


async def test_a_lock_on_one_session_cuts_it_alone(world: World, tmp_path: Path) -> None:
    import openai

    laptop_path, laptop, desktop_path = await _two_sessions(world, tmp_path)
    run = StreamRun()
    streaming = asyncio.create_task(asyncio.to_thread(_stream, laptop_path, run))
    assert await asyncio.to_thread(run.started.wait, 10)
    assert run.error is None and run.chunks >= 3, run.error
    # The lock CLI's own command, with the session id for the credential.
    from click.testing import CliRunner

    from garrison.cli.main import cli

    env = {"GARRISON_ADMIN_URL": world.base, "GARRISON_ADMIN_KEY": world.admin_key}
    args = ["lock", "credential", laptop["session_id"], "--reason", "laptop stolen"]
    result = await asyncio.to_thread(CliRunner(env=env).invoke, cli, args)
    assert result.exit_code == 0, result.output
    assert laptop["session_id"] in result.output
    await asyncio.wait_for(streaming, 10)
    assert not run.completed and isinstance(run.error, openai.APIError), run.error
    with pytest.raises(openai.PermissionDeniedError):
        await asyncio.to_thread(_chat, laptop_path, "assistant")
    # The person's other session is another credential: it works on.
    assert await asyncio.to_thread(_chat, desktop_path, "assistant")
    await world.settle()
    created = world.events("lock.created")[-1]
    assert created["credential_id"] == laptop["session_id"]
    assert created["data"]["kind"] == "credential"


async def test_a_lock_naming_an_unknown_session_is_refused(world: World) -> None:
    status, body = await admin_call(
        world,
        world.admin_key,
        "POST",
        "/locks",
        {"kind": "credential", "target": "ses_nosuchsession", "reason": "typo"},
    )
    assert status == 400 and "does not exist" in body["error"]["message"], body


async def test_a_role_revoked_in_the_directory_leaves_the_session_at_once(
    world: World, tmp_path: Path
) -> None:
    code = await person(world, "dana2", roles=["auditor"])
    signed = await sign_in(world, "u-dana", USERS, tmp_path / "laptop", code=code)
    assert signed["roles"] == ["auditor"]
    session = Path(signed["session_file"])
    token = json.loads(session.read_text())["access_token"]
    import base64

    body = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    assert body["roles"] == ["auditor"]  # the token carries the session's roles
    assert (await with_session(world, session, "GET", "/admin/v1/principals"))[0] == 200
    status, change = await admin_call(
        world, world.admin_key, "PATCH", "/principals/dana2", {"roles": []}
    )
    if status == 202:
        await approve_as_second_admin(world, change["pending"]["id"])
    else:
        assert status == 200, change
    await world.reload()
    # The same token still says "auditor"; the directory no longer grants it.
    status, refused = await with_session(world, session, "GET", "/admin/v1/principals")
    assert status == 403, refused


async def test_a_401_to_a_dpop_call_says_how_to_authenticate(world: World, tmp_path: Path) -> None:
    laptop_path, _, _ = await _two_sessions(world, tmp_path)
    token = json.loads(laptop_path.read_text())["access_token"]
    async with httpx.AsyncClient(timeout=10) as client:
        for path in ("/v1/chat/completions", "/admin/v1/principals"):
            # The token without its proof (copied off the machine): 401 with the challenge.
            response = await client.post(
                world.base + path,
                headers={"authorization": f"DPoP {token}"},
                json={"model": "assistant", "messages": []},
            )
            assert response.status_code == 401, response.text
            challenge = response.headers["www-authenticate"]
            assert challenge.startswith("DPoP "), challenge
            assert 'error="invalid_token"' in challenge, challenge
            assert 'algs="ES256 Ed25519"' in challenge, challenge
            assert response.json()["error"]  # the API's own error shape otherwise
        # A bearer key's 401 keeps its Bearer challenge.
        response = await client.post(
            world.base + "/v1/chat/completions",
            headers={"authorization": "Bearer gk_nope.nope"},
            json={"model": "assistant", "messages": []},
        )
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")
