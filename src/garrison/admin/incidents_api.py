"""Admin routes for incidents: open, update, the blast-radius report, the evidence bundle."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from garrison.admin import schemas
from garrison.admin.authz import Action
from garrison.admin.base import (
    Ctx,
    Route,
)
from garrison.domain.incidents import IncidentStatus
from garrison.errors import (
    BadRequest,
)
from garrison.respond import render
from garrison.store import incidents as store_incidents

log = logging.getLogger("garrison.admin")


async def list_incidents(ctx: Ctx) -> Any:
    return await ctx.read(store_incidents.list_incidents)


async def open_incident(ctx: Ctx) -> Any:
    body: schemas.IncidentOpen = ctx.body
    incident_id = await ctx.write(
        ctx.directory().open_incident,
        body.title,
        now=ctx.now,
        since=schemas.epoch(body.since) if body.since else None,
        vendors=body.vendors,
        principals=body.principals,
        credentials=body.credentials,
    )
    return {"id": incident_id, "status": "open"}


async def update_incident(ctx: Ctx) -> Any:
    body: schemas.IncidentUpdate = ctx.body
    return await ctx.write(
        ctx.directory().update_incident,
        ctx.request.match_info["incident_id"],
        now=ctx.now,
        status=IncidentStatus(body.status) if body.status else None,
        note=body.note,
    )


REPORT_FORMATS = ("json", "md", "html")


async def incident_report(ctx: Ctx) -> Any:
    fmt = ctx.request.query.get("format", "json")
    if fmt not in REPORT_FORMATS:
        raise BadRequest(f"format must be one of {', '.join(REPORT_FORMATS)}")
    report = await ctx.read(
        store_incidents.incident_report, ctx.request.match_info["incident_id"], ctx.now
    )
    if fmt == "md":
        return {"format": "md", "content": render.to_markdown(report)}
    if fmt == "html":
        return {"format": "html", "content": render.to_html(report)}
    return report


# Evidence waits this long for a signed checkpoint to cover the newest events (checkpoints
# are signed at least once a second while events flow).
EVIDENCE_CHECKPOINT_WAIT_S = 3.0


async def incident_evidence(ctx: Ctx) -> Any:
    from garrison.respond.evidence import build_evidence

    backend = ctx.backend
    if backend.database_url is None:
        raise BadRequest("evidence bundles need the audit log's database")
    incident_id = ctx.request.match_info["incident_id"]
    deadline = time.monotonic() + EVIDENCE_CHECKPOINT_WAIT_S
    while True:
        try:
            bundle = await asyncio.to_thread(
                build_evidence,
                backend.engine,
                backend.database_url,
                incident_id,
                dict(backend.public_keys),
                ctx.now,
            )
        except LookupError as exc:
            bundle = None
            problem = str(exc)
        if bundle is not None and (
            not bundle["not_yet_checkpointed"] or time.monotonic() > deadline
        ):
            return bundle
        if bundle is None and time.monotonic() > deadline:
            raise BadRequest(problem)
        await asyncio.sleep(0.2)


ROUTES: tuple[Route, ...] = (
    Route(
        "GET", "/incidents", "Incidents.", list_incidents, Action.READ_INCIDENTS, tag="incidents"
    ),
    Route(
        "POST",
        "/incidents",
        "Open an incident.",
        open_incident,
        Action.MANAGE_INCIDENTS,
        schemas.IncidentOpen,
        201,
        tag="incidents",
    ),
    Route(
        "PATCH",
        "/incidents/{incident_id}",
        "Change status (transition table) or add a note.",
        update_incident,
        Action.MANAGE_INCIDENTS,
        schemas.IncidentUpdate,
        tag="incidents",
    ),
    Route(
        "GET",
        "/incidents/{incident_id}/report",
        "Blast-radius report from the audit log (format=json|md|html).",
        incident_report,
        Action.READ_INCIDENTS,
        query=(("format", "json, md or html.", {"enum": list(REPORT_FORMATS)}),),
        tag="incidents",
    ),
    Route(
        "GET",
        "/incidents/{incident_id}/evidence",
        "Evidence bundle: events with inclusion proofs, the checkpoint, the public keys.",
        incident_evidence,
        Action.READ_INCIDENTS,
        tag="incidents",
    ),
)
