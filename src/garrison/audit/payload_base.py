"""What every typed audit payload shares: its fields are its record's ``data`` keys.

A payload class is a frozen dataclass whose fields are the keys its producer writes, in the
order it writes them (``as_data`` keeps that order: the record, and the bytes the tree
hashes, are what the dictionary the producer used to build by hand gave). A field is

- required: the key is always written (``None`` is written as ``null``);
- ``ABSENT`` by default: a key sometimes left out (left out of ``data`` while ``ABSENT``);
- ``keyed("from")``: a key that is not a Python identifier, under another field name;
- ``required()``: a required field named as one of the facts every payload answers.

``from_data`` reads a stored record's ``data`` back (``None`` when a key its class requires
is missing: a record an older producer wrote — encoding version 1, say — stays readable as
``Untyped``). A payload holds its class's keys only: a key it does not name (``origin``,
which the journal adds to every directory change) stays in the record. Readers take the
``EventFacts`` fields (``garrison.audit.events``): a payload without such a field answers
``None`` (or ``()``).

Pure: no I/O.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Final, Literal, TypeVar

from garrison.audit.events import EventName


class _Absent(enum.Enum):
    ABSENT = "absent"

    def __repr__(self) -> str:
        return "ABSENT"


# A key this record leaves out (not ``None``, which is written as null).
ABSENT: Final = _Absent.ABSENT
Absent = Literal[_Absent.ABSENT]

_KEY = "garrison.audit.key"


def keyed(key: str, *, default: Any = dataclasses.MISSING) -> Any:
    """A field written under ``key`` (a key that is not a Python identifier, e.g. ``from``)."""
    return dataclasses.field(default=default, metadata={_KEY: key})


def required() -> Any:
    """A required field named as one of the ``EventFacts`` that ``Payload`` answers
    (``org_id``, ``status``, ``reasons``…): without it the dataclass would take the base's
    property for the field's default (``named`` refuses such a class)."""
    return dataclasses.field()


class Payload:
    """The base of the directory's, the admin API's and the responders' payloads (no state).
    Subclasses are frozen slotted keyword-only dataclasses marked ``named(NAME)``."""

    __slots__ = ()
    NAME: ClassVar[EventName]
    # (data key, attribute, required) in the order the producer writes them.
    _KEYS: ClassVar[tuple[tuple[str, str, bool], ...]]

    def as_data(self) -> dict[str, Any]:
        """The record's ``data``: every field's key in order, less the ``ABSENT`` ones."""
        data: dict[str, Any] = {}
        for key, attr, _ in self._KEYS:
            value = getattr(self, attr)
            if value is not ABSENT:
                data[key] = value
        return data

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> Payload | None:
        """The payload ``data`` holds; ``None`` if it lacks a key this class requires."""
        values: dict[str, Any] = {}
        for key, attr, required in cls._KEYS:
            if key in data:
                values[attr] = data[key]
            elif required:
                return None
        return cls(**values)

    # What readers take from any event (``EventFacts``); a payload with the key overrides.
    @property
    def org_id(self) -> str | None:
        return None

    @property
    def client_address(self) -> str | None:
        return None

    @property
    def status(self) -> int | None:
        return None

    @property
    def outcome(self) -> str | None:
        return None

    @property
    def reasons(self) -> tuple[str, ...]:
        return ()

    @property
    def tokens_in(self) -> int | None:
        return None

    @property
    def tokens_out(self) -> int | None:
        return None

    @property
    def presented_key_id(self) -> str | None:
        return None

    @property
    def content_flags(self) -> tuple[str, ...]:
        return ()


P = TypeVar("P", bound=type[Payload])


def named(name: EventName) -> Callable[[P], P]:
    """Mark a ``Payload`` dataclass (``dataclass(frozen=True, slots=True, kw_only=True)``,
    applied below this) as the data of ``name``: its fields, in order, are the keys."""

    def mark(cls: P) -> P:
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if isinstance(f.default, property):
                raise TypeError(f"{cls.__name__}.{f.name}: declare it `= required()`")
        cls.NAME = name
        cls._KEYS = tuple(
            (
                f.metadata.get(_KEY, f.name),
                f.name,
                f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
            )
            for f in dataclasses.fields(cls)  # type: ignore[arg-type]
        )
        return cls

    return mark
