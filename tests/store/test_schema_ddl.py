"""The tables' DDL stays what the migrations create: ``store/schema.py`` builds its columns
from small factories, and the CREATE TABLE / CREATE INDEX text it compiles to on SQLite and
PostgreSQL must match, to the letter, the golden files captured before that refactor.

A deliberate schema change (with its migration) regenerates them:
``python -m tests.store.test_schema_ddl``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.schema import CreateIndex, CreateTable

from garrison.store.schema import metadata

GOLDEN = Path(__file__).parent / "golden"
DIALECTS: dict[str, Dialect] = {"sqlite": sqlite.dialect(), "postgresql": postgresql.dialect()}


def compiled_ddl(dialect: Dialect) -> str:
    """Every table's CREATE TABLE then its CREATE INDEXes (by name), tables in dependency order."""
    parts: list[str] = []
    for table in metadata.sorted_tables:
        parts.append(str(CreateTable(table).compile(dialect=dialect)).strip())
        for index in sorted(table.indexes, key=lambda i: str(i.name)):
            parts.append(str(CreateIndex(index).compile(dialect=dialect)).strip())
    return "\n\n".join(parts) + "\n"


@pytest.mark.parametrize("name", sorted(DIALECTS))
def test_ddl_matches_golden(name: str) -> None:
    golden = (GOLDEN / f"schema_{name}.sql").read_text(encoding="utf-8")
    assert compiled_ddl(DIALECTS[name]) == golden


def test_golden_covers_every_table() -> None:
    golden = (GOLDEN / "schema_sqlite.sql").read_text(encoding="utf-8")
    for table in metadata.tables:
        assert f"CREATE TABLE {table} (" in golden


if __name__ == "__main__":  # pragma: no cover - regenerates the golden files
    for name, dialect in DIALECTS.items():
        (GOLDEN / f"schema_{name}.sql").write_text(compiled_ddl(dialect), encoding="utf-8")
    sys.exit(0)
