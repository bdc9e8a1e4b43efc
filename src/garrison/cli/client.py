"""The CLI's client for the admin API.

Where it connects and with which key, first match wins:

    address   GARRISON_ADMIN_URL, then [admin] url in the config, then the [gateway] host
              and port of the config
    key       GARRISON_ADMIN_KEY, then the file named by [admin] credential_file (0600,
              written by `garrison init`)

The key travels only in the Authorization header; it is never printed, and errors from the
server are shown as their message alone.
"""

from __future__ import annotations

import ipaddress
import os
import stat
from pathlib import Path
from typing import Any

import httpx
import orjson

from garrison.admin_wire import ADMIN_PREFIX
from garrison.cli.wording import humane
from garrison.config import Settings, load_settings
from garrison.domain.networks import parse_listen
from garrison.errors import ConfigError, GarrisonError

# Reports read the audit log; a minute is generous for a directory of any real size and
# still ends a hung connection.
ADMIN_CLIENT_TIMEOUT_S = 60.0


class ApiError(GarrisonError):
    """The admin API refused the call; the message is the server's."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.http_status = status


def _connect_host(host: str) -> str:
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 - a listen address, mapped to loopback
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def _own_url(settings: Settings) -> str:
    """The admin API of this deployment: its own listener when it has one, over HTTPS when
    the gateway serves TLS."""
    scheme = "https" if settings.tls_cert_file is not None else "http"
    if settings.admin_listen:
        host, port = parse_listen(settings.admin_listen)
    else:
        host, port = settings.host, settings.port
    return f"{scheme}://{_connect_host(host)}:{port}"


def _read_credential(path: Path) -> str:
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ConfigError(f"admin credential file {path} not found") from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"admin credential file {path} is readable by others; chmod 600 it")
    token = path.read_text().strip()
    if not token:
        raise ConfigError(f"admin credential file {path} is empty")
    return token


def resolve_url(config_path: Path, env: dict[str, str] | None = None) -> str:
    """The admin API's base URL alone (enrolling needs no key)."""
    env = dict(os.environ) if env is None else env
    settings = load_settings(config_path, env) if config_path.exists() else None
    url = env.get("GARRISON_ADMIN_URL") or (settings.admin_url if settings else None)
    if not url:
        if settings is None:
            raise ConfigError(
                f"config file {config_path} not found and GARRISON_ADMIN_URL is not set"
            )
        url = _own_url(settings)
    return url.rstrip("/")


def resolve(config_path: Path, env: dict[str, str] | None = None) -> tuple[str, str]:
    """The admin API's base URL and the admin key to present."""
    env = dict(os.environ) if env is None else env
    settings: Settings | None = None
    if config_path.exists():
        settings = load_settings(config_path, env)
    url = env.get("GARRISON_ADMIN_URL") or (settings.admin_url if settings else None)
    if not url:
        if settings is None:
            raise ConfigError(
                f"config file {config_path} not found and GARRISON_ADMIN_URL is not set"
            )
        url = _own_url(settings)
    key = env.get("GARRISON_ADMIN_KEY", "").strip()
    if not key:
        if settings is None or settings.admin_credential_file is None:
            raise ConfigError(
                "no admin credential: set GARRISON_ADMIN_KEY or [admin] credential_file"
            )
        key = _read_credential(settings.admin_credential_file)
    return url.rstrip("/"), key


def check_transport(url: str) -> None:
    """The admin key travels in a header: only over TLS, or to this host itself."""
    parts = httpx.URL(url)
    if parts.userinfo:
        raise ConfigError("the admin API address must not carry a user or password")
    host = parts.host
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False  # a name (other than localhost) may resolve anywhere
    if parts.scheme == "http" and not loopback:
        raise ConfigError(
            f"refusing to send the admin key in clear text to {host}: use https:// "
            "(plain http only to this host's loopback)"
        )
    if parts.scheme not in ("http", "https"):
        raise ConfigError("the admin API address must be http:// (loopback) or https://")


class AdminClient:
    def __init__(self, base_url: str, key: str | None, *, timeout: float = ADMIN_CLIENT_TIMEOUT_S):
        self.base_url = base_url
        check_transport(base_url)
        headers = {"user-agent": "garrison-cli"}
        if key is not None:
            headers["authorization"] = f"Bearer {key}"
        # GARRISON_SOURCE_ADDRESS: the local address to call from (a host with several).
        source = os.environ.get("GARRISON_SOURCE_ADDRESS", "").strip()
        transport = httpx.HTTPTransport(local_address=source) if source else None
        self._http = httpx.Client(
            base_url=base_url + ADMIN_PREFIX,
            headers=headers,
            timeout=timeout,
            follow_redirects=False,
            # An HTTP(S)_PROXY from the environment would receive the admin key.
            trust_env=False,
            transport=transport,
        )

    @classmethod
    def from_config(cls, config_path: Path) -> AdminClient:
        return cls(*resolve(config_path))

    def close(self) -> None:
        self._http.close()

    def call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
    ) -> Any:
        content = None if body is None else orjson.dumps(body)
        headers = {"content-type": "application/json"} if content is not None else {}
        try:
            resp = self._http.request(method, path, content=content, params=params, headers=headers)
        except httpx.TransportError as exc:
            raise ApiError(
                0,
                f"cannot reach the admin API at {self.base_url} ({type(exc).__name__}); "
                "is `garrison serve` running there?",
            ) from None
        try:
            value = orjson.loads(resp.content) if resp.content else None
        except orjson.JSONDecodeError:
            value = None
        if resp.status_code >= 400:
            message = f"HTTP {resp.status_code}"
            if isinstance(value, dict) and isinstance(value.get("error"), dict):
                message = str(value["error"].get("message") or message)
            if resp.status_code == 400:
                message = humane(message)  # the options the user typed, not request fields
            raise ApiError(resp.status_code, message)
        return value

    def get(self, path: str, **params: str | None) -> Any:
        return self.call("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self.call("POST", path, body)

    def patch(self, path: str, body: dict[str, Any]) -> Any:
        return self.call("PATCH", path, body)
