"""The detection service of a gateway process: one worker among the processes sharing the
database reads the whole audit log, runs the engine, stores alerts, runs playbooks and
notifies the sinks; the others stand by.

**Election.** Each process with detection on runs a ``Monitor``. One holds the detection
lease (``garrison.store.detector_state``) and renews it every ``DETECT_RENEW_S``; the others
look every ``DETECT_STANDBY_POLL_S`` and claim it once it lapses (``DETECT_LEASE_S`` after a
worker dies) or is released (a clean stop). A takeover takes at most ``DETECT_LEASE_S +
DETECT_STANDBY_POLL_S`` after a kill, ``DETECT_STANDBY_POLL_S`` after a stop.

**The log, from a cursor.** The worker judges ``audit_events`` in ``seq`` order from its
cursor, so every process's calls and every directory change are seen
(``garrison.respond.log_feed``: its own process's batches come from the audit writer
through ``observe`` without a read; other processes' rows are read from the log).

**Exactly once.** The alerts of a judged range, the new cursor and the detectors' state are
committed in one transaction, which commits only if this process still holds the lease and
the stored cursor is where it left it. A worker that dies mid-range stored nothing of it: its
successor restores the state as of the cursor and judges the range again. Ranges without
findings store cursor and state every ``DETECT_STATE_EVERY_S`` (a takeover re-judges about
that much of the log). A
new alert's playbooks and notices run after the commit; the findings waiting for them are
stored with it (``pending``) and run by the successor if the worker dies in between.

Health findings of the process itself (disk low, lagging, a stale directory view) are
raised by any process, worker or not (``raise_finding``). The rules file is checked every
second and swapped whole when it validates (``rules.loaded``), kept as it was when it does
not (``rules.refused``); detectors of unchanged rules keep their state across a swap.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from garrison.audit.events import AuditEvent
from garrison.audit.payloads_host import RulesLoaded, RulesRefused
from garrison.detect.engine import Dedup, DetectionEngine, Verdict
from garrison.detect.observation import Finding, Severity
from garrison.detect.rules import RulesError, RuleSet, load_rules
from garrison.errors import DetectionLeaseLost
from garrison.respond import playbooks, worker_state
from garrison.respond.approvals import ApprovalWatcher
from garrison.respond.log_feed import Item, LogFeed
from garrison.respond.sinks import Sink
from garrison.store import Directory, alerts, detector_state
from garrison.store.db import write_transaction
from garrison.store.snapshot import Snapshot

log = logging.getLogger("garrison.detect")

# How often the rules file is checked for changes.
RULES_POLL_S = 1.0
# Behind by more than this (event time to processing), the service raises a lagging alert.
DETECT_LAG_ALERT_S = 5.0
# At most one lagging alert per this long.
LAG_ALERT_EVERY_S = 300.0
# A worker that has not renewed its lease for this long is taken for dead: four renewals
# missed, so a busy moment or a slow commit does not hand the work over, and a standby still
# takes over within seconds.
DETECT_LEASE_S = 5.0
# How often the worker renews its lease (one small UPDATE; a commit renews it too).
DETECT_RENEW_S = 1.0
# How often the worker stores its cursor and state while events flow without findings (a
# range with findings commits at once): serialising the state costs ~25 ms per 1,000
# subjects, so not every second; a crash or a takeover re-judges about this much of the log
# (reading rows back is far cheaper than the state).
DETECT_STATE_EVERY_S = 10.0
# How often a standby looks whether the lease is free (one read; a claim only when it is).
DETECT_STANDBY_POLL_S = 0.5
# How long the worker waits on its own feed before it reads the log for other processes'
# rows: how late another replica's events are judged at most, for one indexed read.
DETECT_POLL_S = 0.25
# After judging what its own process committed, the worker waits this long before it takes
# more, so the commits of that time are judged together after one wake-up (at concurrency 1
# every call's commit would otherwise wake the thread and contend for the interpreter with
# the calls). Detection of this process's events is at most this much later.
DETECT_LINGER_S = 0.02
# After a failed commit (the database away), the worker restores its last stored state and
# tries again after this pause.
DETECT_RETRY_S = 1.0


class Monitor:
    def __init__(
        self,
        *,
        engine: sa.Engine,
        directory_for: Callable[[str], Directory],
        facts: Callable[[], Snapshot],
        after_write: Callable[[], None],
        rules_path: Path | None = None,
        sinks: Sequence[Sink] = (),
        min_severity: Severity = Severity.MEDIUM,
        on_rules: Callable[[RuleSet], None] | None = None,
        clock: Callable[[], float] = time.time,
        worker_id: str | None = None,
    ) -> None:
        self._db = engine
        self._directory_for = directory_for
        self._facts = facts
        self._after_write = after_write
        self._rules_path = rules_path
        self._sinks = list(sinks)
        self._min_severity = min_severity
        self._on_rules = on_rules
        self._clock = clock
        # This process as a lease holder (the gateway passes its instance id).
        self.worker_id = worker_id or f"detect-{secrets.token_hex(6)}"
        self.feed = LogFeed(engine)
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._rules_mtime: float | None = None
        self.ruleset = load_rules(None)
        self.engine = DetectionEngine(self.ruleset)
        # The worker judged the log up to ``cursor`` and stored up to ``_saved``.
        self.active = False
        self._saved = 0
        self._last_commit = 0.0  # monotonic: the last store of cursor and state
        self._last_renew = 0.0  # monotonic: the last renewal of the lease (or store)
        # Health findings of this process, deduplicated here (worker or not).
        self._local = Dedup()
        self._local_lock = threading.Lock()
        # Figures for /metrics and tests.
        self.processed = 0
        self.takeovers = 0
        self.last_event_at = 0.0
        self.last_processed_at = 0.0
        self.alerts: Counter[tuple[str, str]] = Counter()
        self.rules_errors = 0
        self._last_lag_alert = 0.0
        self._dropped_seen = 0
        # Approvers hear of requests and proposals through the same sinks (respond.approvals),
        # from the detection worker alone: with several replicas, each notice once.
        self.approvals = (
            ApprovalWatcher(engine, self._sinks, clock=clock, speaks=lambda: self.active)
            if sinks
            else None
        )

    # ── life cycle ─────────────────────────────────────────────────────────────────────────
    def start(self) -> None:
        self._load_rules(initial=True)
        self._stopping.clear()
        try:
            # Before the process serves (the gateway starts detection first): a first worker
            # starts its cursor at the log's head before this process's first call.
            self._try_claim()
        except Exception:  # the thread tries again
            log.exception("detection lease not claimed at start")
        self._thread = threading.Thread(target=self._run, name="garrison-detect", daemon=True)
        self._thread.start()
        if self.approvals is not None:
            self.approvals.start()

    def stop(self) -> None:
        """Judge what is queued, store the cursor and state, give the lease up."""
        if self.approvals is not None:
            self.approvals.stop()
        if self._thread is not None:
            self._stopping.set()
            self.feed.wake()
            self._thread.join(timeout=10)
            self._thread = None
        for sink in self._sinks:
            sink.close()

    # ── the feed (audit writer thread) ────────────────────────────────────────────────────
    def observe(self, first_index: int, events: Sequence[AuditEvent]) -> None:
        if self.active:  # a standby ignores them: the worker reads these rows from the log
            self.feed.offer(first_index, events)

    @property
    def cursor(self) -> int:
        """The last audit row (``seq``) judged."""
        return self.feed.cursor

    @property
    def dropped(self) -> int:
        return self.feed.dropped

    @property
    def depth(self) -> int:
        return self.feed.depth

    @property
    def lag_s(self) -> float:
        """How far behind the log detection is (0 when idle and caught up, or standing by)."""
        if not self.active or self.feed.idle:
            return 0.0
        return max(0.0, self._clock() - self.last_event_at) if self.last_event_at else 0.0

    # ── the detection thread ──────────────────────────────────────────────────────────────
    def _run(self) -> None:
        next_rules_check = time.monotonic() + RULES_POLL_S
        while not self._stopping.is_set():
            try:
                if self.active or self._try_claim():
                    self._work_once()
                else:
                    self._stopping.wait(DETECT_STANDBY_POLL_S)
                if time.monotonic() >= next_rules_check:
                    next_rules_check = time.monotonic() + RULES_POLL_S
                    self._load_rules()
                self._check_lag()
            except DetectionLeaseLost as exc:
                log.warning("detection handed over to another process: %s", exc.detail)
                self._demote()
            except Exception:  # detection must outlive a bad moment of the database
                log.exception("detection failed; restoring the stored state")
                self._demote()
                self._stopping.wait(DETECT_RETRY_S)
        self._finish()

    def _finish(self) -> None:
        """At stop: judge what is already queued, commit, release the lease."""
        if not self.active:
            return
        try:
            self._judge(self.feed.queued())
            if self.cursor != self._saved:
                self._commit([])
            detector_state.release(self._db, self.worker_id)
        except Exception:
            log.exception("detection state not stored at stop: the next worker re-judges")
        self.active = False

    def _demote(self) -> None:
        """Forget what was judged but not stored; the next claim restores the stored state."""
        self.active = False
        if self.feed.restart(self._saved):
            self._stopping.set()

    def _try_claim(self) -> bool:
        now = self._clock()
        current = detector_state.holder(self._db, now=now)
        if current is not None and current != self.worker_id:
            return False
        claimed = detector_state.claim(self._db, self.worker_id, now=now, lease_s=DETECT_LEASE_S)
        if claimed is None:
            return False
        if self.feed.restart(claimed.cursor):
            self._stopping.set()
        self.engine = self._restored_engine(self.ruleset, claimed.cursor, claimed.state)
        self._saved = claimed.cursor
        self._last_commit = self._last_renew = time.monotonic()
        self.active = True
        self.takeovers += 1
        if claimed.previous is not None:
            log.warning(
                "detection taken over from %s at audit row %d", claimed.previous, claimed.cursor
            )
        else:
            log.info("detection worker from audit row %d", claimed.cursor)
        if claimed.pending:
            self._act_pending(claimed.pending)
        return True

    def _restored_engine(
        self, ruleset: RuleSet, cursor: int, blob: bytes | None
    ) -> DetectionEngine:
        engine = DetectionEngine(ruleset)
        state = worker_state.decode_state(blob)
        restored = set(engine.restore(state)) if state is not None else set()
        self._prime(engine, cursor, restored)
        return engine

    def _prime(self, engine: DetectionEngine, cursor: int, restored: set[str]) -> None:
        """A dormant-key detector without stored state starts from every key's last use in
        the log up to the cursor."""
        fresh = [d for d in engine.detectors if d.rule.detector == "dormant"]
        fresh = [d for d in fresh if d.rule.id not in restored]
        if not fresh:
            return
        with self._db.connect() as conn:
            last = detector_state.last_used(conn, cursor)
        for detector in fresh:
            detector.restore(dict(last))

    def _work_once(self) -> None:
        items = self.feed.take(DETECT_POLL_S)
        if items is None:
            self._stopping.set()
            return
        self._judge(items)
        now = time.monotonic()
        if self.cursor != self._saved and now - self._last_commit >= DETECT_STATE_EVERY_S:
            self._commit([])
        elif now - self._last_renew >= DETECT_RENEW_S:
            self._renew()
        if items and not self.feed.behind:
            self._stopping.wait(DETECT_LINGER_S)

    def _judge(self, items: list[Item]) -> None:
        """Run the detectors over a range (in memory); commit at once if it found anything."""
        verdicts: list[Verdict] = []
        facts = self._facts()
        for seq, obs in items:
            if obs is not None:
                self.processed += 1
                self.last_event_at = obs.at
                self.last_processed_at = self._clock()
                try:
                    findings = self.engine.process(obs, facts)
                except Exception:  # one event failing must not skip the rest
                    log.exception("detection failed on audit row %d", seq)
                    findings = []
                verdicts += [self.engine.judge(f) for f in findings]
        if verdicts:
            self._commit(verdicts)

    def _renew(self) -> None:
        if not detector_state.renew(
            self._db, self.worker_id, now=self._clock(), lease_s=DETECT_LEASE_S
        ):
            raise DetectionLeaseLost("lease taken by another process")
        self._last_renew = time.monotonic()

    def _commit(self, verdicts: list[Verdict]) -> None:
        """Store the range's alerts, the cursor and the state in one transaction; then run
        the new alerts' playbooks and notices."""
        now = self._clock()
        blob = worker_state.encode_state(self.engine)
        raised: list[tuple[str, Finding]] = []
        with write_transaction(self._db) as conn:
            for verdict in verdicts:
                alert_id, new = alerts.record_in(conn, verdict, now=now)
                if new:
                    raised.append((alert_id, verdict.finding))
            detector_state.advance(
                conn,
                self.worker_id,
                expected=self._saved,
                cursor=self.cursor,
                state=blob,
                pending=[worker_state.finding_to_dict(a, f) for a, f in raised] or None,
                now=now,
                lease_s=DETECT_LEASE_S,
            )
        self._saved = self.cursor
        self._last_commit = self._last_renew = time.monotonic()
        for verdict in verdicts:
            finding = verdict.finding
            self.alerts[(finding.rule_id, finding.severity.label)] += 1
        for alert_id, finding in raised:
            self._act(alert_id, finding, now)
        if raised:
            detector_state.clear_pending(self._db, self.worker_id)

    def _act_pending(self, pending: list[dict[str, Any]]) -> None:
        """Playbooks and notices of alerts a previous worker stored but may not have acted
        on (it died in between): those with no action recorded run now."""
        for entry in pending:
            try:
                alert_id, finding = worker_state.finding_from_dict(entry)
                with self._db.connect() as conn:
                    shown = alerts.show_alert(conn, alert_id)
                if shown["actions"]:
                    continue
                self._act(alert_id, finding, self._clock())
            except Exception:
                log.exception("pending playbook of a stored alert failed")
        detector_state.clear_pending(self._db, self.worker_id)

    def _check_lag(self) -> None:
        lag = self.lag_s
        now = self._clock()
        dropped = self.dropped > self._dropped_seen
        if (lag > DETECT_LAG_ALERT_S or dropped) and now - self._last_lag_alert > LAG_ALERT_EVERY_S:
            self._last_lag_alert = now
            self._dropped_seen = self.dropped
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
            self.raise_finding(finding)

    # ── alerts ────────────────────────────────────────────────────────────────────────────
    def raise_finding(self, finding: Finding) -> None:
        """Raise a finding made outside the detectors (the gateway's own health), with the
        same judging, playbooks and sinks (blocking: call it from a worker thread)."""
        with self._local_lock:
            verdict = self._local.judge(finding)
        now = self._clock()
        directory = self._directory_for(f"detector:{finding.rule_id}")
        try:
            alert_id, new = alerts.record(directory, verdict, now=now)
        except Exception:
            # Not stored: the next finding of the same kind must be new again, so that its
            # playbooks still run.
            with self._local_lock:
                self._local.forget(verdict.dedup_key)
            raise
        self.alerts[(finding.rule_id, finding.severity.label)] += 1
        if new:
            self._act(alert_id, finding, now)

    def _act(self, alert_id: str, finding: Finding, now: float) -> None:
        """A new alert's playbooks, then its notice to the sinks."""
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
                RulesRefused(path=str(path), error=exc.detail[:2000]),
                now=self._clock(),
            )
            if initial:
                self._use_built_in()
            return
        self._swap(ruleset)
        if self._on_rules is not None:
            self._on_rules(ruleset)
        directory.record_event(
            RulesLoaded(
                path=str(path),
                sha256=ruleset.digest,
                rules=[r.id for r in ruleset.rules],
                playbooks=[p.id for p in ruleset.playbooks],
            ),
            now=self._clock(),
        )
        log.info("rules loaded from %s: %d rules", path, len(ruleset.rules))

    def _use_built_in(self) -> None:
        """The built-in rules in force (no usable rules file at start), content rules too."""
        self._swap(load_rules(None))
        if self._on_rules is not None:
            self._on_rules(self.ruleset)

    def _swap(self, ruleset: RuleSet) -> None:
        """New rules in force; the worker's detectors of unchanged rules keep their state."""
        self.ruleset = ruleset
        if not self.active:
            self.engine = DetectionEngine(ruleset)  # the claim restores the stored state
            return
        engine = DetectionEngine(ruleset)
        restored = set(engine.restore(self.engine.state()))
        self._prime(engine, self.cursor, restored)
        self.engine = engine
