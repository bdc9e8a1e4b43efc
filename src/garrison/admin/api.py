"""The admin API: HTTP/JSON under ``/admin/v1``, served by the gateway process.

This module is its face: the route table, composed of one table per resource family
(``principals_api``, ``orgs_api``, ``models_api``, ``locks_api``, ``incidents_api``,
``identity_api``, ``access_api``, ``alerts_api``), and its registration on an application.
Every route runs through one pipeline (``garrison.admin.dispatch``): authenticated exactly as
a model call is, authorised by the caller's admin roles (``garrison.admin.authz``), and
audited — writes in the same transaction as the change, refusals as ``admin.denied``, reads
as ``admin.read``.
"""

from __future__ import annotations

from aiohttp import web

from garrison.admin import (
    access_api,
    alerts_api,
    enroll_api,
    identity_api,
    incidents_api,
    locks_api,
    models_api,
    orgs_api,
    principals_api,
    sessions_api,
)
from garrison.admin.base import (
    BACKEND_KEY,
    PROCESS_KEY,
    AdminBackend,
    Ctx,
    Route,
)
from garrison.admin.dispatch import endpoint
from garrison.admin_wire import ADMIN_PREFIX
from garrison.edge.process import ProcessState

ROUTES: tuple[Route, ...] = (
    *identity_api.ROUTES,
    *access_api.ROUTES,
    *alerts_api.ROUTES,
    *principals_api.ROUTES,
    *orgs_api.ROUTES,
    *models_api.ROUTES,
    *locks_api.ROUTES,
    *incidents_api.ROUTES,
    *sessions_api.ROUTES,
)


async def openapi(ctx: Ctx) -> web.Response:
    from garrison.admin.openapi import document

    return web.Response(
        body=document(ROUTES),
        content_type="application/json",
        headers={"cache-control": "no-store"},
    )


# The document maps every operation, parameter and limit: an admin's reading, not a stranger's
# (any admin role; not recorded per read, like a scrape).
OPENAPI_ROUTE = Route(
    "GET", "/openapi.json", "This document.", openapi, tag="meta", audit_reads=False
)


def add_admin_routes(app: web.Application, backend: AdminBackend, process: ProcessState) -> None:
    """Serve the admin API on ``app``; its handlers read ``process`` and ``backend``."""
    app[BACKEND_KEY] = backend
    app[PROCESS_KEY] = process
    app[enroll_api.LIMITER_KEY] = backend.enroll_limiter or enroll_api.new_limiter()
    app.router.add_get(f"{ADMIN_PREFIX}/openapi.json", endpoint(OPENAPI_ROUTE))
    # Unauthenticated by nature (the person has no key yet): rate-limited, every failure
    # audited.
    app.router.add_post(f"{ADMIN_PREFIX}/enroll", enroll_api.enroll_endpoint)
    for route in ROUTES:
        app.router.add_route(route.method, ADMIN_PREFIX + route.path, endpoint(route))
    if backend.signin is not None:
        from garrison.admin.session_api import add_session_routes

        add_session_routes(app, backend.signin)
    app.router.add_get("/metrics", endpoint(alerts_api.METRICS_ROUTE))


__all__ = ["ADMIN_PREFIX", "ROUTES", "AdminBackend", "add_admin_routes"]
