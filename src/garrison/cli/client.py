"""The CLI's client for the admin API.

Where it connects and with which key, first match wins:

    address   GARRISON_ADMIN_URL, then [admin] url in the config, then the [gateway] host
              and port of the config
    key       GARRISON_ADMIN_KEY, then the file named by [admin] credential_file (0600,
              written by `garrison init`)
    client    `garrison --client-cert FILE [--client-key FILE]`, then GARRISON_CLIENT_CERT
    cert      (and GARRISON_CLIENT_KEY), then [admin] client_cert_file (and
              client_key_file): presented over TLS, for a key bound to that certificate
              (the key file: None when it is in the certificate's file)

The key travels only in the Authorization header; it is never printed, and errors from the
server are shown as their message alone.

Step-up: approvals, two-person changes and lock lifts need a fresh MFA sign-in when the
gateway signs people in through their provider (403 ``step_up_required``). The client then
retries the call once with this machine's signed-in session (``garrison login``'s file, a
DPoP-bound token) if there is one; if that is not fresh enough either, it says which command
to run, and at a terminal (without ``--no-input``) offers to run it and retries once more.
"""

from __future__ import annotations

import ipaddress
import os
import ssl
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson

from garrison.admin_wire import ADMIN_PREFIX
from garrison.cli.wording import humane
from garrison.config import Settings, load_settings
from garrison.domain.networks import parse_listen
from garrison.errors import ConfigError, GarrisonError
from garrison.identity.step_up import MFA_FRESH_S

# Reports read the audit log; a minute is generous for a directory of any real size and
# still ends a hung connection.
ADMIN_CLIENT_TIMEOUT_S = 60.0
# The admin API's error type for "sign in again with MFA" (garrison.identity.step_up).
STEP_UP_CODE = "step_up_required"
# What a person runs to step up: the provider authenticates them again if their sign-in
# there is older than the admin API accepts.
STEP_UP_COMMAND = f"garrison login --max-age {MFA_FRESH_S}"
# Where `garrison --no-input <command>` leaves the flag for the command (click's meta).
NO_INPUT_META = "garrison.no_input"
# Where `garrison --client-cert C --client-key K <command>` leaves (C, K) for the command.
CLIENT_CERT_META = "garrison.client_cert"

# A certificate file and its private key's file (None: the key is in the certificate's).
ClientCert = tuple[Path, Path | None]


class ApiError(GarrisonError):
    """The admin API refused the call; the message is the server's."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.http_status = status
        self.error_type = code


class NoAdminKey(ConfigError):
    """Neither the environment nor the config names an admin key."""


def may_prompt() -> bool:
    """True when a question can be asked: stdin is a terminal and ``--no-input`` (or
    ``GARRISON_NO_INPUT``) was not given."""
    import click

    ctx = click.get_current_context(silent=True)
    if ctx is not None and ctx.meta.get(NO_INPUT_META):
        return False
    if os.environ.get("GARRISON_NO_INPUT", "").strip() not in ("", "0"):
        return False
    return _stdin_is_terminal()


def _stdin_is_terminal() -> bool:
    return sys.stdin is not None and sys.stdin.isatty()


def _ask(question: str) -> bool:
    import click

    return bool(click.confirm(question, default=True, err=True))


def _step_up_login(gateway_url: str) -> None:
    """Run ``garrison login --max-age MFA_FRESH_S`` against this gateway."""
    import click

    from garrison.identity.oidc_login import login

    login(
        gateway_url,
        max_age=MFA_FRESH_S,
        say=lambda text: click.echo(text, err=True),
        local_address=os.environ.get("GARRISON_SOURCE_ADDRESS", "").strip() or None,
    )


def _session_path() -> Path | None:
    """This machine's stored session, if there is one."""
    from garrison.identity.client_session import default_session_path

    path = default_session_path()
    return path if path.is_file() else None


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
            raise NoAdminKey(
                "no admin credential: set GARRISON_ADMIN_KEY or [admin] credential_file"
            )
        key = _read_credential(settings.admin_credential_file)
    return url.rstrip("/"), key


