"""Prometheus metrics of one gateway process, rendered at scrape time from counters the
process keeps anyway (nothing on the hot path but a dict increment)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from garrison.gateway.state import GatewayState
from garrison.histograms import Histogram


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
        if state.shared is not None:
            up = GaugeMetricFamily(
                "garrison_shared_limits_up", "1 while the shared limits (Redis) answer."
            )
            up.add_metric([], 1 if state.shared.up else 0)
            yield up
            fallbacks = CounterMetricFamily(
                "garrison_shared_limits_fallbacks",
                "Calls decided without the shared limits (Redis down).",
            )
            fallbacks.add_metric([], state.shared_fallbacks)
            yield fallbacks
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
        yield _histogram(
            "garrison_audit_commit_seconds",
            "Group commit of one audit batch (write and fsync).",
            state.audit.commit_latency,
        )
        latency = state.latency
        yield _histogram(
            "garrison_call_duration_seconds",
            "Whole calls, as the client sees them.",
            latency.duration,
        )
        yield _histogram(
            "garrison_time_to_first_byte_seconds",
            "From a call's arrival to the first byte sent back (streams: the first token).",
            latency.ttfb,
        )
        yield _histogram(
            "garrison_added_latency_seconds",
            "The gateway's own work before forwarding (authentication, policy, audit).",
            latency.added,
        )
        yield _histogram(
            "garrison_upstream_seconds", "From forwarding to the end of the call.", latency.upstream
        )
        healthy = GaugeMetricFamily("garrison_audit_healthy", "1 while the audit log is writable.")
        healthy.add_metric([], 1.0 if state.audit.healthy else 0.0)
        yield healthy
        free = GaugeMetricFamily(
            "garrison_disk_free_bytes", "Free space where the database lives (-1: not read yet)."
        )
        free.add_metric([], state.disk_free_bytes)
        yield free
        draining = GaugeMetricFamily("garrison_draining", "1 while the process is stopping.")
        draining.add_metric([], 1.0 if state.draining else 0.0)
        yield draining
        if state.model_outcomes is not None:
            by_model = CounterMetricFamily(
                "garrison_model_call_outcomes",
                "Completed calls by model and outcome (an admin opted in: [metrics] model_labels).",
                labels=["model", "outcome"],
            )
            for (model, outcome), n in sorted(state.model_outcomes.items()):
                by_model.add_metric([model, outcome], n)
            yield by_model
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


def _histogram(name: str, documentation: str, histogram: Histogram) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation)
    family.add_metric([], histogram.cumulative(), histogram.total)
    return family


def render(state: GatewayState, monitor: Any) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(state, monitor))
    ProcessCollector(registry=registry)  # memory, CPU, descriptors of this process
    return generate_latest(registry)
