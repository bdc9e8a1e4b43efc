"""Registered models: adding one, and changes to one (where it is served, how it is
reached, who may use it); re-sealing the upstream credentials under a new key.

The audit event keeps each changed field's before and after, except the upstream
credential, which is recorded only as "replaced" or "removed".
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import orjson
import sqlalchemy as sa

from garrison.audit.payload_base import ABSENT
from garrison.audit.payloads_directory import ModelCreated, ModelUpdated, SealKeyRotated
from garrison.domain import AuthStyle, Level, UpstreamApi
from garrison.domain.names import check_compartments, check_name, check_url
from garrison.domain.request_fields import check_extra_fields
from garrison.domain.two_person import model_change_is_sensitive
from garrison.domain.upstream_tls import (
    UpstreamTls,
    check_upstream_tls,
    parse_upstream_tls,
)
from garrison.errors import BadRequest, Conflict
from garrison.keyring import Sealer
from garrison.store import changes, journal, schema
from garrison.store.columns import json_list, parse_compartments, parse_extra_fields
from garrison.store.db import write_transaction
from garrison.store.journal import Journal
from garrison.store.rows import lookup, new_id, unique


def _change_tls(
    row: Any,
    url: str | None,
    wanted: tuple[str | None, str | None, str | None],
    clear: bool,
    changes: dict[str, Any],
    values: dict[str, Any],
) -> None:
    """The upstream TLS setting: the files given replace those stored (the others are kept),
    or all are removed; a kept setting must still suit a new URL (https)."""
    given = any(f is not None for f in wanted)
    if given and clear:
        raise BadRequest("give new upstream TLS files or remove them, not both")
    old = parse_upstream_tls(orjson.loads(row.upstream_tls) if row.upstream_tls else None)
    new_url = url if url is not None else row.upstream_url
    if not given and not clear:
        if old is not None and url is not None:
            check_upstream_tls(new_url, *old.files())
        return
    kept = old.files() if old else (None, None, None)
    merged = [w if w is not None else k for w, k in zip(wanted, kept, strict=True)]
    new = None if clear else check_upstream_tls(new_url, *merged)
    if new != old:
        changes["upstream_tls"] = [
            old.as_fields() if old else None,
            new.as_fields() if new else None,
        ]
        values["upstream_tls"] = orjson.dumps(new.as_fields()).decode() if new else None


def create_model(
    d: Journal,
    name: str,
    *,
    upstream_url: str,
    upstream_model: str,
    api: UpstreamApi,
    auth_style: AuthStyle,
    level: Level,
    compartments: Iterable[str] = (),
    upstream_key: str | None = None,
    extra_fields: Iterable[str] = (),
    upstream_key_sealed: bytes | None = None,
    upstream_tls: UpstreamTls | None = None,
    now: float,
    dry_run: bool = False,
) -> str:
    """A new model. ``upstream_key_sealed``: the credential as it travelled sealed in a
    two-person proposal (re-sealed under the newest key, never opened here); ``dry_run``
    checks every rule and writes nothing."""
    name = check_name(name, "model name")
    upstream_model = check_name(upstream_model, "upstream model name")
    url = check_url(upstream_url)
    comps = check_compartments(compartments)
    extras = check_extra_fields(extra_fields)
    tls = check_upstream_tls(url, *upstream_tls.files()) if upstream_tls else None
    keyed = upstream_key is not None or upstream_key_sealed is not None
    if keyed and auth_style is AuthStyle.NONE:
        raise BadRequest("an upstream key was given but auth style is 'none'")
    if upstream_key_sealed is not None:
        sealed: bytes | None = d.sealer.rotate(upstream_key_sealed)
    else:
        sealed = d.sealer.seal(upstream_key) if upstream_key else None
    model_id = new_id("mdl")
    with write_transaction(d.engine) as conn:
        unique(conn, schema.models, name, "model")
        if dry_run:
            return model_id
        conn.execute(
            sa.insert(schema.models).values(
                id=model_id,
                name=name,
                upstream_url=url,
                upstream_model=upstream_model,
                api=api.value,
                auth_style=auth_style.value,
                level=int(level),
                compartments=json_list(comps),
                upstream_key_sealed=sealed,
                created_at=now,
                extra_fields=json_list(extras),
                upstream_tls=orjson.dumps(tls.as_fields()).decode() if tls else None,
            )
        )
        journal.record(
            conn,
            at=now,
            actor=d.actor,
            origin=d.origin,
            payload=ModelCreated(
                upstream_url=url,
                upstream_model=upstream_model,
                api=api.value,
                level=level.label,
                compartments=sorted(comps),
                upstream_key="sealed" if sealed else None,
                extra_fields=sorted(extras),
                upstream_tls=tls.as_fields() if tls else ABSENT,
            ),
            entity="model",
            entity_id=model_id,
            op="create",
            model=name,
        )
    return model_id


def reseal_upstream_keys(d: Journal, sealer: Sealer, *, now: float) -> int:
    """Re-encrypt every sealed upstream key under ``sealer``'s newest key."""
    count = 0
    with write_transaction(d.engine) as conn:
        rows = conn.execute(
            sa.select(schema.models.c.id, schema.models.c.upstream_key_sealed).where(
                schema.models.c.upstream_key_sealed.is_not(None)
            )
        ).all()
        for row in rows:
            conn.execute(
                sa.update(schema.models)
                .where(schema.models.c.id == row.id)
                .values(upstream_key_sealed=sealer.rotate(bytes(row.upstream_key_sealed)))
            )
            count += 1
        # Credentials waiting sealed in two-person proposals are re-sealed too.
        count += changes.reseal_pending(conn, sealer)
        journal.record(
            conn,
            at=now,
            actor=d.actor,
            origin=d.origin,
            payload=SealKeyRotated(resealed=count),
            entity="keys",
            entity_id="seal",
            op="rotate",
        )
    return count


