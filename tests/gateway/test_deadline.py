"""``deadline_at`` behaves as ``asyncio.timeout_at`` does: every case runs against both."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, cast

import pytest
from aiohttp.test_utils import TestServer

from garrison.gateway.app import build_app
from garrison.gateway.deadline import deadline_at
from garrison.gateway.state import GatewayState
from garrison.store.snapshot import Snapshot

Factory = Callable[[float], AbstractAsyncContextManager[Any]]

# Long enough that a step never reaches it by accident; short enough to keep the tests quick.
LATER_S = 5.0
SHORT_S = 0.05


def _ours(when: float) -> AbstractAsyncContextManager[Any]:
    return deadline_at(asyncio.get_running_loop(), when)


BOTH = pytest.mark.parametrize("make", [asyncio.timeout_at, _ours], ids=["asyncio", "ours"])


def _at(delay: float) -> float:
    return asyncio.get_running_loop().time() + delay


@BOTH
async def test_a_body_past_the_deadline_raises_timeout_error(make: Factory) -> None:
    task = asyncio.current_task()
    assert task is not None
    with pytest.raises(TimeoutError):
        async with make(_at(SHORT_S)) as cm:
            await asyncio.sleep(LATER_S)
    assert cm.expired()
    assert task.cancelling() == 0  # its own cancellation given back


@BOTH
async def test_a_deadline_already_passed_fires_at_the_first_await(make: Factory) -> None:
    reached = False
    with pytest.raises(TimeoutError):
        async with make(_at(-1.0)):
            reached = True  # the block runs until it awaits
            await asyncio.sleep(0)
            reached = False
    assert reached


@BOTH
async def test_a_body_within_the_deadline_is_not_cancelled_later(make: Factory) -> None:
    async with make(_at(SHORT_S)) as cm:
        await asyncio.sleep(0)
    assert not cm.expired()
    await asyncio.sleep(SHORT_S * 3)  # past the deadline: the timer was cancelled
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0


@BOTH
async def test_another_cancellation_passes_through_as_cancelled_error(make: Factory) -> None:
    """A cut (or a client that went away) cancels the task before the deadline."""

    async def body() -> None:
        async with make(_at(LATER_S)):
            await asyncio.sleep(LATER_S)

    task = asyncio.create_task(body())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelling() == 1  # the cut's request stands (the handler uncancels it)


@BOTH
async def test_a_cancellation_beside_the_expiry_is_not_turned_into_timeout(
    make: Factory,
) -> None:
    """The deadline fires and a cut lands in the same loop pass: the cut wins."""
    outcome: list[str] = []

    async def body() -> None:
        me = asyncio.current_task()
        assert me is not None
        try:
            async with make(_at(-1.0)):  # its timer runs first on the next pass
                asyncio.get_running_loop().call_soon(me.cancel)  # the cut, right after it
                await asyncio.sleep(LATER_S)
        except TimeoutError:
            outcome.append("timeout")
            raise
        except asyncio.CancelledError:
            outcome.append(f"cancelled:{me.cancelling()}")
            raise

    task = asyncio.create_task(body())
    with pytest.raises(asyncio.CancelledError):
        await task
    assert outcome == ["cancelled:1"]


@BOTH
async def test_it_cannot_be_entered_twice(make: Factory) -> None:
    cm = make(_at(LATER_S))
    async with cm:
        pass
    with pytest.raises(RuntimeError):
        async with cm:
            pass


@BOTH
async def test_it_needs_a_task(make: Factory) -> None:
    loop = asyncio.get_running_loop()
    failed: asyncio.Future[BaseException | None] = loop.create_future()

    def outside_a_task() -> None:
        entering = make(_at(LATER_S)).__aenter__()
        try:
            entering.send(None)
        except BaseException as exc:
            failed.set_result(exc)
        else:
            failed.set_result(None)
        finally:
            entering.close()

    loop.call_soon(outside_a_task)
    assert isinstance(await failed, RuntimeError)


async def test_a_started_app_keeps_its_loop_on_the_state() -> None:
    state = GatewayState(snapshot=Snapshot.empty(), pepper=b"p" * 32, audit=cast(Any, None))
    assert state.loop is None
    async with TestServer(build_app(state)):
        assert state.loop is asyncio.get_running_loop()
