"""The change feed: how every gateway process learns that the directory changed.

Every directory write adds a ``change_feed`` row in its own transaction
(``store.journal.record``); a process whose snapshot is older than the feed's newest row
loads a new one. Two ways to notice, one per database:

- **Polling** (both databases): ``VersionProbe`` reads the feed's newest ``seq`` on one kept
  connection, an index lookup. On SQLite it is a few microseconds and runs on the event
  loop; on PostgreSQL it is a network round trip and runs in a worker thread, with a
  statement timeout so a lost server cannot hold it.
- **LISTEN/NOTIFY** (PostgreSQL): the write's transaction also sends ``pg_notify(CHANNEL,
  seq)`` (``notify_change``), which PostgreSQL delivers only when that transaction commits,
  to every session listening on the channel. ``ChangeListener`` is one such session, on its
  own connection and thread; it wakes the snapshot watcher at once. When its connection is
  lost it reconnects with backoff, and each (re)connection asks for a reload, since a
  notification sent while it was away is not replayed.

PostgreSQL is imported only by the PostgreSQL classes (an embedded SQLite process never
loads it).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import sqlalchemy as sa

from garrison.store.db import sqlite_path

log = logging.getLogger("garrison.store")

# The channel directory writes notify on (one per database: every replica on it listens).
CHANNEL = "garrison_changes"
# The probe's statement timeout on PostgreSQL: its query is an index lookup that answers in
# well under a millisecond, so a second means the server is in trouble; the watcher then
# counts the lock view as not refreshed (the staleness rule takes over).
PG_PROBE_TIMEOUT_MS = 1000
# How long opening a connection to PostgreSQL may take (libpq's unit: whole seconds).
PG_CONNECT_TIMEOUT_S = 2
# TCP keepalives on the probe's and the listener's connections: a server that vanishes
# without closing them (a cut network) is noticed after ~IDLE + INTERVAL * COUNT seconds
# instead of the kernel's two hours.
PG_KEEPALIVE_IDLE_S = 5
PG_KEEPALIVE_INTERVAL_S = 1
PG_KEEPALIVE_COUNT = 3
# The listener waits for notifications in slices this long, looking at its stop flag
# between them: how long stopping a process may wait for the listener thread.
LISTEN_SLICE_S = 0.5
# Reconnect backoff of a lost listener: first wait, doubled per failure up to the ceiling
# (a restarting server is found again within seconds, a dead one is not hammered).
LISTEN_BACKOFF_MIN_S = 0.1
LISTEN_BACKOFF_MAX_S = 5.0


def notify_change(conn: sa.Connection, seq: int) -> None:
    """Tell the replicas listening on ``CHANNEL`` that change ``seq`` is coming; delivered
    only if ``conn``'s transaction commits (nothing on SQLite, where processes poll)."""
    if conn.dialect.name == "postgresql":
        conn.execute(
            sa.text("SELECT pg_notify(:channel, :seq)"), {"channel": CHANNEL, "seq": str(seq)}
        )


class VersionProbe(Protocol):
    """Reads the change feed's newest ``seq``."""

    # True: call ``version`` in a worker thread (a network round trip), never on the loop.
    in_thread: bool

    def version(self) -> int: ...

    def close(self) -> None: ...


class SqliteVersionProbe:
    """The feed's high-water mark on one kept SQLite connection: a primary-key lookup of a
    few microseconds, cheap enough to run on the event loop every poll."""

    in_thread = False

    def __init__(self, path: Path) -> None:
        self._path = path
        self._conn: sqlite3.Connection | None = None

    def version(self) -> int:
        if self._conn is None:
            self._conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        row = self._conn.execute("SELECT coalesce(max(seq), 0) FROM change_feed").fetchone()
        return int(row[0])

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def pg_conninfo(url: str) -> str:
    """The libpq connection string of a ``postgresql+psycopg://`` URL (never logged: it may
    hold a password)."""
    parsed = sa.engine.make_url(url).set(drivername="postgresql")
    return str(parsed.render_as_string(hide_password=False))


