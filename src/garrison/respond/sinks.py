"""Where alerts go besides the database: a webhook (JSON POST, HMAC-signed, retried with
backoff), a JSON-lines file or stdout, syslog. Each sink has its own bounded queue and thread:
a slow or dead receiver never slows detection, and what does not fit is counted and logged.
"""

from __future__ import annotations

import abc
import contextlib
import hashlib
import hmac
import logging
import queue
import sys
import threading
import time
from pathlib import Path
from typing import Any, Protocol

import orjson

from garrison.audit.exporters import SyslogExporter
from garrison.private_files import open_private_append

log = logging.getLogger("garrison.alerts")

# Alerts waiting per sink: a burst of this many is held while the receiver is slow.
SINK_QUEUE_MAX = 1000
# Webhook delivery: attempts, and the backoff between them (doubling, capped).
WEBHOOK_ATTEMPTS = 5
WEBHOOK_BACKOFF_S = 0.5
WEBHOOK_BACKOFF_MAX_S = 30.0
# One delivery attempt's time limit (a receiver that takes longer is retried).
WEBHOOK_TIMEOUT_S = 10.0
SIGNATURE_HEADER = "x-garrison-signature"
TIMESTAMP_HEADER = "x-garrison-timestamp"


class Sink(Protocol):
    name: str

    def send(self, alert: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>`` of HMAC-SHA-256 over ``timestamp + "." + body`` (receivers check it
    and reject stale timestamps, which stops replays)."""
    mac = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={mac}"


class _Threaded(abc.ABC):
    """A sink's queue and thread; subclasses say how one alert is delivered."""

    name = "sink"

    def __init__(self) -> None:
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(SINK_QUEUE_MAX)
        self.dropped = 0
        self.delivered = 0
        self._thread = threading.Thread(target=self._run, name=f"garrison-{self.name}", daemon=True)
        self._thread.start()

    def send(self, alert: dict[str, Any]) -> None:
        try:
            self._queue.put_nowait(alert)
        except queue.Full:
            self.dropped += 1
            log.error("%s sink queue full: alert %s not delivered", self.name, alert.get("id"))

    def _run(self) -> None:
        while True:
            alert = self._queue.get()
            if alert is None:
                return
            try:
                self._deliver(alert)
                self.delivered += 1
            except Exception as exc:  # a sink failing never stops detection
                self.dropped += 1
                log.error("%s sink failed for alert %s: %s", self.name, alert.get("id"), exc)

    @abc.abstractmethod
    def _deliver(self, alert: dict[str, Any]) -> None: ...

    def close(self) -> None:
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=1)
        self._thread.join(timeout=5)


class WebhookSink(_Threaded):
    name = "webhook"

    def __init__(self, url: str, secret: bytes | None) -> None:
        self._url = url
        self._secret = secret
        # Imported here: httpx (with click and rich, which it pulls in) costs the gateway
        # ~10 MB of resident memory, and only a configured webhook sink needs it.
        import httpx

        self._transport_error = httpx.TransportError
        self._client = httpx.Client(timeout=WEBHOOK_TIMEOUT_S, follow_redirects=False)
        self._stop = threading.Event()
        super().__init__()

    def _deliver(self, alert: dict[str, Any]) -> None:
        body = orjson.dumps(alert)
        delay = WEBHOOK_BACKOFF_S
        for attempt in range(1, WEBHOOK_ATTEMPTS + 1):
            timestamp = str(int(time.time()))
            headers = {"content-type": "application/json", TIMESTAMP_HEADER: timestamp}
            if self._secret is not None:
                headers[SIGNATURE_HEADER] = sign(self._secret, timestamp, body)
            try:
                resp = self._client.post(self._url, content=body, headers=headers)
                if resp.status_code < 300:
                    return
                problem = f"HTTP {resp.status_code}"
                if 400 <= resp.status_code < 500 and resp.status_code not in (408, 429):
                    raise RuntimeError(f"receiver refused the alert ({problem})")
            except self._transport_error as exc:
                problem = type(exc).__name__
            if attempt == WEBHOOK_ATTEMPTS or self._stop.wait(delay):
                raise RuntimeError(f"gave up after {attempt} attempt(s): {problem}")
            delay = min(delay * 2, WEBHOOK_BACKOFF_MAX_S)

    def close(self) -> None:
        self._stop.set()
        super().close()
        self._client.close()


class JsonlSink(_Threaded):
    name = "jsonl"

    def __init__(self, path: Path | None) -> None:
        """``path`` None: standard output."""
        self._handle = sys.stdout.buffer if path is None else open_private_append(path)
        self._own = path is not None
        super().__init__()

    def _deliver(self, alert: dict[str, Any]) -> None:
        self._handle.write(orjson.dumps(alert) + b"\n")
        self._handle.flush()

    def close(self) -> None:
        super().close()
        if self._own:
            self._handle.close()


class SyslogSink(_Threaded):
    name = "syslog"

    def __init__(self, host: str, port: int) -> None:
        self._exporter = SyslogExporter(host, port)
        super().__init__()

    def _deliver(self, alert: dict[str, Any]) -> None:
        self._exporter.export([orjson.dumps(alert)])

    def close(self) -> None:
        super().close()
        self._exporter.close()
