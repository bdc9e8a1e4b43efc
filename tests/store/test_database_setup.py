"""Choosing the database: ``garrison init --database-url``, ``garrison db upgrade``,
``garrison backup`` on PostgreSQL, and the audit-record JSON paths on both backends."""

from __future__ import annotations

import shlex
import tomllib
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from sqlalchemy.dialects import postgresql, sqlite

from garrison.bootstrap import Initialized, init
from garrison.cli.main import cli
from garrison.errors import ConfigError
from garrison.store import make_engine, revisions, schema
from garrison.store.backup import pg_dump_command
from garrison.store.json_paths import PATH_MAX_STEPS, distinct_list, record_field
from tests.support import pg


@pytest.fixture
def empty_url(backend: str, tmp_path: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'elsewhere.db'}"
        return
    with pg.fresh_database(migrated=False) as url:
        yield url


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


# ── init ───────────────────────────────────────────────────────────────────────────────────
def test_init_puts_the_directory_in_the_given_database(empty_url: str, tmp_path: Path) -> None:
    code, out = run("init", "--data-dir", str(tmp_path / "d"), "--database-url", empty_url)
    assert code == 0, out
    config = tomllib.loads((tmp_path / "d" / "garrison.toml").read_text())
    assert config["storage"]["database_url"] == empty_url
    assert (tmp_path / "d" / "keys" / "pepper.key").exists()
    assert not (tmp_path / "d" / "garrison.db").exists()
    engine = make_engine(empty_url)
    try:
        with engine.connect() as conn:
            assert revisions.current(conn) == revisions.head()
            assert conn.execute(sa.select(schema.orgs.c.name)).scalars().all() == ["internal"]
    finally:
        engine.dispose()


