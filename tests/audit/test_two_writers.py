"""Several processes writing one audit log: the checkpoint chain stays one chain.

Each writer chains its checkpoint to the newest checkpoint *stored*, read inside its write
transaction, so ``garrison audit verify`` passes on an untouched log however many processes
wrote it (a fork would be a false ``broken_chain`` alarm). On SQLite and on PostgreSQL (where
the writers are gateway replicas sharing one log).
"""

from __future__ import annotations

import contextlib
import logging
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
from garrison.audit.merkle import CompactTree, leaf_hash
from garrison.audit.sinks import open_sink
from garrison.audit.tree_sink import TreeSink
from garrison.audit.witness import DirectoryWitness
from garrison.cli.audit_cmds import audit
from garrison.cli.main import cli
from garrison.config import CONFIG_FILE, Settings, load_settings
from tests.audit.test_tamper import _Sql
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


def _edit(data: Path, sql: str, args: tuple[Any, ...]) -> None:
    conn = _Sql(settings(data).database_url)
    try:
        conn.execute(sql, args)
    finally:
        conn.close()


def _tree_of_records(data: Path) -> CompactTree:
    conn = _Sql(settings(data).database_url)
    try:
        rows = conn.execute("SELECT record FROM audit_events ORDER BY seq").fetchall()
    finally:
        conn.close()
    tree = CompactTree()
    tree.extend([leaf_hash(bytes(record)) for (record,) in rows])
    return tree


def test_a_row_whose_record_was_edited_is_folded_from_the_record_and_logged(
    data: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Red team (issue 17): a replica folded other writers' rows from their stored leaf
    hash, so the tree it signed did not follow the records. It folds from the records."""
    first, second = sink(data), sink(data)
    try:
        first.write_batch([event("a", 0), event("a", 1)])
        seq = first.tree.size  # the last row a wrote
        _edit(
            data,
            "UPDATE audit_events SET record = ? WHERE seq = ?",
            (bytes(event("x", 9).encode(seq - 1)), seq),
        )
        with caplog.at_level(logging.ERROR, logger="garrison.audit"):
            second.checkpoint()  # folds a's rows in and signs them
        assert second.tree.root() == _tree_of_records(data).root()
        assert [r.getMessage() for r in caplog.records if "stored leaf hash" in r.getMessage()] == [
            f"audit row {seq}: its record does not give its stored leaf hash (one of them was "
            "edited after the commit); folded from the record"
        ]
    finally:
        first.close()
        second.close()
    # The stored hash still names the record as modified, at its index.
    report = verify(data)
    assert [(p["kind"], p["index"]) for p in report["problems"]] == [("modified", seq - 1)]


def test_a_row_whose_stored_leaf_hash_was_edited_is_folded_from_its_record(
    data: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A forged stored hash is not signed into the chain: the checkpoint follows the records,
    and the verifier names the row whose stored hash disagrees."""
    first, second = sink(data), sink(data)
    try:
        first.write_batch([event("a", 0), event("a", 1)])
        seq = first.tree.size
        _edit(data, "UPDATE audit_events SET leaf_hash = ? WHERE seq = ?", (b"\x01" * 32, seq))
        with caplog.at_level(logging.ERROR, logger="garrison.audit"):
            second.checkpoint()
        assert second.tree.root() == _tree_of_records(data).root()
        assert any(f"audit row {seq}:" in r.getMessage() for r in caplog.records)
    finally:
        first.close()
        second.close()
    report = verify(data)
    assert [(p["kind"], p["index"]) for p in report["problems"]] == [("modified", seq - 1)]
