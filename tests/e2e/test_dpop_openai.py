"""A DPoP-bound token with the real ``openai`` and ``anthropic`` clients through
``garrison.client``: the person is created through the admin API; the token is issued with
the running gateway's signer in-process (``issue_access_token``) until the sign-in exchange
endpoint issues it; the client keeps its key in a 0600 session file. A copied token used
with another key is refused (401), and a lock on the person cuts their live stream and
refuses every later call."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import anthropic
import openai
import pytest
from anthropic.types import MessageParam
from openai.types.chat import ChatCompletionMessageParam

import garrison.client
from garrison.identity.access_tokens import SessionClaims, issue_access_token
from garrison.identity.client_session import ClientSession, save_session
from garrison.identity.dpop import generate_proof_key
from tests.support.admin import admin_call
from tests.support.world import World

pytestmark = pytest.mark.e2e

ASK = "Summarise the design doc."
USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": ASK}]
CLAUDE_USER: list[MessageParam] = [{"role": "user", "content": ASK}]


def session_file(world: World, where: Path, principal_id: str, *, token: str | None = None) -> Path:
    """A client's session file: a fresh key, and a token bound to it (or ``token`` as found
    on another machine, with this machine's own key)."""
    key = generate_proof_key()
    now = time.time()
    if token is None:
        tokens = world.gateway.state.tokens
        assert tokens is not None
        token = issue_access_token(
            tokens.signer,
            SessionClaims(
                principal_id=principal_id,
                session_id="s-dana-laptop",
                jkt=key.thumbprint(),
                amr=("pwd", "hwk"),
                acr=None,
                auth_time=now,
                idp_issuer="https://idp.example",
                idp_subject="dana-sub",
                issued_at=now,
                expires_at=now + 900,
            ),
        )
    session = ClientSession(
        access_token=token,
        expires_at=now + 900,
        dpop_private_jwk=key.as_dict(private=True),
        gateway_url=world.base,
    )
    return save_session(session, where / "session.json")


def openai_client(path: Path) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=garrison.client.base_url("/v1", path),
        api_key="garrison",
        max_retries=0,
        http_client=garrison.client.http_client(path),
    )


@dataclass
class StreamRun:
    started: threading.Event = field(default_factory=threading.Event)
    chunks: int = 0
    completed: bool = False
    error: BaseException | None = None


def consume_stream(client: openai.OpenAI, run: StreamRun) -> None:
    try:
        stream = client.chat.completions.create(model="m-slow-stream", messages=USER, stream=True)
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


async def test_a_bound_token_works_only_with_its_key_and_a_lock_cuts_the_stream(
    world: World, tmp_path: Path
) -> None:
    status, dana = await admin_call(
        world, world.admin_key, "POST", "/principals", {"name": "dana", "org": "internal"}
    )
    assert status == 201, dana
    await world.reload()
    laptop = session_file(world, tmp_path / "laptop", dana["id"])
    with openai_client(laptop) as client:
        reply = await asyncio.to_thread(
            client.chat.completions.create, model="assistant", messages=USER
        )
        assert reply.choices[0].message.content

        # The anthropic client, same session, same one line.
        with anthropic.Anthropic(
            base_url=garrison.client.base_url("", laptop),
            api_key="garrison",
            max_retries=0,
            http_client=garrison.client.http_client(laptop),
        ) as claude:
            message = await asyncio.to_thread(
                claude.messages.create, model="claude", max_tokens=16, messages=CLAUDE_USER
            )
            assert message.content

        # The token copied to another machine, used there with that machine's own key.
        token = json.loads(laptop.read_text())["access_token"]
        elsewhere = session_file(world, tmp_path / "elsewhere", dana["id"], token=token)
        with openai_client(elsewhere) as thief, pytest.raises(openai.AuthenticationError) as no:
            await asyncio.to_thread(thief.chat.completions.create, model="assistant", messages=USER)
        assert no.value.status_code == 401

        # A stream in flight, then a lock on the person: the stream is cut, calls refused.
        run = StreamRun()
        streaming = asyncio.create_task(asyncio.to_thread(consume_stream, client, run))
        assert await asyncio.to_thread(run.started.wait, 10)
        assert run.error is None and run.chunks >= 3, run.error
        status, lock = await admin_call(
            world,
            world.admin_key,
            "POST",
            "/locks",
            {"kind": "principal", "target": "dana", "reason": "laptop reported stolen"},
        )
        assert status == 201, lock
        await asyncio.wait_for(streaming, 10)
        assert not run.completed
        assert isinstance(run.error, openai.APIError), run.error
        with pytest.raises(openai.PermissionDeniedError):
            await asyncio.to_thread(
                client.chat.completions.create, model="assistant", messages=USER
            )

    await world.settle()
    denied = [
        e for e in world.events("request.denied") if e["data"]["reasons"] == ["dpop.key_mismatch"]
    ]
    assert len(denied) == 1
    assert token not in world.raw_audit().decode()
