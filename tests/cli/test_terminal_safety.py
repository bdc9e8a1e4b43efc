"""Strings a caller chose never reach the operator's terminal as control sequences.

A caller names a model with an escape sequence and a lock reason carries one; the CLI's
tables, ``audit tail`` and error lines show the escape as visible characters.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from click.testing import CliRunner, Result

from garrison.cli.main import cli
from garrison.config import CONFIG_FILE
from tests.support.admin import admin_call
from tests.support.world import World

pytestmark = pytest.mark.e2e

# Clear the screen, set the window title, plant a hyperlink, rich markup, a C1 CSI.
HOSTILE = "\x1b[2J\x1b]0;owned\x07\x1b]8;;https://evil\x1b\\click\x1b]8;;\x1b\\[red]x[/red]\x9b1m"


async def run_cli(world: World, *args: str) -> Result:
    """The CLI in a worker thread (the gateway it talks to runs on this loop)."""
    env = {"GARRISON_ADMIN_URL": world.base, "GARRISON_ADMIN_KEY": world.admin_key}
    config = str(world.root / "data" / CONFIG_FILE)
    runner = CliRunner()
    return await asyncio.to_thread(runner.invoke, cli, [*args, "--config", config], env=env)


def assert_inert(output: str, *, escaped: bool = True) -> None:
    assert not any((ord(c) < 0x20 and c not in "\n") or 0x7F <= ord(c) <= 0x9F for c in output), (
        repr(output)
    )
    if escaped:
        assert "\\x1b" in output


async def test_lock_reason_is_shown_escaped_in_the_locks_table(world: World) -> None:
    status, body = await admin_call(
        world,
        world.admin_key,
        "POST",
        "/locks",
        {"kind": "model", "target": "assistant", "reason": "r " + HOSTILE},
    )
    assert status == 201, body
    result = await run_cli(world, "locks")
    assert result.exit_code == 0, result.output
    assert_inert(result.output)


async def test_requested_model_name_is_shown_escaped_by_audit_tail(world: World) -> None:
    body: dict[str, Any] = {"model": "m" + HOSTILE, "messages": [{"role": "user", "content": "x"}]}
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            world.base + "/v1/chat/completions",
            json=body,
            headers={"authorization": f"Bearer {world.keys['carol']}"},
        ) as resp,
    ):
        assert resp.status in (400, 404)
    await world.settle()
    result = await run_cli(world, "audit", "tail", "-n", "5")
    assert result.exit_code == 0, result.output
    # The gateway already records an unknown model name printable only ("?" for controls);
    # tail escapes whatever else a record could hold.
    assert_inert(result.output, escaped=False)
