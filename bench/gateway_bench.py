"""Garrison's data plane against the same mock upstream, direct and through the gateway.

    python bench/gateway_bench.py [--quick] [--json out.json] [--stacks LIST|none]
    python bench/gateway_bench.py --hold-only [--repeat N] [--json out.json]

Every process is separate and on 127.0.0.1: two mock upstreams (``garrison mock-upstream``),
the gateway (``garrison serve`` on a data directory seeded here: one principal, one key, a
model per mock, authentication and the durable SQLite audit log on, as shipped), and one
load generator process per phase (``bench/loadgen.py``). Phases, each direct to the mock and
through the gateway, alternated for ``rounds`` rounds (the median of each figure is kept):

* non-streaming chat completions at concurrency 1 and 32,
* streaming chat completions at concurrency 32 (time to first SSE chunk, and total),
* 1,000 concurrent streams held through the gateway (each lasting ~5 s): peak RSS.

Then one durable commit is timed (``bench/durable_commit.py``: one-row SQLite commits with the
gateway's pragmas, beside its audit database), and the bare forwarders of ``bench/stacks.py``
run the same phases for the stack comparison. The aiohttp forwarder always runs unless
``--stacks none``: issue 18's targets are limits computed from it and from the durable commit
in the same run (``bench/targets.py``), printed as a table and kept in the ``--json`` report.
The method is written up in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import durable_commit, targets
from bench.loadgen import (
    CLK_TCK,
    REPO_ROOT,
    Children,
    PhaseResult,
    free_port,
    run_phase,
    terminate_on_signals,
    tree_cpu_ticks,
    wait_for_quiet,
    wait_http,
)
from bench.stacks import (
    FULL,
    QUICK,
    QUICK_STACKS,
    STACKS,
    UPSTREAM_MODEL,
    Mocks,
    Plan,
    Target,
    aggregate,
    compare_stacks,
    describe,
    direct_target,
    figures,
    garrison_cli,
    measure,
    measure_hold,
    phase_specs,
    print_stack_table,
    stack_figures,
    stack_rows,
    start_mocks,
)

MODEL = "bench-model"  # the registry name clients use (the upstream calls it mock-small)
HOLD_MODEL = "bench-hold"
PRINCIPAL = "bench-svc"
# A credential the gateway injects upstream (the mock does not check it).
UPSTREAM_KEY = "sk-bench-upstream-0123456789abcdef"
PHASES = ("nonstream_c1", "nonstream_c32", "stream_c32")


# ── the machine ────────────────────────────────────────────────────────────────────────────
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _filesystem(path: Path) -> str:
    """The type of the filesystem holding ``path`` (longest mount-point prefix)."""
    best, kind = "", "unknown"
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            mount = parts[1]
            if str(path).startswith(mount) and len(mount) > len(best):
                best, kind = mount, f"{parts[2]} ({parts[0]} on {mount})"
    except OSError:
        pass
    return kind


def source_state() -> dict[str, Any]:
    """The commit of the working tree and whether ``src/`` differs from it: the gateway
    process runs whatever ``src/`` holds when it starts."""

    def git(*args: str) -> str:
        try:
            out = subprocess.run(
                ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return out.stdout.strip() if out.returncode == 0 else ""

    dirty = [line for line in git("status", "--porcelain", "--", "src").splitlines() if line]
    return {"commit": git("rev-parse", "--short=12", "HEAD") or "unknown", "src_dirty": dirty}


def machine_info(data_dir: Path) -> dict[str, Any]:
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": _cpu_model(),
        "python": sys.version.split()[0],
        "kernel": platform.release(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "audit_filesystem": _filesystem(data_dir),
        "source": source_state(),
        "versions": {
            d: _version(d)
            for d in ("aiohttp", "uvloop", "orjson", "uvicorn", "httptools", "granian")
        },
    }


# ── the gateway ────────────────────────────────────────────────────────────────────────────
@dataclass
class Seeded:
    config: Path
    db_path: Path
    key: str
    port: int


def seed_gateway(data_dir: Path, mocks: Mocks) -> Seeded:
    """``garrison init`` plus one principal, a model per mock and one key, in Python."""
    from garrison.bootstrap import init, open_directory
    from garrison.domain import AuthStyle, Level, PrincipalKind, UpstreamApi

    port = free_port()
    done = init(data_dir, host="127.0.0.1", port=port)
    directory = open_directory(done.settings, actor="bench")
    try:
        now = time.time()
        directory.create_principal(
            PRINCIPAL, org="internal", kind=PrincipalKind.SERVICE, clearance=Level.INTERNAL, now=now
        )
        for name, base in ((MODEL, mocks.fast_base), (HOLD_MODEL, mocks.hold_base)):
            directory.create_model(
                name,
                upstream_url=base + "/v1",
                upstream_model=UPSTREAM_MODEL,
                api=UpstreamApi.OPENAI,
                auth_style=AuthStyle.BEARER,
                level=Level.INTERNAL,
                upstream_key=UPSTREAM_KEY,
                now=now,
            )
        key = directory.create_key(PRINCIPAL, now=now, note="benchmark").key.token.reveal()
    finally:
        directory.engine.dispose()
    if os.environ.get("GARRISON_BENCH_NO_DETECT"):
        # To see what in-process detection costs: the same gateway without it.
        with done.config_path.open("a") as config:
            config.write("\n[detect]\nenabled = false\n")
    with done.config_path.open("a") as config:
        # The load generator is one address and one key standing for many clients (1,000
        # held streams from 127.0.0.1): the shipped per-source (256 connections) and
        # per-key/principal (512/1,024 calls) caps would refuse it.
        config.write(
            "\n[limits]\nmax_connections_per_source = 4096\n"
            "max_concurrent_per_credential = 4096\nmax_concurrent_per_principal = 4096\n"
        )
    db_path = Path(done.settings.database_url.removeprefix("sqlite:///"))
    return Seeded(done.config_path, db_path, key, port)


def audit_counts(db_path: Path) -> dict[str, int]:
    conn = sqlite3.connect(db_path)
    try:
        rows = conn.execute("SELECT name, count(*) FROM audit_events GROUP BY name").fetchall()
    finally:
        conn.close()
    return {str(name): int(count) for name, count in rows}


# ── figures ────────────────────────────────────────────────────────────────────────────────
def summarize(
    direct: Mapping[str, Sequence[PhaseResult]],
    gateway: Mapping[str, Sequence[PhaseResult]],
    hold: PhaseResult,
) -> dict[str, Any]:
    d = {p: aggregate(direct[p]) for p in PHASES}
    g = {p: aggregate(gateway[p]) for p in PHASES}
    added = {
        p: {
            k: g[p][k] - d[p][k]
            for k in ("p50", "p99", "ttft_p50", "ttft_p99")
            if k in g[p] and k in d[p]
        }
        for p in PHASES
    }
    return {"direct": d, "gateway": g, "added": added, "hold": figures(hold)}


def judge_run(
    summary: Mapping[str, Any],
    floor: Mapping[str, Mapping[str, float]] | None,
    commit_p50_ms: float | None,
    hold_streams: int,
) -> list[targets.Verdict]:
    """Issue 18's targets for this run: the gateway's figures against the bare forwarder's
    (``floor``: its phase figures, ``None`` when it did not run) and the durable commit's."""
    d, g, added, h = summary["direct"], summary["gateway"], summary["added"], summary["hold"]
    gateway = targets.Gateway(
        added_p50_c1=added["nonstream_c1"]["p50"],
        added_p99_c1=added["nonstream_c1"]["p99"],
        cpu_c1=g["nonstream_c1"]["cpu_target"],
        cpu_c32=g["nonstream_c32"]["cpu_target"],
        cpu_stream=g["stream_c32"]["cpu_target"],
        rps_c32=g["nonstream_c32"]["rps"],
        rss_hold_mb=h["rss_peak_mb"],
        hold_complete=h.get("max_open", 0) >= hold_streams,
    )
    bare = None
    if floor is not None:
        bare = targets.Floor(
            added_p50_c1=floor["nonstream_c1"]["p50"] - d["nonstream_c1"]["p50"],
            cpu_c1=floor["nonstream_c1"]["cpu_target"],
            cpu_c32=floor["nonstream_c32"]["cpu_target"],
            cpu_stream=floor["stream_c32"]["cpu_target"],
        )
    return targets.judge(gateway, bare, commit_p50_ms)


