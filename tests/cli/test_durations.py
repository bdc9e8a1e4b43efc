"""Tests for ``garrison.domain.durations.parse_duration``."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from garrison.domain.durations import parse_duration

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("45s", 45), ("30m", 1800), ("12h", 43200), ("90d", 7_776_000), ("2w", 1_209_600)],
)
def test_each_unit_converts_to_seconds(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_fraction_is_accepted() -> None:
    assert parse_duration("1.5h") == 5400


def test_surrounding_and_inner_whitespace_is_accepted() -> None:
    assert parse_duration("  12 h ") == 43200


@pytest.mark.parametrize(
    "text", ["", "12", "h", "12x", "12H", "1h30m", "-5m", "+5m", "1e3s", ".5h", "5.h", "ten d"]
)
def test_malformed_duration_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def test_malformed_refusal_gives_examples() -> None:
    with pytest.raises(ValueError, match="examples: 45s"):
        parse_duration("soon")


@pytest.mark.parametrize("text", ["0s", "0d", "0.0h", "000w"])
def test_zero_duration_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        parse_duration(text)


def test_overflowing_duration_is_refused() -> None:
    with pytest.raises(ValueError):
        parse_duration("9" * 400 + "s")


@given(st.integers(min_value=1, max_value=10**9), st.sampled_from(sorted(UNITS)))
def test_whole_number_of_any_unit_is_that_many_unit_seconds(n: int, unit: str) -> None:
    assert parse_duration(f"{n}{unit}") == n * UNITS[unit]


@given(st.text(max_size=30))
def test_any_text_is_refused_or_gives_a_finite_positive_duration(text: str) -> None:
    try:
        seconds = parse_duration(text)
    except ValueError:
        return
    assert math.isfinite(seconds) and seconds > 0
