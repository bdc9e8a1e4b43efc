"""Gateway replicas sharing one audit log on PostgreSQL: real processes, each with its own
sink, appending at once (``tests.support.audit_writer``).

What must hold: one total order and one tree (``garrison audit verify`` passes: every index
in its place, every stored checkpoint's root is the tree's root at its size), one chain of
checkpoints (no fork: each chains to the one stored before it), and a writer killed with
SIGKILL mid-run loses nothing it committed, leaves no gap, and stops no one else.
"""

from __future__ import annotations

import itertools
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from garrison.audit.sqlite_reader import open_reader
from garrison.cli.audit_cmds import audit
from garrison.cli.main import cli
from garrison.config import CONFIG_FILE, load_settings
from tests.support import pg

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
REPLICAS = 3
BATCHES = 40
BATCH = 50


@pytest.fixture
def data(tmp_path: Path) -> Iterator[Path]:
    with pg.fresh_database() as url:
        result = CliRunner().invoke(
            cli, ["init", "--data-dir", str(tmp_path / "data"), "--database-url", url]
        )
        assert result.exit_code == 0, result.output
        yield tmp_path / "data"


def writer(
    data: Path, name: str, batches: int = BATCHES, *, checkpoint_each: bool = False
) -> subprocess.Popen[str]:
    settings = load_settings(data / CONFIG_FILE, env={})
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.support.audit_writer",
            settings.database_url,
            str(settings.key_dir),
            name,
            str(batches),
            str(BATCH),
            *(["--checkpoint-each"] if checkpoint_each else []),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )


def verify(data: Path) -> dict[str, Any]:
    result = CliRunner().invoke(
        audit, ["verify", "--json", "--no-witness", "--config", str(data / CONFIG_FILE)]
    )
    report: dict[str, Any] = orjson.loads(result.stdout)
    assert result.exit_code == (0 if report["ok"] else 1), result.output
    return report


def logged(data: Path) -> tuple[list[str], list[int]]:
    """Request ids in leaf order, and the stored checkpoints' tree sizes in order."""
    with open_reader(load_settings(data / CONFIG_FILE, env={}).database_url) as reader:
        ids = [orjson.loads(record)["request_id"] for _, record, _ in reader.rows()]
        sizes = [cp.tree_size for cp in reader.checkpoints()]
    return [i for i in ids if i is not None], sizes


def test_three_replicas_appending_at_once_make_one_tree_and_one_chain(data: Path) -> None:
    # Each writer signs after every batch, so the chain's length does not depend on timing:
    # a writer's next batch commits only after a checkpoint covering its previous one is
    # stored (its own, or another replica's that folded it), so every batch round needs a
    # newer checkpoint, whoever signs it. (Signing only "when due", fast writers can all
    # finish inside one CHECKPOINT_INTERVAL_S and leave a single checkpoint.)
    procs = [writer(data, f"w{k}", checkpoint_each=True) for k in range(REPLICAS)]
    for proc in procs:
        proc.communicate(timeout=120)
        assert proc.returncode == 0
    report = verify(data)
    assert report["ok"], report["problems"]
    ids, sizes = logged(data)
    for k in range(REPLICAS):
        mine = [i for i in ids if i.startswith(f"w{k}-")]
        # Every event once, each replica's own in the order it wrote them.
        assert mine == [f"w{k}-{n}" for n in range(BATCHES * BATCH)]
    # The writers interleaved (one tree from three processes, not three runs one after another).
    runs = sum(1 for a, b in itertools.pairwise(ids) if a[:2] != b[:2])
    assert runs > REPLICAS
    # One chain: sizes only grow (verify has checked every link and root).
    assert sizes == sorted(set(sizes)) and sizes[-1] == report["events"]
    assert report["checkpoints"] >= BATCHES


def test_a_replica_killed_mid_run_loses_nothing_it_committed_and_the_others_go_on(
    data: Path,
) -> None:
    procs = [writer(data, f"w{k}", batches=BATCHES * 3) for k in range(REPLICAS)]
    victim = procs[0]
    assert victim.stdout is not None
    committed: list[str] = []
    deadline = time.monotonic() + 60
    while len(committed) < 5 and time.monotonic() < deadline:
        line = victim.stdout.readline()
        if line.startswith("committed "):
            committed.append(line.split()[1])
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)
    # What the killed process reported committed before it died (it may have committed a
    # little more: a batch whose line was not yet read).
    rest, _ = victim.communicate()
    committed += [ln.split()[1] for ln in rest.splitlines() if ln.startswith("committed ")]
    for proc in procs[1:]:
        proc.communicate(timeout=180)
        assert proc.returncode == 0  # the others finished their whole run
    report = verify(data)
    assert report["ok"], report["problems"]  # no gap, no fork
    ids, sizes = logged(data)
    mine = [i for i in ids if i.startswith("w0-")]
    last = int(committed[-1].split("-")[1])
    assert mine[: last + 1] == [f"w0-{n}" for n in range(last + 1)]
    assert len(mine) % BATCH == 0  # whole batches only: a batch is one transaction
    for k in range(1, REPLICAS):
        assert [i for i in ids if i.startswith(f"w{k}-")] == [
            f"w{k}-{n}" for n in range(BATCHES * 3 * BATCH)
        ]
    assert sizes == sorted(set(sizes))
