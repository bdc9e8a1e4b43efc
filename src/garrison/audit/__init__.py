"""Audit: typed events and their canonical encoding — the pure face of the audit log.

The package is split in two, and this face imports only the pure core:

* pure core (no I/O, no database or HTTP library; an auditor's laptop needs only these):
  ``events`` (typed events, canonical encoding), ``payloads`` (the typed ``data`` of the
  data plane's events, read back from records by ``payload_of``), ``frozen`` (the faster
  ``__init__`` events and payloads take), ``merkle`` (the RFC 6962 tree and its
  proofs), ``checkpoint`` (signed tree heads), ``proofs`` (checking exported proof bundles)
  and ``verify`` (verifying a whole log from plain rows);
* storage side: ``writer`` (the group-commit writer thread), ``sqlite_sink`` (SQLite plus
  the tree), ``sqlite_reader`` (rows and proofs read back from SQLite), ``parallel_verify``
  (verification that reads the SQLite file itself), ``witness`` (checkpoint copies on disk)
  and ``exporters`` (JSON lines, syslog). Import those modules by their own names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from garrison.audit.events import (
    CLIENT_ADDRESS,
    ENCODING_VERSION,
    AuditEvent,
    EventName,
    caller_address,
    decode,
)

if TYPE_CHECKING:
    from garrison.audit.sqlite_sink import SqliteAuditSink
    from garrison.audit.writer import AuditLog, AuditSink

__all__ = [
    "CLIENT_ADDRESS",
    "ENCODING_VERSION",
    "AuditEvent",
    "AuditLog",
    "AuditSink",
    "EventName",
    "SqliteAuditSink",
    "caller_address",
    "decode",
]

# Temporary shim (issue 15): branches written before the split import the storage side's
# names from this face. They are loaded on first use only, so importing the pure face stays
# free of SQLite and the store; import them from ``garrison.audit.writer`` and
# ``garrison.audit.sqlite_sink`` instead. Remove once no branch uses the old names.
_STORAGE_NAMES = {
    "AuditLog": "garrison.audit.writer",
    "AuditSink": "garrison.audit.writer",
    "SqliteAuditSink": "garrison.audit.sqlite_sink",
}


def __getattr__(name: str) -> object:
    module = _STORAGE_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'garrison.audit' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
