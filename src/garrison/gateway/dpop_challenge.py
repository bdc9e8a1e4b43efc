"""``WWW-Authenticate: DPoP ...`` on the 401s of calls made with a DPoP-bound token.

RFC 9449 section 7.1: a resource server refusing a DPoP-bound token says so with the DPoP
scheme and the proof algorithms it takes. Every 401 of either plane is answered by its own
code in its API's error shape with a ``Bearer`` challenge; this hook, run as each response is
prepared, swaps in the DPoP challenge when the call presented ``Authorization: DPoP``. The
body is untouched, so the error shape stays the API's own.
"""

from __future__ import annotations

from aiohttp import web

from garrison.identity.token_auth import DPOP_CHALLENGE, dpop_token


async def dpop_challenge(request: web.Request, response: web.StreamResponse) -> None:
    if response.status == 401 and dpop_token(request.headers.get("authorization")) is not None:
        response.headers["www-authenticate"] = DPOP_CHALLENGE
