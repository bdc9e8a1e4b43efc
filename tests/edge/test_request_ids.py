"""Request ids: UUID-shaped (version 4, RFC 4122 variant), one prefix per process, formatted
without building a UUID per call (the hot path) yet exactly what ``uuid.UUID`` gives."""

from __future__ import annotations

import itertools
import uuid

import pytest

from garrison.edge.request_ids import RequestIds


@pytest.mark.parametrize("start", [0, 1, 0xFFFF, 2**62 - 1, 2**62, 2**63, 2**64 - 1, 2**64 + 5])
def test_an_id_is_the_uuid_of_prefix_and_counter(start: int) -> None:
    ids = RequestIds()
    ids._counter = itertools.count(start)
    for n in range(start, start + 50):
        value = (ids._prefix << 64) | (n & 0xFFFF_FFFF_FFFF_FFFF)
        assert ids() == str(uuid.UUID(int=value, version=4))


def test_ids_are_version_4_uuids_with_the_process_prefix() -> None:
    ids = RequestIds()
    seen = {ids() for _ in range(1000)}
    assert len(seen) == 1000
    for text in seen:
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant) == (4, uuid.RFC_4122)
        assert text.startswith(ids.prefix)
