"""The detection service of one gateway process: it reads the audit stream live, runs the
engine, stores alerts, runs playbooks and notifies the sinks.

The audit writer hands every committed batch to ``observe`` (in the writer thread, after the
commit): a ``put_nowait`` on a bounded queue, nothing more, so the data plane never waits on
detection. A thread of its own drains the queue. If the queue is full the batch is not
queued but remembered as a gap; the service counts it, raises a ``detection.lagging``
alert, and once it has caught up with the queue reads the gap back from the database and
processes it — nothing is skipped, only late. The rules file is checked for changes every
second and swapped whole when it validates (``rules.loaded``), kept as it was when it does
not (``rules.refused``).
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa

from garrison.audit.events import AuditEvent, EventName
from garrison.detect.engine import DetectionEngine, Verdict
from garrison.detect.observation import Finding, Obs, Severity
from garrison.detect.rules import RulesError, RuleSet, load_rules
from garrison.respond import playbooks
from garrison.respond.approvals import ApprovalWatcher
from garrison.respond.sinks import Sink
from garrison.store import Directory, alerts, schema
from garrison.store.snapshot import Snapshot

log = logging.getLogger("garrison.detect")

# Batches waiting for the detection thread (a batch is one audit commit, up to 512 events):
# ~100,000 events of slack before the service falls back to reading the gap from the log.
DETECT_QUEUE_BATCHES = 200
# How often the rules file is checked for changes.
RULES_POLL_S = 1.0
# Behind by more than this (event time to processing), the service raises a lagging alert.
DETECT_LAG_ALERT_S = 5.0
# At most one lagging alert per this long.
LAG_ALERT_EVERY_S = 300.0
# Rows read back per query while catching up a gap.
CATCHUP_BATCH = 5000

SendAlert = Callable[[dict[str, Any]], None]


class Monitor:
    def __init__(
        self,
        *,
        engine: sa.Engine,
        db_path: Path,
        directory_for: Callable[[str], Directory],
        facts: Callable[[], Snapshot],
        after_write: Callable[[], None],
        rules_path: Path | None = None,
        sinks: Sequence[Sink] = (),
        min_severity: Severity = Severity.MEDIUM,
        on_rules: Callable[[RuleSet], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = engine
        self._db_path = db_path
        self._directory_for = directory_for
        self._facts = facts
        self._after_write = after_write
        self._rules_path = rules_path
        self._sinks = list(sinks)
        self._min_severity = min_severity
        self._on_rules = on_rules
        self._clock = clock
        self._queue: queue.Queue[tuple[int, Sequence[AuditEvent]] | None] = queue.Queue(
            DETECT_QUEUE_BATCHES
        )
        self._gaps: list[tuple[int, int]] = []  # [start, end) leaf ranges not queued
        self._gap_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._rules_mtime: float | None = None
        self.ruleset = load_rules(None)
        self.engine = DetectionEngine(self.ruleset)
        # Figures for /metrics.
        self.processed = 0
        self.dropped = 0
        self.last_event_at = 0.0
        self.last_processed_at = 0.0
        self.alerts: Counter[tuple[str, str]] = Counter()
        self.rules_errors = 0
        self._last_lag_alert = 0.0
        # Approvers hear of requests and proposals through the same sinks (respond.approvals).
        self.approvals = ApprovalWatcher(db_path, self._sinks, clock=clock) if sinks else None

    # ── life cycle ─────────────────────────────────────────────────────────────────────────
    def start(self) -> None:
        self._load_rules(initial=True)
        if self._rules_path is None:  # the built-in rules: start the engine informed
            self.prime()
        self._thread = threading.Thread(target=self._run, name="garrison-detect", daemon=True)
        self._thread.start()
        if self.approvals is not None:
            self.approvals.start()

    def stop(self) -> None:
        if self.approvals is not None:
            self.approvals.stop()
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=10)
            self._thread = None
        for sink in self._sinks:
            sink.close()

    # ── the feed (audit writer thread) ────────────────────────────────────────────────────
    def observe(self, first_index: int, events: Sequence[AuditEvent]) -> None:
        try:
            self._queue.put_nowait((first_index, events))
        except queue.Full:
            with self._gap_lock:
                self._gaps.append((first_index, first_index + len(events)))
            self.dropped += len(events)

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    @property
    def lag_s(self) -> float:
        """How far behind the stream detection is (0 when idle and caught up)."""
        if self._queue.empty() and not self._gaps:
            return 0.0
        return max(0.0, self._clock() - self.last_event_at) if self.last_event_at else 0.0

    # ── the detection thread ──────────────────────────────────────────────────────────────
    def _run(self) -> None:
        next_rules_check = time.monotonic() + RULES_POLL_S
        while True:
            try:
                item = self._queue.get(timeout=RULES_POLL_S)
            except queue.Empty:
                item = ()  # type: ignore[assignment]
            if item is None:
                return
            try:
                if item:
                    first, events = item
                    for offset, event in enumerate(events):
                        try:
                            self._process(Obs.from_event(first + offset, event))
                        except Exception:  # one event failing must not skip the rest
                            log.exception("detection failed on event %d", first + offset)
                if self._gaps and self._queue.empty():
                    self._catch_up()
                if time.monotonic() >= next_rules_check:
                    next_rules_check = time.monotonic() + RULES_POLL_S
                    self._load_rules()
                self._check_lag()
            except Exception:  # detection must outlive any one bad event
                log.exception("detection failed on a batch; continuing")

    def _process(self, obs: Obs) -> None:
        self.processed += 1
        self.last_event_at = obs.at
        self.last_processed_at = self._clock()
        findings = self.engine.process(obs, self._facts())
        for finding in findings:
            self._raise(finding)

    def _catch_up(self) -> None:
        with self._gap_lock:
            gaps, self._gaps = self._gaps, []
        log.warning("detection catching up %d gap(s) from the audit log", len(gaps))
        conn = sqlite3.connect(self._db_path)
        try:
            for start, end in gaps:
                cursor = start
                while cursor < end:
                    rows = conn.execute(
                        "SELECT record FROM audit_events WHERE seq > ? AND seq <= ? ORDER BY seq",
                        (cursor, min(end, cursor + CATCHUP_BATCH)),
                    ).fetchall()
                    for (record,) in rows:
                        try:
                            self._process(Obs.from_record(orjson.loads(record)))
                        except Exception:  # one event failing must not skip the rest
                            log.exception("detection failed on an event read back")
                    cursor += CATCHUP_BATCH
        finally:
            conn.close()

    def _check_lag(self) -> None:
        lag = self.lag_s
        now = self._clock()
        if (
            lag > DETECT_LAG_ALERT_S or self._gaps
        ) and now - self._last_lag_alert > LAG_ALERT_EVERY_S:
            self._last_lag_alert = now
            finding = Finding(
                rule_id="detection-lagging",
                title="Detection is behind the audit stream",
                severity=Severity.HIGH,
                subject_kind="gateway",
                subject_id="detection",
                reason="detection.lagging",
                at=now,
                data={"lag_s": round(lag, 3), "dropped_events": self.dropped},
            )
            self._raise(finding)

    # ── alerts ────────────────────────────────────────────────────────────────────────────
    def raise_finding(self, finding: Finding) -> None:
        """Raise a finding made outside the detectors (the gateway's own health), with the
        same judging, playbooks and sinks (blocking: call it from a worker thread)."""
        self._raise(finding)

    def _raise(self, finding: Finding) -> None:
        verdict: Verdict = self.engine.judge(finding)
        now = self._clock()
        directory = self._directory_for(f"detector:{finding.rule_id}")
        try:
            alert_id, new = alerts.record(directory, verdict, now=now)
        except Exception:
            # Not stored: the next finding of the same kind must be new again, so that its
            # playbooks still run.
            self.engine.forget(verdict.dedup_key)
            raise
        self.alerts[(finding.rule_id, finding.severity.label)] += 1
        if not new:
            return
        outcome = playbooks.run(
            self.ruleset.playbooks,
            finding,
            alert_id,
            self._facts(),
            self._directory_for,
            self._clock,
            self._after_write,
        )
        if outcome.notify or finding.severity >= self._min_severity:
            payload = {
                "id": alert_id,
                "rule_id": finding.rule_id,
                "title": finding.title,
                "severity": finding.severity.label,
                "reason": finding.reason,
                "subject": {"kind": finding.subject_kind, "id": finding.subject_id},
                "at": finding.at,
                "raised_at": now,
                "evidence": list(finding.evidence),
                "detail": finding.data,
                "actions": list(outcome.actions),
            }
            for sink in self._sinks:
                sink.send(payload)

    # ── rules ─────────────────────────────────────────────────────────────────────────────
    def _load_rules(self, *, initial: bool = False) -> None:
        path = self._rules_path
        if path is None:
            if initial and self._on_rules is not None:
                self._on_rules(self.ruleset)
            return
        try:
            mtime = path.stat().st_mtime
        except OSError as exc:
            if initial:
                log.error("rules file %s unreadable (%s): the built-in rules run", path, exc)
                self._use_built_in()
            return
        if mtime == self._rules_mtime:
            return
        self._rules_mtime = mtime
        directory = self._directory_for("detector")
        try:
            ruleset = load_rules(path)
        except RulesError as exc:
            self.rules_errors += 1
            log.error("rules file refused, previous rules stay in force: %s", exc.detail)
            directory.record_event(
                EventName.RULES_REFUSED,
                now=self._clock(),
                data={"path": str(path), "error": exc.detail[:2000]},
            )
            if initial:
                self._use_built_in()
            return
        self.ruleset = ruleset
        self.engine = DetectionEngine(ruleset, last_used=self._last_used())
        if self._on_rules is not None:
            self._on_rules(ruleset)
        directory.record_event(
            EventName.RULES_LOADED,
            now=self._clock(),
            data={
                "path": str(path),
                "sha256": ruleset.digest,
                "rules": [r.id for r in ruleset.rules],
                "playbooks": [p.id for p in ruleset.playbooks],
            },
        )
        log.info("rules loaded from %s: %d rules", path, len(ruleset.rules))

    def _use_built_in(self) -> None:
        """The built-in rules in force (no usable rules file at start), content rules too."""
        self.ruleset = load_rules(None)
        self.prime()
        if self._on_rules is not None:
            self._on_rules(self.ruleset)

    def _last_used(self) -> dict[str, float]:
        """Last allowed call of every key, so the dormant-key detector starts informed."""
        a = schema.audit_events
        with self._db.connect() as conn:
            rows = conn.execute(
                sa.select(a.c.credential_id, sa.func.max(a.c.at))
                .where(a.c.name == "request.allowed", a.c.credential_id.is_not(None))
                .group_by(a.c.credential_id)
            )
            return {r[0]: float(r[1]) for r in rows}

    def prime(self) -> None:
        """Start the dormant detector with every key's last use from the log."""
        self.engine = DetectionEngine(self.ruleset, last_used=self._last_used())
