"""Admin API: alerts (list, follow, acknowledge, resolve) and the Prometheus metrics."""

from __future__ import annotations

import math
from typing import Any

from aiohttp import web

from garrison.admin import schemas
from garrison.admin.authz import Action
from garrison.admin.base import Ctx, Route
from garrison.errors import BadRequest, NotFound
from garrison.store import alerts

# Alerts per list call (a follower pages with ?after=).
ALERTS_PAGE_MAX = 500


async def list_alerts(ctx: Ctx) -> Any:
    status = ctx.request.query.get("status")
    if status is not None and status not in ("open", "acked", "resolved"):
        raise BadRequest("status must be open, acked or resolved")
    after_text = ctx.request.query.get("after")
    after = None
    if after_text is not None:
        try:
            after = float(after_text)
        except ValueError:
            after = math.nan
        if not math.isfinite(after):
            raise BadRequest("after must be a time in seconds since the epoch")
    return await ctx.read(
        alerts.list_alerts, status=status, updated_after=after, limit=ALERTS_PAGE_MAX
    )


async def show_alert(ctx: Ctx) -> Any:
    return await ctx.read(alerts.show_alert, ctx.request.match_info["alert_id"])


def _status_handler(status: str) -> Any:
    async def handler(ctx: Ctx) -> Any:
        body: schemas.AlertUpdate = ctx.body
        result = await ctx.write(
            alerts.update,
            ctx.directory(),
            ctx.request.match_info["alert_id"],
            now=ctx.now,
            status=status,
            note=body.note,
        )
        monitor = ctx.backend.monitor
        if status == "resolved" and monitor is not None:
            shown = await ctx.read(alerts.show_alert, ctx.request.match_info["alert_id"])
            subject = shown["subject"]
            monitor.engine.forget(f"{shown['rule_id']}|{subject['kind']}|{subject['id']}")
        return result

    handler.__name__ = f"{status}_alert"
    return handler


async def metrics(ctx: Ctx) -> Any:
    """Prometheus text format; needs a key whose principal may read alerts (Prometheus sends
    it as ``authorization: bearer`` credentials)."""
    render = ctx.backend.metrics
    if render is None:
        raise NotFound(public_message="Metrics are not served here.")
    return web.Response(body=render(), content_type="text/plain", charset="utf-8")


METRICS_ROUTE = Route(
    "GET",
    "/metrics",
    "Prometheus metrics.",
    metrics,
    Action.READ_ALERTS,
    tag="metrics",
    audit_reads=False,
)


ROUTES: tuple[Route, ...] = (
    Route(
        "GET",
        "/alerts",
        "Alerts, newest last (status=, after= to follow).",
        list_alerts,
        Action.READ_ALERTS,
        query=(
            ("status", "open, acked or resolved", {"enum": ["open", "acked", "resolved"]}),
            ("after", "Only alerts updated after this time (epoch seconds).", {"type": "number"}),
        ),
        tag="alerts",
    ),
    Route(
        "GET",
        "/alerts/{alert_id}",
        "One alert with its evidence and actions.",
        show_alert,
        Action.READ_ALERTS,
        tag="alerts",
    ),
    Route(
        "POST",
        "/alerts/{alert_id}/ack",
        "Acknowledge an alert.",
        _status_handler("acked"),
        Action.MANAGE_ALERTS,
        schemas.AlertUpdate,
        tag="alerts",
    ),
    Route(
        "POST",
        "/alerts/{alert_id}/resolve",
        "Resolve an alert.",
        _status_handler("resolved"),
        Action.MANAGE_ALERTS,
        schemas.AlertUpdate,
        tag="alerts",
    ),
)
