"""Parse human durations like ``90d``, ``12h``, ``30m``, ``45s``."""

from __future__ import annotations

import math
import re

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")


def parse_duration(text: str) -> float:
    match = _RE.match(text)
    if match is None:
        raise ValueError(f"invalid duration {text!r} (examples: 45s, 30m, 12h, 90d, 2w)")
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"duration {text!r} must be positive")
    return seconds