# ── output ─────────────────────────────────────────────────────────────────────────────────
def print_machine(info: Mapping[str, Any]) -> None:
    print(
        f"machine: {info['nproc']} cores ({info['cpu_model']}), {info['memory_gb']} GiB, "
        f"Python {info['python']}, Linux {info['kernel']}"
    )
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
    print(f"libraries: {versions}")
    print(f"audit database on: {info['audit_filesystem']}")
    src = info["source"]
    dirty = f", src/ has {len(src['src_dirty'])} uncommitted change(s)" if src["src_dirty"] else ""
    print(f"gateway source: commit {src['commit']}{dirty}")


def print_results(summary: Mapping[str, Any], rounds: int) -> None:
    d, g, h = summary["direct"], summary["gateway"], summary["hold"]
    print(f"\nGateway vs direct (median of {rounds} round(s); times in ms)")
    header = f"{'phase':<16} {'figure':<26} {'direct':>10} {'gateway':>10} {'added':>10}"
    print(header)
    print("-" * len(header))
    labels = {
        "nonstream_c1": "non-stream c=1",
        "nonstream_c32": "non-stream c=32",
        "stream_c32": "stream c=32",
    }

    def row(phase: str, label: str, key: str, show_added: bool = True, fmt: str = ".3f") -> None:
        dv, gv = d[phase].get(key, float("nan")), g[phase].get(key, float("nan"))
        add = f"{gv - dv:>10{fmt}}" if show_added else f"{'':>10}"
        print(f"{labels[phase]:<16} {label:<26} {dv:>10{fmt}} {gv:>10{fmt}} {add}")

    for phase in PHASES:
        if phase == "stream_c32":
            row(phase, "TTFT p50", "ttft_p50")
            row(phase, "TTFT p99", "ttft_p99")
            row(phase, "total p50", "p50")
            row(phase, "total p99", "p99")
        else:
            row(phase, "latency p50", "p50")
            row(phase, "latency p99", "p99")
        row(phase, "calls/s", "rps", show_added=False, fmt=".0f")
        row(phase, "mock CPU ms/call", "cpu_mock", show_added=False)
        row(phase, "loadgen CPU ms/call", "cpu_loadgen", show_added=False)
        print(
            f"{labels[phase]:<16} {'gateway CPU ms/call':<26} {'':>10} "
            f"{g[phase]['cpu_target']:>10.3f} {'':>10}"
        )
        print(
            f"{labels[phase]:<16} {'  of which event-loop thread':<26} {'':>10} "
            f"{g[phase]['cpu_target_main_thread']:>10.3f} {'':>10}"
        )
        print(
            f"{labels[phase]:<16} {'gateway CPU use (cores)':<26} {'':>10} "
            f"{g[phase]['util_target']:>10.2f} {'':>10}"
        )
        print(
            f"{labels[phase]:<16} {'other load (cores)':<26} {d[phase]['other_busy_cores']:>10.2f} "
            f"{g[phase]['other_busy_cores']:>10.2f} {'':>10}"
        )
    print(
        f"\nholding {int(h.get('rss_held_open', 0))} streams (max open {int(h['max_open'])}): "
        f"gateway RSS before {h['rss_baseline_mb']:.1f} MB, at all-open "
        f"{h.get('rss_at_held_mb', float('nan')):.1f} MB, peak {h['rss_peak_mb']:.1f} MB "
        f"(VmHWM {h['rss_hwm_mb']:.1f}, sampled {h['rss_sampled_peak_mb']:.1f}); "
        f"gateway CPU {h['cpu_target']:.3f} ms/stream"
    )
    print(f"idle gateway: {summary['idle_cpu_ms_per_s']:.1f} ms of CPU per second")