def _pg_connect(url: str, **options: Any) -> Any:
    import psycopg

    return psycopg.connect(
        pg_conninfo(url),
        autocommit=True,
        connect_timeout=PG_CONNECT_TIMEOUT_S,
        keepalives=1,
        keepalives_idle=PG_KEEPALIVE_IDLE_S,
        keepalives_interval=PG_KEEPALIVE_INTERVAL_S,
        keepalives_count=PG_KEEPALIVE_COUNT,
        application_name="garrison-change-feed",
        **options,
    )


class PgVersionProbe:
    """The feed's newest ``seq`` on one kept PostgreSQL connection (``max`` over the primary
    key is one index probe). A failed read drops the connection; the next opens a new one."""

    in_thread = True

    def __init__(self, url: str) -> None:
        self._url = url
        self._conn: Any = None
        self._lock = threading.Lock()

    def version(self) -> int:
        with self._lock:
            try:
                if self._conn is None:
                    self._conn = _pg_connect(
                        self._url, options=f"-c statement_timeout={PG_PROBE_TIMEOUT_MS}"
                    )
                row = self._conn.execute("SELECT coalesce(max(seq), 0) FROM change_feed").fetchone()
            except Exception:
                self._drop()
                raise
            return int(row[0])

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception as exc:  # already broken: nothing more to release
                log.debug("change feed probe: close failed: %s", exc)

    def close(self) -> None:
        with self._lock:
            self._drop()


def version_probe(url: str) -> VersionProbe:
    """The probe for the database ``url`` names."""
    path = sqlite_path(url)
    return SqliteVersionProbe(path) if path is not None else PgVersionProbe(url)


class ChangeListener:
    """``LISTEN CHANNEL`` on a connection of its own, in a thread of its own.

    ``on_change`` runs (in the listener's thread) for every notification, with its ``seq``;
    ``on_resync`` runs after every (re)connection, since notifications sent while no
    connection listened are lost. ``healthy`` is true while the connection listens."""

    def __init__(
        self,
        url: str,
        *,
        on_change: Callable[[int], None],
        on_resync: Callable[[], None],
        backoff_min_s: float = LISTEN_BACKOFF_MIN_S,
        backoff_max_s: float = LISTEN_BACKOFF_MAX_S,
    ) -> None:
        self._url = url
        self._on_change = on_change
        self._on_resync = on_resync
        self._backoff_min_s = backoff_min_s
        self._backoff_max_s = backoff_max_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: Any = None
        self._healthy = False
        # Times the connection was lost (read by tests and logs).
        self.losses = 0

    @property
    def healthy(self) -> bool:
        return self._healthy

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="garrison-listen", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=LISTEN_SLICE_S * 4 + PG_CONNECT_TIMEOUT_S)
            self._thread = None

    def _run(self) -> None:
        backoff = self._backoff_min_s
        while not self._stop.is_set():
            try:
                self._listen()
                backoff = self._backoff_min_s
            except Exception as exc:
                was_healthy, self._healthy = self._healthy, False
                if was_healthy:
                    self.losses += 1
                    log.error(
                        "change feed: LISTEN connection lost (%s): polling", type(exc).__name__
                    )
                if self._stop.wait(backoff):
                    break
                backoff = min(backoff * 2, self._backoff_max_s)
            finally:
                conn, self._conn = self._conn, None
                if conn is not None:
                    try:
                        conn.close()
                    except Exception as exc:  # already broken
                        log.debug("change feed: close failed: %s", exc)
        self._healthy = False

    def _listen(self) -> None:
        self._conn = _pg_connect(self._url)
        self._conn.execute(f"LISTEN {CHANNEL}")
        self._healthy = True
        log.info("change feed: listening for directory changes")
        self._on_resync()
        while not self._stop.is_set():
            for note in self._conn.notifies(timeout=LISTEN_SLICE_S):
                try:
                    seq = int(note.payload)
                except ValueError:
                    seq = 0
                self._on_change(seq)
