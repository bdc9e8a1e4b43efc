"""``garrison init``: the database, the key files and the first admin credential."""

from __future__ import annotations

import getpass
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import orjson
import sqlalchemy as sa

from garrison.audit import EventName
from garrison.audit.checkpoint import create_signing_key
from garrison.config import CONFIG_FILE, DEFAULT_METRICS_LISTEN, Settings, render_settings
from garrison.domain import Level, OrgKind, PrincipalKind
from garrison.domain.roles import Role
from garrison.errors import BadRequest, ConfigError
from garrison.keyring import Sealer, create_key_files, load_pepper
from garrison.store import CreatedKey, Directory, make_engine, migrate, schema

INTERNAL_ORG = "internal"
FIRST_ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Initialized:
    settings: Settings
    config_path: Path
    admin_key: CreatedKey


def local_actor() -> str:
    """Who runs a local command, for the audit record."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"cli:{user}@{socket.gethostname()}"


def init(data_dir: Path, *, host: str = "127.0.0.1", port: int = 8080) -> Initialized:
    data_dir = data_dir.resolve()
    config_path = data_dir / CONFIG_FILE
    if config_path.exists():
        raise ConfigError(f"{config_path} already exists; refusing to initialise twice")
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir.chmod(0o700)
    settings = Settings.for_data_dir(
        data_dir, host=host, port=port, metrics_listen=DEFAULT_METRICS_LISTEN
    )
    create_key_files(settings.key_dir)
    create_signing_key(settings.key_dir)
    settings.key_dir.chmod(0o700)
    engine = make_engine(settings.database_url)
    try:
        migrate(engine)
        directory = open_directory(settings, engine=engine)
        now = time.time()
        directory.record_event(
            EventName.SYSTEM_INITIALIZED, now=now, data={"data_dir": str(data_dir)}
        )
        directory.create_org(INTERNAL_ORG, OrgKind.INTERNAL, now=now)
        directory.create_principal(
            FIRST_ADMIN,
            org=INTERNAL_ORG,
            kind=PrincipalKind.HUMAN,
            clearance=Level.CRITICAL,
            roles=(Role.SECURITY_ADMIN,),
            now=now,
        )
        admin_key = directory.create_key(FIRST_ADMIN, now=now, note="first admin (garrison init)")
    finally:
        engine.dispose()
    assert settings.admin_credential_file is not None
    write_credential(settings.admin_credential_file, admin_key.key.token.reveal())
    config_path.write_text(render_settings(settings))
    config_path.chmod(0o600)
    return Initialized(settings=settings, config_path=config_path, admin_key=admin_key)


def write_credential(path: Path, token: str) -> None:
    """Write an admin key to a file only its owner can read (created 0600, never wider)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")


def recover_admin_key(directory: Directory, principal: str, *, now: float) -> CreatedKey:
    """A new key for an active security-admin, issued locally (break glass; audited as the
    local user)."""
    engine = directory.engine
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(schema.principals).where(
                sa.or_(schema.principals.c.id == principal, schema.principals.c.name == principal)
            )
        ).first()
    if row is None or Role.SECURITY_ADMIN.value not in orjson.loads(row.roles):
        raise BadRequest(f"{principal!r} is not a security-admin")
    return directory.create_key(row.id, now=now, note="recover-admin (local break glass)")


def open_directory(
    settings: Settings, *, engine: sa.Engine | None = None, actor: str | None = None
) -> Directory:
    return Directory(
        engine if engine is not None else make_engine(settings.database_url),
        actor=actor or local_actor(),
        pepper=load_pepper(settings.key_dir),
        sealer=Sealer.from_dir(settings.key_dir),
    )