def print_targets(verdicts: Sequence[targets.Verdict], commit: Mapping[str, Any] | None) -> None:
    print(
        "\nIssue 18 targets (authentication, decision, durable audit, detection on), "
        f"limits from this run's bare {targets.FLOOR_STACK} forwarder"
    )
    if commit:
        print(f"one durable commit: {durable_commit.describe(commit)}")
    for line in targets.table_lines(verdicts):
        print(f"  {line}")


# ── the run ────────────────────────────────────────────────────────────────────────────────
def idle_cpu_ms_per_s(pid: int, seconds: float = 3.0) -> float:
    """CPU the gateway spends with no traffic (snapshot polling, timers), per second."""
    time.sleep(1.0)
    before = tree_cpu_ticks(pid)
    time.sleep(seconds)
    return (tree_cpu_ticks(pid) - before) * 1000.0 / CLK_TCK / seconds


# Frames whose inclusive share of the event-loop thread is reported by --profile.
PROFILE_FRAMES = (
    ("aiohttp server: request handling", "RequestHandler._handle_request"),
    ("model handler, all of it", "model_handler"),
    ("upstream call (_forward)", "_forward "),
    ("aiohttp client request", "ClientSession._request"),
    ("audit append (allowed, awaited)", "AuditLog.append"),
    ("audit: completed event (_complete)", "_complete "),
    ("audit: Call.event", "Call.event"),
    ("body read (read_body)", "read_body"),
    ("authentication (_authenticated)", "_authenticated"),
    ("  of which hash_secret (HMAC)", "hash_secret"),
    ("  of which peer_address", "peer_address"),
    ("parse_body", "parse_body"),
    ("upstream_body", "upstream_body"),
    ("new_request_id", "new_request_id"),
    ("asyncio.timeout()", "timeout (asyncio"),
    ("asyncio.current_task/create_task", "create_task (asyncio"),
)
# Leaf frames (native) summed as such.
PROFILE_LEAVES = ("getpid", "write", "read", "epoll_pwait", "getrandom", "gc_collect_main")


