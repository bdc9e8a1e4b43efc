"""Red team (issue 17, the audit log on PostgreSQL, and SQLite alike): the columns incident
timelines, reports and searches select on (``principal_id``, ``credential_id``, ``at``,
``name``, ``model``) are copies of fields of the hashed record, and nothing checks the copy.
An insider who rewrites them hides an event from every query that looks for it, while
``garrison audit verify`` reports a clean log."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.audit.test_tamper import (  # noqa: F401 (fixtures, used by name)
    Log,
    _connect,
    data,
    log,
    verify,
)

pytestmark = pytest.mark.e2e


@pytest.mark.xfail(
    reason="audit verify does not check the indexed columns against the hashed record: "
    "rewriting principal_id/credential_id/at hides an event from incident timelines and "
    "reports with no finding (docs/security.md, known unfixed items)",
    strict=True,
)
def test_an_event_hidden_by_rewriting_its_indexed_columns_is_found(
    data: Path,  # noqa: F811
    log: Log,  # noqa: F811
) -> None:
    conn = _connect(data)
    try:
        conn.execute(
            "UPDATE audit_events SET principal_id = ?, credential_id = ?, at = at - 86400"
            " WHERE seq = ?",
            ("prn_nobody", "nobody", log.middle + 1),
        )
    finally:
        conn.close()
    report = verify(data)
    assert not report["ok"], "the rewritten index columns went unnoticed"
