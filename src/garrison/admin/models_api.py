"""Admin routes for models: register, describe, change (restricted and critical ones by a
two-person proposal).
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from garrison.admin import (
    access_api,
    model_proposal,
    schemas,
)
from garrison.admin.authz import Action
from garrison.admin.base import (
    Ctx,
    Route,
)
from garrison.admin.params import level_param
from garrison.domain import (
    AuthStyle,
    Level,
    UpstreamApi,
)
from garrison.domain.upstream_tls import check_upstream_tls, parse_upstream_tls
from garrison.errors import (
    BadRequest,
)
from garrison.store import changes as changes_rules
from garrison.store import queries
from garrison.tls.upstream import check_tls_files


async def list_models(ctx: Ctx) -> Any:
    return await ctx.read(queries.list_models)


async def show_model(ctx: Ctx) -> Any:
    return await ctx.read(queries.show_model, ctx.request.match_info["ref"])


async def create_model(ctx: Ctx) -> Any:
    body: schemas.ModelCreate = ctx.body
    api = UpstreamApi(body.api)
    if body.auth_style is not None:
        style = AuthStyle(body.auth_style)
    elif body.upstream_key is None:
        style = AuthStyle.NONE
    else:
        style = AuthStyle.X_API_KEY if api is UpstreamApi.ANTHROPIC else AuthStyle.BEARER
    create = functools.partial(
        ctx.directory().create_model,
        body.name,
        upstream_url=body.upstream_url,
        upstream_model=body.upstream_model or body.name,
        api=api,
        auth_style=style,
        level=Level.parse(body.level),
        compartments=body.compartments,
        upstream_key=body.upstream_key,
        extra_fields=body.extra_fields,
        upstream_tls=check_upstream_tls(
            body.upstream_url,
            body.tls_ca_file,
            body.tls_client_cert_file,
            body.tls_client_key_file,
        ),
        now=ctx.now,
    )
    await asyncio.to_thread(create, dry_run=True)  # every rule, now
    await asyncio.to_thread(check_tls_files, create.keywords["upstream_tls"])
    proposal = await model_proposal.propose_if_sensitive(ctx, body, style)
    if proposal is not None:
        return proposal
    model_id = await ctx.write(create)
    return {"id": model_id, "name": body.name}


async def update_model(ctx: Ctx) -> Any:
    body: schemas.ModelUpdate = ctx.body
    ref = ctx.request.match_info["ref"]
    update = functools.partial(
        ctx.directory().update_model,
        ref,
        now=ctx.now,
        upstream_url=body.upstream_url,
        upstream_model=body.upstream_model,
        api=UpstreamApi(body.api) if body.api else None,
        auth_style=AuthStyle(body.auth_style) if body.auth_style else None,
        upstream_key=body.upstream_key,
        clear_upstream_key=body.clear_upstream_key,
        level=level_param(body.level),
        compartments=body.compartments,
        extra_fields=body.extra_fields,
        tls_ca_file=body.tls_ca_file,
        tls_client_cert_file=body.tls_client_cert_file,
        tls_client_key_file=body.tls_client_key_file,
        clear_upstream_tls=body.clear_upstream_tls,
    )
    preview = await asyncio.to_thread(update, dry_run=True)
    if "upstream_tls" in preview:
        await asyncio.to_thread(check_tls_files, parse_upstream_tls(preview["upstream_tls"][1]))
    if changes_rules.model_change_is_sensitive(preview):
        if body.upstream_key is not None:
            # A pending change is stored in the clear: credentials never wait in it.
            raise BadRequest(
                "lowering a model's level or removing a compartment takes a second admin; "
                "change the upstream credential in a separate call"
            )
        target = await ctx.read(queries.find, queries.m, ref, "model")
        wanted = body.model_dump(exclude_none=True, exclude_defaults=True)
        return await access_api.propose(
            ctx, "model-update", target.id, wanted, f"change model {target.name}: {preview}"
        )
    return {"changes": await ctx.write(update, forbid_sensitive=True)}


ROUTES: tuple[Route, ...] = (
    Route("GET", "/models", "The model registry.", list_models, Action.READ_MODELS, tag="models"),
    Route(
        "POST",
        "/models",
        "Register a model.",
        create_model,
        Action.WRITE_MODEL,
        schemas.ModelCreate,
        201,
        tag="models",
    ),
    Route(
        "GET",
        "/models/{ref}",
        "One registered model.",
        show_model,
        Action.READ_MODELS,
        tag="models",
    ),
    Route(
        "PATCH",
        "/models/{ref}",
        "Change a model's upstream, level or compartments.",
        update_model,
        Action.WRITE_MODEL,
        schemas.ModelUpdate,
        tag="models",
    ),
)
