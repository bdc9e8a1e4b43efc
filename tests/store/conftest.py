"""The store's tests run on both backends: every fixture here is parametrised over
``BACKENDS``, so a test that takes ``initialized``, ``d`` or ``staffed`` runs once on a fresh
SQLite file and once on a fresh PostgreSQL database (``tests.support.pg``: a clone of this
run's migrated template, dropped after the test; skipped with the stated reason when no
server is reachable)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from garrison.bootstrap import Initialized, init, open_directory
from garrison.domain import Level, PrincipalKind
from garrison.store import Directory
from tests.support import pg
from tests.support.models import keyed_model

BACKENDS = ("sqlite", "postgresql")
NOW = 1_800_000_000.0
OLD_KEY = "sk-old-upstream-PLAINTEXT-1111"


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    name = str(request.param)
    if name == "postgresql":
        pg.require()
    return name


@pytest.fixture
def database_url(backend: str) -> Iterator[str | None]:
    """``None`` (SQLite in the data directory), or a fresh migrated PostgreSQL database."""
    if backend == "sqlite":
        yield None
        return
    with pg.fresh_database() as url:
        yield url


@pytest.fixture
def initialized(tmp_path: Path, database_url: str | None) -> Initialized:
    return init(tmp_path / "data", database_url=database_url)


@pytest.fixture
def staffed(initialized: Initialized) -> Iterator[Directory]:
    """``gpt`` (openai, bearer, keyed, internal, [cyber]); ``ann`` critical in
    [bio, cyber]; ``mallory`` a security-admin; ``vic`` a plain internal principal."""
    dr = open_directory(initialized.settings, actor="test")
    keyed_model(dr, "gpt", upstream_key=OLD_KEY, now=NOW, compartments=["cyber"])
    dr.create_principal(
        "ann",
        org="internal",
        kind=PrincipalKind.HUMAN,
        clearance=Level.CRITICAL,
        compartments=["bio", "cyber"],
        now=NOW,
    )
    dr.create_principal(
        "mallory",
        org="internal",
        kind=PrincipalKind.HUMAN,
        clearance=Level.INTERNAL,
        roles=["security-admin"],
        now=NOW,
    )
    dr.create_principal(
        "vic", org="internal", kind=PrincipalKind.HUMAN, clearance=Level.INTERNAL, now=NOW
    )
    try:
        yield dr
    finally:
        dr.engine.dispose()
