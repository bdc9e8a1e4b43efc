"""Rolling upgrades: replicas of version N and N+1 run side by side on one database.

The first N+1 replica to start migrates the schema to its head while N replicas keep
serving on it, so each migration must be an *expand* step: it may add tables, add columns
that older writers can leave out (nullable or with a server default) and add indexes, but
must not drop or rename a table or column, nor make a column NOT NULL, that the previous
version reads or writes. Removing something (*contract*) waits for a later release, once no
running version reads it any more (docs/operations.md, "Upgrading replicas one at a time").

These tests walk the whole migration chain on both backends, and run the previous
revision's reads against the newest schema next to the current code's reads and writes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from garrison.bootstrap import init, open_directory
from garrison.domain import Level, PrincipalKind
from garrison.keyring import Sealer
from garrison.store import load_snapshot, make_engine, revisions
from tests.support import pg

NOW = 1_800_000_000.0
# Contractions made before replicas could run side by side: every replica was stopped for
# these upgrades. An entry here is a release whose notes say "stop every replica first";
# anything else a migration removes fails the test.
STOPPED_UPGRADES: dict[str, set[str]] = {
    # 0013 → 0014: session roles moved into the session token; the table went in one step.
    "0014": {"session_roles"},
}

Shape = dict[str, dict[str, bool]]  # table → column → nullable


@pytest.fixture
def empty_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """An empty, never-migrated database of the backend's kind."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'garrison.db'}"
        return
    with pg.fresh_database(migrated=False) as url:
        yield url


@pytest.fixture
def engine(empty_url: str) -> Iterator[sa.Engine]:
    e = make_engine(empty_url)
    try:
        yield e
    finally:
        e.dispose()


def chain() -> list[str]:
    """Every revision, oldest first."""
    return [s.revision for s in reversed(list(revisions.scripts().walk_revisions()))]


def previous() -> str:
    down = revisions.scripts().get_revision(revisions.head()).down_revision
    assert isinstance(down, str), "the newest migration has one parent"
    return down


def shape(engine: sa.Engine) -> Shape:
    with engine.connect() as conn:
        inspector = sa.inspect(conn)
        return {
            table: {c["name"]: bool(c["nullable"]) for c in inspector.get_columns(table)}
            for table in inspector.get_table_names()
            if table != revisions.VERSION_TABLE
        }


def defaults(engine: sa.Engine, table: str) -> dict[str, Any]:
    with engine.connect() as conn:
        return {c["name"]: c.get("default") for c in sa.inspect(conn).get_columns(table)}


def test_the_chain_ends_at_the_head_garrison_db_upgrade_reaches(engine: sa.Engine) -> None:
    done = revisions.upgrade(engine)
    assert (done.before, done.after) == (None, revisions.head())
    assert chain()[-1] == revisions.head()
    again = revisions.upgrade(engine)
    assert (again.before, again.after, again.changed) == (revisions.head(),) * 2 + (False,)


def test_every_migration_keeps_what_the_previous_version_reads(engine: sa.Engine) -> None:
    """Walk the chain one revision at a time: no step drops a table or column (bar the
    recorded stopped upgrades), nor turns a nullable column NOT NULL."""
    before: Shape = {}
    problems = []
    for revision in chain():
        revisions.upgrade(engine, revision)
        after = shape(engine)
        allowed = STOPPED_UPGRADES.get(revision, set())
        gone = {t for t in before if t not in after}
        gone |= {
            f"{t}.{c}"
            for t, cols in before.items()
            if t in after
            for c in cols
            if c not in after[t]
        }
        problems += [f"{revision} removes {name}" for name in sorted(gone - allowed)]
        problems += [
            f"{revision} makes {t}.{c} NOT NULL"
            for t, cols in before.items()
            if t in after
            for c, nullable in cols.items()
            if nullable and c in after[t] and not after[t][c]
        ]
        before = after
    assert problems == []


def test_columns_added_to_existing_tables_can_be_left_out_by_older_writers(
    engine: sa.Engine,
) -> None:
    """A column a migration adds to a table the previous version writes is nullable or has
    a server default: the previous version's INSERTs do not name it."""
    before: Shape = {}
    problems = []
    for revision in chain():
        revisions.upgrade(engine, revision)
        after = shape(engine)
        for table, cols in after.items():
            if table not in before:
                continue
            fresh = [c for c in cols if c not in before[table]]
            server = defaults(engine, table) if fresh else {}
            problems += [
                f"{revision} adds {table}.{c} NOT NULL without a server default"
                for c in fresh
                if not cols[c] and server.get(c) is None
            ]
        before = after
    assert problems == []


def test_the_previous_version_reads_and_writes_beside_the_current_one(
    engine: sa.Engine, empty_url: str, tmp_path: Path
) -> None:
    """At head-1, take the schema as version N sees it (reflected); upgrade to head as the
    first N+1 replica does; then N's reads of every table it knew, and N's insert of a
    principal naming only the columns it knew, run while N+1 (this code) loads its snapshot
    and writes through the directory on the same database."""
    revisions.upgrade(engine, previous())
    old = sa.MetaData()
    old.reflect(engine)
    # What the stopped upgrade into head removed is not read by N replicas beside it.
    skipped = {revisions.VERSION_TABLE} | STOPPED_UPGRADES.get(revisions.head(), set())
    old_tables = {t.name: t for t in old.sorted_tables if t.name not in skipped}

    revisions.upgrade(engine)  # the first N+1 replica starts
    done = init(tmp_path / "data", database_url=empty_url)
    current = open_directory(done.settings, actor="replica-n+1")
    try:
        current.create_principal(
            "alice", org="internal", kind=PrincipalKind.HUMAN, clearance=Level.INTERNAL, now=NOW
        )
        with engine.connect() as n_replica:  # version N, reading as it always did
            for table in old_tables.values():
                n_replica.execute(sa.select(*table.columns).limit(5)).all()
            internal = n_replica.execute(
                sa.select(old_tables["orgs"].c.id).where(old_tables["orgs"].c.name == "internal")
            ).scalar_one()
            # N+1 writes while N's read transaction is open.
            current.create_principal(
                "bob", org="internal", kind=PrincipalKind.HUMAN, clearance=Level.PUBLIC, now=NOW
            )
            snapshot = load_snapshot(current.engine, Sealer.from_dir(done.settings.key_dir))
            n_replica.rollback()
        # Version N writes a principal, naming only the columns it knew.
        old_principals = old_tables["principals"]
        with engine.begin() as n_writer:
            row = n_writer.execute(
                sa.select(*old_principals.columns).where(old_principals.c.name == "bob")
            ).one()
            template: dict[str, Any] = dict(row._mapping)
            template.update(id="prn_written_by_n", name="carol", org_id=internal)
            n_writer.execute(old_principals.insert().values(**template))
        after = load_snapshot(current.engine, Sealer.from_dir(done.settings.key_dir))
    finally:
        current.engine.dispose()
    names = {p.name for p in snapshot.principals.values()}
    assert {"admin", "alice", "bob"} <= names
    assert "carol" in {p.name for p in after.principals.values()}
