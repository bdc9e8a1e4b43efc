"""State files are the owner's alone (0600) whatever the umask, and an unsigned alert
webhook is announced at start."""

from __future__ import annotations

import dataclasses
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from garrison.cli.main import cli
from garrison.config import CONFIG_FILE, Settings, load_settings
from garrison.private_files import open_private_append, prepare_sqlite_file
from garrison.server import Gateway


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """The umask a careless service manager leaves: files would be world-readable."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def initialised(tmp_path: Path) -> Settings:
    result = CliRunner().invoke(cli, ["init", "--data-dir", str(tmp_path / "data")])
    assert result.exit_code == 0, result.output
    settings = load_settings(tmp_path / "data" / CONFIG_FILE, env={})
    return dataclasses.replace(
        settings,
        port=0,
        audit_jsonl=tmp_path / "logs" / "audit.jsonl",
        alerts_jsonl=str(tmp_path / "logs" / "alerts.jsonl"),
    )


@pytest.mark.usefixtures("loose_umask")
async def test_state_files_are_created_owner_only(tmp_path: Path) -> None:
    settings = initialised(tmp_path)
    data = tmp_path / "data"
    gateway = Gateway(settings)
    await gateway.start()
    try:
        running = [data / "garrison.db", data / "garrison.db-wal", data / "garrison.db-shm"]
        for path in running:
            assert path.exists(), path
        modes = {p.name: mode(p) for p in running}
    finally:
        await gateway.stop()  # signs the final checkpoint: the witness gets its copies
    for path in (
        tmp_path / "logs" / "audit.jsonl",
        tmp_path / "logs" / "alerts.jsonl",
        data / "witness" / "latest.json",
        data / "witness" / "checkpoints.jsonl",
        data / "witness" / "leaves.bin",
    ):
        modes[path.name] = mode(path)
    assert modes == dict.fromkeys(modes, 0o600)


@pytest.mark.usefixtures("loose_umask")
def test_a_wider_existing_state_file_is_narrowed(tmp_path: Path) -> None:
    db = tmp_path / "garrison.db"
    wal = tmp_path / "garrison.db-wal"
    for path in (db, wal):
        path.touch()
        path.chmod(0o644)
    prepare_sqlite_file(db)
    assert (mode(db), mode(wal)) == (0o600, 0o600)
    log = tmp_path / "audit.jsonl"
    log.touch()
    log.chmod(0o666)
    open_private_append(log).close()
    assert mode(log) == 0o600


async def test_unsigned_webhook_is_announced_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = dataclasses.replace(
        initialised(tmp_path), alerts_webhook_url="http://127.0.0.1:9/hook?token=s3cret"
    )
    caplog.set_level(logging.WARNING)
    gateway = Gateway(settings)
    await gateway.start()
    await gateway.stop()
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("ALERT WEBHOOK IS UNSIGNED" in w for w in warnings), warnings
    assert "s3cret" not in caplog.text


async def test_signed_webhook_is_not_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_WEBHOOK_SECRET", "a-secret")
    settings = dataclasses.replace(
        initialised(tmp_path),
        alerts_webhook_url="http://127.0.0.1:9/hook",
        alerts_webhook_secret_env="TEST_WEBHOOK_SECRET",
    )
    caplog.set_level(logging.WARNING)
    gateway = Gateway(settings)
    await gateway.start()
    await gateway.stop()
    assert "UNSIGNED" not in caplog.text
