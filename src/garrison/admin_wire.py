"""The admin API's error shape (no gateway imports, so the data plane's error middleware can
use it for paths under the admin prefix).

    {"error": {"type": "invalid_request", "message": "...", "rule": "vendor-ceiling",
               "request_id": "req_..."}}

Admins see the directory's own message (it names the rule broken); server errors keep their
generic public message. ``rule`` is the code of the rule the request broke (the error's own
``rule``, set where it was raised), else null.
"""

from __future__ import annotations

import orjson

from garrison.errors import ClientError, GarrisonError, NotFound

ADMIN_PREFIX = "/admin/v1"


def admin_message(exc: GarrisonError) -> str:
    if isinstance(exc, ClientError) and exc.detail:
        return exc.detail
    return exc.public_message


def rule_of(exc: GarrisonError) -> str | None:
    """The rule a client's error names (a server error names none to the caller)."""
    return exc.rule if isinstance(exc, ClientError) else None


def admin_error_body(exc: GarrisonError, request_id: str | None = None) -> bytes:
    message = admin_message(exc)
    return orjson.dumps(
        {
            "error": {
                # NotFound's own code speaks of models (the data plane's only 404).
                "type": "not_found" if isinstance(exc, NotFound) else exc.code,
                "message": message,
                "rule": rule_of(exc),
                "request_id": request_id,
            }
        }
    )
