"""Gateway replicas on PostgreSQL (one and three) against one gateway on SQLite.

    python bench/replicas_bench.py [--quick] [--json OUT] [--rounds N] [--no-detect]

Targets, each set up the way ``bench/lock_propagation.py`` sets up its replicas (the key
files, schema and first admin as ``garrison init`` makes them, then ``garrison serve``
processes and only their admin API: enrollment, the benchmark's model, service account and
key, and the lock rounds' own models and account):

* ``sqlite-1``: one ``garrison serve`` on the embedded SQLite default;
* ``postgresql-1``: one replica on a PostgreSQL database of its own;
* ``postgresql-3``: three replicas on one PostgreSQL database, with no proxy in front: the
  load generator sends each call to the next replica in turn (round-robin per call, as an
  HTTP load balancer does), over kept-alive connections to each.

Each PostgreSQL database (``garrison_bench_<random>`` on ``GARRISON_BENCH_PG``, default
127.0.0.1:5432) is made for the run and dropped at its end, also on an error, SIGINT,
SIGTERM or SIGHUP; every child process is killed. The mock upstream and the load generator
are ``bench/gateway_bench.py``'s (``bench/stacks.py``, ``bench/loadgen.py``), and the mock is
also measured directly in the same run. Rounds interleave: in each one, direct, then every
target, non-streaming calls at concurrency 1 then 32; then every target's share of lock
rounds (``bench/lock_propagation.py``'s measurement: a lock placed through replica A, the
time until every other replica refuses the locked account and a live stream on B is cut;
with one replica, A itself). Figures are medians over rounds:

* calls/s at c=32; CPU per call at c=32 and c=1, the gateway processes' own (``/proc``,
  all threads) and, apart, the PostgreSQL server processes connected to the target's
  database (found in ``pg_stat_activity`` at each reading);
* added latency p50/p99 at c=1 (the target's percentile minus the direct one);
* lock → refused on every other replica, and → stream cut: p50/p99 over all lock rounds;
* audit: ``request.allowed`` records of the benchmark's model against the calls sent.

Everything runs on 127.0.0.1, bounded in counts, in time per phase and in total (the
plan's ``budget_s``: no round starts that would end after it; ``limit_s``: a hard stop, under
6 minutes for the full plan) and stops by itself. The method and the lead's
figures are in docs/benchmarks.md ("Replicas on PostgreSQL").
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import sqlalchemy as sa

if __package__ in (None, ""):  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.replicas import init_postgres
from tests.support.serve_processes import write_serve_config

from bench.gateway_bench import MODEL, PRINCIPAL, UPSTREAM_KEY, machine_info
from bench.loadgen import Child, Children, PhaseResult, free_port, terminate_on_signals, wait_http
from bench.lock_propagation import (
    ADMIN_URL,
    CommitClock,
    admin,
    lock_figures,
    lock_rounds,
    postgres_database,
    seed,
)
from bench.stacks import (
    UPSTREAM_MODEL,
    Mocks,
    Plan,
    Target,
    direct_target,
    garrison_cli,
    measure,
    median,
    start_mocks,
)
from garrison.bootstrap import init
from garrison.store import make_engine
from garrison.store.change_feed import pg_conninfo

PHASES = ("nonstream_c1", "nonstream_c32")
TARGETS = (
    ("sqlite-1", "sqlite", 1),
    ("postgresql-1", "postgresql", 1),
    ("postgresql-3", "postgresql", 3),
)
# The load generator is one address and one key standing for many clients: the shipped
# per-principal call rate (2,000 calls/s sustained, per process) would refuse a fast
# gateway's c=32 phase, so it is lifted here like gateway_bench's connection caps.
LIMITS_TOML = (
    "\n[limits]\nmax_connections_per_source = 4096\n"
    "max_concurrent_per_credential = 4096\nmax_concurrent_per_principal = 4096\n"
    "max_calls_per_minute_per_principal = 60000000\n"
)
# Longest wait for a replica to answer on /readyz: five gateways start at once, and on
# PostgreSQL each opens its pools, change listener and audit sink first.
READY_TIMEOUT_S = 90.0


@dataclass(frozen=True)
class RunPlan:
    load: Plan  # counts of the load phases (bench/stacks.py's plan)
    lock_rounds: int  # lock rounds per target, spread evenly over the load rounds
    budget_s: float  # no new round starts once a round would end past this
    limit_s: float  # hard stop: the run is ended (children killed, databases dropped)


class RunTimeLimit(Exception):
    """The run reached its plan's ``limit_s``."""