def profile_gateway(
    children: Children,
    plan: Plan,
    target: Target,
    pid: int,
    out: Path,
    log: Callable[[str], None],
    phase: str = "nonstream_c32",
    wall: bool = False,
) -> dict[str, Any]:
    """One load phase (non-streaming c=32 unless told) while py-spy samples the gateway
    (native frames, threads): the thread holding the GIL, or (``wall``) every thread, idle
    or not, so a thread's share is wall-clock time, waits included."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        log("  py-spy is not installed (.venv/bin/pip install py-spy): skipped")
        return {}
    spec = dict(phase_specs(plan, target))[phase]
    # Long enough for the whole phase at the gateway's slowest measured rate (c=1: ~400/s).
    duration = max(5, int(spec.requests / (1500 if spec.concurrency > 1 else 400)) + 5)
    # The phase first waits (up to this long) for a quiet machine: sample through that too,
    # or on a busy machine py-spy stops before the load starts.
    duration += int(plan.quiet_max_wait_s)
    argv = [
        spy,
        "record",
        "-p",
        str(pid),
        "--native",
        "--threads",
        "--idle" if wall else "--gil",
        "-r",
        "200",
        "-f",
        "raw",
    ]
    argv.extend(["-o", str(out), "-d", str(duration)])
    # The wait for a quiet machine comes before py-spy starts: its sampling time is fixed, and
    # a wait inside the phase spent it on an idle gateway (on a busy machine, all of it).
    wait_for_quiet(max_wait_s=plan.quiet_max_wait_s)
    recorder = children.spawn("py-spy", argv)
    time.sleep(1.0)
    result = run_phase(children, "gateway-profile", spec, {"target": pid}, quiet_max_wait_s=0.0)
    log(f"  gateway        profile {phase:<14} {describe(result)}")
    try:
        recorder.proc.wait(duration + 30)
    finally:
        children.stop(recorder)
    shares = hot_spots(out) if out.exists() else {}
    return {
        "path": str(out),
        "phase": phase,
        "sampling": "wall" if wall else "gil",
        "calls": spec.warmup + spec.requests,
        **shares,
    }


def hot_spots(path: Path) -> dict[str, Any]:
    """Thread split, and shares of the event-loop thread's samples, from py-spy raw output."""
    threads: dict[str, int] = {}
    frames: dict[str, int] = dict.fromkeys((label for label, _ in PROFILE_FRAMES), 0)
    leaves: dict[str, int] = dict.fromkeys(PROFILE_LEAVES, 0)
    main = total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        parts = stack.split(";")
        thread = parts[0].split(":", 1)[-1].strip() or parts[0]
        threads[thread] = threads.get(thread, 0) + count
        total += count
        if thread != "MainThread":
            continue
        main += count
        for label, prefix in PROFILE_FRAMES:
            if any(part.startswith(prefix) for part in parts[1:]):
                frames[label] += count
        leaf = parts[-1].split(" ", 1)[0]
        if leaf in leaves:
            leaves[leaf] += count
    return {
        "samples": total,
        "threads_pct": {k: 100.0 * v / total for k, v in threads.items()} if total else {},
        "main_thread_pct": {k: 100.0 * v / main for k, v in frames.items()} if main else {},
        "main_thread_leaf_pct": {k: 100.0 * v / main for k, v in leaves.items()} if main else {},
    }


