"""The columns of ``audit_events`` that copy fields of the hashed record, and reading them
back from the record bytes. Pure (the verifier checks every stored copy against its record).

Incident timelines, reports and searches select on these columns, never on the record, so
a copy rewritten after the fact hides an event from every such query. Only the record is
under the tree: ``garrison audit verify`` compares each row's copies with its record and
names the row and column that differ.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

import orjson

# The copied columns, in the order the writer stores them and the reader gives them back.
DERIVED_COLUMNS = ("at", "name", "request_id", "principal_id", "credential_id", "model")

Columns = tuple[object, ...]

_pick = operator.itemgetter(*DERIVED_COLUMNS)
# Top-level keys are sorted: ``actor``, ``at`` and ``credential_id`` come before ``data``;
# ``i``, ``model``, ``name``, ``principal_id``, ``request_id`` and ``v`` after it, holding
# only strings (quotes escaped, so ``,"`` cannot occur inside one), null and integers. The
# first ``,"data":`` and the last ``,"i":`` are therefore the top-level keys, and the record
# cut between them is an object of every copied field without the (large) data.
_DATA_KEY = b',"data":'
_INDEX_KEY = b',"i":'


def _one(record: bytes) -> Columns | None:
    """The copied fields of one record (missing keys read as null), or ``None`` if it is not
    a JSON object (the verifier reports such a record as modified on its own)."""
    try:
        value = orjson.loads(record)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(value, dict):
        return None
    return tuple(value.get(name) for name in DERIVED_COLUMNS)


def record_columns(records: Sequence[bytes]) -> list[Columns | None]:
    """What each record says its copied columns hold (``DERIVED_COLUMNS`` order), ``None``
    for a record that is not an event.

    Fast path: the records are cut around their ``data`` and parsed as one JSON array (one
    parser call a batch, not a whole record each); any record the cut does not fit, and the
    batch is read one whole record at a time."""
    parts: list[bytes] = []
    for record in records:
        head = record.find(_DATA_KEY)
        tail = record.rfind(_INDEX_KEY)
        if head < 0 or tail < head:
            return [_one(r) for r in records]
        parts.append(record[:head] + record[tail:])
    try:
        parsed = orjson.loads(b"[" + b",".join(parts) + b"]")
        if len(parsed) != len(records):
            raise ValueError("a cut record was not one object")
        return list(map(_pick, parsed))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return [_one(r) for r in records]


def differing(expected: Columns | None, stored: Columns) -> list[str]:
    """The names of the stored copies that differ from the record's fields (none when the
    record cannot be read: the verifier reports that record as modified instead)."""
    if expected is None:
        return []
    return [
        name
        for name, want, have in zip(DERIVED_COLUMNS, expected, stored, strict=True)
        if not _same(want, have)
    ]


def _same(want: object, have: object) -> bool:
    # A number compares by value (SQLite gives REAL 12.0 for a record's 12); ``bool`` is not
    # a number here, and a string never equals a number however it reads.
    if type(want) is not type(have) and not (
        isinstance(want, int | float)
        and isinstance(have, int | float)
        and not isinstance(want, bool)
        and not isinstance(have, bool)
    ):
        return False
    return want == have
