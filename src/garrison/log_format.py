"""Process logs: plain text for people, or one JSON object per line for log pipelines.

Each line of a model call carries its request id (the gateway sets it for the call's task;
``contextvars`` follow the task, so concurrent calls never mix). Log fields are an
allow-list: time, level, logger, message, request id, and the exception's type — never a
body, a header or a key (the messages themselves never hold secrets; see errors.py)."""

from __future__ import annotations

import contextvars
import logging
import sys
import time

import orjson

# The request id of the call this task serves ("" outside a call).
request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")

LOG_FORMATS = ("text", "json")
_HANDLER_NAME = "garrison-stderr"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = request_id_var.get()
        if request_id:
            doc["request_id"] = request_id
        if record.exc_info and record.exc_info[0] is not None:
            doc["exception"] = record.exc_info[0].__name__
        return orjson.dumps(doc).decode()


class _TextWithRequestId(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        request_id = request_id_var.get()
        return f"{line} [request {request_id}]" if request_id else line


def configure(*, level: int, fmt: str) -> None:
    """Send logs to standard error in ``fmt`` ("text" or "json")."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(_TextWithRequestId("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.set_name(_HANDLER_NAME)
    root = logging.getLogger()
    # Replace only our own handler (a second configure, e.g. a CLI run in-process): handlers
    # others attached (a test's log capture, an embedding application's) stay.
    root.handlers[:] = [h for h in root.handlers if h.get_name() != _HANDLER_NAME] + [handler]
    root.setLevel(level)
