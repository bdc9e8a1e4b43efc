"""``quick_init``: the faster ``__init__`` of the audit event and its payloads builds
exactly what the generated one builds, and the instance stays frozen."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import pytest

from garrison.audit import AuditEvent, EventName
from garrison.audit.frozen import quick_init


@dataclass(frozen=True, slots=True)
class _Generated:
    a: int
    b: str = "b"
    c: dict[str, int] = field(default_factory=dict)


@quick_init
@dataclass(frozen=True, slots=True)
class _Quick:
    a: int
    b: str = "b"
    c: dict[str, int] = field(default_factory=dict)


@quick_init
@dataclass(frozen=True, slots=True, kw_only=True)
class _KeywordsOnly:
    a: int
    b: int = 2


def test_it_builds_what_the_generated_init_builds() -> None:
    for args, kwargs in (((1,), {}), ((1, "x"), {}), ((1,), {"c": {"k": 1}}), ((), {"a": 3})):
        quick = _Quick(*args, **kwargs)
        generated = _Generated(*args, **kwargs)
        assert dataclasses.astuple(quick) == dataclasses.astuple(generated)


def test_a_default_factory_gives_each_instance_its_own_value() -> None:
    assert _Quick(1).c is not _Quick(1).c
    event = AuditEvent(EventName.GATEWAY_STARTED, at=1.0)
    assert event.data == {} and event.data is not AuditEvent(EventName.GATEWAY_STARTED, 1.0).data


def test_the_instance_stays_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        _Quick(1).a = 2  # type: ignore[misc]


def test_keyword_only_fields_stay_keyword_only() -> None:
    assert _KeywordsOnly(a=1) == _KeywordsOnly(a=1, b=2)
    with pytest.raises(TypeError):
        _KeywordsOnly(1)  # type: ignore[call-arg]


def test_a_missing_argument_is_refused_as_before() -> None:
    with pytest.raises(TypeError):
        _Quick()  # type: ignore[call-arg]


def test_a_class_with_post_init_is_refused() -> None:
    @dataclass(frozen=True, slots=True)
    class Checked:
        a: int

        def __post_init__(self) -> None:
            pass

    with pytest.raises(TypeError, match="__post_init__"):
        quick_init(Checked)
