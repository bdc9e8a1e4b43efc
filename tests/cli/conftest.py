"""A real gateway serving the admin API for an ``init``-ed data directory, and the ``garrison``
CLI run against it as a subprocess.

The gateway runs in a background thread with its own event loop (the tests themselves are
synchronous: they start subprocesses and wait for them). Set-up that is not under test is
written in-process through ``served.directory``; ``served.sync()`` then loads it into the
gateway (the admin API reloads after its own writes, so commands need no such step).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest

from garrison.bootstrap import enroll_locally, init, open_directory, write_credential
from garrison.config import Settings, load_settings
from garrison.domain import AuthStyle, Level, PrincipalKind, UpstreamApi
from garrison.domain.provenance import Provenance
from garrison.mock import MockConfig, MockUpstream
from garrison.server import Gateway
from garrison.store import Directory
from tests.support.admin import own_key

GARRISON = [sys.executable, "-m", "garrison.cli.main"]
# The CLI's error exit codes (docs/cli.md, "Exit codes"): usage, refused, not found, conflict,
# server or network failure.
ERROR_CODES = frozenset({2, 3, 4, 5, 6})
T = TypeVar("T")
# Generous for a loaded CI machine; nothing here takes more than a second when healthy.
CALL_TIMEOUT_S = 30.0


def cli_env(url: str | None, extra: Mapping[str, str | None] | None = None) -> dict[str, str]:
    """The environment of a CLI subprocess: the caller's, without any GARRISON_* setting that
    could point it elsewhere, plus ``GARRISON_ADMIN_URL`` and ``extra`` (None removes)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GARRISON_")}
    env["COLUMNS"] = "250"  # wide enough that rich never wraps a report line
    if url is not None:
        env["GARRISON_ADMIN_URL"] = url
    for name, value in (extra or {}).items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def garrison(
    *args: str, url: str | None = None, env: Mapping[str, str | None] | None = None
) -> subprocess.CompletedProcess[str]:
    """``garrison ARGS`` as a subprocess."""
    return subprocess.run(
        [*GARRISON, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=cli_env(url, env),
        check=False,
    )


@dataclass(frozen=True)
class Cli:
    """The CLI aimed at one config and one admin API address."""

    config: Path
    url: str | None

    def run(
        self, *args: str, env: Mapping[str, str | None] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return garrison(*args, "--config", str(self.config), url=self.url, env=env)

    def ok(self, *args: str, env: Mapping[str, str | None] | None = None) -> str:
        out = self.run(*args, env=env)
        assert out.returncode == 0, (out.stdout, out.stderr)
        assert "Traceback" not in out.stderr
        return out.stdout

    def as_json(self, *args: str, env: Mapping[str, str | None] | None = None) -> Any:
        return json.loads(self.ok(*args, "--json", env=env))

    def refused(
        self, *args: str, env: Mapping[str, str | None] | None = None, code: int | None = None
    ) -> str:
        """The command fails with an error code of the CLI's table (``code`` if given) and
        one clean line on stderr; returns that line."""
        out = self.run(*args, env=env)
        assert out.returncode in ERROR_CODES, (out.returncode, out.stdout, out.stderr)
        assert code is None or out.returncode == code, (out.returncode, out.stderr)
        assert "Traceback" not in out.stderr
        assert out.stdout == ""
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1, out.stderr
        assert lines[0].startswith("error: ")
        return lines[0]

    def usage_error(self, *args: str, env: Mapping[str, str | None] | None = None) -> str:
        """Refused by the CLI's own argument checks (click: usage, exit 2), before any call;
        returns stderr."""
        out = self.run(*args, env=env)
        assert out.returncode == 2, (out.stdout, out.stderr)
        assert "Traceback" not in out.stderr
        assert "Usage: garrison" in out.stderr and "Error: " in out.stderr
        return out.stderr


class BackgroundLoop:
    """An event loop running in a daemon thread; ``call`` runs a coroutine on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="cli-test-gateway", daemon=True
        )
        self._thread.start()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = CALL_TIMEOUT_S) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(CALL_TIMEOUT_S)
        assert not self._thread.is_alive(), "the gateway's event loop did not stop"
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.run_until_complete(self.loop.shutdown_default_executor())
        self.loop.close()


@dataclass(frozen=True)
class Served(Cli):
    """An ``init``-ed data directory whose gateway is running (``url`` is its address)."""

    settings: Settings
    gateway: Gateway
    directory: Directory  # writes set-up in-process, as the actor "test"
    admin_key: str  # the first admin's key, as `garrison init` wrote it to admin.key
    runner: BackgroundLoop

    @property
    def data_dir(self) -> Path:
        return self.config.parent

    @property
    def db_path(self) -> Path:
        return self.data_dir / "garrison.db"

    def sync(self) -> None:
        """Load what was written in-process into the gateway (as its 50 ms poll would)."""
        self.runner.call(self.gateway.reload())

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(self.db_path)
        try:
            return list(conn.execute(sql, params).fetchall())
        finally:
            conn.close()

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """Audit records, decoded, in order (optionally only those named ``name``)."""
        rows = self.query("SELECT record FROM audit_events ORDER BY seq")
        records = [orjson.loads(r[0]) for r in rows]
        return [r for r in records if name is None or r["name"] == name]

    def raw_audit(self) -> bytes:
        return b"\n".join(r[0] for r in self.query("SELECT record FROM audit_events"))

    def wait_for_event(
        self, name: str, where: Callable[[dict[str, Any]], bool] = lambda _: True
    ) -> dict[str, Any]:
        """The first audit record named ``name`` that ``where`` accepts, once the gateway's
        writer has committed it (polled with a deadline)."""
        deadline = time.monotonic() + 10
        while True:
            found = [e for e in self.events(name) if where(e)]
            if found:
                return found[0]
            if time.monotonic() > deadline:
                raise AssertionError(f"no {name} audit event within 10 s")
            time.sleep(0.02)

    def make_principal(
        self,
        name: str,
        *,
        org: str = "internal",
        clearance: Level = Level.INTERNAL,
        roles: tuple[str, ...] = (),
        kind: PrincipalKind = PrincipalKind.HUMAN,
        key: bool = True,
    ) -> str:
        """A principal (and a key, returned) written in-process, loaded into the gateway."""
        now = time.time()
        principal_id = self.directory.create_principal(
            name, org=org, kind=kind, clearance=clearance, roles=roles, now=now
        )
        # Set-up standing in for `garrison enroll`: the key counts as the person's own.
        token = ""
        if key and kind is PrincipalKind.SERVICE:
            made = self.directory.create_key(principal_id, now=now, provenance=Provenance.SERVICE)
            token = made.key.token.reveal()
        elif key:
            token = own_key(self.directory, principal_id, now=now)
        self.sync()
        return token


def served_gateway(data_dir: Path, **settings_changes: Any) -> Iterator[Served]:
    """``garrison init`` into ``data_dir``, then its gateway on 127.0.0.1, port 0
    (``settings_changes``: fields of its settings changed from what ``init`` wrote)."""
    done = init(data_dir)
    settings = dataclasses.replace(
        load_settings(done.config_path, env={}), port=0, **settings_changes
    )
    # The first admin enrolls as `garrison enroll CODE --save` would (its key is its own).
    assert settings.admin_credential_file is not None
    enrolled = enroll_locally(settings, done.codes[0].code.reveal())
    write_credential(settings.admin_credential_file, enrolled.key.token.reveal())
    assert settings.host == "127.0.0.1"
    runner = BackgroundLoop()
    directory = open_directory(settings, actor="test")
    gateway: Gateway | None = None
    try:

        async def start() -> Gateway:
            gw = Gateway(settings)
            await gw.start()
            return gw

        gateway = runner.call(start())
        assert settings.admin_credential_file is not None
        yield Served(
            config=done.config_path,
            url=f"http://127.0.0.1:{gateway.port}",
            settings=settings,
            gateway=gateway,
            directory=directory,
            admin_key=settings.admin_credential_file.read_text().strip(),
            runner=runner,
        )
    finally:
        if gateway is not None:
            runner.call(gateway.stop())
        runner.close()
        directory.engine.dispose()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    """A fresh data directory with its gateway running; CLI calls go to its admin API."""
    yield from served_gateway(tmp_path / "data")


@dataclass(frozen=True)
class Upstream:
    mock: MockUpstream
    url: str  # the OpenAI-style base URL, ending in /v1


UPSTREAM_KEY = "sk-cli-upstream-SECRET-0123456789"


@pytest.fixture
def upstream(served: Served) -> Iterator[Upstream]:
    """A mock model server on loopback (in the gateway's loop) and, registered in-process,
    the model "assistant" (level internal) that forwards to it with ``UPSTREAM_KEY``."""
    mock = MockUpstream(MockConfig())
    port = served.runner.call(mock.start("127.0.0.1", 0))
    try:
        url = f"http://127.0.0.1:{port}/v1"
        served.directory.create_model(
            "assistant",
            upstream_url=url,
            upstream_model="mock-small",
            api=UpstreamApi.OPENAI,
            auth_style=AuthStyle.BEARER,
            upstream_key=UPSTREAM_KEY,
            level=Level.INTERNAL,
            now=time.time(),
        )
        served.sync()
        yield Upstream(mock=mock, url=url)
    finally:
        served.runner.call(mock.stop())
