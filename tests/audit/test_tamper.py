"""Tampering with a real audit log, one kind at a time, and what ``garrison audit verify`` says.

One log is built per database by a real gateway (about fifty calls in three phases, each
waited on until the idle writer has signed it, then a clean stop for the final checkpoint):
an embedded SQLite file and a PostgreSQL database. Each test copies it, edits the database
directly with SQL as an insider with database access would, and runs the verifier the way an
operator does: ``garrison audit verify --json`` with the configured witness directory. A few
tests are about the SQLite file itself (its bytes, its loose column types) and say so when
skipped on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import psycopg
import pytest
from click.testing import CliRunner

from garrison.audit.checkpoint import GENESIS_PREV, Checkpoint, Signer
from garrison.audit.merkle import CompactTree, leaf_hash
from garrison.audit.pg_sink import libpq_url
from garrison.audit.witness import read_witness
from garrison.cli.audit_cmds import audit
from garrison.config import CONFIG_FILE, Settings, load_settings, render_settings
from garrison.store import sqlite_path
from tests.conftest import BACKENDS
from tests.support import pg
from tests.support.world import World, start_world, stop_world

pytestmark = pytest.mark.e2e

GARRISON = [sys.executable, "-m", "garrison.cli.main"]
CALLS_PER_PHASE = 17
EVENT_COLUMNS = ("at", "name", "request_id", "principal_id", "credential_id", "model")


# ── the log ────────────────────────────────────────────────────────────────────────────────
@dataclass(frozen=True)
class Log:
    data: Path  # the pristine data directory (database, keys, witness, config)
    database_url: str  # the pristine log's database
    events: int
    sizes: tuple[int, ...]  # tree sizes of the stored checkpoints, in order
    witness_sizes: tuple[int, ...]
    # The signed range the tests change things in is [sizes[pair], sizes[pair + 1]): the
    # first one, not starting at 0, wide enough (a loaded machine may sign two checkpoints a
    # few events apart).
    pair: int = 0

    @property
    def range_start(self) -> int:
        return self.sizes[self.pair]

    @property
    def range_end(self) -> int:
        return self.sizes[self.pair + 1]

    @property
    def middle(self) -> int:
        """A leaf index inside that signed range, away from both of its ends."""
        return (self.range_start + self.range_end) // 2


async def _call(session: aiohttp.ClientSession, world: World, i: int) -> None:
    async with session.post(
        world.base + "/v1/chat/completions",
        json={"model": "assistant", "messages": [{"role": "user", "content": f"call {i}"}]},
        headers={"authorization": f"Bearer {world.keys['alice']}"},
    ) as resp:
        assert resp.status == 200, await resp.text()
        await resp.read()


async def _build(root: Path, database_url: str | None) -> Path:
    world = await start_world(root, database_url=database_url)
    try:
        async with aiohttp.ClientSession() as session:
            for phase in range(3):
                if phase:
                    await world.signed()  # the idle writer signs the phase before the next
                for i in range(CALLS_PER_PHASE):
                    await _call(session, world, phase * CALLS_PER_PHASE + i)
    finally:
        await stop_world(world)  # the clean stop signs the final checkpoint
    return root / "data"


class _Sql:
    """An insider's SQL session on the log's database, written with ``?`` placeholders
    whichever database it is (autocommit: each statement stands alone unless wrapped in
    BEGIN … COMMIT)."""

    def __init__(self, database_url: str) -> None:
        path = sqlite_path(database_url)
        self.pg = path is None
        self._conn: Any = (
            psycopg.connect(libpq_url(database_url), autocommit=True)
            if path is None
            else sqlite3.connect(path, isolation_level=None)
        )

    def execute(self, sql: str, args: tuple[Any, ...] = ()) -> Any:
        return self._conn.execute(sql.replace("?", "%s") if self.pg else sql, args)

    def close(self) -> None:
        self._conn.close()


def _url(data: Path) -> str:
    return load_settings(data / CONFIG_FILE, env={}).database_url


def _connect(data: Path) -> _Sql:
    return _Sql(_url(data))


def _sqlite_only(data: Path, why: str) -> None:
    if sqlite_path(_url(data)) is None:
        pytest.skip(f"SQLite only: {why}")


@pytest.fixture(scope="module", params=BACKENDS)
def log(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Log]:
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(pg.fresh_database()) if request.param == "postgresql" else None
        yield _built_log(tmp_path_factory.mktemp("tamper-log"), url)


def _built_log(root: Path, url: str | None) -> Log:
    data = asyncio.run(_build(root, url))
    conn = _connect(data)
    try:
        events = conn.execute("SELECT count(*) FROM audit_events").fetchone()[0]
        sizes = tuple(
            r[0] for r in conn.execute("SELECT tree_size FROM audit_checkpoints ORDER BY seq")
        )
    finally:
        conn.close()
    witness = tuple(cp.tree_size for cp in read_witness(data / "witness"))
    wide = [k for k in range(len(sizes) - 2) if sizes[k] > 0 and sizes[k + 1] - sizes[k] >= 16]
    assert wide, sizes
    built = Log(data, _url(data), events, sizes, witness, pair=wide[0])
    # What the tests below rely on: several checkpoints, the last one covering everything,
    # all published to the witness, and room for a change inside one signed range.
    assert len(sizes) >= 3, sizes
    assert sizes[-1] == events and witness == sizes
    assert built.range_start < built.middle - 1 and built.middle + 6 < built.range_end
    return built


@pytest.fixture
def data(log: Log, tmp_path: Path) -> Iterator[Path]:
    """A private copy of the pristine log with a config pointing at it."""
    copy = tmp_path / "data"
    shutil.copytree(log.data, copy)
    settings = Settings.for_data_dir(copy)
    with contextlib.ExitStack() as stack:
        if sqlite_path(log.database_url) is None:
            url = stack.enter_context(pg.copy_of(log.database_url))
            settings = dataclasses.replace(settings, database_url=url)
        (copy / CONFIG_FILE).write_text(render_settings(settings))
        yield copy


def verify(data: Path, *, witness: bool = True) -> dict[str, Any]:
    """``garrison audit verify --json`` (in process); ``witness=False`` hides the witness."""
    args = ["verify", "--json", "--config", str(data / CONFIG_FILE)]
    if not witness:
        args += ["--no-witness"]
    result = CliRunner().invoke(audit, args)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    report: dict[str, Any] = orjson.loads(result.stdout)
    assert result.exit_code == (0 if report["ok"] else 1), result.output
    return report


def first_problem(report: dict[str, Any]) -> tuple[str, int | None]:
    assert not report["ok"], "tampering went unnoticed"
    first = report["problems"][0]
    return first["kind"], first["index"]


# ── tampering, done with sqlite3 as an insider would ───────────────────────────────────────
def _record(conn: _Sql, index: int) -> dict[str, Any]:
    row = conn.execute("SELECT record FROM audit_events WHERE seq = ?", (index + 1,)).fetchone()
    value: dict[str, Any] = orjson.loads(row[0])
    return value


def _encode(record: dict[str, Any]) -> bytes:
    return orjson.dumps(record, option=orjson.OPT_SORT_KEYS)


def edit_record(
    data: Path, index: int, change: Callable[[dict[str, Any]], None], *, rehash: bool
) -> None:
    conn = _connect(data)
    try:
        record = _record(conn, index)
        change(record)
        raw = _encode(record)
        if rehash:
            conn.execute(
                "UPDATE audit_events SET record = ?, leaf_hash = ? WHERE seq = ?",
                (raw, leaf_hash(raw), index + 1),
            )
        else:
            conn.execute("UPDATE audit_events SET record = ? WHERE seq = ?", (raw, index + 1))
    finally:
        conn.close()


def _shift_seqs(conn: _Sql, after: int, delta: int) -> None:
    """Add ``delta`` to every seq above ``after`` (in two steps: seq is the primary key)."""
    conn.execute("UPDATE audit_events SET seq = -seq WHERE seq > ?", (after,))
    conn.execute("UPDATE audit_events SET seq = -seq + ? WHERE seq < 0", (delta,))


def delete_row(data: Path, index: int, *, renumber: bool) -> None:
    conn = _connect(data)
    try:
        conn.execute("DELETE FROM audit_events WHERE seq = ?", (index + 1,))
        if renumber:
            _shift_seqs(conn, index + 1, -1)
    finally:
        conn.close()


def insert_forged_row(data: Path, index: int) -> None:
    """A plausible forged event at position ``index`` (naming that index, with a correct
    leaf hash); every later row moves up one seq."""
    conn = _connect(data)
    try:
        forged = _record(conn, index)
        forged["data"] = {**forged["data"], "forged": True}
        raw = _encode(forged)
        _shift_seqs(conn, index, 1)
        conn.execute(
            "INSERT INTO audit_events (seq, at, name, request_id, principal_id, credential_id,"
            " model, record, leaf_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (index + 1, *(forged[c] for c in EVENT_COLUMNS), raw, leaf_hash(raw)),
        )
    finally:
        conn.close()


def swap_rows(data: Path, a: int, b: int) -> None:
    """Exchange two rows' contents (record, leaf hash and the query columns); seqs stay."""
    columns = (*EVENT_COLUMNS, "record", "leaf_hash")
    listed = ", ".join(columns)
    sets = ", ".join(f"{c} = ?" for c in columns)
    conn = _connect(data)
    try:
        select = f"SELECT {listed} FROM audit_events WHERE seq = ?"  # noqa: S608 - fixed names
        row_a = conn.execute(select, (a + 1,)).fetchone()
        row_b = conn.execute(select, (b + 1,)).fetchone()
        update = f"UPDATE audit_events SET {sets} WHERE seq = ?"  # noqa: S608 - fixed names
        conn.execute(update, (*row_b, a + 1))
        conn.execute(update, (*row_a, b + 1))
    finally:
        conn.close()


