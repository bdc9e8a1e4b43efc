"""Admin routes for sign-in sessions: list a person's sessions (to name one in a lock).

A session is what one token exchange started (``garrison.admin.session_api``): its id, the
person, the provider's (iss, sub), the client key's thumbprint, when it was issued and
expires, how the person authenticated and the roles it holds. Never any token material: the
directory holds none. ``garrison lock credential <session id>`` ends one session alone.
"""

from __future__ import annotations

from typing import Any

from garrison.admin.authz import Action
from garrison.admin.base import FLAG_SCHEMA, Ctx, Route, _principal_id, query_flag
from garrison.errors import NotFound
from garrison.store import identity_links


async def list_sessions(ctx: Ctx) -> Any:
    ref = ctx.request.query.get("principal", "").strip()
    ended = query_flag(ctx, "all")
    if not ref:
        # Everyone's live sessions this admin may read (a vendor-manager: their vendor's).
        return await ctx.read(
            identity_links.list_sessions,
            None,
            now=ctx.now,
            include_ended=ended,
            orgs=ctx.reads_over(),
        )
    await ctx.require(Action.READ, "principal", ref)
    principal_id = await ctx.read(_principal_id, ref)
    if principal_id is None:
        raise NotFound(f"no principal {ref!r}", public_message=f"No principal {ref!r}.")
    return await ctx.read(
        identity_links.list_sessions,
        principal_id,
        now=ctx.now,
        include_ended=ended,
    )


ROUTES: tuple[Route, ...] = (
    Route(
        "GET",
        "/sessions",
        "Sign-in sessions (live ones; all=true: ended ones too), without any token.",
        list_sessions,
        Action.READ,
        query=(
            ("principal", "Only this person (name or id); else everyone's you may read."),
            ("all", "Include expired sessions.", FLAG_SCHEMA),
        ),
        tag="directory",
    ),
)
