"""Issue 18's targets for the gateway, judged against figures measured in the same run.

The floor is the bare aiohttp + uvloop forwarder of ``bench/stacks.py`` (no security at all),
run beside the gateway against the same mocks by the same load generator. Most limits are
computed from it, so a slower or busier machine moves the limit with the measurement:

* CPU per call at c=32 ≤ 1.5 × the floor's, non-streaming and streaming (per 20-event stream);
* added p50 at c=1 ≤ the floor's added p50 + one durable commit's p50 + 0.25 ms;
* CPU per call at c=1 ≤ 1.5 × the floor's;
* added p99 at c=1 ≤ 3 ms; ≥ 2,000 calls/s at c=32; peak RSS ≤ 150 MB holding 1,000 streams.

``judge`` is pure: figures in, verdicts out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

# The bare forwarder the relative limits are computed from (issue 18's floor).
FLOOR_STACK = "aiohttp"
# Gateway CPU per call may be at most this multiple of the floor's (c=32 and c=1).
CPU_FLOOR_MULTIPLE = 1.5
# Added p50 at c=1 may exceed (floor's added p50 + one durable commit's p50) by this much: the
# authentication, decision, detection and content rules on top of the unavoidable commit.
P50_MARGIN_MS = 0.25
# Added p99 at c=1, absolute: the tail one interactive caller may see.
P99_LIMIT_MS = 3.0
# Calls/s at c=32 one gateway process must serve.
RPS_LIMIT = 2000.0
# Peak resident memory holding 1,000 open streams.
RSS_LIMIT_MB = 150.0

MET, MISSED, NOT_JUDGED = "MET", "MISSED", "NOT JUDGED"
NO_FLOOR = "no bare forwarder in this run"
NO_COMMIT = "no durable commit measured in this run"
HOLD_INCOMPLETE = "not every stream was open at once"
FIXED = "fixed"


@dataclass(frozen=True)
class Gateway:
    """The gateway's figures in one run (medians over rounds; ms unless named)."""

    added_p50_c1: float
    added_p99_c1: float
    cpu_c1: float
    cpu_c32: float
    cpu_stream: float  # per 20-event stream at c=32
    rps_c32: float
    rss_hold_mb: float
    hold_complete: bool  # every held stream was open at the same time


@dataclass(frozen=True)
class Floor:
    """The bare forwarder's figures in the same run (added p50 against the same direct)."""

    added_p50_c1: float
    cpu_c1: float
    cpu_c32: float
    cpu_stream: float


@dataclass(frozen=True)
class Verdict:
    key: str
    target: str
    unit: str
    higher_is_better: bool
    basis: str  # how the limit was computed from this run
    limit: float  # NaN when this run gives none (no floor, no durable commit)
    measured: float
    ratio: float  # measured ÷ limit: ≤ 1 meets an upper limit, ≥ 1 a lower one
    verdict: str  # MET, MISSED or NOT JUDGED
    reason: str = ""  # why not judged

    @property
    def comparison(self) -> str:
        return "≥" if self.higher_is_better else "≤"

    def to_json(self) -> dict[str, Any]:
        """The fields for a JSON report (NaN, which JSON lacks, as null)."""
        out: dict[str, Any] = asdict(self)
        for key, value in out.items():
            if isinstance(value, float) and math.isnan(value):
                out[key] = None
        out["comparison"] = self.comparison
        return out


def _verdict(
    key: str,
    target: str,
    unit: str,
    measured: float,
    limit: float | None,
    basis: str,
    *,
    higher_is_better: bool = False,
    reason: str = "",
) -> Verdict:
    if limit is None or reason:
        known = math.nan if limit is None else limit
        return Verdict(
            key,
            target,
            unit,
            higher_is_better,
            basis,
            known,
            measured,
            math.nan,
            NOT_JUDGED,
            reason or NO_FLOOR,
        )
    met = measured >= limit if higher_is_better else measured <= limit
    ratio = measured / limit if limit else math.inf
    return Verdict(
        key, target, unit, higher_is_better, basis, limit, measured, ratio, MET if met else MISSED
    )