def truncate(data: Path, keep: int, *, checkpoints_too: bool) -> None:
    conn = _connect(data)
    try:
        conn.execute("DELETE FROM audit_events WHERE seq > ?", (keep,))
        if checkpoints_too:
            conn.execute("DELETE FROM audit_checkpoints WHERE tree_size > ?", (keep,))
    finally:
        conn.close()


def _checkpoint_rows(conn: _Sql) -> list[tuple[int, Checkpoint]]:
    return [
        (seq, Checkpoint.from_dict(orjson.loads(body)))
        for seq, body in conn.execute("SELECT seq, body FROM audit_checkpoints ORDER BY seq")
    ]


def rewrite_everything(data: Path) -> None:
    """Replace the whole log with a self-consistent forgery: every record changed, leaf
    hashes recomputed, every checkpoint re-signed with the real key and re-chained."""
    signer = Signer.from_dir(data / "keys")
    conn = _connect(data)
    try:
        conn.execute("BEGIN")
        rows = conn.execute("SELECT seq, record FROM audit_events ORDER BY seq").fetchall()
        checkpoints = _checkpoint_rows(conn)
        wanted = {cp.tree_size for _, cp in checkpoints}
        tree = CompactTree()
        states: dict[int, tuple[bytes, bytes]] = {}
        for seq, record in rows:
            forged = orjson.loads(record)
            forged["data"] = {**forged["data"], "note": "nothing to see here"}
            raw = _encode(forged)
            lh = leaf_hash(raw)
            conn.execute(
                "UPDATE audit_events SET record = ?, leaf_hash = ? WHERE seq = ?", (raw, lh, seq)
            )
            tree.append(lh)
            if tree.size in wanted:
                states[tree.size] = (tree.root(), b"".join(tree.edge))
        prev = GENESIS_PREV
        for seq, cp in checkpoints:
            root, edge = states[cp.tree_size]
            new = signer.sign(cp.tree_size, root, cp.at, prev)
            conn.execute(
                "UPDATE audit_checkpoints SET body = ?, edge = ? WHERE seq = ?",
                (orjson.dumps(new.to_dict()), edge, seq),
            )
            prev = new.digest()
        conn.execute("COMMIT")
    finally:
        conn.close()