def test_init_reads_the_url_from_the_environment(
    empty_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GARRISON_DATABASE_URL", empty_url)
    code, out = run("init", "--data-dir", str(tmp_path / "d"))
    assert code == 0, out
    config = tomllib.loads((tmp_path / "d" / "garrison.toml").read_text())
    assert config["storage"]["database_url"] == empty_url


def test_init_refuses_an_initialised_database_and_writes_nothing(
    initialized: Initialized, tmp_path: Path
) -> None:
    url = initialized.settings.database_url
    with pytest.raises(ConfigError, match="already holds an initialised Garrison directory"):
        init(tmp_path / "second", database_url=url)
    assert not (tmp_path / "second").exists()


def test_init_refuses_another_applications_database(empty_url: str, tmp_path: Path) -> None:
    engine = make_engine(empty_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE invoices (id INTEGER PRIMARY KEY)"))
    finally:
        engine.dispose()
    code, out = run("init", "--data-dir", str(tmp_path / "d"), "--database-url", empty_url)
    assert code != 0
    assert "not Garrison's (invoices)" in out
    assert not (tmp_path / "d").exists()


def test_init_refuses_a_schema_revision_it_does_not_know(empty_url: str, tmp_path: Path) -> None:
    engine = make_engine(empty_url)
    try:
        revisions.upgrade(engine)
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    finally:
        engine.dispose()
    with pytest.raises(ConfigError, match="revision '9999', which this version"):
        init(tmp_path / "d", database_url=empty_url)
    assert not (tmp_path / "d").exists()


def test_init_accepts_a_database_only_migrated(empty_url: str, tmp_path: Path) -> None:
    engine = make_engine(empty_url)
    try:
        revisions.upgrade(engine)
    finally:
        engine.dispose()
    done = init(tmp_path / "d", database_url=empty_url)
    assert done.settings.database_url == empty_url


def test_init_says_which_database_it_cannot_reach(tmp_path: Path) -> None:
    pg.require()
    url = pg.url_for("garrison_t_no_such_database")
    with pytest.raises(
        ConfigError, match=r"cannot open the database .*garrison_t_no_such_database"
    ):
        init(tmp_path / "d", database_url=url)
    assert not (tmp_path / "d").exists()


# ── db upgrade ─────────────────────────────────────────────────────────────────────────────
def test_db_upgrade_brings_an_empty_database_to_head_once(empty_url: str, tmp_path: Path) -> None:
    config = tmp_path / "garrison.toml"
    config.write_text(f'[storage]\ndatabase_url = "{empty_url}"\nkey_dir = "keys"\n')
    code, out = run("db", "upgrade", "--config", str(config))
    assert code == 0, out
    assert f"upgraded empty → {revisions.head()}" in out
    code, out = run("db", "upgrade", "--config", str(config))
    assert code == 0, out
    assert f"already at {revisions.head()} (head); nothing to do" in out


def test_db_upgrade_reports_from_and_to(empty_url: str, tmp_path: Path) -> None:
    engine = make_engine(empty_url)
    try:
        first = revisions.scripts().get_revision(revisions.head()).down_revision
        assert isinstance(first, str)
        revisions.upgrade(engine, first)
    finally:
        engine.dispose()
    config = tmp_path / "garrison.toml"
    config.write_text(f'[storage]\ndatabase_url = "{empty_url}"\nkey_dir = "keys"\n')
    code, out = run("db", "upgrade", "--config", str(config))
    assert code == 0, out
    assert f"upgraded {first} → {revisions.head()}" in out


# ── backup ─────────────────────────────────────────────────────────────────────────────────
def test_backup_on_postgresql_prints_the_pg_dump_command(tmp_path: Path) -> None:
    config = tmp_path / "garrison.toml"
    url = "postgresql+psycopg://garrison:s3cret@db.internal:5433/garrison"
    config.write_text(f'[storage]\ndatabase_url = "{url}"\nkey_dir = "keys"\n')
    code, out = run("backup", str(tmp_path / "bk"), "--config", str(config))
    assert code == 2
    command = pg_dump_command(url, tmp_path / "bk")
    assert command in " ".join(out.split())
    assert "s3cret" not in out  # the password stays in PGPASSWORD / ~/.pgpass
    assert not (tmp_path / "bk").exists()


def test_the_pg_dump_command_is_one_shell_line_pg_dump_accepts() -> None:
    command = pg_dump_command("postgresql+psycopg://u:p@h:5432/d b", Path("/tmp/x y"))
    words = shlex.split(command)
    assert words[:4] == ["mkdir", "-m", "700", "/tmp/x y"]
    assert words[5:] == [
        "pg_dump",
        "--format=custom",
        "--file=/tmp/x y/garrison.pgdump",
        "postgresql://u@h:5432/d b",
    ]


# ── the JSON paths ─────────────────────────────────────────────────────────────────────────
def test_record_fields_read_the_same_on_both_backends(initialized: Initialized) -> None:
    engine = make_engine(initialized.settings.database_url)
    a = schema.audit_events
    records = [
        {"actor": "x", "data": {"client_address": "10.0.0.1"}},
        {"actor": "y", "data": {"address": "10.0.0.2"}},
        {"actor": "x", "data": {"client_address": "10.0.0.1"}},
        {"actor": None, "data": {}},
    ]
    mine = a.c.credential_id == "k"
    address = sa.func.coalesce(
        record_field(a.c.record, "data", "client_address"),
        record_field(a.c.record, "data", "address"),
    )
    try:
        with engine.connect() as conn:  # never committed: rolled back at the end
            # After the rows the audit writer gave their own leaf indices (init's records).
            start = conn.execute(sa.select(sa.func.max(a.c.seq))).scalar() or 0
            for i, record in enumerate(records, start + 1):
                conn.execute(
                    a.insert().values(
                        seq=i,
                        at=1.0,
                        name="request.allowed",
                        credential_id="k",
                        record=orjson.dumps(record),
                    )
                )
            got = conn.execute(sa.select(address).where(mine).order_by(a.c.seq)).scalars()
            assert got.all() == ["10.0.0.1", "10.0.0.2", "10.0.0.1", None]
            actors = sa.select(record_field(a.c.record, "actor")).where(mine).order_by(a.c.seq)
            assert conn.execute(actors).scalars().all() == ["x", "y", "x", None]
            # Two paths in one statement are two expressions (the path is in the cache key).
            both = sa.select(record_field(a.c.record, "actor"), address).where(mine)
            assert conn.execute(both.order_by(a.c.seq)).first() == ("x", "10.0.0.1")
            grouped = sa.select(a.c.credential_id, distinct_list(address)).where(mine)
            (key, sources) = conn.execute(grouped.group_by(a.c.credential_id)).one()
            assert (key, sorted(sources.split(","))) == ("k", ["10.0.0.1", "10.0.0.2"])
    finally:
        engine.dispose()


@pytest.mark.parametrize("path", [(), ("data", "x;drop"), ("a'b",), ("x",) * (PATH_MAX_STEPS + 1)])
def test_a_record_path_is_plain_identifiers_only(path: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="record path"):
        record_field(schema.audit_events.c.record, *path)


def test_record_fields_compile_for_each_dialect() -> None:
    expr = record_field(schema.audit_events.c.record, "data", "client_address")
    assert str(expr.compile(dialect=sqlite.dialect())) == (
        "json_extract(audit_events.record, '$.data.client_address')"
    )
    # A \u0000 escape (which jsonb refuses) reads as U+FFFD: one such record must not break
    # every query over its rows (red-team finding).
    assert str(expr.compile(dialect=postgresql.dialect())) == (
        "(replace(convert_from(audit_events.record, 'UTF8'), E'\\\\u0000', E'\\\\ufffd')"
        "::jsonb #>> '{data,client_address}')"
    )
