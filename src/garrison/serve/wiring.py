"""The small factories the composition root (``garrison.server``) wires a process from: its
data directory, the PostgreSQL change listener, the token auth for a public URL, the shared
Redis backends and OIDC sign-in. Each builds one part from the settings; none starts it."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from garrison.config import Settings
from garrison.errors import ConfigError
from garrison.identity.token_auth import TokenAuth
from garrison.store import is_postgres, sqlite_path
from garrison.store.change_feed import ChangeListener


def data_dir(settings: Settings) -> Path:
    """This process's own files (the emergency lock journal; free space is read there): the
    SQLite database's directory, or on PostgreSQL the one holding the key directory."""
    path = sqlite_path(settings.database_url)
    return path.parent if path is not None else settings.key_dir.parent


def change_listener(url: str) -> Callable[[Callable[[], None]], ChangeListener] | None:
    """On PostgreSQL, the change listener that wakes the snapshot watcher (LISTEN/NOTIFY);
    on SQLite none (processes poll the file)."""
    if not is_postgres(url):
        return None

    def build(wake: Callable[[], None]) -> ChangeListener:
        return ChangeListener(url, on_change=lambda _seq: wake(), on_resync=wake)

    return build


def with_url(tokens: TokenAuth | None, url: str | None) -> TokenAuth | None:
    """``tokens`` checking proofs against ``url`` (same keys, replay cache and verified
    tokens); unchanged when ``url`` is None."""
    if tokens is None or url is None:
        return tokens
    return dataclasses.replace(tokens, public_url=url)


def shared_backends(settings: Settings) -> Any:
    """The shared backends (garrison.shared.backends.SharedBackends) for [storage]
    redis_url; None without it (and Redis is never imported)."""
    if not settings.redis_url:
        return None
    from garrison.admin.session_api import (
        ID_TOKEN_REPLAY_PER_VENDOR_MAX,
        SIGNIN_ATTEMPTS_PER_SOURCE,
    )
    from garrison.shared.backends import connect

    return connect(
        settings.redis_url,
        settings.redis_prefix,
        id_token_per_owner=ID_TOKEN_REPLAY_PER_VENDOR_MAX,
        signin_per_source=SIGNIN_ATTEMPTS_PER_SOURCE,
    )


def build_signin(settings: Settings, tokens: TokenAuth | None) -> Any:
    """Sign-in through [identity.oidc]; it signs with this process's token keys and checks
    proofs against its public URL and jti cache (``state.tokens``)."""
    from garrison.admin import session_api

    if tokens is None:
        raise ConfigError("[identity.oidc] needs the token keys (token.keys) of this process")
    return session_api.build_signin(settings.oidc)
