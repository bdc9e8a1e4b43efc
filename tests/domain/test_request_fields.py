"""Tests for ``garrison.domain.request_fields``: which extra fields an admin may allow."""

from __future__ import annotations

import pytest

from garrison.domain.request_fields import (
    MAX_EXTRA_FIELDS,
    NEVER_FORWARDED,
    check_extra_fields,
    extra_field_allowed,
)
from garrison.errors import BadRequest


def test_vendor_sampling_fields_are_accepted() -> None:
    names = ["top_k", "min_p", "repetition_penalty", "chat_template_kwargs"]
    assert check_extra_fields(names) == frozenset(names)


@pytest.mark.parametrize("name", ["Top_K", "API_BASE", "top-k", "1x", "", "a" * 65, "a b", "é"])
def test_a_name_that_is_not_a_field_name_is_refused(name: str) -> None:
    with pytest.raises(BadRequest, match="not a field name"):
        check_extra_fields([name])


@pytest.mark.parametrize("name", sorted(NEVER_FORWARDED))
def test_a_never_forwarded_name_is_refused(name: str) -> None:
    with pytest.raises(BadRequest, match="never forwarded"):
        check_extra_fields([name])
    assert not extra_field_allowed(name)


def test_at_most_the_limit_of_extra_fields() -> None:
    assert len(check_extra_fields(f"f{i}" for i in range(MAX_EXTRA_FIELDS))) == MAX_EXTRA_FIELDS
    with pytest.raises(BadRequest, match=str(MAX_EXTRA_FIELDS)):
        check_extra_fields(f"f{i}" for i in range(MAX_EXTRA_FIELDS + 1))


def test_a_name_of_64_characters_is_accepted() -> None:
    assert check_extra_fields(["a" * 64]) == {"a" * 64}
