"""After an audit outage, once the backlog is written, the process gives freed memory back
(once per outage; never while the log is down or the backlog is still large)."""

from __future__ import annotations

from collections.abc import Callable

from garrison.gateway.memory_release import RELEASE_BACKLOG_MAX, AfterOutage, release_memory


def counting(calls: list[int]) -> Callable[[], bool]:
    """A release that records each call in ``calls`` and reports success."""

    def release() -> bool:
        calls.append(1)
        return True

    return release


def test_no_release_without_an_outage() -> None:
    calls: list[int] = []
    after = AfterOutage(counting(calls))
    assert not any(after.tick(True, 0) for _ in range(5))
    assert calls == []


def test_one_release_after_the_backlog_is_written() -> None:
    calls: list[int] = []
    after = AfterOutage(counting(calls))
    assert not after.tick(False, 40_000)  # down: nothing released
    assert not after.tick(True, RELEASE_BACKLOG_MAX + 1)  # back, backlog still large
    assert after.tick(True, RELEASE_BACKLOG_MAX)
    assert not after.tick(True, 0)  # once per outage
    assert calls == [1]
    assert not after.tick(False, 10)
    assert after.tick(True, 0)  # the next outage owes one again
    assert calls == [1, 1]


def test_release_memory_runs_here() -> None:
    assert isinstance(release_memory(), bool)
