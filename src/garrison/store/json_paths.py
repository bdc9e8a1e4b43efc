"""Reading a field of a stored audit record in SQL, on SQLite and PostgreSQL alike.

Audit records are stored as the exact bytes that were hashed (``audit_events.record``, a
BLOB / ``bytea``), so SQL that filters or groups on a field inside them must parse them:

* SQLite: ``json_extract(record, '$.data.client_address')``;
* PostgreSQL: ``convert_from(record, 'UTF8')::jsonb #>> '{data,client_address}'``.

Both give a string field as SQL text (``NULL`` when it is absent); the queries read only
string fields (a number would come back as a number on SQLite, as text on PostgreSQL).
The path is rendered inline, never as a bound parameter: PostgreSQL only accepts a
``GROUP BY`` expression that is textually the one selected, and two renderings of one bound
value are two parameters. So a path is a tuple of plain identifiers, checked when the
expression is built.
"""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ColumnElement, FunctionElement
from sqlalchemy.sql.visitors import InternalTraversal

# A path step: a JSON key Garrison writes (identifiers only, so it is safe to inline).
_STEP = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}\Z")
# Deepest path a query reads (records nest data one level below the envelope).
PATH_MAX_STEPS = 4


class record_field(FunctionElement[str]):
    """``record_field(column, "data", "client_address")``: that field of a JSON record
    stored as bytes, as text, on either dialect."""

    type = sa.String()
    name = "record_field"
    inherit_cache = True
    # The path is part of the statement's text, so it is part of its cache key.
    _traverse_internals = [  # noqa: RUF012 (SQLAlchemy's own attribute, read per class)
        *FunctionElement._traverse_internals,
        ("path", InternalTraversal.dp_plain_obj),
    ]

    def __init__(self, record: ColumnElement[Any], *path: str) -> None:
        if not 1 <= len(path) <= PATH_MAX_STEPS:
            raise ValueError(f"a record path has 1 to {PATH_MAX_STEPS} steps, not {len(path)}")
        for step in path:
            if not _STEP.match(step):
                raise ValueError(f"record path step {step!r} is not a plain identifier")
        self.path = tuple(path)
        super().__init__(record)


def _record(element: record_field, compiler: SQLCompiler, **kw: Any) -> str:
    (record,) = element.clauses.clauses
    return compiler.process(record, **kw)


@compiles(record_field)
def _sqlite(element: record_field, compiler: SQLCompiler, **kw: Any) -> str:
    return f"json_extract({_record(element, compiler, **kw)}, '$.{'.'.join(element.path)}')"


@compiles(record_field, "postgresql")
def _postgresql(element: record_field, compiler: SQLCompiler, **kw: Any) -> str:
    # jsonb refuses the escape \u0000 that JSON allows (a NUL in any string a caller, an
    # identity provider or an upstream supplied): one such record in the rows a query scans
    # would fail the whole query. It is read as U+FFFD (only for reading a field: the stored
    # record is untouched; an escaped backslash before "u0000" becomes "\\ufffd", still JSON).
    record = _record(element, compiler, **kw)
    # E'' strings: one backslash whatever standard_conforming_strings says.
    text = f"replace(convert_from({record}, 'UTF8'), E'\\\\u0000', E'\\\\ufffd')"
    return f"({text}::jsonb #>> '{{{','.join(element.path)}}}')"


class distinct_list(FunctionElement[str]):
    """The distinct non-null values of a text expression in a group, joined by commas
    (SQLite ``group_concat(DISTINCT x)``, PostgreSQL ``string_agg(DISTINCT x, ',')``)."""

    type = sa.String()
    name = "distinct_list"
    inherit_cache = True


@compiles(distinct_list)
def _group_concat(element: distinct_list, compiler: SQLCompiler, **kw: Any) -> str:
    return f"group_concat(DISTINCT {compiler.process(element.clauses, **kw)})"


@compiles(distinct_list, "postgresql")
def _string_agg(element: distinct_list, compiler: SQLCompiler, **kw: Any) -> str:
    return f"string_agg(DISTINCT {compiler.process(element.clauses, **kw)}, ',')"