def delete_checkpoint(data: Path, position: int) -> None:
    conn = _connect(data)
    try:
        seq = _checkpoint_rows(conn)[position][0]
        conn.execute("DELETE FROM audit_checkpoints WHERE seq = ?", (seq,))
    finally:
        conn.close()


def corrupt_checkpoint_signature(data: Path, position: int) -> None:
    conn = _connect(data)
    try:
        seq, cp = _checkpoint_rows(conn)[position]
        body = cp.to_dict()
        sig = body["signature"]
        body["signature"] = ("B" if sig[0] == "A" else "A") + sig[1:]
        conn.execute(
            "UPDATE audit_checkpoints SET body = ? WHERE seq = ?", (orjson.dumps(body), seq)
        )
    finally:
        conn.close()


def _mark(record: dict[str, Any]) -> None:
    record["data"] = {**record["data"], "status": 299}


# ── the untouched log ──────────────────────────────────────────────────────────────────────
def test_untouched_log_verifies(data: Path, log: Log) -> None:
    report = verify(data)
    assert report["ok"], report["problems"]
    assert report["events"] == log.events
    assert report["checkpoints"] == len(log.sizes)
    assert report["witness_checkpoints"] == len(log.witness_sizes)
    assert report["unsigned_tail"] == 0


# ── modified ───────────────────────────────────────────────────────────────────────────────
def test_modified_record_is_reported_as_modified_at_its_index(data: Path, log: Log) -> None:
    edit_record(data, log.middle, _mark, rehash=False)
    report = verify(data)
    assert first_problem(report) == ("modified", log.middle), report["problems"]
    assert report["first_bad_index"] == log.middle


