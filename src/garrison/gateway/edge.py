"""The data plane's side of the HTTP edge: where its handlers find the process state, and
errors in an API's own shape. What both planes read off a request the same way (request
ids, the presented key, the peer address, the body) is ``garrison.edge``; re-exported here
for the data plane's modules.
"""

from __future__ import annotations

from aiohttp import web

from garrison.domain import UpstreamApi
from garrison.edge.request import UNKNOWN_ADDRESS, peer_address, presented_key, read_body
from garrison.edge.request_ids import RequestIds, new_request_id
from garrison.errors import GarrisonError
from garrison.gateway import apis
from garrison.gateway.state import GatewayState
from garrison.gateway.upstream import REQUEST_ID_HEADER

_JSON = "application/json"


STATE_KEY: web.AppKey[GatewayState] = web.AppKey("garrison_state", GatewayState)


def error_response(api: UpstreamApi, exc: GarrisonError, request_id: str) -> web.Response:
    headers = {REQUEST_ID_HEADER: request_id}
    if exc.status == 401 and api is UpstreamApi.OPENAI:
        headers["www-authenticate"] = 'Bearer realm="garrison"'
    return web.Response(
        status=exc.status, body=apis.error_body(api, exc), content_type=_JSON, headers=headers
    )


__all__ = [
    "STATE_KEY",
    "UNKNOWN_ADDRESS",
    "RequestIds",
    "error_response",
    "new_request_id",
    "peer_address",
    "presented_key",
    "read_body",
]
