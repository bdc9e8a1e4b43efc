"""The shared load generator, and the harness that drives it from the benchmark scripts.

Two halves live here:

* ``python -m bench.loadgen --spec JSON`` is the load generator *process*: an aiohttp client
  on uvloop with a keep-alive pool of ``concurrency`` connections. It sends ``warmup``
  requests, prints ``{"event": "warm"}`` and waits for one line on stdin, then sends a fixed
  number of requests (``concurrency`` workers pulling from one counter) and prints one JSON
  result line. In ``hold`` mode it instead opens ``requests`` streams at once (ramped in
  batches), prints ``{"event": "held"}`` when every one of them is open at the same time,
  and reads them all to their end.
* The harness (``Children``, ``run_phase`` and the ``/proc`` readers) starts the processes,
  reads the CPU time of the measured processes from ``/proc/PID/stat`` right before it
  releases the measured phase and right after the result arrives, samples resident memory
  while streams are held, and kills every child it started, even on error.

Every run is bounded: a fixed request count, a per-request timeout and an overall deadline
in the load generator, and a deadline on every wait in the harness.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import queue
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

REPO_ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
# File descriptors wanted by every child: 1,000 held streams need ~2,000 sockets in a proxy.
NOFILE_WANTED = 65_536
# How long the harness waits for a child to answer on its port.
STARTUP_TIMEOUT_S = 30.0
# Grace between SIGTERM and SIGKILL when stopping children.
STOP_GRACE_S = 3.0
# Before a phase, wait (at most QUIET_MAX_WAIT_S) until the machine's non-idle CPU over
# QUIET_WINDOW_S is below QUIET_BUSY_CORES: other work on the machine skews every figure.
QUIET_BUSY_CORES = 0.25
QUIET_WINDOW_S = 0.5
QUIET_MAX_WAIT_S = 60.0
# How often resident memory is sampled while streams are held.
RSS_SAMPLE_INTERVAL_S = 0.01


# ── what one run asks for and what it reports ──────────────────────────────────────────────
@dataclass(frozen=True)
class LoadSpec:
    url: str
    body: str
    concurrency: int
    requests: int
    warmup: int
    stream: bool = False
    hold: bool = False
    headers: Mapping[str, str] = field(default_factory=dict)
    request_timeout_s: float = 30.0
    deadline_s: float = 120.0  # the whole run (warm-up and measured phase) stops by then
    ramp_batch: int = 100  # hold mode: streams opened per batch
    ramp_interval_s: float = 0.02  # hold mode: pause between batches
    # More URLs of the same service (replicas): each call goes to the next of ``url`` and
    # these in turn, as a round-robin HTTP load balancer sends them.
    spread_urls: tuple[str, ...] = ()

    def to_json(self) -> str:
        data = asdict(self)
        data["headers"] = dict(self.headers)
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> LoadSpec:
        data = json.loads(text)
        data["spread_urls"] = tuple(data.get("spread_urls", ()))
        return cls(**data)

    @property
    def urls(self) -> tuple[str, ...]:
        return (self.url, *self.spread_urls)


def percentile(ordered: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default) of sorted values."""
    if not ordered:
        return math.nan
    k = (len(ordered) - 1) * q / 100.0
    lo = math.floor(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summarize_ns(values_ns: Sequence[int]) -> dict[str, float]:
    """p50/p90/p99/max/mean in milliseconds."""
    ordered = sorted(v / 1e6 for v in values_ns)
    if not ordered:
        return {"p50": math.nan, "p90": math.nan, "p99": math.nan, "max": math.nan}
    return {
        "p50": percentile(ordered, 50),
        "p90": percentile(ordered, 90),
        "p99": percentile(ordered, 99),
        "max": ordered[-1],
        "mean": sum(ordered) / len(ordered),
    }


# ── the load generator process ─────────────────────────────────────────────────────────────
class _Run:
    def __init__(self, spec: LoadSpec) -> None:
        self.spec = spec
        self.body = spec.body.encode()
        self.urls = spec.urls
        self.sent = 0  # calls started: the next one goes to urls[sent % len(urls)]
        self.headers = {"content-type": "application/json", **spec.headers}
        self.latencies: list[int] = []
        self.ttft: list[int] = []
        self.errors = 0
        self.error_samples: list[str] = []
        self.next_index = 0
        self.limit = 0
        self.open_streams = 0
        self.max_open = 0
        self.held_at: float | None = None
        self.all_open = asyncio.Event()

    def _error(self, text: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(text[:300])

    async def one(self, session: Any, record: bool) -> None:
        import aiohttp

        url = self.urls[self.sent % len(self.urls)]
        self.sent += 1
        started = time.perf_counter_ns()
        first: int | None = None
        try:
            async with session.post(url, data=self.body, headers=self.headers) as resp:
                if resp.status != 200:
                    self._error(f"status {resp.status}: {(await resp.read())[:200]!r}")
                    return
                if self.spec.stream:
                    tail = b""
                    async for chunk in resp.content.iter_any():
                        if first is None:
                            first = time.perf_counter_ns()
                            self._opened()
                        tail = (tail + chunk)[-64:]
                    if first is not None:
                        self._closed()
                    if b"[DONE]" not in tail and b"message_stop" not in tail:
                        self._error(f"stream ended without its last event: {tail!r}")
                        return
                else:
                    await resp.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            if first is not None:
                self._closed()
            self._error(f"{type(exc).__name__}: {exc}")
            return
        if record:
            self.latencies.append(time.perf_counter_ns() - started)
            if first is not None:
                self.ttft.append(first - started)

    def _opened(self) -> None:
        self.open_streams += 1
        if self.open_streams > self.max_open:
            self.max_open = self.open_streams
        if self.spec.hold and self.open_streams >= self.spec.requests and self.held_at is None:
            self.held_at = time.monotonic()
            self.all_open.set()

    def _closed(self) -> None:
        self.open_streams -= 1

    async def workers(self, session: Any, count: int, record: bool) -> None:
        self.next_index = 0
        self.limit = count

        async def worker() -> None:
            while self.next_index < self.limit:
                self.next_index += 1
                await self.one(session, record)

        await asyncio.gather(*(worker() for _ in range(self.spec.concurrency)))

    async def hold(self, session: Any) -> None:
        tasks: list[asyncio.Task[None]] = []
        spec = self.spec
        for start in range(0, spec.requests, spec.ramp_batch):
            for _ in range(min(spec.ramp_batch, spec.requests - start)):
                tasks.append(asyncio.create_task(self.one(session, True)))
            await asyncio.sleep(spec.ramp_interval_s)

        async def announce() -> None:
            await self.all_open.wait()
            emit({"event": "held", "open": self.open_streams})

        announcer = asyncio.create_task(announce())
        await asyncio.gather(*tasks)
        announcer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await announcer


def emit(data: Mapping[str, Any]) -> None:
    sys.stdout.write(json.dumps(data) + "\n")
    sys.stdout.flush()


async def _generate(spec: LoadSpec) -> dict[str, Any]:
    import aiohttp

    run = _Run(spec)
    per_host = max(spec.concurrency, spec.requests if spec.hold else 0)
    pool = per_host * len(spec.urls)  # every replica may hold a kept-alive connection per worker
    connector = aiohttp.TCPConnector(limit=pool, limit_per_host=per_host, keepalive_timeout=120)
    timeout = aiohttp.ClientTimeout(total=spec.request_timeout_s)
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, auto_decompress=False
    ) as session:
        warm_spec = run.spec
        if spec.hold:  # warm-up in hold mode: a few ordinary streams, one connection at a time
            run.spec = LoadSpec(**{**asdict(spec), "hold": False, "concurrency": 1})
        await run.workers(session, spec.warmup, record=False)
        run.spec = warm_spec
        run.max_open = 0
        warm_errors = run.errors
        emit({"event": "warm", "errors": warm_errors, "error_samples": run.error_samples})
        line = await asyncio.to_thread(sys.stdin.readline)
        if line.strip() != "go":
            return {"event": "result", "aborted": True}
        run.errors, run.error_samples = 0, []
        started = time.perf_counter_ns()
        if spec.hold:
            await run.hold(session)
        else:
            await run.workers(session, spec.requests, record=True)
        wall_ns = time.perf_counter_ns() - started
    result: dict[str, Any] = {
        "event": "result",
        "ok": len(run.latencies),
        "errors": run.errors,
        "warmup_errors": warm_errors,
        "error_samples": run.error_samples,
        "wall_s": wall_ns / 1e9,
        "rps": len(run.latencies) / (wall_ns / 1e9) if wall_ns else 0.0,
        "latency_ms": summarize_ns(run.latencies),
    }
    if spec.stream:
        result["ttft_ms"] = summarize_ns(run.ttft)
        result["max_open"] = run.max_open
    return result


def _loop_runner() -> Callable[[Any], Any]:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.run
    runner: Callable[[Any], Any] = uvloop.run
    return runner


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", required=True, help="LoadSpec as JSON")
    args = parser.parse_args(argv)
    spec = LoadSpec.from_json(args.spec)
    raise_nofile()

    async def bounded() -> dict[str, Any]:
        async with asyncio.timeout(spec.deadline_s):
            return await _generate(spec)

    try:
        result = _loop_runner()(bounded())
    except TimeoutError:
        emit({"event": "result", "aborted": True, "reason": f"deadline {spec.deadline_s}s"})
        return 1
    emit(result)
    return 0


# ── /proc readers ──────────────────────────────────────────────────────────────────────────
def raise_nofile() -> None:
    """Lift the soft file-descriptor limit towards ``NOFILE_WANTED`` (never above hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = NOFILE_WANTED if hard == resource.RLIM_INFINITY else min(NOFILE_WANTED, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def _stat_fields(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    # The command name is in parentheses and may contain spaces: split after its last ')'.
    return text[text.rindex(")") + 2 :].split()


def cpu_ticks(pid: int) -> int:
    """utime + stime of the whole process (all its threads), in clock ticks."""
    fields = _stat_fields(pid)
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)


def machine_busy_ticks() -> int:
    """Non-idle CPU time of the whole machine, all cores, in clock ticks (``/proc/stat``)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) for v in fields[:8]]  # user nice system idle iowait irq softirq steal
    return sum(values) - values[3] - values[4]


