"""Times for people and tools in JSON output: RFC 3339, UTC, ``Z``.

Audit records keep their own encoding (seconds since the epoch, a float: the bytes are
hashed and must never change); what Garrison prints or sends beside them uses this form.
"""

from __future__ import annotations

from datetime import UTC, datetime


def rfc3339(at: float) -> str:
    """``2026-12-07T15:30:00.123Z``: UTC, millisecond precision."""
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
