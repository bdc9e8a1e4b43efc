"""Schema revisions: which one a database is at, bringing it to head, and telling an empty
database from an initialised or a foreign one (``garrison init``, ``garrison db upgrade``).

Upgrades run in one transaction that first takes the directory write lock
(``garrison.store.db.write_transaction``): on PostgreSQL, replicas starting together, or an
operator's ``garrison db upgrade`` racing a starting replica, run the migrations one after
the other, and the second finds the schema at head and does nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from garrison.errors import ConfigError
from garrison.store import schema
from garrison.store.db import write_transaction

_MIGRATIONS = Path(__file__).parent / "migrations"
# Alembic's own table: the one table in a Garrison database the schema module does not list.
VERSION_TABLE = "alembic_version"
# Tables whose rows mean "a Garrison directory lives here": init writes the internal org,
# its first principals and the system.initialized event.
_INITIALISED_BY = (schema.orgs, schema.principals, schema.audit_events, schema.audit_outbox)


@dataclass(frozen=True, slots=True)
class Upgraded:
    before: str | None  # None: an empty database
    after: str

    @property
    def changed(self) -> bool:
        return self.before != self.after


def _config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    return cfg


def scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(_config())


def head() -> str:
    """The newest revision this version of Garrison knows."""
    revision = scripts().get_current_head()
    assert revision is not None  # the package ships its migrations
    return revision


def current(conn: sa.Connection) -> str | None:
    """The revision the database is at (``None``: never migrated)."""
    return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: sa.Engine, to: str = "head") -> Upgraded:
    """Run the migrations up to ``to`` (default: head), under the write lock; idempotent."""
    cfg = _config()
    with write_transaction(engine) as conn:
        before = current(conn)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, to)
        after = current(conn)
    assert after is not None
    return Upgraded(before=before, after=after)


def check_uninitialised(engine: sa.Engine) -> None:
    """Raise ``ConfigError`` unless the database is empty, or holds a Garrison schema (any
    known revision) with no directory in it yet — so ``garrison init`` never writes into
    another application's database or initialises one twice."""
    where = engine.url.render_as_string(hide_password=True)
    with engine.connect() as conn:
        tables = set(sa.inspect(conn).get_table_names())
        if not tables:
            return
        if VERSION_TABLE not in tables:
            shown = ", ".join(sorted(tables)[:5])
            raise ConfigError(
                f"{where} already holds tables that are not Garrison's ({shown}); "
                "give Garrison an empty database of its own"
            )
        revision = current(conn)
        known = {s.revision for s in scripts().walk_revisions()}
        if revision is not None and revision not in known:
            raise ConfigError(
                f"{where} is at schema revision {revision!r}, which this version of Garrison "
                "does not know (another application's, or a newer Garrison's)"
            )
        present = [t for t in _INITIALISED_BY if t.name in tables]
        for table in present:
            if conn.execute(sa.select(sa.literal(1)).select_from(table).limit(1)).first():
                raise ConfigError(
                    f"{where} already holds an initialised Garrison directory; refusing to "
                    "initialise twice (point --database-url at an empty database)"
                )
