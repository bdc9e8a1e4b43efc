"""``bench/replicas_bench.py --quick`` runs end to end: SQLite, one and three PostgreSQL
replicas each give every figure, every call sent through them is in their audit log, and the
run's databases are gone when it ends. The figures themselves are not judged here (the
machine running the tests is shared); the lead's quiet-machine run records them."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.support import pg

pytestmark = pytest.mark.e2e

Report = dict[str, Any]

REPO = Path(__file__).resolve().parents[2]
# Longest the quick run may take before the test fails instead of hanging: the quick plan
# finishes in ~60 s on a loaded 2-core machine (its own time budget is 60 s between rounds).
QUICK_GUARD_S = 300.0
# What the quick plan sends through each target (bench/replicas_bench.py QUICK, one round):
# c=1: 30 warm-up + 150 measured; c=32: 60 warm-up + 600 measured.
QUICK_CALLS = 30 + 150 + 60 + 600
QUICK_LOCK_ROUNDS = 5
TARGETS = {
    "sqlite-1": ("sqlite", 1),
    "postgresql-1": ("postgresql", 1),
    "postgresql-3": ("postgresql", 3),
}


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Report:
    pg.require()
    out = tmp_path_factory.mktemp("replicas-bench") / "report.json"
    env = {**os.environ, "GARRISON_BENCH_PG": pg.ADMIN_URL}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO / "src"), str(REPO), env.get("PYTHONPATH", "")) if p
    )
    done = subprocess.run(
        [sys.executable, "bench/replicas_bench.py", "--quick", "--json", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=QUICK_GUARD_S,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    loaded: Report = json.loads(out.read_text())
    return loaded


def test_every_target_is_measured(report: Report) -> None:
    assert set(report["targets"]) == set(TARGETS)
    for name, (database, replicas) in TARGETS.items():
        t = report["targets"][name]
        assert (t["database"], t["replicas"], t["rounds"]) == (database, replicas, 1)
        assert t["errors"] == 0
        assert t["rps_c32"] > 0
        assert len(t["cpu_ms_per_call_c32_per_replica"]) == replicas
        assert t["cpu_ms_per_call_c32"]["gateways"] > 0
        assert ("postgres" in t["cpu_ms_per_call_c32"]) == (database == "postgresql")
        assert all(math.isfinite(t["added_ms_c1"][q]) for q in ("p50", "p99"))


def test_three_replicas_all_served_the_load(report: Report) -> None:
    per_replica = report["targets"]["postgresql-3"]["cpu_ms_per_call_c32_per_replica"]
    assert all(cpu > 0 for cpu in per_replica)


def test_lock_propagation_is_measured_on_every_target(report: Report) -> None:
    for name, (_, replicas) in TARGETS.items():
        lock = report["targets"][name]["lock"]
        assert lock["refused_on_all_others"]["n"] == QUICK_LOCK_ROUNDS
        assert lock["refused_on_others"]["n"] == QUICK_LOCK_ROUNDS * max(1, replicas - 1)
        assert math.isfinite(lock["refused_on_all_others"]["p99_ms"])
        assert math.isfinite(lock["stream_cut_on_b"]["p99_ms"])


def test_every_call_sent_was_audited(report: Report) -> None:
    for name in TARGETS:
        audit = report["targets"][name]["audit"]
        assert audit["calls_sent"] == QUICK_CALLS
        assert audit["request_allowed"] == QUICK_CALLS
        assert audit["request_completed"] == QUICK_CALLS


def test_the_run_drops_its_databases(report: Report) -> None:
    names = [report["targets"][n]["database_name"] for n in ("postgresql-1", "postgresql-3")]
    assert len(set(names)) == 2 and all(n.startswith("garrison_bench_") for n in names)
    engine = sa.create_engine(pg.ADMIN_URL, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        left = conn.execute(
            sa.text("SELECT datname FROM pg_database WHERE datname IN :names").bindparams(
                sa.bindparam("names", expanding=True)
            ),
            {"names": names},
        ).all()
    engine.dispose()
    assert left == []
