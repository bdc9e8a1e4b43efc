"""Configuration: a TOML file written by ``garrison init``, with environment overrides.

    [gateway]
    host = "127.0.0.1"
    port = 8080
    trusted_proxies = ["10.0.0.0/8"]   # X-Forwarded-For believed only from these peers
    forwarded_header = "x-forwarded-for"   # or "forwarded" (RFC 7239): the one they append to
    tls_cert_file = "/etc/garrison/tls/cert.pem"   # optional: serve HTTPS (TLS 1.2+); both
    tls_key_file = "/etc/garrison/tls/key.pem"     # files are reloaded when they change
    tls_client_ca_file = "/etc/garrison/tls/clients-ca.pem"   # optional: client certificates
                                  # (for keys bound to one) must chain to it; reloaded too

    [storage]
    database_url = "sqlite:////var/lib/garrison/garrison.db"
    key_dir = "/var/lib/garrison/keys"   # pepper and sealing keys, mode 0600
    redis_url = "redis://127.0.0.1:6379/0"   # optional: limits and replay caches shared by
    redis_prefix = "garrison"             # every replica (unset: this process's own)

    [limits]                              # optional; defaults in garrison.gateway.limits
    max_body_bytes = 8388608

    [audit]
    witness_dir = "/mnt/witness/garrison"  # checkpoint copies outside the database
    fail_open = false                     # true: forward calls even if the log is down (loud)
    jsonl_path = "/var/log/garrison/audit.jsonl"   # optional copy for a SIEM
    syslog = "127.0.0.1:514"                       # optional RFC 5424 over UDP
    capture_bodies = false                # true: keep request bodies, encrypted (capture.keys)

    [detect]
    enabled = true
    rules = "/etc/garrison/rules.yaml"   # default: the built-in rules (garrison/detect/)

    [alerts]
    webhook_url = "https://siem.example/hooks/garrison"
    webhook_secret_env = "GARRISON_WEBHOOK_SECRET"  # HMAC key, read from the environment
    jsonl_path = "/var/log/garrison/alerts.jsonl"   # "-" for standard output
    syslog = "127.0.0.1:514"
    min_severity = "medium"

    [locks]
    stale_mode = "restricted"   # lock view older than limits.lock_view_stale_s: refuse calls to
                                # restricted/critical models; "all": every call; "open": none

    [tracing]                             # optional; needs the `otel` extra
    otlp_endpoint = "http://127.0.0.1:4318/v1/traces"   # unset: off, nothing imported
    [identity]                            # sign-in tokens (docs/tokens.md)
    public_url = "https://garrison.example"   # what DPoP proofs must name; never the Host header
    people_bearer_keys = "internal-and-below"  # or "all" (default), "none"
    mfa_from_level = "restricted"         # models at or above need MFA from a sign-in token
    mfa_amr_by_level = { critical = ["hwk"] }   # at critical only a hardware key counts

    [identity.oidc]                       # optional: people sign in through this provider
    issuer = "https://idp.example.com"    # (docs/identity.md; garrison.identity.oidc_config)
    client_id = "garrison"

    [admin]                               # where the CLI finds the admin API and its key
    url = "http://127.0.0.1:8080"         # default: [admin] listen, else the [gateway] address
    listen = "127.0.0.1:8081"             # optional: the admin API on its own listener only
    public_url = "https://garrison-admin.example"   # what admin calls' DPoP proofs name
                                          # (default: the admin listener's own address)
    credential_file = "/var/lib/garrison/admin.key"   # 0600; written by `garrison init`
    client_cert_file = "/etc/garrison/admin-client.pem"   # optional: the CLI's client
    client_key_file = "/etc/garrison/admin-client-key.pem"  # certificate (a bound key's)

Environment overrides (they win over the file): ``GARRISON_HOST``, ``GARRISON_PORT``,
``GARRISON_DATABASE_URL``, ``GARRISON_KEY_DIR``, ``GARRISON_TRUSTED_PROXIES`` (comma-separated),
``GARRISON_WITNESS_DIR``, ``GARRISON_METRICS_LISTEN``, ``GARRISON_REDIS_URL``; for the CLI,
``GARRISON_ADMIN_URL`` and ``GARRISON_ADMIN_KEY`` (the key itself, e.g. from a secrets
manager; it wins over ``credential_file``), ``GARRISON_CLIENT_CERT`` and
``GARRISON_CLIENT_KEY`` (they win over ``client_cert_file`` and ``client_key_file``).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from garrison.config_identity import identity_settings, public_url
from garrison.config_keys import check_config_document
from garrison.config_listeners import (
    client_ca_file,
    forwarded_header,
    listen_address,
    tls_files,
    trusted_proxies,
)
from garrison.domain import Network
from garrison.edge.client_address import ForwardedHeader
from garrison.errors import ConfigError
from garrison.gateway.limits import GatewayLimits
from garrison.gateway.state import StaleMode
from garrison.identity.oidc_config import OidcSettings, parse_oidc
from garrison.policy.context import IdentityPolicy

CONFIG_FILE = "garrison.toml"
ADMIN_CREDENTIAL_FILE = "admin.key"
DEFAULT_PORT = 8080


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str
    key_dir: Path
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    trusted_proxies: tuple[Network, ...] = ()
    # The header those proxies append the client's address to; the other one is ignored.
    forwarded_header: ForwardedHeader = ForwardedHeader.X_FORWARDED_FOR
    limits: GatewayLimits = field(default_factory=GatewayLimits)
    # Where signed checkpoints are copied, outside the database (None: no witness).
    witness_dir: Path | None = None
    # Availability over the record: forward calls even when the audit log cannot be written.
    # Off by default; when on, every such call is logged loudly.
    audit_fail_open: bool = False
    # Copies of every committed record for a SIEM: a JSON-lines file and/or syslog (UDP).
    audit_jsonl: Path | None = None
    # Keep request bodies, encrypted with keys/capture.keys (off: digest and size only).
    capture_bodies: bool = False
    audit_syslog: str | None = None
    # The admin API's address for the CLI (None: this gateway's own host and port).
    admin_url: str | None = None
    # A 0600 file holding the CLI's admin key (`garrison init` writes the first one).
    admin_credential_file: Path | None = None
    # The client certificate the CLI presents to the admin API (a key bound to it needs
    # it), and its private key (None: in the certificate's file).
    admin_client_cert_file: Path | None = None
    admin_client_key_file: Path | None = None
    # What a process refuses when it has not seen the locks for limits.lock_view_stale_s.
    lock_stale_mode: StaleMode = StaleMode.RESTRICTED
    # Detection: on by default, with the built-in rules unless a rules file is named.
    detect_enabled: bool = True
    rules_path: Path | None = None
    # Alert sinks: a webhook (its HMAC secret read from the named environment variable),
    # a JSON-lines file ("-": standard output), syslog; alerts at or above min_severity go
    # out (a playbook's notify sends any).
    alerts_webhook_url: str | None = None
    alerts_webhook_secret_env: str | None = None
    alerts_jsonl: str | None = None
    alerts_syslog: str | None = None
    alerts_min_severity: str = "medium"
    # Prometheus metrics on their own listener, no credential: loopback unless moved
    # ("" or None: off). Per-model labels only when an admin opts in.
    metrics_listen: str | None = None
    metrics_model_labels: bool = False
    # HTTPS on the listeners: a PEM certificate chain and its unencrypted key (None: HTTP).
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    # Client certificates (optional for callers) must chain to this bundle; keys bound to a
    # certificate are taken only with theirs (None: no client certificates are asked for).
    tls_client_ca_file: Path | None = None
    # The admin API on its own listener, host:port (None: on the data listener as well).
    admin_listen: str | None = None
    # The URL DPoP proofs of admin calls name (None: the admin listener's own address when
    # it has one, else the data plane's public_url).
    admin_public_url: str | None = None
    # OpenTelemetry traces (the `otel` extra): OTLP/HTTP endpoint; None: off, nothing loaded.
    tracing_otlp_endpoint: str | None = None
    # [identity]: the URL DPoP proofs name (None: http://host:port, fine on one machine; set
    # it behind a load balancer), and the MFA level and people's-key ceiling for policy.
    public_url: str | None = None
    identity_policy: IdentityPolicy = field(default_factory=IdentityPolicy)
    # [storage] redis_url: admission limits, DPoP and ID-token replay caches and attempt
    # limits shared by every replica (None: this process's own; Redis is never imported).
    redis_url: str | None = None
    redis_prefix: str = "garrison"

    @property
    def token_public_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        scheme = "https" if self.tls_cert_file is not None else "http"
        return self.public_url or f"{scheme}://{host}:{self.port}"

    # [identity.oidc]: the identity providers people sign in through (none: keys only).
    oidc: OidcSettings = field(default_factory=OidcSettings)

    @classmethod
    def for_data_dir(cls, data_dir: Path, **kw: Any) -> Settings:
        data_dir = data_dir.resolve()
        return cls(
            database_url=f"sqlite:///{data_dir / 'garrison.db'}",
            key_dir=data_dir / "keys",
            witness_dir=data_dir / "witness",
            admin_credential_file=data_dir / ADMIN_CREDENTIAL_FILE,
            **kw,
        )


def _limits(table: Mapping[str, Any], where: str) -> GatewayLimits:
    known = {f.name: f for f in dataclasses.fields(GatewayLimits)}
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key not in known:
            hint = difflib.get_close_matches(key, list(known), n=1)
            maybe = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ConfigError(
                f"{where}: [limits] unknown key {key!r}{maybe}; known: {', '.join(sorted(known))}"
            )
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not number or not math.isfinite(value) or value <= 0:
            raise ConfigError(f"{where}: limit {key!r} must be a positive number")
        values[key] = value
    return GatewayLimits(**values)


def _flag(table: Mapping[str, Any], key: str, path: Path, section: str = "audit") -> bool:
    value = table.get(key, False)
    if not isinstance(value, bool):
        raise ConfigError(f"{path}: [{section}] {key} must be true or false")
    return value


def _detection(
    detect: Mapping[str, Any], alerts: Mapping[str, Any], path: Path, base: Path
) -> dict[str, Any]:
    out: dict[str, Any] = {"detect_enabled": _flag({"x": detect.get("enabled", True)}, "x", path)}
    rules = detect.get("rules")
    if rules:
        rules_path = Path(str(rules))
        out["rules_path"] = rules_path if rules_path.is_absolute() else base / rules_path
    for key, setting in (
        ("webhook_url", "alerts_webhook_url"),
        ("webhook_secret_env", "alerts_webhook_secret_env"),
        ("jsonl_path", "alerts_jsonl"),
        ("syslog", "alerts_syslog"),
        ("min_severity", "alerts_min_severity"),
    ):
        if alerts.get(key):
            out[setting] = str(alerts[key])
    url = out.get("alerts_webhook_url")
    if url and not url.startswith(("http://", "https://")):
        raise ConfigError(f"{path}: [alerts] webhook_url must be http:// or https://")
    if out.get("alerts_min_severity", "medium") not in ("low", "medium", "high", "critical"):
        raise ConfigError(f"{path}: [alerts] min_severity must be low, medium, high or critical")
    return out


def _stale_mode(table: Mapping[str, Any], path: Path) -> StaleMode:
    value = table.get("stale_mode", StaleMode.RESTRICTED.value)
    try:
        return StaleMode(value)
    except ValueError:
        known = ", ".join(m.value for m in StaleMode)
        raise ConfigError(f"{path}: [locks] stale_mode must be one of {known}") from None


def load_settings(path: Path, env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found (run `garrison init`)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    check_config_document(data, str(path))
    gateway = data.get("gateway", {})
    storage = data.get("storage", {})
    base = path.parent
    try:
        database_url = env.get("GARRISON_DATABASE_URL") or storage["database_url"]
        key_dir = Path(env.get("GARRISON_KEY_DIR") or storage["key_dir"])
    except KeyError as exc:
        raise ConfigError(f"{path}: [storage] needs {exc.args[0]}") from None
    if not key_dir.is_absolute():
        key_dir = base / key_dir
    port_text = env.get("GARRISON_PORT") or gateway.get("port", DEFAULT_PORT)
    try:
        port = int(port_text)
    except (TypeError, ValueError):
        raise ConfigError(f"port {port_text!r} is not a number") from None
    if isinstance(port_text, bool) or not 0 <= port <= 65535:
        raise ConfigError(f"port {port_text!r} is not a TCP port (0-65535)")
    proxies = env.get("GARRISON_TRUSTED_PROXIES")
    audit = data.get("audit", {})
    witness = env.get("GARRISON_WITNESS_DIR") or audit.get("witness_dir")
    witness_dir = None if not witness else Path(witness)
    if witness_dir is not None and not witness_dir.is_absolute():
        witness_dir = base / witness_dir
    fail_open = _flag(audit, "fail_open", path)
    admin = data.get("admin", {})
    credential = admin.get("credential_file")
    credential_file = Path(credential) if credential else None
    if credential_file is not None and not credential_file.is_absolute():
        credential_file = base / credential_file
    tls_cert, tls_key = tls_files(gateway, path, base)
    client_cert = _relative(admin.get("client_cert_file"), base)
    client_key = _relative(admin.get("client_key_file"), base)
    if client_key is not None and client_cert is None:
        raise ConfigError(f"{path}: [admin] client_key_file needs client_cert_file")
    admin_public_url = public_url(admin.get("public_url"), "admin", path)
    return Settings(
        tls_cert_file=tls_cert,
        tls_key_file=tls_key,
        tls_client_ca_file=client_ca_file(gateway, tls_cert, path, base),
        admin_listen=listen_address(admin, "admin", path),
        admin_public_url=admin_public_url,
        database_url=database_url,
        key_dir=key_dir,
        host=env.get("GARRISON_HOST") or gateway.get("host", "127.0.0.1"),
        port=port,
        trusted_proxies=trusted_proxies(
            proxies if proxies is not None else gateway.get("trusted_proxies", []), str(path)
        ),
        forwarded_header=forwarded_header(gateway, path),
        limits=_limits(data.get("limits", {}), str(path)),
        witness_dir=witness_dir,
        audit_fail_open=fail_open,
        audit_jsonl=Path(audit["jsonl_path"]) if audit.get("jsonl_path") else None,
        audit_syslog=str(audit["syslog"]) if audit.get("syslog") else None,
        capture_bodies=_flag(audit, "capture_bodies", path),
        admin_url=env.get("GARRISON_ADMIN_URL") or admin.get("url") or None,
        admin_credential_file=credential_file,
        admin_client_cert_file=client_cert,
        admin_client_key_file=client_key,
        lock_stale_mode=_stale_mode(data.get("locks", {}), path),
        metrics_listen=_metrics_listen(
            {"listen": env["GARRISON_METRICS_LISTEN"]}
            if "GARRISON_METRICS_LISTEN" in env
            else data.get("metrics", {}),
            path,
        ),
        metrics_model_labels=_flag(data.get("metrics", {}), "model_labels", path, "metrics"),
        **_detection(data.get("detect", {}), data.get("alerts", {}), path, base),
        tracing_otlp_endpoint=_tracing_endpoint(data.get("tracing", {}), path),
        **identity_settings(data.get("identity", {}), path),
        oidc=parse_oidc(data.get("identity", {}).get("oidc"), str(path)),
        **_redis(storage, env, path),
    )


# ── [storage] redis_url (garrison.shared) ─────────────────────────────────────────────────
def _redis(table: Mapping[str, Any], env: Mapping[str, str], path: Path) -> dict[str, Any]:
    url = env.get("GARRISON_REDIS_URL") or table.get("redis_url") or ""
    prefix = table.get("redis_prefix", "garrison")
    if not isinstance(url, str) or not isinstance(prefix, str):
        raise ConfigError(f"{path}: [storage] redis_url and redis_prefix must be strings")
    url = url.strip()
    if url and urlsplit(url).scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(
            f"{path}: [storage] redis_url must be a redis://, rediss:// or unix:// URL"
        )
    if not prefix or any(c.isspace() for c in prefix):
        raise ConfigError(f"{path}: [storage] redis_prefix must be a word without spaces")
    return {"redis_url": url or None, "redis_prefix": prefix}


# ── [tracing] (garrison.gateway.tracing) ──────────────────────────────────────────────────
def _tracing_endpoint(table: Mapping[str, Any], path: Path) -> str | None:
    value = table.get("otlp_endpoint", "")
    if not isinstance(value, str):
        raise ConfigError(f"{path}: [tracing] otlp_endpoint must be a string URL")
    value = value.strip()
    if value and not value.startswith(("http://", "https://")):
        raise ConfigError(f"{path}: [tracing] otlp_endpoint must be an http:// or https:// URL")
    return value or None


def _relative(value: Any, base: Path) -> Path | None:
    """A file named in the config, relative to the config's directory."""
    if not value:
        return None
    named = Path(str(value))
    return named if named.is_absolute() else base / named


# Where Prometheus metrics are served by default (`garrison init` writes it): loopback only,
# since the listener asks for no credential.
DEFAULT_METRICS_LISTEN = "127.0.0.1:9464"


def _metrics_listen(table: Mapping[str, Any], path: Path) -> str | None:
    return listen_address(table, "metrics", path)


def render_settings(settings: Settings) -> str:
    proxies = ", ".join(f'"{n}"' for n in settings.trusted_proxies)
    return (
        "# Garrison configuration (see docs/operations.md)\n"
        "[gateway]\n"
        f'host = "{settings.host}"\n'
        f"port = {settings.port}\n"
        f"trusted_proxies = [{proxies}]\n\n"
        "[storage]\n"
        f'database_url = "{settings.database_url}"\n'
        f'key_dir = "{settings.key_dir}"\n\n'
        "[audit]\n"
        f'witness_dir = "{settings.witness_dir or ""}"\n'
        "fail_open = false\n\n"
        "[admin]\n"
        f'credential_file = "{settings.admin_credential_file or ""}"\n\n'
        "[metrics]\n"
        '# Prometheus scrapes here without a key: keep it on loopback ("" turns it off).\n'
        f'listen = "{settings.metrics_listen or ""}"\n'
        "model_labels = false\n"
    )
