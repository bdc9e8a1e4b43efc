"""Audit: typed events, their canonical encoding, and the durable group-commit writer."""

from garrison.audit.events import ENCODING_VERSION, AuditEvent, EventName, decode
from garrison.audit.sqlite_sink import SqliteAuditSink
from garrison.audit.writer import AuditLog, AuditSink

__all__ = [
    "ENCODING_VERSION",
    "AuditEvent",
    "AuditLog",
    "AuditSink",
    "EventName",
    "SqliteAuditSink",
    "decode",
]