def print_profile(profile: Mapping[str, Any]) -> None:
    if not profile.get("samples"):
        return
    sampling = "every thread, wall clock" if profile.get("sampling") == "wall" else "GIL holder"
    print(
        f"\nProfile of the gateway, {profile.get('phase', 'nonstream_c32')} "
        f"(py-spy --native, {sampling}, {profile['samples']} samples)"
    )
    for thread, pct in sorted(profile["threads_pct"].items(), key=lambda kv: -kv[1]):
        print(f"  thread {thread:<30} {pct:5.1f}% of samples")
    print("  event-loop thread, inclusive share:")
    for label, pct in profile["main_thread_pct"].items():
        print(f"    {label:<40} {pct:5.1f}%")
    print("  event-loop thread, time in (leaf frame):")
    for leaf, pct in profile["main_thread_leaf_pct"].items():
        print(f"    {leaf:<40} {pct:5.1f}%")
    print(f"  raw stacks: {profile['path']}")


def run(
    plan: Plan,
    stacks: Sequence[str],
    work: Path,
    log: Callable[[str], None],
    profile_path: Path | None = None,
    profile_phase: str = "nonstream_c32",
    profile_only: bool = False,
    profile_wall: bool = False,
    hold_only: bool = False,
) -> dict[str, Any]:
    data_dir = work / "data"
    info = machine_info(work)
    print_machine(info)
    with terminate_on_signals(), Children(work) as children:
        mocks = start_mocks(children, plan)
        seeded = seed_gateway(data_dir, mocks)
        gateway = children.spawn("gateway", garrison_cli("serve", "--config", str(seeded.config)))
        base = f"http://127.0.0.1:{seeded.port}"
        wait_http(base + "/readyz", gateway)
        gw_target = Target(
            "gateway",
            base,
            MODEL,
            {"authorization": f"Bearer {seeded.key}"},
            hold_base=base,
            hold_model=HOLD_MODEL,
        )
        watch = {"target": gateway.pid, "mock": mocks.fast.pid}
        main_thread = {"target": gateway.pid}
        idle = idle_cpu_ms_per_s(gateway.pid)
        log(f"idle gateway: {idle:.1f} ms of CPU per second")
        direct: dict[str, list[PhaseResult]] = {p: [] for p in PHASES}
        through: dict[str, list[PhaseResult]] = {p: [] for p in PHASES}
        if profile_only and profile_path is not None:
            log("profiling the gateway (py-spy), no measured phases:")
            profile = profile_gateway(
                children,
                plan,
                gw_target,
                gateway.pid,
                profile_path,
                log,
                profile_phase,
                profile_wall,
            )
            children.stop(gateway, signal.SIGINT)
            return {"machine": info, "profile": profile}

        def hold_through_gateway() -> PhaseResult:
            return measure_hold(
                children,
                plan,
                gw_target,
                {"target": gateway.pid, "mock": mocks.hold.pid},
                gateway.pid,
                main_thread_of=main_thread,
                log=log,
            )

        if hold_only:
            log("holding streams through the gateway (no other phase):")
            hold = hold_through_gateway()
            children.stop(gateway, signal.SIGINT)
            return {"machine": info, "hold": figures(hold), "raw": {"hold": asdict(hold)}}
        for index in range(plan.rounds):
            log(f"round {index + 1}/{plan.rounds}:")
            for phase, result in measure(
                children,
                plan,
                direct_target(mocks),
                {"mock": mocks.fast.pid},
                reset=[mocks.fast_base],
                log=log,
            ).items():
                direct[phase].append(result)
            for phase, result in measure(
                children,
                plan,
                gw_target,
                watch,
                reset=[mocks.fast_base],
                main_thread_of=main_thread,
                log=log,
            ).items():
                through[phase].append(result)
        log("holding streams through the gateway:")
        hold = hold_through_gateway()
        profile = {}  # typed by the --profile-only branch above
        if profile_path is not None:
            log("profiling the gateway (py-spy, not a measured phase):")
            profile = profile_gateway(
                children,
                plan,
                gw_target,
                gateway.pid,
                profile_path,
                log,
                profile_phase,
                profile_wall,
            )
        children.stop(gateway, signal.SIGINT)  # graceful: the audit log is flushed and closed
        # Beside the audit database (same disk), on a quiet machine like every phase.
        wait_for_quiet(max_wait_s=plan.quiet_max_wait_s)
        commit = durable_commit.measure_commits(seeded.db_path.parent, plan.durable_commits)
        log(f"durable commit: {durable_commit.describe(commit)}")
        summary = summarize(direct, through, hold)
        summary["idle_cpu_ms_per_s"] = idle
        sent = sum(
            int(r.spec["warmup"]) + int(r.spec["requests"])
            for results in through.values()
            for r in results
        )
        sent += int(hold.spec["warmup"]) + int(hold.spec["requests"])
        sent += int(profile.get("calls", 0))
        stack_results: dict[str, dict[str, list[PhaseResult]]] = {}
        if stacks:
            log("bare forwarders (stack comparison):")
            stack_results = compare_stacks(
                children, plan, mocks, stacks, rounds=plan.stack_rounds, log=log
            )
    audit = audit_counts(seeded.db_path)
    info["source_at_end"] = source_state()
    if info["source_at_end"] != info["source"]:
        log(
            f"WARNING: the source changed during the run ({info['source']} -> "
            f"{info['source_at_end']}); processes started later ran the newer code"
        )
    audit["calls_sent"] = sent
    rows: list[dict[str, Any]] = []
    floor: dict[str, dict[str, float]] | None = None
    if stack_results:
        figs = stack_figures(stack_results)
        floor = figs.get(targets.FLOOR_STACK)
        figs["garrison gateway"] = {**summary["gateway"], "hold": summary["hold"]}
        rows = stack_rows(summary["direct"], figs)
    verdicts = judge_run(summary, floor, commit["p50"], plan.hold_streams)
    return {
        "machine": info,
        "plan": asdict(plan),
        "summary": summary,
        "durable_commit": commit,
        "targets": [v.to_json() for v in verdicts],
        "verdicts": verdicts,
        "profile": profile,
        "audit_events": audit,
        "stack_rows": rows,
        "raw": {
            "direct": {p: [asdict(r) for r in rs] for p, rs in direct.items()},
            "gateway": {p: [asdict(r) for r in rs] for p, rs in through.items()},
            "hold": asdict(hold),
            "stacks": {
                s: {p: [asdict(r) for r in rs] for p, rs in res.items()}
                for s, res in stack_results.items()
            },
        },
    }


