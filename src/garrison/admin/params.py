"""Query parameters of admin routes, read with their bounds."""

from __future__ import annotations

from garrison.admin.base import (
    Ctx,
)
from garrison.domain import (
    Level,
)
from garrison.errors import (
    BadRequest,
)

# Reports count "dormant" seats over at most ten years of history.
DORMANT_DAYS_MAX = 3650


# ── handlers ───────────────────────────────────────────────────────────────────────────────
def level_param(name: str | None) -> Level | None:
    return None if name is None else Level.parse(name)


def query_int(ctx: Ctx, name: str, default: int, low: int, high: int) -> int:
    text = ctx.request.query.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise BadRequest(f"query parameter {name} must be a whole number") from None
    if not low <= value <= high:
        raise BadRequest(f"query parameter {name} must be between {low} and {high}")
    return value
