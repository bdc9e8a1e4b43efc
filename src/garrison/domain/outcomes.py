"""How an admitted call ended: the ``outcome`` of its ``request.completed`` record.

The values are the strings the audit log, the metrics and the detectors have always read.
One member stands for a family: ``UPSTREAM_STATUS`` is an upstream that answered 4xx/5xx,
and its record names the status in the outcome itself (``upstream_400``, ``upstream_503``),
so ``encoded`` is what goes into a record and ``parse`` reads one back. No I/O here.
"""

from __future__ import annotations

import enum


class CallOutcome(enum.StrEnum):
    OK = "ok"
    # The client went away before the answer was complete.
    CLIENT_CLOSED = "client_closed"
    # Cut in flight by a lock or a withdrawn standing (403), or by the process stopping past
    # its drain deadline (503).
    CUT = "cut"
    SHUTDOWN = "shutdown"
    # The upstream failed: no answer, a broken one, a refused redirect, or an error status.
    UPSTREAM_ERROR = "upstream_error"
    UPSTREAM_TIMEOUT = "upstream_timeout"
    UPSTREAM_BAD_JSON = "upstream_bad_json"
    UPSTREAM_REDIRECT = "upstream_redirect"
    UPSTREAM_STATUS = "upstream_status"  # encoded as upstream_{status}
    # The gateway's own limits on an answer: its memory budget, its deadline, a stream's
    # longest duration.
    RESPONSE_BUDGET = "response_budget"
    CALL_DEADLINE = "call_deadline"
    STREAM_LIMIT = "stream_limit"
    # The audit log could not take the call's request.allowed record (never forwarded).
    AUDIT_UNAVAILABLE = "audit_unavailable"
    AUDIT_RECORD_INVALID = "audit_record_invalid"
    # The process that admitted the call died before the call ended (written by another).
    PROCESS_ENDED = "process_ended"


_STATUS_PREFIX = "upstream_"


def encoded(outcome: CallOutcome, upstream_status: int | None = None) -> str:
    """The outcome as a record (and a metric label) spells it."""
    if outcome is CallOutcome.UPSTREAM_STATUS:
        if upstream_status is None or not 100 <= upstream_status <= 599:
            raise ValueError(f"an upstream status outcome needs its status, not {upstream_status}")
        return f"{_STATUS_PREFIX}{upstream_status}"
    return outcome.value


def parse(text: str) -> tuple[CallOutcome, int | None]:
    """An outcome as a record spells it: the member, and the upstream's status for
    ``upstream_{status}``. ``ValueError`` for a string that names no outcome."""
    try:
        outcome = CallOutcome(text)
    except ValueError:
        outcome = CallOutcome.UPSTREAM_STATUS  # then only as upstream_{status}
    if outcome is not CallOutcome.UPSTREAM_STATUS:
        return outcome, None
    digits = text.removeprefix(_STATUS_PREFIX)
    if digits != text and len(digits) == 3 and digits.isdigit() and 100 <= int(digits) <= 599:
        return CallOutcome.UPSTREAM_STATUS, int(digits)
    raise ValueError(f"unknown call outcome {text!r}")
