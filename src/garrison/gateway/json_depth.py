"""How deep a parsed JSON body nests, checked right after parsing.

orjson parses up to 1,024 levels but re-encodes at most 254, and Python code that walks a
body recursively (the content scanner) stops near 1,000: a body nested between those limits
used to parse, pass every check and then fail as a 500 with no record. Bodies are refused
deeper than ``MAX_JSON_DEPTH`` at parse time instead, with a 400 in the API's shape.
"""

from __future__ import annotations

from typing import Any

# Far beyond any real request (a tool's JSON schema nests ~20 levels), far below what the
# re-encoder (254) and a recursive walk (~1,000) can handle.
MAX_JSON_DEPTH = 64

_CONTAINERS = (dict, list)


def within_depth(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether ``value`` nests at most ``limit`` levels (a bare object or list is level 1).
    Iterative: no recursion, whatever the input."""
    if not isinstance(value, _CONTAINERS):
        return True
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        container, depth = stack.pop()
        if depth > limit:
            return False
        items = container.values() if type(container) is dict else container
        for item in items:
            if type(item) is dict or type(item) is list:
                stack.append((item, depth + 1))
    return True