def test_modified_record_is_located_by_the_log_alone_without_the_witness(
    data: Path, log: Log
) -> None:
    edit_record(data, log.middle, _mark, rehash=False)
    report = verify(data, witness=False)
    assert first_problem(report) == ("modified", log.middle), report["problems"]


def test_modified_record_with_a_recomputed_leaf_hash_is_caught_by_the_signed_root(
    data: Path, log: Log
) -> None:
    # The leaf hash column agrees with the forged record: only the checkpoint signed after it
    # can tell, and it narrows the change to its signed range [range_start, range_end).
    edit_record(data, log.middle, _mark, rehash=True)
    report = verify(data, witness=False)
    assert first_problem(report) == ("modified", log.range_start), report["problems"]
    assert f"[{log.range_start}, {log.range_end})" in report["problems"][0]["detail"]


def test_local_modification_is_not_reported_as_a_rewrite_when_the_witness_is_checked(
    data: Path, log: Log
) -> None:
    # The database's own signed checkpoint already disagrees with the log, so the witness
    # copy of that same checkpoint says nothing new: this is a modification inside one
    # signed range, not a replaced log; the witness's leaf hashes name its index.
    edit_record(data, log.middle, _mark, rehash=True)
    report = verify(data)
    assert first_problem(report) == ("modified", log.middle), report["problems"]
    assert "rewritten" not in {p["kind"] for p in report["problems"]}


# A record changed together with its stored leaf hash, at the edges and inside signed ranges:
# the witness's leaf hashes (checked against the signed root) name the exact index.
POSITIONS: dict[str, Callable[[Log], int]] = {
    "first of the log": lambda log: 0,
    "first of a range": lambda log: log.range_start,
    "second of a range": lambda log: log.range_start + 1,
    "middle of a range": lambda log: log.middle,
    "last of a range": lambda log: log.range_end - 1,
    "first of the last range": lambda log: log.sizes[-2],
    "last of the log": lambda log: log.events - 1,
}


@pytest.mark.parametrize("where", list(POSITIONS))
def test_modified_record_with_a_recomputed_leaf_hash_is_named_by_its_index(
    data: Path, log: Log, where: str
) -> None:
    index = POSITIONS[where](log)
    edit_record(data, index, _mark, rehash=True)
    report = verify(data)
    assert [(p["kind"], p["index"]) for p in report["problems"]] == [("modified", index)]
    assert report["first_bad_index"] == index


def test_two_records_modified_in_one_range_are_both_named(data: Path, log: Log) -> None:
    edit_record(data, log.middle, _mark, rehash=True)
    edit_record(data, log.middle + 3, _mark, rehash=True)
    report = verify(data)
    found = [(p["kind"], p["index"]) for p in report["problems"]]
    assert found == [("modified", log.middle), ("modified", log.middle + 3)]


def _forge_witness_leaf(data: Path, index: int) -> None:
    """The insider edits the witness's leaf hash too, to match the forged record."""
    conn = _connect(data)
    try:
        row = conn.execute("SELECT leaf_hash FROM audit_events WHERE seq = ?", (index + 1,))
        forged = row.fetchone()[0]
    finally:
        conn.close()
    with open(data / "witness" / "leaves.bin", "r+b") as handle:
        handle.seek(32 * index)
        handle.write(forged)


def test_forged_witness_leaves_prove_nothing_and_the_signed_range_is_reported(
    data: Path, log: Log
) -> None:
    edit_record(data, log.middle, _mark, rehash=True)
    _forge_witness_leaf(data, log.middle)
    report = verify(data)
    # The witness's hashes no longer rebuild the signed root: they are not believed.
    assert first_problem(report) == ("modified", log.range_start), report["problems"]
    assert f"[{log.range_start}, {log.range_end})" in report["problems"][0]["detail"]


