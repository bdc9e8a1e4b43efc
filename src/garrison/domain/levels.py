"""Sensitivity levels, ordered: a clearance dominates a level when it is at least as high."""

from __future__ import annotations

import enum


class Level(enum.IntEnum):
    PUBLIC = 0
    INTERNAL = 1
    RESTRICTED = 2
    CRITICAL = 3

    @classmethod
    def parse(cls, text: str) -> Level:
        try:
            return cls[text.strip().upper()]
        except KeyError:
            names = ", ".join(level.name.lower() for level in cls)
            raise ValueError(f"unknown level {text!r} (expected one of: {names})") from None

    @property
    def label(self) -> str:
        return self.name.lower()
