"""The per-process call rate (``CallRate``): the embedded default's limit, and the fallback
of a replica that cannot ask Redis."""

from __future__ import annotations

import pytest

from garrison.gateway import admission_limits
from garrison.gateway.admission_limits import CallRate


def test_a_minutes_worth_of_calls_fits_at_once_then_one_per_interval() -> None:
    rate = CallRate()
    assert [rate.take("p", 3, 100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert rate.take("p", 3, 100.0) == 20.0  # one every 20 s at 3 a minute
    assert rate.take("p", 3, 120.0) == 0.0
    assert rate.take("q", 3, 120.0) == 0.0  # someone else has their own budget


def test_a_refused_call_takes_nothing() -> None:
    rate = CallRate()
    for _ in range(2):
        rate.take("p", 2, 0.0)
    assert rate.take("p", 2, 0.0) > 0
    assert rate.take("p", 2, 30.0) == 0.0


def test_principals_remembered_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(admission_limits, "CALL_RATE_PRINCIPALS_MAX", 10)
    rate = CallRate()
    for n in range(10):
        rate.take(f"p{n}", 60, 0.0)
    # Past the bound, those whose budget has refilled are forgotten (nothing changes for them).
    rate.take("late", 60, 5.0)
    assert len(rate) == 1