def test_missing_witness_leaves_fall_back_to_the_signed_range(data: Path, log: Log) -> None:
    edit_record(data, log.middle, _mark, rehash=True)
    (data / "witness" / "leaves.bin").unlink()
    report = verify(data)
    assert first_problem(report) == ("modified", log.range_start), report["problems"]


def test_the_witness_holds_every_leaf_hash_of_the_log(log: Log) -> None:
    conn = _connect(log.data)
    try:
        rows = conn.execute("SELECT leaf_hash FROM audit_events ORDER BY seq")
        hashes = b"".join(r[0] for r in rows)
    finally:
        conn.close()
    assert (log.data / "witness" / "leaves.bin").read_bytes() == hashes


# ── deleted ────────────────────────────────────────────────────────────────────────────────
def test_deleted_row_leaving_a_seq_gap_is_reported_as_deleted_at_its_index(
    data: Path, log: Log
) -> None:
    delete_row(data, log.middle, renumber=False)
    report = verify(data)
    assert first_problem(report) == ("deleted", log.middle), report["problems"]
    assert report["first_bad_index"] == log.middle


def test_deleted_row_with_later_seqs_renumbered_is_reported_as_deleted_at_its_index(
    data: Path, log: Log
) -> None:
    delete_row(data, log.middle, renumber=True)
    report = verify(data)
    assert first_problem(report) == ("deleted", log.middle), report["problems"]
    assert report["first_bad_index"] == log.middle


# ── inserted ───────────────────────────────────────────────────────────────────────────────
def test_forged_row_is_reported_as_inserted_at_its_index(data: Path, log: Log) -> None:
    insert_forged_row(data, log.middle)
    report = verify(data)
    assert first_problem(report) == ("inserted", log.middle), report["problems"]
    assert report["first_bad_index"] == log.middle


# ── reordered ──────────────────────────────────────────────────────────────────────────────
def test_swapped_rows_are_reported_as_reordered_at_the_first_of_them(data: Path, log: Log) -> None:
    swap_rows(data, log.middle, log.middle + 5)
    report = verify(data)
    assert first_problem(report) == ("reordered", log.middle), report["problems"]
    assert report["first_bad_index"] == log.middle


# ── truncated ──────────────────────────────────────────────────────────────────────────────
def test_truncated_tail_and_its_checkpoints_are_caught_by_the_witness(data: Path, log: Log) -> None:
    keep = log.events - 10
    truncate(data, keep, checkpoints_too=True)
    report = verify(data)
    assert first_problem(report) == ("truncated", keep), report["problems"]


def test_truncated_tail_and_its_checkpoints_leave_no_trace_in_the_database_alone(
    data: Path, log: Log
) -> None:
    # Why the witness exists: the remaining log and checkpoints are consistent on their own.
    truncate(data, log.events - 10, checkpoints_too=True)
    assert verify(data, witness=False)["ok"]


def test_truncated_rows_are_caught_by_the_signed_checkpoint(data: Path, log: Log) -> None:
    keep = log.events - 10
    truncate(data, keep, checkpoints_too=False)
    report = verify(data, witness=False)
    assert first_problem(report) == ("truncated", keep), report["problems"]


# ── checkpoints ────────────────────────────────────────────────────────────────────────────
def test_checkpoint_deleted_from_the_middle_breaks_the_chain(data: Path) -> None:
    delete_checkpoint(data, 1)
    report = verify(data)
    assert first_problem(report) == ("broken_chain", None), report["problems"]
    assert report["first_bad_index"] is None  # every event is intact


def test_corrupted_checkpoint_signature_is_reported_as_a_bad_signature(data: Path) -> None:
    corrupt_checkpoint_signature(data, 1)
    report = verify(data)
    assert first_problem(report) == ("bad_signature", None), report["problems"]


# ── rewritten ──────────────────────────────────────────────────────────────────────────────
def test_self_consistent_forgery_passes_every_check_inside_the_database(data: Path) -> None:
    # The forgery really is self-consistent: nothing in the database betrays it.
    rewrite_everything(data)
    assert verify(data, witness=False)["ok"]


def test_self_consistent_forgery_is_caught_through_the_witness_as_rewritten(data: Path) -> None:
    rewrite_everything(data)
    report = verify(data)
    assert first_problem(report) == ("rewritten", 0), report["problems"]
    assert report["first_bad_index"] == 0


