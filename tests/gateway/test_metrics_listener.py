"""Prometheus metrics on their own loopback listener: no credential, latency histograms, no
model names unless an admin opts in."""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from garrison.bootstrap import init
from garrison.config import DEFAULT_METRICS_LISTEN, load_settings
from garrison.server import Gateway
from tests.support.world import World, start_world, stop_world

pytestmark = pytest.mark.e2e

MakeWorld = Callable[..., Awaitable[World]]


@pytest.fixture
async def make_world(tmp_path: Path) -> AsyncIterator[MakeWorld]:
    worlds: list[World] = []

    async def make(**settings: Any) -> World:
        world = await start_world(tmp_path / f"w{len(worlds)}")
        await world.gateway.stop()
        world.gateway = Gateway(dataclasses.replace(world.settings, **settings))
        await world.gateway.start()
        worlds.append(world)
        return world

    try:
        yield make
    finally:
        for world in worlds:
            await stop_world(world)


async def _chat(world: World) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            world.base + "/v1/chat/completions",
            json={"model": "assistant", "messages": [{"role": "user", "content": "hi"}]},
            headers={"authorization": f"Bearer {world.keys['alice']}"},
        ) as resp,
    ):
        assert resp.status == 200


async def _scrape(world: World) -> str:
    assert world.gateway.metrics is not None
    url = f"http://127.0.0.1:{world.gateway.metrics.port}/metrics"
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == 200  # no credential asked
        return await resp.text()


async def test_metrics_need_no_key_and_carry_latency_histograms(make_world: MakeWorld) -> None:
    world = await make_world(metrics_listen="127.0.0.1:0")
    await _chat(world)
    await world.settle()
    text = await _scrape(world)
    for name in (
        "garrison_call_duration_seconds_count 1.0",
        "garrison_added_latency_seconds_count 1.0",
        "garrison_upstream_seconds_count 1.0",
        "garrison_time_to_first_byte_seconds_bucket",
        "garrison_audit_commit_seconds_count",
        "garrison_audit_queue_depth",
        "garrison_inflight_calls",
        "process_resident_memory_bytes",
        "process_open_fds",
    ):
        assert name in text, name
    assert "assistant" not in text  # no model names unless an admin opts in


async def test_model_labels_only_when_opted_in(make_world: MakeWorld) -> None:
    world = await make_world(metrics_listen="127.0.0.1:0", metrics_model_labels=True)
    await _chat(world)
    text = await _scrape(world)
    assert 'garrison_model_call_outcomes_total{model="assistant",outcome="ok"} 1.0' in text


async def test_a_taken_metrics_port_leaves_the_gateway_serving(make_world: MakeWorld) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        world = await make_world(metrics_listen=f"127.0.0.1:{port}")
        await _chat(world)


def test_init_puts_the_metrics_listener_on_loopback(tmp_path: Path) -> None:
    done = init(tmp_path / "data")
    settings = load_settings(done.config_path, env={})  # the file alone
    assert settings.metrics_listen == DEFAULT_METRICS_LISTEN
    assert settings.metrics_listen.startswith("127.0.0.1:")
    assert settings.metrics_model_labels is False
