"""Request ids: one per call on either plane, and the process's instance id."""

from __future__ import annotations

import itertools
import os
import uuid

# The counter's bits that fit beside the variant, and the variant bits (RFC 4122: 0b10).
_LOW_BITS = 0x3FFF_FFFF_FFFF_FFFF
_VARIANT = 0x8000_0000_0000_0000


class RequestIds:
    """UUID-shaped request ids (llama-cpp-python refuses any other form): 64 random bits per
    process, then a counter. Unique across processes and restarts, and no system call per
    request (``os.urandom`` per call cost 3.6 % of the event loop and handed the GIL to the
    audit thread mid-request). Request ids are labels, not secrets."""

    def __init__(self) -> None:
        self._prefix = int.from_bytes(os.urandom(8), "big")
        self._counter = itertools.count()
        # The id's first 19 characters never change (``xxxxxxxx-xxxx-4xxx-``): formatted once.
        self._head = str(uuid.UUID(int=self._prefix << 64, version=4))[:19]

    def __call__(self) -> str:
        # What ``str(uuid.UUID(int=prefix << 64 | n, version=4))`` gives, without building a
        # UUID per call: the low 64 bits with the RFC 4122 variant (0b10) in their top two.
        low = f"{(next(self._counter) & _LOW_BITS) | _VARIANT:016x}"
        return f"{self._head}{low[:4]}-{low[4:]}"

    @property
    def prefix(self) -> str:
        """What every id of this process starts with (``xxxxxxxx-xxxx-4xxx``): the process's
        instance id, by which its calls are found after it dies."""
        return str(uuid.UUID(int=self._prefix << 64, version=4))[:18]


# One per process: both planes draw from it, so the instance id names every call of it.
new_request_id = RequestIds()
