"""The approvals watcher on PostgreSQL: it tails the shared audit log through the engine,
so a proposal made on any replica (or by a host command) reaches the approvers once."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from garrison.bootstrap import init, open_directory
from garrison.respond.approvals import REQUESTED, ApprovalWatcher
from garrison.store import Directory, changes
from tests.support import pg


class Captured:
    name = "captured"

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send(self, notice: dict[str, Any]) -> None:
        self.sent.append(notice)

    def close(self) -> None:
        pass


@pytest.fixture
def pg_directory(tmp_path: Path) -> Iterator[Directory]:
    with pg.fresh_database(migrated=False) as url:
        done = init(tmp_path / "data", database_url=url)
        directory = open_directory(done.settings, actor="prn_admin")
        try:
            yield directory
        finally:
            directory.engine.dispose()


def test_a_proposal_on_postgresql_reaches_the_approvers_once(pg_directory: Directory) -> None:
    sink = Captured()
    watcher = ApprovalWatcher(pg_directory.engine, [sink], poll_s=3600)
    watcher.start()
    try:
        assert watcher.poll() == []  # it starts at the log's end
        proposal = changes.propose(
            pg_directory, "policy", "org", {"text": ""}, "a new policy set", now=time.time()
        )
        deadline = time.monotonic() + 10
        notices: list[dict[str, Any]] = []
        while not notices:
            assert time.monotonic() < deadline, "the proposal never reached the watcher"
            notices = watcher.poll()
            time.sleep(0.05)
        (notice,) = notices
        assert (notice["kind"], notice["item"]["id"]) == (REQUESTED, proposal["id"])
        assert notice["item"]["summary"] == "a new policy set"
        assert watcher.poll() == []  # once
        assert sink.sent == [notice]
    finally:
        watcher.stop()
    # The engine is the caller's: the watcher leaves it usable.
    with pg_directory.engine.connect():
        pass


def test_with_two_replicas_only_the_detection_worker_sends_notices(
    pg_directory: Directory,
) -> None:
    """Every replica's watcher reads the shared log; only the one whose monitor is the
    elected worker speaks, so approvers hear of a proposal once, and the standby knows the
    open deadline (it tracked the request) for when it takes over."""
    worker, standby = Captured(), Captured()
    speaking = {"worker": True, "standby": False}

    def speaks(name: str) -> Callable[[], bool]:
        return lambda: speaking[name]

    watchers = [
        ApprovalWatcher(pg_directory.engine, [sink], poll_s=3600, speaks=speaks(name))
        for name, sink in (("worker", worker), ("standby", standby))
    ]
    for w in watchers:
        w.start()
    try:
        proposal = changes.propose(
            pg_directory, "policy", "org", {"text": ""}, "a new policy set", now=time.time()
        )
        deadline = time.monotonic() + 10
        while not worker.sent:
            assert time.monotonic() < deadline, "the proposal never reached the worker's watcher"
            for w in watchers:
                w.poll()
            time.sleep(0.05)
        assert [n["item"]["id"] for n in worker.sent] == [proposal["id"]]
        assert standby.sent == []
        assert len(watchers[1].deadlines) == 1  # tracked, not announced
    finally:
        for w in watchers:
            w.stop()
