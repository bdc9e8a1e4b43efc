"""Prometheus metrics of one gateway process, rendered at scrape time from counters the
process keeps anyway (nothing on the hot path but a dict increment)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from garrison.gateway.state import GatewayState


class _Collector:
    def __init__(self, state: GatewayState, monitor: Any) -> None:
        self.state = state
        self.monitor = monitor

    def collect(self) -> Iterator[Metric]:
        state = self.state
        calls = CounterMetricFamily("garrison_calls", "Model calls received.")
        calls.add_metric([], state.calls)
        yield calls
        outcomes = CounterMetricFamily(
            "garrison_call_outcomes", "Completed calls by outcome.", labels=["outcome"]
        )
        for outcome, n in sorted(state.outcomes.items()):
            outcomes.add_metric([outcome], n)
        yield outcomes
        refusals = CounterMetricFamily(
            "garrison_refusals", "Refused calls by reason code.", labels=["reason"]
        )
        for reason, n in sorted(state.refusals.items()):
            refusals.add_metric([reason], n)
        yield refusals
        inflight = GaugeMetricFamily("garrison_inflight_calls", "Calls in flight.")
        inflight.add_metric([], state.inflight)
        yield inflight
        locks = GaugeMetricFamily("garrison_locks", "Unlifted locks in the snapshot.")
        locks.add_metric([], len(state.snapshot.locks))
        yield locks
        snapshot = GaugeMetricFamily("garrison_snapshot_version", "Directory version loaded.")
        snapshot.add_metric([], state.snapshot.version)
        yield snapshot
        depth = GaugeMetricFamily("garrison_audit_queue_depth", "Audit events not yet durable.")
        depth.add_metric([], state.audit.depth)
        yield depth
        monitor = self.monitor
        if monitor is None:
            return
        alerts = CounterMetricFamily(
            "garrison_alerts", "Findings raised, by rule and severity.", labels=["rule", "severity"]
        )
        for (rule, severity), n in sorted(monitor.alerts.items()):
            alerts.add_metric([rule, severity], n)
        yield alerts
        processed = CounterMetricFamily("garrison_detection_events", "Events the detectors read.")
        processed.add_metric([], monitor.processed)
        yield processed
        dropped = CounterMetricFamily(
            "garrison_detection_deferred_events",
            "Events not queued for detection (read back from the log later).",
        )
        dropped.add_metric([], monitor.dropped)
        yield dropped
        lag = GaugeMetricFamily("garrison_detection_lag_seconds", "How far behind detection is.")
        lag.add_metric([], monitor.lag_s)
        yield lag
        queue = GaugeMetricFamily("garrison_detection_queue_batches", "Batches waiting.")
        queue.add_metric([], monitor.depth)
        yield queue


def render(state: GatewayState, monitor: Any) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(state, monitor))
    return generate_latest(registry)
