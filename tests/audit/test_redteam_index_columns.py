"""Red team (issue 17, the audit log on PostgreSQL, and SQLite alike): the columns incident
timelines, reports and searches select on (``principal_id``, ``credential_id``, ``at``,
``name``, ``model``, ``request_id``) are copies of fields of the hashed record. An insider
who rewrites them hides an event from every query that looks for it; ``garrison audit
verify`` compares every copy with its record and names the row and the column."""

from __future__ import annotations

from pathlib import Path

import pytest

from garrison.audit.columns import DERIVED_COLUMNS
from tests.audit.test_tamper import (  # noqa: F401 (fixtures, used by name)
    Log,
    _connect,
    data,
    log,
    verify,
)

pytestmark = pytest.mark.e2e


def _rewrite(data: Path, sql: str, args: tuple[object, ...]) -> None:  # noqa: F811 (data: a path here)
    conn = _connect(data)
    try:
        conn.execute(sql, args)
    finally:
        conn.close()


def test_an_event_hidden_by_rewriting_its_indexed_columns_is_found(
    data: Path,  # noqa: F811
    log: Log,  # noqa: F811
) -> None:
    seq = log.middle + 1
    _rewrite(
        data,
        "UPDATE audit_events SET principal_id = ?, credential_id = ?, at = at - 86400"
        " WHERE seq = ?",
        ("prn_nobody", "nobody", seq),
    )
    report = verify(data)
    assert not report["ok"], "the rewritten index columns went unnoticed"
    [problem] = report["problems"]
    assert (problem["kind"], problem["index"]) == ("column_mismatch", log.middle)
    assert f"seq {seq}" in problem["detail"]
    for column in ("at", "principal_id", "credential_id"):
        assert column in problem["detail"]


@pytest.mark.parametrize("column", DERIVED_COLUMNS)
def test_each_copied_column_rewritten_alone_is_named(
    data: Path,  # noqa: F811
    log: Log,  # noqa: F811
    column: str,
) -> None:
    # Every copied column, to a value of its own type (at: a number; the rest: text), and to
    # NULL where the record holds a value.
    value: object = 12345.5 if column == "at" else "forged"
    _rewrite(data, f"UPDATE audit_events SET {column} = ? WHERE seq = ?", (value, log.middle + 1))  # noqa: S608
    report = verify(data)
    assert [(p["kind"], p["index"]) for p in report["problems"]] == [
        ("column_mismatch", log.middle)
    ]
    assert f"column(s) {column} differ" in report["problems"][0]["detail"]


def test_a_copied_column_set_to_null_is_named(data: Path, log: Log) -> None:  # noqa: F811
    _rewrite(data, "UPDATE audit_events SET principal_id = NULL WHERE seq = ?", (log.middle + 1,))
    report = verify(data)
    assert [(p["kind"], p["index"]) for p in report["problems"]] == [
        ("column_mismatch", log.middle)
    ]


def test_rows_rewritten_in_two_places_are_both_named(data: Path, log: Log) -> None:  # noqa: F811
    for index in (log.middle, log.middle + 3):
        _rewrite(data, "UPDATE audit_events SET model = 'other' WHERE seq = ?", (index + 1,))
    report = verify(data)
    assert [(p["kind"], p["index"]) for p in report["problems"]] == [
        ("column_mismatch", log.middle),
        ("column_mismatch", log.middle + 3),
    ]
