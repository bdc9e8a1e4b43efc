"""The CLI's sign-in session on the user's machine: ``~/.config/garrison/session.json``.

Written by ``garrison login`` after the token exchange, read by ``garrison.client`` and
``garrison curl``. It holds the access token and the private DPoP key the token is bound
to, so it is created 0600 (and refused if anyone else can read it, like the key files).
``$XDG_CONFIG_HOME`` moves it, ``$GARRISON_SESSION_FILE`` names it outright.

    {"access_token": "...", "expires_at": 1765000000.0,
     "dpop_private_jwk": {"kty": "EC", "crv": "P-256", ...},
     "gateway_url": "https://...", "admin_url": "https://..."}

``gateway_url`` is the data plane (``garrison curl``, ``garrison.client``); ``admin_url``
the admin API the person signed in at (admin commands), which differs when the admin API
has its own listener (``[admin] listen``). A file without ``admin_url`` (written before
there were two) reads as one URL for both.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from joserfc.errors import JoseError
from joserfc.jwk import ECKey

from garrison.errors import ConfigError
from garrison.private_files import write_private_bytes

SESSION_FILE_NAME = "session.json"
# A session file is a few kilobytes; anything bigger is not one.
SESSION_FILE_MAX_BYTES = 64 * 1024


def default_session_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get("GARRISON_SESSION_FILE"):
        return Path(env["GARRISON_SESSION_FILE"])
    base = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else Path.home() / ".config"
    return base / "garrison" / SESSION_FILE_NAME


@dataclass(frozen=True, slots=True)
class ClientSession:
    access_token: str = field(repr=False)
    expires_at: float
    dpop_private_jwk: Mapping[str, Any] = field(repr=False)
    gateway_url: str
    # The admin API's URL (None: the gateway's; one listener serves both).
    admin_url: str | None = None

    @property
    def admin_base(self) -> str:
        """Where admin commands go with this session."""
        return self.admin_url or self.gateway_url

    def proof_key(self) -> ECKey:
        try:
            key = ECKey.import_key(dict(self.dpop_private_jwk))
        except (JoseError, ValueError, TypeError):
            raise ConfigError("the session's DPoP key is not a valid EC key") from None
        if not key.is_private:
            raise ConfigError("the session's DPoP key has no private part")
        return key

    def expired(self, now: float) -> bool:
        return now >= self.expires_at


def save_session(session: ClientSession, path: Path | None = None) -> Path:
    """Write the session file (0600, its directory 0700), replacing any older one."""
    path = path or default_session_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    data = {
        "access_token": session.access_token,
        "expires_at": session.expires_at,
        "dpop_private_jwk": dict(session.dpop_private_jwk),
        "gateway_url": session.gateway_url,
    }
    if session.admin_url is not None:
        data["admin_url"] = session.admin_url
    tmp = path.with_name(path.name + ".new")
    write_private_bytes(tmp, json.dumps(data, indent=1).encode())
    os.replace(tmp, path)
    return path


def load_session(path: Path | None = None) -> ClientSession:
    """The stored session; ``ConfigError`` (saying to run ``garrison login``) otherwise."""
    path = path or default_session_path()
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ConfigError(f"no session at {path}: run `garrison login`") from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"{path} is readable by others: run `chmod 600 {path}`")
    if info.st_size > SESSION_FILE_MAX_BYTES:
        raise ConfigError(f"{path} is not a Garrison session file")
    try:
        data = json.loads(path.read_bytes())
        session = ClientSession(
            access_token=str(data["access_token"]),
            expires_at=float(data["expires_at"]),
            dpop_private_jwk=dict(data["dpop_private_jwk"]),
            gateway_url=str(data["gateway_url"]),
            admin_url=str(data["admin_url"]) if data.get("admin_url") else None,
        )
    except (ValueError, KeyError, TypeError):
        raise ConfigError(f"{path} is not a Garrison session file: run `garrison login`") from None
    return session


def delete_session(path: Path | None = None) -> bool:
    path = path or default_session_path()
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True