def wait_for_quiet(
    limit: float = QUIET_BUSY_CORES,
    window_s: float = QUIET_WINDOW_S,
    max_wait_s: float = QUIET_MAX_WAIT_S,
) -> float:
    """Wait until the machine is nearly idle; returns the busy cores of the last window."""
    deadline = time.monotonic() + max_wait_s
    while True:
        before = machine_busy_ticks()
        time.sleep(window_s)
        busy = (machine_busy_ticks() - before) / CLK_TCK / window_s
        if busy < limit or time.monotonic() >= deadline:
            return busy


def descendants(pid: int) -> list[int]:
    """``pid`` and every live process below it."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int(_stat_fields(int(entry.name))[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo.extend(children.get(current, []))
    return out


def main_thread_cpu_ticks(pid: int) -> int:
    """utime + stime of the main thread alone (its task id is the process id)."""
    text = Path(f"/proc/{pid}/task/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])


def pid_cpu_ticks(pids: Sequence[int]) -> dict[int, int]:
    """CPU ticks of each of ``pids`` still alive."""
    out = {}
    for p in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            out[p] = cpu_ticks(p)
    return out


def group_cpu_ticks(before: Mapping[int, int], pids_now: Sequence[int]) -> int:
    """Ticks a changing set of processes spent since ``before`` (pid -> ticks then): a
    process first seen now counts from its start, one gone since is lost from the figure."""
    now = pid_cpu_ticks(pids_now)
    return sum(t - before.get(p, 0) for p, t in now.items())


def tree_cpu_ticks(pid: int) -> int:
    total = 0
    for p in descendants(pid):
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += cpu_ticks(p)
    return total


def _status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def tree_rss_kb(pid: int) -> int:
    """VmRSS summed over ``pid`` and its descendants."""
    total = 0
    for p in descendants(pid):
        with contextlib.suppress(OSError, ValueError):
            total += _status_kb(p, "VmRSS")
    return total


def tree_hwm_kb(pid: int) -> int:
    """VmHWM (peak RSS since start or the last reset) summed over the tree."""
    total = 0
    for p in descendants(pid):
        with contextlib.suppress(OSError, ValueError):
            total += _status_kb(p, "VmHWM")
    return total


def reset_hwm(pid: int) -> bool:
    """Reset VmHWM to the current RSS (``clear_refs`` 5); False where not permitted."""
    ok = True
    for p in descendants(pid):
        try:
            Path(f"/proc/{p}/clear_refs").write_text("5")
        except OSError:
            ok = False
    return ok


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_url(url: str, timeout: float = 20.0) -> None:
    """Wait until ``url`` (on loopback) answers at all; RuntimeError after ``timeout``."""
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):  # noqa: S310 - loopback only
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


# ── child processes ────────────────────────────────────────────────────────────────────────
@dataclass
class Child:
    name: str
    proc: subprocess.Popen[str]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def _child_setup() -> None:  # runs in the child between fork and exec
    raise_nofile()


class Children:
    """Starts processes in their own session and kills each one's group on close."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.children: list[Child] = []

    def spawn(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        pipes: bool = False,
    ) -> Child:
        log_path = self.log_dir / f"{name}-{len(self.children)}.log"
        full_env = dict(os.environ)
        full_env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), full_env.get("PYTHONPATH", "")) if p
        )
        full_env.update(env or {})
        with log_path.open("w") as log:
            proc = subprocess.Popen(
                list(argv),
                cwd=REPO_ROOT,
                env=full_env,
                stdin=subprocess.PIPE if pipes else subprocess.DEVNULL,
                stdout=subprocess.PIPE if pipes else log,
                stderr=log,
                text=True,
                start_new_session=True,
                preexec_fn=_child_setup,
            )
        child = Child(name, proc, log_path)
        self.children.append(child)
        return child

    def stop(self, child: Child, first: signal.Signals = signal.SIGTERM) -> None:
        """``first`` to the child's process group, then SIGKILL after ``STOP_GRACE_S``."""
        proc = child.proc
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, first)
            try:
                proc.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(STOP_GRACE_S)
        # Anything the child left behind in its own group (e.g. granian's worker).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        if child in self.children:
            self.children.remove(child)

    def close(self) -> None:
        for child in reversed(list(self.children)):
            self.stop(child)

    def __enter__(self) -> Children:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def wait_http(url: str, child: Child, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
    """Poll ``url`` until it answers (any HTTP status), or fail with the child's log."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if child.proc.poll() is not None:
            raise RuntimeError(
                f"{child.name} exited ({child.proc.returncode}):\n{child.log_tail()}"
            )
        try:
            with urllib.request.urlopen(url, timeout=1.0):  # noqa: S310 - loopback URL
                return
        except urllib.error.HTTPError:
            return
        except (urllib.error.URLError, OSError):
            time.sleep(0.05)
    raise RuntimeError(f"{child.name} did not answer {url} within {timeout_s}s")


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


# ── one measured phase ─────────────────────────────────────────────────────────────────────
@dataclass
class PhaseResult:
    name: str
    spec: dict[str, Any]
    load: dict[str, Any]
    cpu_ms: dict[str, float]  # process name -> CPU ms spent during the measured phase
    cpu_ms_per_call: dict[str, float]
    wall_s: float
    machine_busy_cores: float  # all processes and the kernel, during the measured phase
    other_busy_cores: float  # of which not in the measured processes (kernel, other load)
    idle_before_cores: float  # the machine's busy cores just before the phase
    rss: dict[str, float] = field(default_factory=dict)  # hold mode: MB figures of ``rss_of``

    @property
    def ok(self) -> int:
        return int(self.load.get("ok", 0))


class _Lines:
    """Reads a child's stdout lines in a thread so waits can have deadlines."""

    def __init__(self, stream: IO[str]) -> None:
        self.items: queue.Queue[str | None] = queue.Queue()
        self.thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self.thread.start()

    def _pump(self, stream: IO[str]) -> None:
        with contextlib.suppress(ValueError, OSError):
            for line in stream:
                self.items.put(line)
        self.items.put(None)

    def next_event(self, deadline: float) -> dict[str, Any]:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("load generator did not answer in time")
            try:
                line = self.items.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise RuntimeError("load generator exited early")
            line = line.strip()
            if line.startswith("{"):
                data: dict[str, Any] = json.loads(line)
                return data


class _RssSampler:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_kb = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError, ValueError):
                self.peak_kb = max(self.peak_kb, tree_rss_kb(self.pid))
                self.samples += 1
            self._stop.wait(RSS_SAMPLE_INTERVAL_S)

    def __enter__(self) -> _RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run_phase(
    children: Children,
    name: str,
    spec: LoadSpec,
    watch: Mapping[str, int],
    rss_of: int | None = None,
    main_thread_of: Mapping[str, int] | None = None,
    quiet_max_wait_s: float = QUIET_MAX_WAIT_S,
    groups: Mapping[str, Callable[[], Sequence[int]]] | None = None,
) -> PhaseResult:
    """Run one load generator process and account the CPU of ``watch`` (name -> pid) over its
    measured phase. ``rss_of``: sample that process tree's memory while streams are held.
    ``main_thread_of`` (name -> pid): also account those processes' main threads alone.
    ``groups`` (name -> a function listing pids): processes found anew at each reading, such
    as the database server processes serving a gateway; see ``group_cpu_ticks``."""
    idle_before = wait_for_quiet(max_wait_s=quiet_max_wait_s)
    loadgen = children.spawn(
        f"loadgen-{name}", python_module("bench.loadgen", "--spec", spec.to_json()), pipes=True
    )
    assert loadgen.proc.stdout is not None and loadgen.proc.stdin is not None
    lines = _Lines(loadgen.proc.stdout)
    deadline = time.monotonic() + spec.deadline_s + 15.0
    try:
        warm = lines.next_event(deadline)
        if warm.get("event") != "warm":
            raise RuntimeError(f"unexpected event from load generator: {warm}")
        if warm.get("errors"):
            raise RuntimeError(f"{name}: warm-up failed: {warm}\n{loadgen.log_tail()}")
        pids = {**watch, "loadgen": loadgen.pid}
        rss: dict[str, float] = {}
        sampler: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
        if rss_of is not None:
            rss["baseline_mb"] = tree_rss_kb(rss_of) / 1024
            rss["hwm_reset"] = float(reset_hwm(rss_of))
            sampler = _RssSampler(rss_of)
        threads = {f"{k}_main_thread": p for k, p in (main_thread_of or {}).items()}

        def ticks() -> dict[str, int]:
            out = {k: tree_cpu_ticks(p) for k, p in pids.items()}
            out.update({k: main_thread_cpu_ticks(p) for k, p in threads.items()})
            return out

        before = ticks()
        groups_before = {k: pid_cpu_ticks(list_pids()) for k, list_pids in (groups or {}).items()}
        busy_before = machine_busy_ticks()
        t0 = time.perf_counter_ns()
        with sampler as sampling:
            loadgen.proc.stdin.write("go\n")
            loadgen.proc.stdin.flush()
            event = lines.next_event(deadline)
            if event.get("event") == "held" and rss_of is not None:
                rss["at_held_mb"] = tree_rss_kb(rss_of) / 1024
                rss["held_open"] = float(event.get("open", 0))
                event = lines.next_event(deadline)
        after = ticks()
        for k, list_pids in (groups or {}).items():
            before[k], after[k] = 0, group_cpu_ticks(groups_before[k], list_pids())
        busy_ms = (machine_busy_ticks() - busy_before) * 1000.0 / CLK_TCK
        wall_s = (time.perf_counter_ns() - t0) / 1e9
        if rss_of is not None:
            rss["sampled_peak_mb"] = sampling.peak_kb / 1024
            rss["hwm_mb"] = tree_hwm_kb(rss_of) / 1024
            rss["peak_mb"] = max(rss["sampled_peak_mb"], rss["hwm_mb"])
        if event.get("aborted"):
            raise RuntimeError(f"{name}: load generator aborted: {event}")
        loadgen.proc.wait(STARTUP_TIMEOUT_S)
    finally:
        children.stop(loadgen)
    ok = max(int(event.get("ok", 0)), 1)
    cpu_ms = {k: (after[k] - before[k]) * 1000.0 / CLK_TCK for k in before}
    processes_ms = sum(v for k, v in cpu_ms.items() if k in pids or k in (groups or {}))
    return PhaseResult(
        name=name,
        spec={k: v for k, v in asdict(spec).items() if k not in ("body", "headers")},
        load=event,
        cpu_ms=cpu_ms,
        cpu_ms_per_call={k: v / ok for k, v in cpu_ms.items()},
        wall_s=wall_s,
        machine_busy_cores=busy_ms / 1000 / wall_s,
        other_busy_cores=(busy_ms - processes_ms) / 1000 / wall_s,
        idle_before_cores=idle_before,
        rss=rss,
    )


@contextlib.contextmanager
def terminate_on_signals() -> Iterator[None]:
    """Turn SIGTERM/SIGHUP into SystemExit so ``Children`` still kills everything."""

    def handler(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


if __name__ == "__main__":
    raise SystemExit(main())
