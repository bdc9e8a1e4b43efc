"""A deadline for the current task on a loop the caller already holds: what
``asyncio.timeout_at(when)`` does, without its two look-ups of the running loop.

On Python 3.11 each ``asyncio.get_running_loop()`` (and ``asyncio.current_task()`` without a
loop) makes a ``getpid()`` system call (0.2 µs here); ``asyncio.timeout_at`` makes two per
use, once per forwarded call. ``deadline_at(loop, when)`` is the same state machine as
CPython 3.11's ``asyncio.Timeout`` (``Lib/asyncio/timeouts.py``) with the loop passed in:

* entered outside a task: ``RuntimeError``;
* at ``when`` (at once, on the next loop pass, if ``when`` has passed already) the task is
  cancelled; leaving the block with that ``CancelledError`` raises ``TimeoutError`` instead,
  unless another cancellation was requested meanwhile (a cut, a client that went away):
  then the ``CancelledError`` goes on, as it does from ``asyncio.timeout_at``;
* the task's cancellation count is given back (``uncancel``) exactly when the timer fired;
* leaving the block before ``when`` cancels the timer.

tests/gateway/test_deadline.py runs every case against both.
"""

from __future__ import annotations

import asyncio
from types import TracebackType


class Deadline:
    """``async with deadline_at(loop, when):`` (single use)."""

    __slots__ = ("_cancelling", "_expiring", "_handle", "_loop", "_task", "_when")

    def __init__(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        self._loop = loop
        self._when = when
        self._task: asyncio.Task[object] | None = None
        self._handle: asyncio.Handle | None = None
        self._expiring = False
        self._cancelling = 0

    def when(self) -> float:
        return self._when

    def expired(self) -> bool:
        return self._expiring

    async def __aenter__(self) -> Deadline:
        if self._task is not None:
            raise RuntimeError("Deadline has already been entered")
        loop = self._loop
        task = asyncio.current_task(loop)
        if task is None:
            raise RuntimeError("Deadline should be used inside a task")
        self._task = task
        self._cancelling = task.cancelling()
        if self._when <= loop.time():
            self._handle = loop.call_soon(self._on_timeout)
        else:
            self._handle = loop.call_at(self._when, self._on_timeout)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._expiring:
            assert self._task is not None
            if self._task.uncancel() <= self._cancelling and exc_type is asyncio.CancelledError:
                # No other cancellation was requested: this one was ours.
                raise TimeoutError from exc_val

    def _on_timeout(self) -> None:
        assert self._task is not None and not self._expiring
        self._task.cancel()
        self._expiring = True
        self._handle = None


def deadline_at(loop: asyncio.AbstractEventLoop, when: float) -> Deadline:
    """``asyncio.timeout_at(when)`` for a task running on ``loop`` (see the module)."""
    return Deadline(loop, when)