def client_certificate(config_path: Path, env: dict[str, str] | None = None) -> ClientCert | None:
    """The client certificate to present (see the module docstring), or None."""
    import click

    ctx = click.get_current_context(silent=True)
    given = ctx.meta.get(CLIENT_CERT_META) if ctx is not None else None
    if given is not None:
        cert, key = given
        return Path(cert), Path(key) if key is not None else None
    env = dict(os.environ) if env is None else env
    if env.get("GARRISON_CLIENT_CERT", "").strip():
        key_env = env.get("GARRISON_CLIENT_KEY", "").strip()
        return Path(env["GARRISON_CLIENT_CERT"].strip()), Path(key_env) if key_env else None
    if env.get("GARRISON_CLIENT_KEY", "").strip():
        raise ConfigError("GARRISON_CLIENT_KEY is set without GARRISON_CLIENT_CERT")
    if not config_path.exists():
        return None
    settings = load_settings(config_path, env)
    if settings.admin_client_cert_file is None:
        return None
    return settings.admin_client_cert_file, settings.admin_client_key_file


def _tls_verify(client_cert: ClientCert | None) -> ssl.SSLContext | bool:
    """The CAs to trust (``_ca_verify``) and, when given, the client certificate to present.
    A file that does not load is named, never shown: a key file's content stays out of
    every message."""
    verify = _ca_verify()
    if client_cert is None:
        return verify
    context = verify if isinstance(verify, ssl.SSLContext) else ssl.create_default_context()
    cert, key = client_cert
    for path in (cert, key):
        if path is not None and not path.is_file():
            raise ConfigError(f"client certificate: {path} is not a file")
    try:
        context.load_cert_chain(str(cert), str(key) if key is not None else None)
    except (OSError, ssl.SSLError, ValueError):
        named = f"{cert} with the key in {key}" if key is not None else f"{cert}"
        raise ConfigError(
            f"client certificate: cannot load {named} (a PEM certificate and its matching, "
            "unencrypted private key)"
        ) from None
    return context


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


def _keyless(configured: bool) -> bool:
    """Nothing says where the admin API is, and no key is given: a session may say."""
    return not configured and not os.environ.get("GARRISON_ADMIN_KEY", "").strip()


