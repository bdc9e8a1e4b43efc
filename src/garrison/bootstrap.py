"""``garrison init``: the database, the key files and the first admin credential."""

from __future__ import annotations

import dataclasses
import getpass
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson
import sqlalchemy as sa

from garrison.audit.checkpoint import create_signing_key
from garrison.audit.exporters import build_exporters
from garrison.audit.outbox import integrate_or_wait
from garrison.audit.payloads_host import BreakGlass, SystemInitialized
from garrison.config import CONFIG_FILE, DEFAULT_METRICS_LISTEN, Settings, render_settings
from garrison.domain import Level, OrgKind, PrincipalKind, Reason
from garrison.domain.names import check_name
from garrison.domain.provenance import Provenance
from garrison.domain.roles import Role
from garrison.errors import BadRequest, ConfigError
from garrison.keyring import Sealer, create_key_files, load_pepper
from garrison.store import (
    CreatedKey,
    Directory,
    enrollment,
    make_engine,
    migrate,
    schema,
    sqlite_path,
)
from garrison.store.db import on_outbox_commit
from garrison.store.enrollment import Invitation

INTERNAL_ORG = "internal"
FIRST_ADMIN = "admin"
# Two-person rules need two admins: fewer than this at init is allowed, with a loud warning.
INIT_ADMINS_EXPECTED = 2
# More first admins than this is a mistake (add people later by invitation).
INIT_ADMINS_MAX = 10


@dataclass(frozen=True, slots=True)
class Initialized:
    settings: Settings
    config_path: Path
    # One enrollment code per first admin (shown once); no key exists until each redeems.
    codes: tuple[Invitation, ...]

    @property
    def lone_admin(self) -> bool:
        return len(self.codes) < INIT_ADMINS_EXPECTED


def local_actor() -> str:
    """Who runs a local command, for the audit record."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"cli:{user}@{socket.gethostname()}"


def init(
    data_dir: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    admins: Sequence[str] = (FIRST_ADMIN,),
    database_url: str | None = None,
) -> Initialized:
    """The database, the key files, and the first security-admins: each gets a one-time
    enrollment code (no key is made here: each admin makes their own by enrolling).

    ``database_url`` (e.g. ``postgresql+psycopg://…``) puts the directory in that database
    instead of ``DATA_DIR/garrison.db``; the key files and the config (which records the
    URL) stay in ``data_dir``. The database must be empty, or migrated by ``garrison db
    upgrade`` and not yet initialised: anything else is refused before a file is written."""
    names = [check_name(a, "admin name") for a in admins]
    if not names:
        raise BadRequest("at least one admin is needed (--admin NAME, twice for two-person rules)")
    if len(set(names)) != len(names):
        raise BadRequest("admin names must differ")
    if len(names) > INIT_ADMINS_MAX:
        raise BadRequest(f"at most {INIT_ADMINS_MAX} first admins; invite the rest later")
    data_dir = data_dir.resolve()
    config_path = data_dir / CONFIG_FILE
    if config_path.exists():
        raise ConfigError(f"{config_path} already exists; refusing to initialise twice")
    settings = Settings.for_data_dir(
        data_dir, host=host, port=port, metrics_listen=DEFAULT_METRICS_LISTEN
    )
    if database_url is not None:
        settings = dataclasses.replace(settings, database_url=database_url)
    _check_database_is_new(settings.database_url)
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir.chmod(0o700)
    create_key_files(settings.key_dir)
    create_signing_key(settings.key_dir)
    settings.key_dir.chmod(0o700)
    engine = make_engine(settings.database_url)
    try:
        migrate(engine)
        directory = open_directory(settings, engine=engine)
        now = time.time()
        directory.record_event(SystemInitialized(data_dir=str(data_dir)), now=now)
        directory.create_org(INTERNAL_ORG, OrgKind.INTERNAL, now=now)
        codes = []
        for name in names:
            directory.create_principal(
                name,
                org=INTERNAL_ORG,
                kind=PrincipalKind.HUMAN,
                clearance=Level.CRITICAL,
                roles=(Role.SECURITY_ADMIN,),
                now=now,
            )
            codes.append(enrollment.invite(directory, name, now=now))
    finally:
        engine.dispose()
    config_path.write_text(render_settings(settings))
    config_path.chmod(0o600)
    return Initialized(settings=settings, config_path=config_path, codes=tuple(codes))


def _check_database_is_new(url: str) -> None:
    """Refuse (``ConfigError``) a database that is not Garrison's or is already initialised,
    before init writes anything anywhere."""
    path = sqlite_path(url)
    if path is not None and not path.exists():
        return  # a new SQLite file: nothing there yet
    # Imported here: alembic (with mako and pygments) would otherwise stay resident in every
    # process that imports this module, the gateway's included, for this check at init alone.
    from garrison.store import revisions

    engine = make_engine(url)
    try:
        revisions.check_uninitialised(engine)
    except sa.exc.OperationalError as exc:
        where = sa.engine.make_url(url).render_as_string(hide_password=True)
        raise ConfigError(f"cannot open the database {where}: {exc.orig}") from None
    finally:
        engine.dispose()


def enroll_locally(settings: Settings, code: str, *, address: str = "127.0.0.1") -> CreatedKey:
    """Redeem an enrollment code on this host, as ``POST /admin/v1/enroll`` does (the
    drill, which has no second machine, enrolls its admin this way)."""
    directory = open_directory(settings, actor=f"enroll:{address}")
    try:
        created, _ = enrollment.redeem(directory, code, now=time.time(), address=address)
    finally:
        directory.engine.dispose()
    return created


def write_credential(path: Path, token: str) -> None:
    """Write an admin key to a file only its owner can read (created 0600, never wider)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")


def recover_admin_key(directory: Directory, principal: str, *, now: float) -> CreatedKey:
    """A new key for an active security-admin, issued locally (break glass; audited loudly
    as the local user, with a critical alert). Its provenance is ``break-glass``: it
    administers, and approves nothing; its holder should enroll again."""
    engine = directory.engine
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(schema.principals).where(
                sa.or_(schema.principals.c.id == principal, schema.principals.c.name == principal)
            )
        ).first()
    if row is None or Role.SECURITY_ADMIN.value not in orjson.loads(row.roles):
        raise BadRequest(f"{principal!r} is not a security-admin")
    created = directory.create_key(
        row.id, now=now, note="recover-admin (local break glass)", provenance=Provenance.BREAK_GLASS
    )
    glass = BreakGlass(
        principal=row.name, credential_id=created.key.key_id, host=socket.gethostname()
    )
    directory.record_event(glass, now=now)
    enrollment.raise_alert(
        directory,
        rule_id="break-glass",
        title=f"Break-glass admin key issued on the host for {row.name}",
        subject_kind="principal",
        subject_id=row.id,
        reason=Reason.BREAK_GLASS.value,
        data=glass.as_data(),
        now=now,
        principal_id=row.id,
    )
    return created


def open_directory(
    settings: Settings, *, engine: sa.Engine | None = None, actor: str | None = None
) -> Directory:
    """The directory for a host command. Its changes' audit events are integrated before
    the command goes on: by a live gateway, else here (``garrison.audit.outbox``)."""
    engine = engine if engine is not None else make_engine(settings.database_url)

    def integrate() -> None:
        integrate_or_wait(
            engine, lambda: build_exporters(settings.audit_jsonl, settings.audit_syslog)
        )

    on_outbox_commit(engine, integrate)
    return Directory(
        engine,
        actor=actor or local_actor(),
        pepper=load_pepper(settings.key_dir),
        sealer=Sealer.from_dir(settings.key_dir),
    )