FULL = RunPlan(
    Plan(c1_requests=1000, c32_requests=6000, warmup=400, rounds=3, quiet_max_wait_s=10.0),
    lock_rounds=30,
    budget_s=240.0,
    limit_s=345.0,  # under 6 minutes whatever happens; a healthy run ends in ~3
)
QUICK = RunPlan(
    Plan(c1_requests=150, c32_requests=600, warmup=60, rounds=1, quiet_max_wait_s=1.0),
    lock_rounds=5,
    budget_s=60.0,
    limit_s=170.0,  # ~60 s on a loaded 2-core machine; the limit only guards a hang
)


# ── the targets ────────────────────────────────────────────────────────────────────────────
@dataclass
class Group:
    """One target: its replicas, their database, and the keys the run made through them."""

    name: str
    database: str  # "sqlite" or "postgresql"
    url: str
    code: str  # the first admin's enrollment code
    replicas: list[Child] = field(default_factory=list)
    bases: list[str] = field(default_factory=list)
    admin_key: str = ""
    key: str = ""  # the benchmark principal's key (the load)
    lock_key: str = ""  # the lock rounds' service account's key

    @property
    def database_name(self) -> str:
        return str(sa.engine.make_url(self.url).database)

    def target(self) -> Target:
        return Target(
            self.name,
            self.bases[0],
            MODEL,
            {"authorization": f"Bearer {self.key}"},
            more_bases=tuple(self.bases[1:]),
        )

    def watch(self) -> dict[str, int]:
        return {f"gateway{i}": child.pid for i, child in enumerate(self.replicas)}


def start_group(
    children: Children, root: Path, name: str, url: str | None, n: int, *, detect: bool
) -> Group:
    """``garrison init`` (SQLite when ``url`` is None), then ``n`` ``garrison serve``."""
    root.mkdir(parents=True)
    if url is None:
        done = init(root / "data")
        url, key_dir = done.settings.database_url, done.settings.key_dir
        code = done.codes[0].code.reveal()
    else:
        settings, code = init_postgres(root, url)
        key_dir = settings.key_dir
    config = write_serve_config(root, url, key_dir, detect=detect, extra=LIMITS_TOML)
    group = Group(name, "sqlite" if url.startswith("sqlite") else "postgresql", url, code)
    for i in range(n):
        port = free_port()
        argv = garrison_cli("serve", "--config", str(config))
        group.replicas.append(children.spawn(f"{name}-{i}", argv, env={"GARRISON_PORT": str(port)}))
        group.bases.append(f"http://127.0.0.1:{port}")
    return group


async def seed_group(group: Group, fast_base: str, fast_port: int) -> None:
    """Through replica A's admin API: enroll, the benchmark's model (an injected upstream
    key, as gateway_bench's), account and key; then the lock rounds' models and account."""
    a = group.bases[0]
    async with aiohttp.ClientSession() as session:
        group.admin_key = (await admin(session, a, "", "POST", "/enroll", {"code": group.code}))[
            "key"
        ]
        model = {
            "name": MODEL,
            "upstream_url": fast_base + "/v1",
            "upstream_model": UPSTREAM_MODEL,
            "auth_style": "bearer",
            "upstream_key": UPSTREAM_KEY,
        }
        await admin(session, a, group.admin_key, "POST", "/models", model)
        account = {"name": PRINCIPAL, "org": "internal", "kind": "service"}
        await admin(session, a, group.admin_key, "POST", "/principals", account)
        created = await admin(
            session, a, group.admin_key, "POST", "/keys", {"principal": PRINCIPAL}
        )
        group.key = created["key"]
        # Made after the benchmark's key, so every replica taking it has taken both.
        group.lock_key = await seed(session, group.bases, group.admin_key, fast_port)