# ── the command line ───────────────────────────────────────────────────────────────────────
def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*GARRISON, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "GARRISON_CONFIG": ""},
        check=False,
    )


@pytest.fixture
def config(data: Path) -> str:
    return str(data / CONFIG_FILE)


def test_cli_verify_exits_0_and_says_ok_on_an_untouched_log(config: str) -> None:
    out = run_cli("audit", "verify", "--config", config)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "OK: the log verifies" in out.stdout


def test_cli_verify_exits_1_and_prints_the_first_bad_index_on_a_tampered_log(
    data: Path, log: Log, config: str
) -> None:
    keep = log.events - 10
    truncate(data, keep, checkpoints_too=False)
    out = run_cli("audit", "verify", "--config", config)
    assert out.returncode == 1, out.stdout + out.stderr
    assert f"FAILED: first bad index {keep}" in out.stdout
    assert "truncated" in out.stdout


# ── the witness itself attacked or damaged ───────────────────────────────────────────────────
def _kinds(report: dict[str, Any]) -> list[str]:
    return [p["kind"] for p in report["problems"]]


def test_a_deleted_witness_is_a_finding(data: Path) -> None:
    shutil.rmtree(data / "witness")
    report = verify(data)
    assert _kinds(report) == ["witness_missing"]


def test_an_emptied_witness_is_a_finding(data: Path) -> None:
    (data / "witness" / "checkpoints.jsonl").write_bytes(b"")
    (data / "witness" / "latest.json").unlink()
    assert _kinds(verify(data)) == ["witness_missing"]


def test_a_witness_cut_short_is_a_finding(data: Path, log: Log) -> None:
    history = data / "witness" / "checkpoints.jsonl"
    lines = history.read_bytes().splitlines(keepends=True)
    history.write_bytes(b"".join(lines[:1]))  # only the first checkpoint left
    report = verify(data)
    assert _kinds(report) == ["witness_behind"]
    assert f"lacks {len(log.sizes) - 2} checkpoint(s)" in report["problems"][0]["detail"]


def test_a_witness_one_behind_is_not_a_finding(data: Path) -> None:
    """The newest checkpoint is published right after its commit (or again at the next
    start after a crash in between): a witness without it is not evidence of anything."""
    history = data / "witness" / "checkpoints.jsonl"
    lines = history.read_bytes().splitlines(keepends=True)
    history.write_bytes(b"".join(lines[:-1]))
    assert verify(data)["ok"]


def test_a_garbage_witness_line_is_a_finding_not_a_crash(data: Path) -> None:
    history = data / "witness" / "checkpoints.jsonl"
    lines = history.read_bytes().splitlines(keepends=True)
    lines.insert(1, b"\x00garbage{not json\n")
    history.write_bytes(b"".join(lines))
    report = verify(data)
    assert _kinds(report) == ["witness_damaged"]
    assert "checkpoints.jsonl:2" in report["problems"][0]["detail"]