def judge(gateway: Gateway, floor: Floor | None, commit_p50_ms: float | None) -> list[Verdict]:
    """Issue 18's targets: each limit from this run's floor (and durable commit) where it has
    one; a relative target without its floor is NOT JUDGED, never judged on an old figure."""
    m = CPU_FLOOR_MULTIPLE

    def times(figure: str) -> tuple[float | None, str]:
        if floor is None:
            return None, f"{m:g} × bare forwarder"
        value: float = getattr(floor, figure)
        return m * value, f"{m:g} × bare {value:.3f} ms"

    cpu_c32, cpu_c32_basis = times("cpu_c32")
    cpu_stream, cpu_stream_basis = times("cpu_stream")
    cpu_c1, cpu_c1_basis = times("cpu_c1")
    if floor is None or commit_p50_ms is None:
        p50_limit = None
        p50_basis = f"bare + durable commit + {P50_MARGIN_MS:g} ms"
        p50_reason = NO_FLOOR if floor is None else NO_COMMIT
    else:
        p50_limit = floor.added_p50_c1 + commit_p50_ms + P50_MARGIN_MS
        p50_basis = (
            f"bare {floor.added_p50_c1:.3f} + commit {commit_p50_ms:.3f} + {P50_MARGIN_MS:g} ms"
        )
        p50_reason = ""
    return [
        _verdict(
            "cpu_c32",
            "gateway CPU per non-streaming call, c=32",
            "ms",
            gateway.cpu_c32,
            cpu_c32,
            cpu_c32_basis,
        ),
        _verdict(
            "cpu_stream_c32",
            "gateway CPU per 20-event stream, c=32",
            "ms",
            gateway.cpu_stream,
            cpu_stream,
            cpu_stream_basis,
        ),
        _verdict(
            "added_p50_c1",
            "added latency p50, c=1",
            "ms",
            gateway.added_p50_c1,
            p50_limit,
            p50_basis,
            reason=p50_reason,
        ),
        _verdict(
            "added_p99_c1",
            "added latency p99, c=1",
            "ms",
            gateway.added_p99_c1,
            P99_LIMIT_MS,
            FIXED,
        ),
        _verdict(
            "cpu_c1",
            "gateway CPU per non-streaming call, c=1",
            "ms",
            gateway.cpu_c1,
            cpu_c1,
            cpu_c1_basis,
        ),
        _verdict(
            "rps_c32",
            "calls/s at c=32, one process",
            "calls/s",
            gateway.rps_c32,
            RPS_LIMIT,
            FIXED,
            higher_is_better=True,
        ),
        _verdict(
            "rss_hold",
            "peak RSS holding 1,000 streams",
            "MB",
            gateway.rss_hold_mb,
            RSS_LIMIT_MB,
            FIXED,
            reason="" if gateway.hold_complete else HOLD_INCOMPLETE,
        ),
    ]


def _number(value: float, unit: str) -> str:
    if math.isnan(value):
        return "—"
    if unit == "calls/s":
        return f"{value:,.0f}"
    return f"{value:.1f}" if unit == "MB" else f"{value:.3f}"


def table_lines(verdicts: Sequence[Verdict]) -> list[str]:
    """The targets table: target, limit from this run (and how), measured, ratio, verdict."""
    header = (
        f"{'target':<42} {'limit':>9} {'limit from this run':<36} {'measured':>9} "
        f"{'unit':<7} {'ratio':>5}  verdict"
    )
    lines = [header, "-" * len(header)]
    for v in verdicts:
        limit = f"{v.comparison} {_number(v.limit, v.unit)}" if not math.isnan(v.limit) else "—"
        ratio = "—" if math.isnan(v.ratio) else f"{v.ratio:.2f}"
        verdict = f"{v.verdict.lower()} ({v.reason})" if v.verdict == NOT_JUDGED else v.verdict
        lines.append(
            f"{v.target:<42} {limit:>9} {v.basis:<36} "
            f"{_number(v.measured, v.unit):>9} {v.unit:<7} {ratio:>5}  {verdict}"
        )
    return lines