async def lock_share(group: Group, n: int) -> dict[str, list[float]]:
    clock = CommitClock(group.url) if group.database == "postgresql" else None
    try:
        async with aiohttp.ClientSession() as session:
            return await lock_rounds(
                session, group.bases, group.admin_key, group.lock_key, n, clock
            )
    finally:
        if clock is not None:
            clock.close()


class ServerProcesses:
    """The PostgreSQL server processes connected to one database, listed from a connection
    to the maintenance database (so the listing's own session is not among them)."""

    def __init__(self) -> None:
        import psycopg

        self._conn = psycopg.connect(pg_conninfo(ADMIN_URL), autocommit=True)

    def of(self, database: str) -> Callable[[], list[int]]:
        def pids() -> list[int]:
            rows = self._conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s", (database,)
            ).fetchall()
            return [int(row[0]) for row in rows]

        return pids

    def close(self) -> None:
        self._conn.close()


def audit_counts(url: str) -> dict[str, int]:
    """Audit records of the benchmark's model by name (the lock rounds use other models)."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT name, count(*) FROM audit_events WHERE model = :m GROUP BY name"),
                {"m": MODEL},
            ).all()
    finally:
        engine.dispose()
    return {str(name): int(count) for name, count in rows}


# ── figures ────────────────────────────────────────────────────────────────────────────────
def cpu_split(result: PhaseResult, gateways: Sequence[str]) -> dict[str, float]:
    per = result.cpu_ms_per_call
    out = {"gateways": sum(per[k] for k in gateways)}
    if "postgres" in per:
        out["postgres"] = per["postgres"]
    out["total"] = out["gateways"] + out.get("postgres", 0.0)
    return out


def medians(rows: Sequence[Mapping[str, float]]) -> dict[str, float]:
    return {k: median([r[k] for r in rows]) for k in rows[0]}


def latency(results: Sequence[PhaseResult]) -> dict[str, float]:
    return medians(
        [
            {
                "p50": float(r.load["latency_ms"]["p50"]),
                "p99": float(r.load["latency_ms"]["p99"]),
                "rps": float(r.load["rps"]),
            }
            for r in results
        ]
    )


def group_figures(
    group: Group,
    results: Mapping[str, Sequence[PhaseResult]],
    direct: Mapping[str, Sequence[PhaseResult]],
    locks: Mapping[str, list[float]],
    audit: Mapping[str, int],
) -> dict[str, Any]:
    gateways = list(group.watch())
    c1, c32 = latency(results["nonstream_c1"]), latency(results["nonstream_c32"])
    d1 = latency(direct["nonstream_c1"])
    sent = sum(
        int(r.spec["warmup"]) + int(r.spec["requests"]) for rs in results.values() for r in rs
    )
    return {
        "database": group.database,
        "database_name": group.database_name,
        "replicas": len(group.replicas),
        "rounds": len(results["nonstream_c32"]),
        "rps_c32": c32["rps"],
        "latency_ms_c32": {"p50": c32["p50"], "p99": c32["p99"]},
        "latency_ms_c1": {"p50": c1["p50"], "p99": c1["p99"]},
        "added_ms_c1": {"p50": c1["p50"] - d1["p50"], "p99": c1["p99"] - d1["p99"]},
        "cpu_ms_per_call_c32": medians([cpu_split(r, gateways) for r in results["nonstream_c32"]]),
        "cpu_ms_per_call_c1": medians([cpu_split(r, gateways) for r in results["nonstream_c1"]]),
        "cpu_ms_per_call_c32_per_replica": [
            median([r.cpu_ms_per_call[k] for r in results["nonstream_c32"]]) for k in gateways
        ],
        "errors": sum(int(r.load["errors"]) for rs in results.values() for r in rs),
        "other_busy_cores_max": max(r.other_busy_cores for rs in results.values() for r in rs),
        "lock": lock_figures(dict(locks)),
        "audit": {
            "calls_sent": sent,
            "request_allowed": audit.get("request.allowed", 0),
            "request_completed": audit.get("request.completed", 0),
        },
    }


# ── the run ────────────────────────────────────────────────────────────────────────────────
@contextlib.contextmanager
def databases(count: int) -> Iterator[list[str]]:
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(postgres_database()) for _ in range(count)]


@dataclass
class Measured:
    direct: dict[str, list[PhaseResult]] = field(default_factory=lambda: {p: [] for p in PHASES})
    through: dict[str, dict[str, list[PhaseResult]]] = field(default_factory=dict)
    locks: dict[str, dict[str, list[float]]] = field(default_factory=dict)


def measure_rounds(
    children: Children,
    plan: RunPlan,
    mocks: Mocks,
    groups: Sequence[Group],
    servers: ServerProcesses,
    log: Callable[[str], None],
    started: float,
) -> Measured:
    """Interleaved rounds: direct, then each target (c=1, c=32), then each target's locks."""
    out = Measured()
    for group in groups:
        out.through[group.name] = {p: [] for p in PHASES}
        out.locks[group.name] = {}
    per_round = max(1, plan.lock_rounds // plan.load.rounds)
    for index in range(plan.load.rounds):
        round_started = time.monotonic()
        log(f"round {index + 1}/{plan.load.rounds}:")
        direct = measure(
            children,
            plan.load,
            direct_target(mocks),
            {"mock": mocks.fast.pid},
            reset=[mocks.fast_base],
            log=log,
            phases=PHASES,
        )
        for phase, result in direct.items():
            out.direct[phase].append(result)
        for group in groups:
            pg_cpu = (
                {"postgres": servers.of(group.database_name)}
                if group.database == "postgresql"
                else None
            )
            through = measure(
                children,
                plan.load,
                group.target(),
                {**group.watch(), "mock": mocks.fast.pid},
                reset=[mocks.fast_base],
                log=log,
                phases=PHASES,
                groups=pg_cpu,
            )
            for phase, result in through.items():
                out.through[group.name][phase].append(result)
        for group in groups:
            samples = asyncio.run(lock_share(group, per_round))
            for key, values in samples.items():
                out.locks[group.name].setdefault(key, []).extend(values)
            refused = lock_figures(samples).get("refused_on_all_others", {})
            log(f"{group.name:<14} {per_round} lock rounds: refused on all {refused}")
        now = time.monotonic()
        if index + 1 < plan.load.rounds and now + (now - round_started) > started + plan.budget_s:
            log(f"time budget ({plan.budget_s:.0f} s) reached after {index + 1} round(s)")
            break
    return out


def run(plan: RunPlan, work: Path, log: Callable[[str], None], *, detect: bool) -> dict[str, Any]:
    started = time.monotonic()
    info = machine_info(work)
    pg_targets = sum(1 for _, db, _ in TARGETS if db == "postgresql")
    with (
        terminate_on_signals(),
        databases(pg_targets) as urls,
        Children(work) as children,
        contextlib.closing(ServerProcesses()) as servers,
    ):
        groups: list[Group] = []
        try:
            mocks = start_mocks(children, plan.load)
            fast_port = int(mocks.fast_base.rsplit(":", 1)[1])
            free_urls = iter(urls)
            for name, db, n in TARGETS:
                url = next(free_urls) if db == "postgresql" else None
                groups.append(start_group(children, work / name, name, url, n, detect=detect))
            for group in groups:
                for child, base in zip(group.replicas, group.bases, strict=True):
                    wait_http(base + "/readyz", child, READY_TIMEOUT_S)
                asyncio.run(seed_group(group, mocks.fast_base, fast_port))
            log(f"targets up in {time.monotonic() - started:.0f} s")
            measured = measure_rounds(children, plan, mocks, groups, servers, log, started)
        except RunTimeLimit:
            raise
        except Exception:
            for child in (c for g in groups for c in g.replicas):
                log(f"--- {child.name}: end of its log ---\n{child.log_tail()}")
            raise
        finally:
            # The time limit ends the measuring only: stopping the processes and dropping
            # the databases (which waits for a checkpoint) are never cut short.
            signal.setitimer(signal.ITIMER_REAL, 0)
        for group in groups:  # graceful: the audit writers flush and close
            for child in group.replicas:
                children.stop(child, signal.SIGINT)
        audits = {g.name: audit_counts(g.url) for g in groups}
        log("replicas stopped, audit records counted")
    log("children stopped, databases dropped")
    figures = {
        g.name: group_figures(
            g, measured.through[g.name], measured.direct, measured.locks[g.name], audits[g.name]
        )
        for g in groups
    }
    return {
        "machine": info,
        "plan": asdict(plan),
        "detect": detect,
        "direct": {p: latency(measured.direct[p]) for p in PHASES},
        "targets": figures,
        "raw": {
            "direct": {p: [asdict(r) for r in rs] for p, rs in measured.direct.items()},
            "targets": {
                name: {p: [asdict(r) for r in rs] for p, rs in phases.items()}
                for name, phases in measured.through.items()
            },
        },
    }


def print_report(report: Mapping[str, Any]) -> None:
    d = report["direct"]
    rounds = min(t["rounds"] for t in report["targets"].values())
    print(
        f"\nmedians of {rounds} round(s); direct to the mock: "
        f"c=1 p50 {d['nonstream_c1']['p50']:.3f} ms, "
        f"p99 {d['nonstream_c1']['p99']:.3f} ms; c=32 {d['nonstream_c32']['rps']:.0f} calls/s"
    )
    header = (
        f"{'target':<14} {'calls/s c32':>11} {'CPU gw ms':>10} {'CPU pg ms':>10} "
        f"{'+p50 c1':>8} {'+p99 c1':>8} {'lock p50':>9} {'lock p99':>9} {'audited':>13}"
    )
    print(header)
    print("-" * len(header))
    for name, t in report["targets"].items():
        cpu = t["cpu_ms_per_call_c32"]
        lock = t["lock"].get("refused_on_all_others", {})
        audit = t["audit"]
        print(
            f"{name:<14} {t['rps_c32']:>11.0f} {cpu['gateways']:>10.3f} "
            f"{cpu.get('postgres', float('nan')):>10.3f} {t['added_ms_c1']['p50']:>8.3f} "
            f"{t['added_ms_c1']['p99']:>8.3f} {lock.get('p50_ms', float('nan')):>9.1f} "
            f"{lock.get('p99_ms', float('nan')):>9.1f} "
            f"{audit['request_allowed']:>6}/{audit['calls_sent']:<6}"
        )
    print("(CPU per call at c=32; lock: placed through A → refused on every other replica, ms)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts (smoke check)")
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 3; quick 1)")
    parser.add_argument(
        "--no-detect", action="store_true", help="detection off on every replica (default on)"
    )
    opts = parser.parse_args(argv)
    # SIGINT ends the run cleanly (children killed, databases dropped) even when the shell
    # that started it in the background had it ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    def over_time(_signum: int, _frame: object) -> None:
        raise RunTimeLimit(f"stopped at the run's limit of {plan.limit_s:.0f} s")

    plan = QUICK if opts.quick else FULL
    if opts.rounds:
        plan = replace(plan, load=replace(plan.load, rounds=opts.rounds))
    started = time.monotonic()

    def log(line: str) -> None:
        print(f"[{time.monotonic() - started:6.1f} s] {line}", flush=True)

    signal.signal(signal.SIGALRM, over_time)
    signal.setitimer(signal.ITIMER_REAL, plan.limit_s)
    try:
        with tempfile.TemporaryDirectory(prefix="garrison-replicas-") as tmp:
            report = run(plan, Path(tmp), log, detect=not opts.no_detect)
    except KeyboardInterrupt:
        print("interrupted: every child stopped, the run's databases dropped", file=sys.stderr)
        return 130
    except RunTimeLimit as exc:
        print(f"{exc}: every child stopped, the run's databases dropped", file=sys.stderr)
        return 124
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    print_report(report)
    report["elapsed_s"] = time.monotonic() - started
    print(f"\nfinished in {report['elapsed_s']:.0f} s")
    if opts.json:
        opts.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
