"""The fold's query on PostgreSQL is planned as an index lookup even as the one plan a
prepared statement keeps for any parameters (psycopg prepares a statement after a few
executions). Found by bench/replicas_bench.py: with an open range (``seq > $1``) PostgreSQL's
generic plan expected a third of the table and scanned all of it on every commit, so each
commit of a gateway on PostgreSQL was slower than the last."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from garrison.audit import leaves
from garrison.audit.events import AuditEvent, EventName
from garrison.audit.pg_sink import PgAuditSink
from garrison.store.change_feed import pg_conninfo
from tests.support import pg

# Rows of the size a call's record has (~500 bytes): enough for the open range's plan to
# read the whole table, as it did in the benchmark.
ROWS = 20_000


@pytest.fixture
def url() -> Iterator[str]:
    with pg.fresh_database() as fresh:
        with psycopg.connect(pg_conninfo(fresh), autocommit=True) as conn:
            # Statistics only when a test asks (autovacuum would gather them at its whim).
            conn.execute("ALTER TABLE audit_events SET (autovacuum_enabled = false)")
        sink = PgAuditSink(fresh)
        sink.open()
        try:
            for start in range(0, ROWS, 2000):
                sink.write_batch(
                    [
                        AuditEvent(
                            EventName.REQUEST_DENIED,
                            at=1.0,
                            request_id=f"r{i}",
                            data={"note": "x" * 400},
                        )
                        for i in range(start, start + 2000)
                    ]
                )
        finally:
            sink.close()
        yield fresh


def generic_plan(url: str, sql: str, params: tuple[int, ...], *, analyzed: bool) -> str:
    """``analyzed``: with the table's statistics gathered; without, as a new deployment's log
    is until autovacuum has looked at it (the benchmark's case)."""
    with psycopg.connect(pg_conninfo(url), autocommit=True) as conn:
        if analyzed:
            conn.execute("ANALYZE audit_events")
        conn.execute("SET plan_cache_mode = force_generic_plan")
        types = f"({', '.join('bigint' for _ in params)})" if params else ""
        conn.execute(f"PREPARE q{types} AS {sql.replace('?', '$1', 1).replace('?', '$2', 1)}")
        args = f"({', '.join(str(p) for p in params)})" if params else ""
        rows = conn.execute(f"EXPLAIN EXECUTE q{args}").fetchall()
    return "\n".join(str(r[0]) for r in rows)


@pytest.mark.parametrize("analyzed", [False, True])
def test_the_fold_is_an_index_range_scan_in_the_generic_plan(url: str, analyzed: bool) -> None:
    plan = generic_plan(url, leaves._FOLD, (ROWS - 1, ROWS), analyzed=analyzed)
    assert "Seq Scan" not in plan, plan
    assert "Index" in plan, plan


def test_an_open_range_would_scan_the_whole_log(url: str) -> None:
    """What the fold's query was: the generic plan reads every row (so the test above can
    fail, and the reason for the closed range stays written down)."""
    open_range = "SELECT seq, record, leaf_hash FROM audit_events WHERE seq > ? ORDER BY seq"
    plan = generic_plan(url, open_range, (ROWS - 1,), analyzed=False)
    assert "Seq Scan" in plan, plan


def test_the_head_read_is_an_index_read(url: str) -> None:
    plan = generic_plan(url, leaves._HEAD, (), analyzed=False)
    assert "Seq Scan" not in plan, plan


def test_the_detection_workers_read_of_the_log_is_an_index_read(url: str) -> None:
    """``detector_state.records_after``: an open range, but ordered and limited."""
    sql = "SELECT seq, record FROM audit_events WHERE seq > ? ORDER BY seq LIMIT ?"
    plan = generic_plan(url, sql, (ROWS - 1, 5000), analyzed=False)
    assert "Seq Scan" not in plan, plan
