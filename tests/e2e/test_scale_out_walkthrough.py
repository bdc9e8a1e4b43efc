"""docs/scale-out.md runs as pasted: three replicas on one PostgreSQL database and one Redis,
a call through one replica, a lock placed through another refusing the call on the third,
and one audit log that verifies with every replica's events in it."""

from __future__ import annotations

import re
import shutil
import socket
from pathlib import Path

import pytest

from tests.support import pg
from tests.support.doc_snippets import as_one_script, free_port, run_as_pasted, snippets

pytestmark = pytest.mark.e2e

DOC = Path(__file__).resolve().parent.parent.parent / "docs" / "scale-out.md"
# The address the walkthrough names for Redis (it names PostgreSQL's too: 127.0.0.1:5432).
REDIS_ADDRESS = ("127.0.0.1", 6379)
REDIS_SKIP_REASON = "Redis is not reachable at 127.0.0.1:6379, where docs/scale-out.md expects it"
TOOLS_SKIP_REASON = "PostgreSQL's client tools (createdb, dropdb) are not on the PATH"
# Three replicas and the mock started, a few CLI calls (each a Python start), three drains,
# on a machine shared with other work: the session is stopped past this.
WALKTHROUGH_TIMEOUT_S = 240


def _redis_reachable() -> bool:
    try:
        with socket.create_connection(REDIS_ADDRESS, timeout=1):
            return True
    except OSError:
        return False


def test_the_scale_out_walkthrough_runs_as_pasted(tmp_path: Path) -> None:
    if not pg.available():
        pytest.skip(pg.PG_SKIP_REASON)
    if not _redis_reachable():
        pytest.skip(REDIS_SKIP_REASON)
    if shutil.which("createdb") is None or shutil.which("dropdb") is None:
        pytest.skip(TOOLS_SKIP_REASON)
    blocks = snippets(DOC)
    assert all(b.skip is None for b in blocks), "every block of the walkthrough runs"
    database = pg.unique_name("walk")
    env = {"GARRISON_DB": database, "UPSTREAM_PORT": str(free_port())}
    env |= {f"PORT_{r}": str(free_port()) for r in "ABC"}
    try:
        session = run_as_pasted(
            as_one_script(blocks), tmp_path, env, timeout_s=WALKTHROUGH_TIMEOUT_S
        )
    finally:
        pg.drop(database)  # whatever happened, the walkthrough's database goes
    out, err = session.out, session.err
    assert session.returncode == 0, f"stdout:\n{out}\nstderr:\n{err}"
    assert "Traceback" not in err
    # Through B: 200; through C while locked: 403; after the lift: 200.
    statuses = [line for line in out.splitlines() if re.fullmatch(r"\d{3}", line)]
    assert statuses == ["200", "403", "200"], out
    assert "OK: the log verifies" in out
    # Each replica recorded its start, naming its own port: one log holds all three.
    started = set(re.findall(r'"host":"127\.0\.0\.1","port":(\d+)', out))
    assert started == {env["PORT_A"], env["PORT_B"], env["PORT_C"]}, out
