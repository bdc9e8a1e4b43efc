"""Request ids: one per call on either plane, and the process's instance id."""

from __future__ import annotations

import itertools
import os
import uuid


class RequestIds:
    """UUID-shaped request ids (llama-cpp-python refuses any other form): 64 random bits per
    process, then a counter. Unique across processes and restarts, and no system call per
    request (``os.urandom`` per call cost 3.6 % of the event loop and handed the GIL to the
    audit thread mid-request). Request ids are labels, not secrets."""

    def __init__(self) -> None:
        self._prefix = int.from_bytes(os.urandom(8), "big")
        self._counter = itertools.count()

    def __call__(self) -> str:
        value = (self._prefix << 64) | (next(self._counter) & 0xFFFF_FFFF_FFFF_FFFF)
        return str(uuid.UUID(int=value, version=4))

    @property
    def prefix(self) -> str:
        """What every id of this process starts with (``xxxxxxxx-xxxx-4xxx``): the process's
        instance id, by which its calls are found after it dies."""
        return str(uuid.UUID(int=self._prefix << 64, version=4))[:18]


# One per process: both planes draw from it, so the instance id names every call of it.
new_request_id = RequestIds()