def test_a_torn_last_witness_line_is_skipped_and_repaired_by_the_next_publish(
    data: Path,
) -> None:
    """A full disk or a crash can cut an append short: the half line was never an entry."""
    from garrison.audit.witness import DirectoryWitness, load_witness

    history = data / "witness" / "checkpoints.jsonl"
    whole = history.read_bytes()
    last = whole.splitlines(keepends=True)[-1]
    history.write_bytes(whole + last[: len(last) // 2])  # half of a line, no newline
    copy = load_witness(data / "witness")
    assert copy.torn_tail and not copy.damaged
    assert verify(data)["ok"]
    newest = copy.checkpoints[-1]
    DirectoryWitness(data / "witness").publish(newest)
    assert history.read_bytes() == whole + last  # the torn half is gone, the entry whole
    assert not load_witness(data / "witness").torn_tail


def test_a_checkpoint_stored_but_never_published_is_published_at_the_next_start(
    data: Path,
) -> None:
    from garrison.audit.sinks import open_sink
    from garrison.audit.witness import DirectoryWitness, load_witness

    history = data / "witness" / "checkpoints.jsonl"
    lines = history.read_bytes().splitlines(keepends=True)
    history.write_bytes(b"".join(lines[:-1]))  # the process ended between commit and publish
    (data / "witness" / "latest.json").write_bytes(lines[-2].rstrip(b"\n"))
    sink = open_sink(
        _url(data),
        signer=Signer.from_dir(data / "keys"),
        witness=DirectoryWitness(data / "witness"),
    )
    sink.open()
    sink.close()
    assert history.read_bytes() == b"".join(lines)
    assert [cp.tree_size for cp in load_witness(data / "witness").checkpoints][-1] == int(
        orjson.loads(lines[-1])["tree_size"]
    )


def test_a_corrupt_database_is_could_not_read_without_a_traceback(data: Path) -> None:
    if sqlite_path(_url(data)) is None:
        # PostgreSQL: the log's database is gone (dropped, or the server unreachable).
        settings = dataclasses.replace(
            load_settings(data / CONFIG_FILE, env={}),
            database_url=pg.url_for(f"{pg.PREFIX}no_such_database"),
        )
        (data / CONFIG_FILE).write_text(render_settings(settings))
    else:
        db = data / "garrison.db"
        raw = bytearray(db.read_bytes())
        raw[100:4096] = b"\xff" * (4096 - 100)  # the header's tail and the first page: garbage
        db.write_bytes(bytes(raw))
        for extra in ("garrison.db-wal", "garrison.db-shm"):
            (data / extra).unlink(missing_ok=True)
    result = subprocess.run(
        [*GARRISON, "audit", "verify", "--config", str(data / CONFIG_FILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "Traceback" not in result.stderr
    assert result.returncode not in (0, 1), (result.returncode, result.stderr)
    assert "could not read" in result.stderr.lower()


# ── attack: checkpoints the verifier could not parse crashed it ───────────────────────────
@pytest.mark.parametrize("forgery", ["garbage", "huge_size", "null"])
def test_a_garbled_stored_checkpoint_is_a_finding_not_a_crash(data: Path, forgery: str) -> None:
    """An insider overwrote one checkpoint row with garbage (or a size past 64 bits): the
    verifier died with a traceback instead of saying where the log was touched."""
    conn = _connect(data)
    try:
        seq = conn.execute("SELECT seq FROM audit_checkpoints ORDER BY seq").fetchall()[1][0]
        row = conn.execute("SELECT body FROM audit_checkpoints WHERE seq = ?", (seq,))
        body = orjson.loads(row.fetchone()[0])
        body["tree_size"] = 10**30  # orjson will not write an integer past 64 bits
        forged = {"garbage": b"{}", "huge_size": json.dumps(body).encode(), "null": b"null"}
        query = "UPDATE audit_checkpoints SET body = ? WHERE seq = ?"
        conn.execute(query, (forged[forgery], seq))
    finally:
        conn.close()
    report = verify(data)
    assert not report["ok"]
    assert f"stored checkpoint {seq} is not one" in report["problems"][0]["detail"]


def test_a_witness_line_with_a_size_past_64_bits_is_a_finding_not_a_crash(data: Path) -> None:
    history = data / "witness" / "checkpoints.jsonl"
    lines = history.read_bytes().splitlines(keepends=True)
    forged = orjson.loads(lines[-1])
    forged["tree_size"] = 10**30
    text = json.dumps(forged)  # orjson will not write an integer past 64 bits
    history.write_bytes(b"".join(lines) + text.encode() + b"\n")
    report = verify(data)
    assert _kinds(report) == ["witness_damaged"]


@pytest.mark.parametrize("cell", ["héllo", 10**12], ids=["text", "huge-integer"])
def test_a_record_edited_to_another_type_is_located_not_a_crash(
    data: Path, log: Log, cell: object
) -> None:
    """Re-reading a failed range to locate the change converted each record with
    ``bytes()``: TEXT raised TypeError (a traceback), and an INTEGER n allocated n bytes."""
    _sqlite_only(data, "stores another type in a BLOB column (PostgreSQL's bytea refuses)")
    conn = _connect(data)
    try:
        conn.execute(
            "UPDATE audit_events SET record = ?, leaf_hash = 'x' WHERE seq = ?",
            (cell, log.middle + 1),
        )
    finally:
        conn.close()
    report = verify(data)
    assert not report["ok"]
    assert report["first_bad_index"] == log.middle


def test_an_unreadable_witness_is_a_finding_not_a_crash(data: Path) -> None:
    history = data / "witness" / "checkpoints.jsonl"
    history.unlink()
    history.mkdir()  # whatever stands in its place, the verifier says so and goes on
    report = verify(data)
    assert "witness_damaged" in _kinds(report)
    assert "cannot be read" in report["problems"][0]["detail"]
