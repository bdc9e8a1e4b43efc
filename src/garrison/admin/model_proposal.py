"""Adding a model as a two-person change: at ``restricted`` or above, or on the server of a
better-protected model (``store.model_origin``), one admin proposes (202 with the change id)
and a second, different admin's approval creates it.

The upstream credential travels inside the proposal sealed with the deployment's seal key
(``keys/seal.keys``, the key that seals model credentials at rest); it is never stored,
shown or audited in the clear, and it is re-sealed, not opened, when the model is created.
"""

from __future__ import annotations

import asyncio
from typing import Any

from garrison.admin import schemas
from garrison.admin.base import Ctx
from garrison.domain import AuthStyle, Level, UpstreamApi
from garrison.domain.upstream_tls import parse_upstream_tls
from garrison.store import Directory, changes, model_origin

KIND = "model-create"
# The payload field holding the sealed credential (a Fernet token, ASCII).
SEALED_FIELD = changes.SEALED_KEY_FIELD


async def propose_if_sensitive(
    ctx: Ctx, body: schemas.ModelCreate, style: AuthStyle
) -> dict[str, Any] | None:
    """The proposal (and a 202) when adding this model takes two admins, else None."""
    level = Level.parse(body.level)
    existing = await ctx.read(model_origin.registered)
    why = await asyncio.to_thread(
        model_origin.creation_needs_two, body.upstream_url, level, existing
    )
    if why is None:
        return None
    payload = body.model_dump(exclude={"upstream_key"})
    payload["auth_style"] = style.value
    payload["upstream_model"] = body.upstream_model or body.name
    if body.upstream_key is not None:
        payload[SEALED_FIELD] = ctx.backend.sealer.seal(body.upstream_key).decode("ascii")
    summary = f"add model {body.name} ({level.label}) at {body.upstream_url}: {why}"
    proposal = await ctx.write(
        changes.propose, ctx.directory(), KIND, body.name, payload, summary, now=ctx.now
    )
    ctx.status = 202  # accepted: applied when a second admin approves
    return {"pending": proposal}


async def approve(ctx: Ctx, directory: Directory, payload: dict[str, Any]) -> Any:
    sealed = payload.get(SEALED_FIELD)
    model_id = await ctx.write(
        directory.create_model,
        payload["name"],
        upstream_url=payload["upstream_url"],
        upstream_model=payload["upstream_model"],
        api=UpstreamApi(payload["api"]),
        auth_style=AuthStyle(payload["auth_style"]),
        level=Level.parse(payload["level"]),
        compartments=payload["compartments"],
        upstream_key_sealed=sealed.encode("ascii") if isinstance(sealed, str) else None,
        extra_fields=payload.get("extra_fields") or (),
        upstream_tls=parse_upstream_tls(payload),
        now=ctx.now,
    )
    return {"id": model_id, "name": payload["name"]}