def print_hold(hold: Mapping[str, Any]) -> None:
    print(
        f"holding {int(hold.get('rss_held_open', 0))} streams (max open {int(hold['max_open'])}): "
        f"gateway RSS before {hold['rss_baseline_mb']:.1f} MB, at all-open "
        f"{hold.get('rss_at_held_mb', float('nan')):.1f} MB, peak {hold['rss_peak_mb']:.1f} MB "
        f"(VmHWM {hold['rss_hwm_mb']:.1f}, sampled {hold['rss_sampled_peak_mb']:.1f})"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts (smoke check)")
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    parser.add_argument(
        "--stacks",
        help="bare forwarders to compare, comma-separated, or 'none' "
        f"(default: {','.join(STACKS)}; with --quick: {','.join(QUICK_STACKS)})",
    )
    parser.add_argument("--rounds", type=int, help="direct/gateway rounds (default 3; quick 1)")
    parser.add_argument(
        "--stack-rounds", type=int, help="bare-forwarder rounds (default 2; quick 1)"
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        help="parent of the temporary data directory (default: the system temp dir); "
        "it must be a real disk for the audit fsync to mean anything",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        help="also run py-spy on the gateway under c=32 load; raw stacks go to this file",
    )
    parser.add_argument(
        "--profile-phase",
        default="nonstream_c32",
        choices=("nonstream_c1", "nonstream_c32", "stream_c32"),
        help="the load phase --profile samples (default nonstream_c32)",
    )
    parser.add_argument(
        "--profile-wall",
        action="store_true",
        help="with --profile: sample every thread, idle or not (py-spy --idle: wall-clock "
        "time, waits included) instead of the thread holding the GIL",
    )
    parser.add_argument(
        "--profile-only",
        action="store_true",
        help="with --profile: run only the profiled phase (no measured rounds, no stacks)",
    )
    parser.add_argument(
        "--hold-only",
        action="store_true",
        help="run only the 1,000-stream hold through a fresh gateway (no rounds, no stacks, "
        "no durable commit); its peak RSS is lower than after the full plan's ~100,000 calls",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="with --hold-only: this many holds, each on a new gateway; min/median printed",
    )
    opts = parser.parse_args(argv)
    plan = QUICK if opts.quick else FULL
    if opts.hold_only:
        return hold_only_main(plan, opts.repeat, opts.work_dir, opts.json)
    if opts.rounds:
        plan = replace(plan, rounds=opts.rounds)
    if opts.stack_rounds:
        plan = replace(plan, stack_rounds=opts.stack_rounds)
    chosen = opts.stacks or ",".join(QUICK_STACKS if opts.quick else STACKS)
    stacks = [] if chosen == "none" else [s for s in chosen.split(",") if s]
    if stacks and targets.FLOOR_STACK not in stacks:
        # The targets' limits are computed from it: it runs whenever any forwarder does.
        stacks.insert(0, targets.FLOOR_STACK)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="garrison-bench-", dir=opts.work_dir) as tmp:
        profile_path = opts.profile.resolve() if opts.profile else None
        report = run(
            plan,
            stacks,
            Path(tmp),
            print,
            profile_path,
            profile_phase=opts.profile_phase,
            profile_only=opts.profile_only,
            profile_wall=opts.profile_wall,
        )
    if opts.profile_only:
        print_profile(report["profile"])
        return 0
    print_results(report["summary"], plan.rounds)
    print_profile(report["profile"])
    events = report["audit_events"]
    print(
        f"\naudit: {events.get('calls_sent', 0)} calls sent through the gateway; "
        f"{events.get('request.allowed', 0)} request.allowed and "
        f"{events.get('request.completed', 0)} request.completed events committed"
    )
    if report["stack_rows"]:
        print("\nStack comparison: bare forwarders, no security (times in ms, added vs direct)")
        print_stack_table(report["stack_rows"])
    print_targets(report.pop("verdicts"), report["durable_commit"])
    elapsed = time.monotonic() - started
    print(f"\nfinished in {elapsed:.0f} s")
    report["elapsed_s"] = elapsed
    if opts.json:
        opts.json.write_text(json.dumps(report, indent=2))
    return 0


def hold_only_main(plan: Plan, repeat: int, work_dir: Path | None, out: Path | None) -> int:
    """``--hold-only``: the hold phase alone, ``repeat`` times, each on a new gateway."""
    holds: list[dict[str, Any]] = []
    for index in range(max(1, repeat)):
        print(f"hold {index + 1}/{max(1, repeat)}:")
        with tempfile.TemporaryDirectory(prefix="garrison-bench-", dir=work_dir) as tmp:
            report = run(plan, [], Path(tmp), print, hold_only=True)
        print_hold(report["hold"])
        holds.append(report)
    peaks = sorted(h["hold"]["rss_peak_mb"] for h in holds)
    bases = sorted(h["hold"]["rss_baseline_mb"] for h in holds)
    print(
        f"\npeak RSS over {len(peaks)} hold(s): min {peaks[0]:.1f} MB, "
        f"median {statistics.median(peaks):.1f} MB, max {peaks[-1]:.1f} MB; "
        f"RSS before the hold: min {bases[0]:.1f}, median {statistics.median(bases):.1f} MB"
    )
    if out:
        out.write_text(json.dumps(holds, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
