"""Several processes writing one audit log: the checkpoint chain stays one chain.

Each writer chains its checkpoint to the newest checkpoint *stored*, read inside its write
transaction, so ``garrison audit verify`` passes on an untouched log however many processes
wrote it (a fork would be a false ``broken_chain`` alarm). On SQLite and on PostgreSQL (where
the writers are gateway replicas sharing one log).
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from garrison.audit import AuditEvent, EventName
from garrison.audit.checkpoint import Signer
from garrison.audit.sinks import open_sink
from garrison.audit.tree_sink import TreeSink
from garrison.audit.witness import DirectoryWitness
from garrison.cli.audit_cmds import audit
from garrison.cli.main import cli
from garrison.config import CONFIG_FILE, Settings, load_settings
from tests.conftest import BACKENDS
from tests.support import pg

WRITES_PER_PROCESS = 15


@pytest.fixture(params=BACKENDS)
def data(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    args = ["init", "--data-dir", str(tmp_path / "data")]
    with pg.fresh_database() if request.param == "postgresql" else _no_database() as url:
        if url is not None:
            args += ["--database-url", url]
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output
        yield tmp_path / "data"


@contextlib.contextmanager
def _no_database() -> Iterator[None]:
    yield None


def settings(data: Path) -> Settings:
    return load_settings(data / CONFIG_FILE, env={})


def sink(data: Path) -> TreeSink[Any]:
    s = settings(data)
    assert s.witness_dir is not None
    out = open_sink(
        s.database_url,
        signer=Signer.from_dir(s.key_dir),
        witness=DirectoryWitness(s.witness_dir),
    )
    out.open()
    return out


def event(writer: str, i: int) -> AuditEvent:
    return AuditEvent(EventName.REQUEST_ALLOWED, at=1000.0 + i, request_id=f"{writer}-{i}")


def verify(data: Path) -> dict[str, Any]:
    result = CliRunner().invoke(audit, ["verify", "--json", "--config", str(data / CONFIG_FILE)])
    report: dict[str, Any] = orjson.loads(result.stdout)
    assert result.exit_code == (0 if report["ok"] else 1), result.output
    return report


def test_interleaved_writers_on_one_database_keep_one_chain(data: Path) -> None:
    first, second = sink(data), sink(data)
    try:
        for i in range(3):
            for name, writer in (("a", first), ("b", second)):
                writer.write_batch([event(name, i)])
                writer.checkpoint()
    finally:
        first.close()
        second.close()
    report = verify(data)
    assert report["ok"], report["problems"]
    assert report["checkpoints"] >= 6


def test_writer_skips_a_checkpoint_another_process_already_signed(data: Path) -> None:
    first, second = sink(data), sink(data)
    try:
        first.write_batch([event("a", 0)])
        second.checkpoint()  # folds a's row in and signs it
        first.checkpoint()  # nothing new: no second checkpoint of the same size
    finally:
        first.close()
        second.close()
    report = verify(data)
    assert report["ok"], report["problems"]
    assert report["checkpoints"] == 1


WRITER = """
import sys
from pathlib import Path
from tests.audit.test_two_writers import event, sink

data, name, count = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
writer = sink(data)
for i in range(count):
    writer.write_batch([event(name, i)])
    writer.checkpoint()
writer.close()
"""


def test_two_processes_writing_at_once_keep_one_chain(data: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(data), name, str(WRITES_PER_PROCESS)], cwd=root
        )
        for name in ("a", "b")
    ]
    for proc in procs:
        assert proc.wait(timeout=60) == 0
    report = verify(data)
    assert report["ok"], report["problems"]
    assert report["events"] >= 2 * WRITES_PER_PROCESS
