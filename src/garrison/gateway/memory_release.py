"""Give memory back to the system after an audit outage.

While the log is down, the outcome records of refused calls wait in the writer's queue
(bounded by ``AUDIT_QUEUE_MAX``, about 1 KB each). Once they are written the objects are
freed, but the C allocator keeps the pages they lived in: the process stayed ~25 MB larger
after a 30 s outage (bench/outage_memory.py). After each recovery, once the backlog is
down, the process collects garbage and asks the allocator to return its free pages
(glibc's ``malloc_trim``; elsewhere only the collection runs).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
from collections.abc import Callable

log = logging.getLogger("garrison.gateway")

# Queued audit events under which the backlog counts as written (normal load keeps the
# queue at a few batches; a release with a large backlog left would free little).
RELEASE_BACKLOG_MAX = 2_000


def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_TRIM = _malloc_trim()


def release_memory() -> bool:
    """Collect garbage and return the allocator's free pages; True if pages were returned."""
    gc.collect()
    return bool(_TRIM(0)) if _TRIM is not None else False


class AfterOutage:
    """Decides when to release: once per outage, after the log is back and its backlog is
    written. ``tick`` is called periodically with the log's health and queue depth."""

    def __init__(self, release: Callable[[], bool] = release_memory) -> None:
        self._release = release
        self._owed = False

    def tick(self, healthy: bool, depth: int) -> bool:
        """True when this tick released memory."""
        if not healthy:
            self._owed = True
            return False
        if not self._owed or depth > RELEASE_BACKLOG_MAX:
            return False
        self._owed = False
        returned = self._release()
        log.info("audit backlog written: memory released (pages returned: %s)", returned)
        return True
