"""The contract clock's guard against wall-clock jumps."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from garrison.domain.clock_guard import (
    CLOCK_AGREE_S,
    CLOCK_JUMP_LIMIT_S,
    ClockChange,
    ClockGuard,
)

WALL0, MONO0 = 1_800_000_000.0, 1_000.0


def test_clocks_moving_together_never_pause() -> None:
    guard = ClockGuard.start(WALL0, MONO0)
    for step in range(0, 10_000, 60):
        assert guard.observe(WALL0 + step, MONO0 + step) is ClockChange.NONE
    assert not guard.paused


@given(st.floats(min_value=-CLOCK_JUMP_LIMIT_S, max_value=CLOCK_JUMP_LIMIT_S))
def test_drift_within_the_limit_is_not_a_jump(drift: float) -> None:
    guard = ClockGuard.start(WALL0, MONO0)
    assert guard.observe(WALL0 + 3600 + drift, MONO0 + 3600) is ClockChange.NONE
    assert not guard.paused


def test_a_forward_jump_pauses_until_the_clocks_agree_again_for_the_named_period() -> None:
    guard = ClockGuard.start(WALL0, MONO0)
    jump = 30 * 86400.0
    assert guard.observe(WALL0 + 10 + jump, MONO0 + 10) is ClockChange.JUMPED
    assert guard.paused and guard.skew == jump
    assert guard.observe(WALL0 + 20 + jump, MONO0 + 20) is ClockChange.NONE  # still off
    # The time source is fixed: the clocks agree again, but expiries wait the agree period.
    assert guard.observe(WALL0 + 30, MONO0 + 30) is ClockChange.NONE
    assert guard.observe(WALL0 + 30 + CLOCK_AGREE_S - 1, MONO0 + 30 + CLOCK_AGREE_S - 1) is (
        ClockChange.NONE
    )
    assert guard.paused
    assert guard.observe(WALL0 + 30 + CLOCK_AGREE_S, MONO0 + 30 + CLOCK_AGREE_S) is (
        ClockChange.AGREED
    )
    assert not guard.paused


def test_a_second_jump_while_settling_restarts_the_wait() -> None:
    guard = ClockGuard.start(WALL0, MONO0)
    guard.observe(WALL0 + 1e6, MONO0 + 1)
    guard.observe(WALL0 + 2, MONO0 + 2)  # agree from mono 2
    guard.observe(WALL0 + 1e6, MONO0 + 100)  # flapped away again
    assert guard.observe(WALL0 + 200, MONO0 + 200) is ClockChange.NONE  # agree from 200
    assert guard.observe(WALL0 + 200 + CLOCK_AGREE_S - 1, MONO0 + 200 + CLOCK_AGREE_S - 1) is (
        ClockChange.NONE
    )
    assert guard.observe(WALL0 + 200 + CLOCK_AGREE_S, MONO0 + 200 + CLOCK_AGREE_S) is (
        ClockChange.AGREED
    )


def test_a_backward_jump_pauses_too() -> None:
    guard = ClockGuard.start(WALL0, MONO0)
    assert guard.observe(WALL0 - 3600, MONO0 + 5) is ClockChange.JUMPED
