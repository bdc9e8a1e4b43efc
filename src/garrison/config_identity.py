"""The ``[identity]`` section of a configuration file (sign-in tokens, docs/tokens.md): the
public URL DPoP proofs must name, which levels people's bearer keys may reach, and where MFA
is asked for and which methods count. ``public_url`` is shared with ``[admin]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from garrison.domain import Level
from garrison.errors import ConfigError
from garrison.identity.dpop import normalize_htu
from garrison.policy.context import NO_PEOPLE_KEYS, IdentityPolicy


def _level(value: Any, key: str, path: Path) -> Level:
    try:
        return Level.parse(str(value))
    except ValueError:
        raise ConfigError(
            f"{path}: [identity] {key} must name a level (public, internal, restricted, critical)"
        ) from None


def public_url(url: Any, section: str, path: Path) -> str | None:
    """A ``public_url``: an http(s) origin (no path), without a trailing slash."""
    if not url:
        return None
    try:
        normalize_htu(str(url))
    except ValueError:
        raise ConfigError(f"{path}: [{section}] public_url must be an http(s) URL") from None
    if urlsplit(str(url)).path.strip("/") or "?" in str(url) or "#" in str(url):
        raise ConfigError(f"{path}: [{section}] public_url is the origin only (no path)")
    return str(url).rstrip("/")


def identity_settings(table: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """``[identity]``: public_url, people_bearer_keys ("all", "none", "<level>-and-below"),
    mfa_from_level (a level)."""
    out: dict[str, Any] = {}
    url = public_url(table.get("public_url"), "identity", path)
    if url is not None:
        out["public_url"] = url
    keys = str(table.get("people_bearer_keys", "all")).lower()
    ceiling: int | None
    if keys == "all":
        ceiling = None
    elif keys == "none":
        ceiling = NO_PEOPLE_KEYS
    elif keys.endswith("-and-below"):
        ceiling = int(_level(keys.removesuffix("-and-below"), "people_bearer_keys", path))
    else:
        raise ConfigError(
            f'{path}: [identity] people_bearer_keys must be "all", "none" or "<level>-and-below"'
        )
    mfa = _level(table.get("mfa_from_level", "restricted"), "mfa_from_level", path)
    out["identity_policy"] = IdentityPolicy(
        mfa_from_level=mfa,
        people_key_max_level=ceiling,
        mfa_amr_by_level=_mfa_amr_by_level(table.get("mfa_amr_by_level", {}), mfa, path),
    )
    return out


def _mfa_amr_by_level(
    table: Any, mfa_from: Level, path: Path
) -> tuple[tuple[Level, frozenset[str]], ...]:
    """``mfa_amr_by_level = { critical = ["hwk"] }``: at a level listed, a sign-in's MFA
    counts only when its ``amr`` holds one of those methods (RFC 8176 names)."""
    where = f"{path}: [identity] mfa_amr_by_level"
    if not isinstance(table, dict):
        raise ConfigError(f'{where} must be a table like {{ critical = ["hwk"] }}')
    out = []
    for name, methods in table.items():
        level = _level(name, "mfa_amr_by_level", path)
        if level < mfa_from:
            raise ConfigError(
                f"{where}: {level.name.lower()} is below mfa_from_level, where no MFA is "
                "asked for; lower mfa_from_level or drop it"
            )
        if not isinstance(methods, list) or not methods:
            raise ConfigError(f"{where}: {name} must be a non-empty list of amr values")
        if not all(isinstance(m, str) and m.strip() for m in methods):
            raise ConfigError(f"{where}: {name} must list amr values (strings)")
        out.append((level, frozenset(m.strip() for m in methods)))
    return tuple(sorted(out, key=lambda pair: int(pair[0])))
