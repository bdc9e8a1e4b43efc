"""The app's one middleware (``error_middleware`` checking the connection reserve first)
answers every request as the two middlewares it replaced did (commit 23a715a:
``error_middleware`` outside ``reserve_middleware``): status, body and headers, on the data
plane and the admin API, on ordinary and reserve connections, for unknown routes, wrong
methods, ``Expect: 100-continue``, malformed bodies and errors raised inside handlers. The
old middlewares are loaded from git (skipped where that commit is not in the repository)."""

from __future__ import annotations

import re
from typing import Any, cast
from unittest import mock

import aiohttp
import pytest
from aiohttp import web, web_protocol
from aiohttp.test_utils import TestServer
from aiohttp.typedefs import Handler, Middleware

from garrison.errors import BadRequest
from garrison.gateway import app as app_module
from garrison.gateway import connections
from garrison.gateway.connections import RESERVE_ATTRIBUTE
from garrison.gateway.state import GatewayState
from garrison.store.snapshot import Snapshot
from tests.support.git_source import source_at

BEFORE = "23a715a"


def _old_function(path: str, module: Any, name: str) -> Middleware | None:
    """``name`` as it was at BEFORE, run in ``module``'s namespace today."""
    raw = source_at(BEFORE, path)
    if raw is None:
        return None
    text = raw.decode()
    start = text.index(f"@web.middleware\nasync def {name}")
    source = text[start : text.index("\n__all__", start)]
    namespace = {**vars(module), "Handler": Handler}
    exec(compile(source, f"{BEFORE}:{path}", "exec"), namespace)  # noqa: S102
    return cast(Middleware, namespace[name])


OLD_ERROR = _old_function("src/garrison/gateway/app.py", app_module, "error_middleware")
OLD_RESERVE = _old_function(
    "src/garrison/gateway/connections.py", connections, "reserve_middleware"
)

pytestmark = pytest.mark.skipif(
    OLD_ERROR is None or OLD_RESERVE is None, reason=f"commit {BEFORE} not in this repository"
)


def admin_routes(app: web.Application) -> None:
    async def boom(request: web.Request) -> web.Response:
        raise RuntimeError("unexpected")

    async def refused(request: web.Request) -> web.Response:
        raise BadRequest(public_message="refused")

    async def fine(request: web.Request) -> web.Response:
        return web.json_response({"ok": 1})

    app.router.add_get("/admin/v1/boom", boom)
    app.router.add_post("/admin/v1/refused", refused)
    app.router.add_get("/admin/v1/fine", fine)


PATHS = [
    "/healthz",
    "/readyz",
    "/metrics",
    "/v1/models",
    "/v1/chat/completions",
    "/v1/messages",
    "/v1/embeddings",
    "/v1/messages/",
    "/unknown",
    "/admin",
    "/admin/v1/boom",
    "/admin/v1/refused",
    "/admin/v1/fine",
    "/admin/v1/unknown",
]
HEADERS: list[dict[str, str]] = [
    {},
    {"Expect": "100-continue"},
    {"anthropic-version": "2023-06-01"},
    {"Authorization": "Bearer not-a-key", "Content-Type": "application/json"},
]
REQUESTS = [
    (method, path, headers, body)
    for method in ("GET", "POST", "PUT")
    for path in PATHS
    for headers in HEADERS
    for body in (None, b"{", b'{"model":"m","messages":[]}')
]
Answer = tuple[Any, ...]


async def answers(middlewares: list[Middleware] | None, admin: bool) -> list[Answer]:
    state = GatewayState(
        snapshot=Snapshot.empty(), pepper=b"p" * 32, audit=cast(Any, mock.MagicMock())
    )
    app = app_module.build_app(state, admin_routes if admin else None)
    if middlewares is not None:
        app.middlewares.clear()
        app.middlewares.extend(middlewares)
    out: list[Answer] = []
    async with TestServer(app) as server, aiohttp.ClientSession() as session:
        for method, path, headers, body in REQUESTS:
            async with session.request(
                method, server.make_url(path), headers=headers, data=body
            ) as resp:
                text = re.sub(rb'"(?:request_id|id)":"[^"]*"', b'""', await resp.read())
                kept = sorted(
                    (k, v)
                    for k, v in resp.headers.items()
                    if k.lower() not in ("date", "x-request-id", "content-length")
                )
                out.append((resp.status, text, kept))
    return out


@pytest.mark.parametrize("reserve", [False, True], ids=["ordinary", "reserve"])
@pytest.mark.parametrize("admin", [False, True], ids=["data", "data+admin"])
async def test_the_one_middleware_answers_as_the_two_did(
    admin: bool, reserve: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every connection a reserve one (or none): the attribute the connection table sets.
    monkeypatch.setattr(web_protocol.RequestHandler, RESERVE_ATTRIBUTE, reserve, raising=False)
    assert OLD_ERROR is not None and OLD_RESERVE is not None
    new = await answers(None, admin)
    old = await answers([OLD_ERROR, OLD_RESERVE], admin)
    assert len(new) == len(REQUESTS)
    differing = [(REQUESTS[i], old[i], new[i]) for i in range(len(new)) if old[i] != new[i]]
    assert differing == []
    statuses = {answer[0] for answer in new}
    # The cases this covers: reserve refusals, unknown routes, wrong methods, handler errors.
    assert 503 in statuses and 404 in statuses and 405 in statuses
    if admin:
        assert {500, 400} <= statuses
