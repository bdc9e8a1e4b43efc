"""The CLI's exit codes: one table (docs/cli.md, "Exit codes") that every command follows.

The ``garrison`` group maps every error it sees to its code here; commands never choose a
number themselves, except the checks whose result *is* the answer (``audit verify``:
``CHECK_FAILED`` when tampering is found).
"""

from __future__ import annotations

import enum

from garrison.errors import (
    ClientError,
    Conflict,
    Forbidden,
    GarrisonError,
    NotFound,
    Unauthenticated,
)


class ExitCode(enum.IntEnum):
    OK = 0  # done (a change proposed for a second admin is done too)
    CHECK_FAILED = 1  # a check ran and found a problem (audit verify: tampering found)
    USAGE = 2  # bad option, argument or configuration, or input the server found invalid
    REFUSED = 3  # not authenticated, not allowed, locked (HTTP 401, 403)
    NOT_FOUND = 4  # no such object, or not one the caller may see (HTTP 404)
    CONFLICT = 5  # already exists, already decided, changed meanwhile (HTTP 409)
    FAILED = 6  # server or network failure (5xx, cannot connect); audit verify: cannot read


def for_status(status: int) -> ExitCode:
    """The code for an HTTP status the admin API answered (0: no answer at all)."""
    if status in (401, 403):
        return ExitCode.REFUSED
    if status == 404:
        return ExitCode.NOT_FOUND
    if status == 409:
        return ExitCode.CONFLICT
    if 400 <= status < 500:
        return ExitCode.USAGE
    return ExitCode.FAILED


def for_error(exc: BaseException) -> ExitCode:
    """The code for an error a command raised."""
    status = getattr(exc, "http_status", None)
    if isinstance(status, int):
        return for_status(status)
    if isinstance(exc, Unauthenticated | Forbidden):
        return ExitCode.REFUSED
    if isinstance(exc, NotFound):
        return ExitCode.NOT_FOUND
    if isinstance(exc, Conflict):
        return ExitCode.CONFLICT
    if isinstance(exc, ClientError):
        return ExitCode.USAGE
    if isinstance(exc, GarrisonError) and exc.code == "config_error":
        return ExitCode.USAGE  # the configuration is the caller's to fix
    return ExitCode.FAILED  # ours, the server's, the network's or the disk's
