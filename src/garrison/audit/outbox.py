"""Who integrates the audit outbox.

Directory changes write their events to the audit outbox in their own transaction; only an
audit writer (``garrison.audit.tree_sink``, on SQLite or PostgreSQL) moves them into the
tree. Which one:

* **Every gateway process** integrates waiting rows in each of its batch transactions and
  looks for new ones every ``AUDIT_OUTBOX_POLL_S`` while idle. With several gateways on one
  database any of them may take a row; a row is taken and deleted inside the writer's write
  transaction, so it is integrated exactly once, and exported (and seen by detection) by the
  process that integrated it. No election is needed for correctness: the transaction is the
  lock, and leaf order is the order of those transactions.
* **A process without a writer** (the CLI on the host: ``garrison init``, ``recover-admin``,
  ``keys reseal``, and ``audit tail``) defers to a live gateway — one whose instance lease
  (``garrison.store.instances``) has not lapsed — and waits up to ``AUDIT_OUTBOX_WAIT_S`` for
  it to drain the outbox; with no live gateway, or if none drained it in time (a gateway
  killed within its lease), it integrates synchronously itself, exporting to the configured
  exporters. So a change made on the host is in the tree and the export when the command
  returns, and a SIEM normally has one process appending to it.

A crash between a change's commit and its integration loses nothing: the row waits in the
outbox (a durable table, in every backup) for the next writer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import sqlalchemy as sa

from garrison.audit.exporters import Exporter
from garrison.audit.sinks import integrate_outbox
from garrison.store import instances

log = logging.getLogger("garrison.audit")

# Longest a host command waits for a live gateway to integrate its change before doing it
# itself: a gateway idles at most AUDIT_OUTBOX_POLL_S between looks, so this is many polls
# (a busy one included) while bounding the wait behind a gateway that was killed.
AUDIT_OUTBOX_WAIT_S = 2.0
# How often the waiting command looks.
_WAIT_POLL_S = 0.02


def _outbox_empty(engine: sa.Engine, upto: int) -> bool:
    with engine.connect() as conn:
        row = conn.execute(
            sa.text("SELECT 1 FROM audit_outbox WHERE seq <= :upto LIMIT 1"), {"upto": upto}
        ).first()
    return row is None


def _newest(engine: sa.Engine) -> int | None:
    with engine.connect() as conn:
        value = conn.execute(sa.text("SELECT max(seq) FROM audit_outbox")).scalar()
    return None if value is None else int(value)


def integrate_or_wait(
    engine: sa.Engine,
    exporters: Callable[[], Sequence[Exporter]],
    *,
    clock: Callable[[], float] = time.time,
    wait_s: float = AUDIT_OUTBOX_WAIT_S,
) -> None:
    """Make every outbox row waiting now integrated: by a live gateway if there is one,
    else here. Never raises (the change it follows is committed either way); a failure is
    logged and the rows wait for the next writer."""
    try:
        upto = _newest(engine)
        if upto is None:
            return
        if instances.any_live(engine, now=clock()):
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline:
                if _outbox_empty(engine, upto):
                    return
                time.sleep(_WAIT_POLL_S)
            log.warning("no gateway integrated the audit outbox in %.1fs: integrating here", wait_s)
        integrate_outbox(engine.url.render_as_string(hide_password=False), exporters=exporters())
    except Exception as exc:  # the change stands; its record waits in the outbox
        log.error(
            "audit outbox not integrated now (a writer will): %s: %s", type(exc).__name__, exc
        )
