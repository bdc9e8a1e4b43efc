"""The admin API's error shape (no gateway imports, so the data plane's error middleware can
use it for paths under the admin prefix).

    {"error": {"type": "invalid_request", "message": "...", "rule": "vendor-ceiling",
               "request_id": "req_..."}}

Admins see the directory's own message (it names the rule broken); server errors keep their
generic public message. ``rule`` is the rule's code when the message names one, else null.
"""

from __future__ import annotations

import re

import orjson

from garrison.errors import ClientError, GarrisonError, NotFound

ADMIN_PREFIX = "/admin/v1"
_RULE = re.compile(r"rule ([a-z][a-z-]*):")


def admin_message(exc: GarrisonError) -> str:
    if isinstance(exc, ClientError) and exc.detail:
        return exc.detail
    return exc.public_message


def rule_of(message: str) -> str | None:
    found = _RULE.search(message)
    return found.group(1) if found else None


def admin_error_body(exc: GarrisonError, request_id: str | None = None) -> bytes:
    message = admin_message(exc)
    return orjson.dumps(
        {
            "error": {
                # NotFound's own code speaks of models (the data plane's only 404).
                "type": "not_found" if isinstance(exc, NotFound) else exc.code,
                "message": message,
                "rule": rule_of(message),
                "request_id": request_id,
            }
        }
    )
