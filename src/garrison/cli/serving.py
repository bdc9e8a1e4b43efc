"""What ``garrison serve`` and ``garrison demo`` tell the operator: where the gateway listens
and what it writes to, and — when the port is taken — one line naming the port and the
option that moves it, instead of a traceback."""

from __future__ import annotations

import errno
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

import click

from garrison.config import Settings
from garrison.errors import ConfigError, ServerError

# The errors a bind gives for a port another process holds, or one this user may not take.
_BIND_ERRNOS = frozenset({errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL})


def startup_lines(settings: Settings, port: int) -> list[str]:
    """The listening address, the database, the audit mode and where the admin key is."""
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    mode = (
        "fail open (calls go through even when their record cannot be written)"
        if settings.audit_fail_open
        else "fail closed (a call whose record cannot be written is refused)"
    )
    copies = [
        f"{what} {where}"
        for what, where in (("JSON lines", settings.audit_jsonl), ("syslog", settings.audit_syslog))
        if where
    ]
    if copies:
        mode += "; copies to " + ", ".join(copies)
    key = (
        f"{settings.admin_credential_file} (the CLI reads it from there)"
        if settings.admin_credential_file is not None
        else "not in a file: set GARRISON_ADMIN_KEY for the CLI"
    )
    scheme = "https" if settings.tls_cert_file is not None else "http"
    admin = (
        [f"admin API: {scheme}://{settings.admin_listen} (its own listener only)"]
        if settings.admin_listen
        else []
    )
    tls = (
        [f"tls:       {settings.tls_cert_file} (reloaded when it changes; TLS 1.2 or later)"]
        if settings.tls_cert_file is not None
        else []
    )
    if settings.tls_client_ca_file is not None:
        tls.append(f"clients:   certificates of {settings.tls_client_ca_file} (optional)")
    return [
        f"garrison listening on {scheme}://{host}:{port}",
        *admin,
        *tls,
        f"database:  {settings.database_url}",
        f"audit:     {mode}",
        f"admin key: {key}",
    ]


def announce(settings: Settings, port: int) -> None:
    for line in startup_lines(settings, port):
        click.echo(line)


@contextmanager
def port_errors(ports: dict[int, str]) -> Iterator[None]:
    """Turn a failed bind into one line naming the port and ``ports[port]``, the option that
    sets it."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in _BIND_ERRNOS:
            raise
        text = str(exc)
        port, option = next(
            ((p, o) for p, o in ports.items() if f", {p})" in text or f":{p}" in text),
            next(iter(ports.items())),
        )
        what = "is already in use" if exc.errno == errno.EADDRINUSE else "cannot be used here"
        raise ConfigError(f"port {port} {what}: choose another with {option}") from None


@contextmanager
def database_errors() -> Iterator[None]:
    """A database that cannot be read at start (corrupt, truncated, not a database) is one
    line and the exit code "failed" (6), not a traceback: say what to do about it."""
    import sqlalchemy.exc

    try:
        yield
    except (sqlite3.DatabaseError, sqlalchemy.exc.DatabaseError) as exc:
        reason = getattr(exc, "orig", None) or exc
        raise ServerError(
            f"the database cannot be read ({reason}): restore it from a backup "
            "(docs/operations.md, Backup and restore), then check it with garrison audit verify"
        ) from None