def update_model(
    d: Journal,
    ref: str,
    *,
    now: float,
    upstream_url: str | None = None,
    upstream_model: str | None = None,
    api: UpstreamApi | None = None,
    auth_style: AuthStyle | None = None,
    upstream_key: str | None = None,
    clear_upstream_key: bool = False,
    level: Level | None = None,
    compartments: Iterable[str] | None = None,
    extra_fields: Iterable[str] | None = None,
    tls_ca_file: str | None = None,
    tls_client_cert_file: str | None = None,
    tls_client_key_file: str | None = None,
    clear_upstream_tls: bool = False,
    dry_run: bool = False,
    forbid_sensitive: bool = False,
) -> dict[str, Any]:
    """Apply the given changes; returns ``{field: [before, after]}`` for what changed.
    ``dry_run``: check and report, write nothing."""
    if upstream_key is not None and clear_upstream_key:
        raise BadRequest("give a new upstream key or remove it, not both")
    url = check_url(upstream_url) if upstream_url is not None else None
    up_model = check_name(upstream_model, "upstream model name") if upstream_model else None
    comps = check_compartments(compartments) if compartments is not None else None
    extras = check_extra_fields(extra_fields) if extra_fields is not None else None
    sealed = d.sealer.seal(upstream_key) if upstream_key else None
    if upstream_key is not None and not upstream_key:
        raise BadRequest("the upstream key is empty")
    with write_transaction(d.engine) as conn:
        row = lookup(conn, schema.models, ref, "model")
        changes: dict[str, Any] = {}
        values: dict[str, Any] = {}

        def change(field: str, before: Any, after: Any, stored: Any) -> None:
            if after is not None and after != before:
                changes[field] = [before, after]
                values[field] = stored

        change("upstream_url", row.upstream_url, url, url)
        change("upstream_model", row.upstream_model, up_model, up_model)
        change("api", row.api, api.value if api else None, api.value if api else None)
        change(
            "auth_style",
            row.auth_style,
            auth_style.value if auth_style else None,
            auth_style.value if auth_style else None,
        )
        old_level = Level(row.level)
        if level is not None and level != old_level:
            changes["level"] = [old_level.label, level.label]
            values["level"] = int(level)
        old_comps = parse_compartments(row.compartments)
        if comps is not None and comps != old_comps:
            changes["compartments"] = [sorted(old_comps), sorted(comps)]
            values["compartments"] = json_list(comps)
        old_extras = parse_extra_fields(row.extra_fields)
        if extras is not None and extras != old_extras:
            changes["extra_fields"] = [sorted(old_extras), sorted(extras)]
            values["extra_fields"] = json_list(extras)
        wanted = (tls_ca_file, tls_client_cert_file, tls_client_key_file)
        _change_tls(row, url, wanted, clear_upstream_tls, changes, values)
        has_key = row.upstream_key_sealed is not None
        if sealed is not None:
            changes["upstream_key"] = "replaced" if has_key else "added"
            values["upstream_key_sealed"] = sealed
        elif clear_upstream_key and has_key:
            changes["upstream_key"] = "removed"
            values["upstream_key_sealed"] = None
        new_host = url is not None and urlsplit(url).netloc != urlsplit(row.upstream_url).netloc
        # A new host never inherits the old host's credential: it would be sent there.
        inherits = sealed is None and has_key and not clear_upstream_key
        if new_host and inherits:
            changes["upstream_key"] = "removed (new host)"
            values["upstream_key_sealed"] = None
            if "auth_style" not in values:
                values["auth_style"] = AuthStyle.NONE.value
                changes["auth_style"] = [row.auth_style, AuthStyle.NONE.value]
        style = AuthStyle(values.get("auth_style", row.auth_style))
        keyed = values.get("upstream_key_sealed", row.upstream_key_sealed) is not None
        if style is AuthStyle.NONE and keyed:
            raise BadRequest("auth style 'none' with an upstream key: remove the key too")
        if forbid_sensitive and model_change_is_sensitive(changes):
            raise Conflict(f"model {row.name!r} changed meanwhile; this change needs two admins")
        if not values or dry_run:
            return changes
        conn.execute(sa.update(schema.models).where(schema.models.c.id == row.id).values(**values))
        journal.record(
            conn,
            at=now,
            actor=d.actor,
            origin=d.origin,
            payload=ModelUpdated(name=row.name, changes=changes),
            entity="model",
            entity_id=row.id,
            op="update",
            model=row.name,
        )
    return changes
