"""What ``garrison serve`` keeps resident (issue 18: ≤ 150 MB holding 1,000 streams).

Every module imported stays in the gateway's memory for good. Libraries that only the
admin CLI, ``garrison init`` or a schema upgrade need are imported where they are used, so
that starting the gateway on a database already at the newest revision loads none of them
(together ~18 MB of the gateway's resident set, measured: docs/benchmarks.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from garrison.bootstrap import init
from garrison.store import revisions
from garrison.store.db import shipped_head

# Top-level packages the serving process must not import (what each was pulled in by).
NOT_FOR_SERVING = frozenset(
    {
        "alembic",  # migrations: only when the database is behind the shipped head
        "mako",  # alembic's templates
        "pygments",  # mako's error pages
        "httpx",  # the admin CLI's client; a webhook alert sink imports it when configured
        "httpx2",  # garrison.client (``garrison curl``)
        "rich",  # the admin CLI's tables
        "markdown_it",  # the CLI's rendering of detection rules
    }
)

_PROBE = """
import json, sys
import garrison.cli.main
import garrison.server
from garrison.store import make_engine, migrate
engine = make_engine(sys.argv[1])
migrate(engine)
engine.dispose()
print(json.dumps(sorted(sys.modules)))
"""

SRC = Path(__file__).resolve().parents[1] / "src"


def test_the_shipped_head_read_from_the_files_is_alembics_head() -> None:
    assert shipped_head() == revisions.head()


def test_serving_a_database_at_head_imports_none_of_the_cli_or_migration_libraries(
    tmp_path: Path,
) -> None:
    url = init(tmp_path / "data").settings.database_url
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
    }
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, url],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=120,
    )
    loaded = {name.split(".")[0] for name in json.loads(out.stdout)}
    assert "garrison" in loaded and "aiohttp" in loaded  # the probe imported the gateway
    assert sorted(loaded & NOT_FOR_SERVING) == []


def test_a_database_behind_the_head_is_still_migrated(tmp_path: Path) -> None:
    from garrison.store import make_engine, migrate

    engine = make_engine(f"sqlite:///{tmp_path / 'new.db'}")
    try:
        migrate(engine)  # no version table yet: alembic runs every migration
        with engine.connect() as conn:
            assert revisions.current(conn) == revisions.head()
    finally:
        engine.dispose()