class AdminClient:
    """``ask`` and ``step_up_login`` are the step-up's question and sign-in (tests inject
    them); ``session_path``: sign calls with that stored session instead of a key."""

    def __init__(
        self,
        base_url: str,
        key: str | None,
        *,
        timeout: float = ADMIN_CLIENT_TIMEOUT_S,
        session_path: Path | None = None,
        ask: Callable[[str], bool] | None = None,
        step_up_login: Callable[[str], None] | None = None,
        interactive: Callable[[], bool] | None = None,
        client_cert: ClientCert | None = None,
    ):
        self.base_url = base_url
        check_transport(base_url)
        self._verify = _tls_verify(client_cert)
        self._timeout = timeout
        self._ask = ask or _ask
        self._step_up_login = step_up_login or _step_up_login
        self._interactive = interactive or may_prompt
        self._with_session = session_path is not None
        self._http = self._client(key, session_path)

    def _client(self, key: str | None, session_path: Path | None) -> httpx.Client:
        headers = {"user-agent": "garrison-cli"}
        auth: httpx.Auth | None = None
        if session_path is not None:
            from garrison.client import DPoPAuth

            # The admin API may be on its own origin ([admin] listen): sign for it too.
            auth = DPoPAuth(session_path, origins=(self.base_url,))
        elif key is not None:
            headers["authorization"] = f"Bearer {key}"
        # GARRISON_SOURCE_ADDRESS: the local address to call from (a host with several).
        source = os.environ.get("GARRISON_SOURCE_ADDRESS", "").strip()
        verify = self._verify
        transport = httpx.HTTPTransport(local_address=source, verify=verify) if source else None
        return httpx.Client(
            base_url=self.base_url + ADMIN_PREFIX,
            headers=headers,
            auth=auth,
            timeout=self._timeout,
            follow_redirects=False,
            # An HTTP(S)_PROXY from the environment would receive the admin key; so the
            # environment is not read, except SSL_CERT_FILE (a private CA), read explicitly.
            trust_env=False,
            verify=verify,
            transport=transport,
        )

    def _use_session(self, path: Path) -> None:
        self._http.close()
        self._http = self._client(None, path)
        self._with_session = True

    @classmethod
    def from_config(cls, config_path: Path) -> AdminClient:
        """With an admin key when one is configured; else with this machine's signed-in
        session (``garrison login``), when there is one, at the admin API it signed in at
        unless the config or ``GARRISON_ADMIN_URL`` says where."""
        configured = config_path.exists() or bool(os.environ.get("GARRISON_ADMIN_URL"))
        cert = client_certificate(config_path)
        try:
            return cls(*resolve(config_path), client_cert=cert)
        except ConfigError as exc:
            session = _session_path()
            if session is None or not (isinstance(exc, NoAdminKey) or _keyless(configured)):
                raise
            if configured:
                url = resolve_url(config_path)
            else:
                # No config, no GARRISON_ADMIN_URL: the admin API the session signed in at.
                from garrison.identity.client_session import load_session

                url = load_session(session).admin_base
            return cls(url, None, session_path=session, client_cert=cert)

    def close(self) -> None:
        self._http.close()

    def call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
    ) -> Any:
        try:
            return self._call_once(method, path, body, params)
        except ApiError as exc:
            if exc.error_type != STEP_UP_CODE:
                raise
            return self._step_up(exc, method, path, body, params)

    def _step_up(
        self,
        refused: ApiError,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        params: dict[str, str] | None,
    ) -> Any:
        """The call needs a fresh MFA sign-in. First this machine's session (a key carries no
        MFA); then, at a terminal, a new sign-in; each retried once. Otherwise: the command."""
        from garrison.identity.client_session import default_session_path

        session = _session_path()
        if session is not None and not self._with_session:
            self._use_session(session)
            try:
                return self._call_once(method, path, body, params)
            except ApiError as exc:
                if exc.error_type != STEP_UP_CODE:
                    raise
                refused = exc
        if not self._interactive():
            raise ApiError(
                refused.http_status,
                f"{refused}\nTo continue: run `{STEP_UP_COMMAND}` (your provider asks for "
                "your second factor again), then run this command again.",
                STEP_UP_CODE,
            )
        if not self._ask(f"This needs a fresh sign-in with MFA. Run `{STEP_UP_COMMAND}` now?"):
            raise ApiError(
                refused.http_status,
                f"{refused}\nNot signed in again: run `{STEP_UP_COMMAND}`, then this command.",
                STEP_UP_CODE,
            )
        self._step_up_login(self.base_url)
        self._use_session(default_session_path())
        return self._call_once(method, path, body, params)

    def _call_once(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        params: dict[str, str] | None,
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
            code = None
            if isinstance(value, dict) and isinstance(value.get("error"), dict):
                message = str(value["error"].get("message") or message)
                code = value["error"].get("type")
            if resp.status_code == 400:
                message = humane(message)  # the options the user typed, not request fields
            raise ApiError(resp.status_code, message, code if isinstance(code, str) else None)
        return value

    def get(self, path: str, **params: str | None) -> Any:
        return self.call("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self.call("POST", path, body)

    def patch(self, path: str, body: dict[str, Any]) -> Any:
        return self.call("PATCH", path, body)


def _ca_verify() -> ssl.SSLContext | bool:
    """The system's CAs, or the bundle ``SSL_CERT_FILE`` names (a private CA's)."""
    bundle = os.environ.get("SSL_CERT_FILE", "").strip()
    if not bundle:
        return True
    try:
        return ssl.create_default_context(cafile=bundle)
    except (OSError, ssl.SSLError) as exc:
        raise GarrisonError(
            f"SSL_CERT_FILE {bundle}: cannot load it as a CA bundle ({exc})"
        ) from None
