"""What one HTTP request costs aiohttp, server side and client side, against a minimal one.

    python bench/http_stack_floor.py [--requests N] [--concurrency C] [--rounds R]

Issue 18 asks for the gateway's CPU per call at c=32 within 1.5x the bare aiohttp forwarder
(``bench/stacks.py``). This script measures how much of that forwarder is aiohttp itself, so
the gateway's own share can be told apart from its HTTP stack's:

* **server:** CPU per request of a server process answering every POST with the bench's
  383-byte ``chat.completion``: aiohttp's ``web.Application`` (one route, no middleware, as
  the bare forwarder) against a minimal keep-alive HTTP/1.1 server on ``httptools`` (llhttp,
  what uvicorn parses with). The load is the minimal client below, in another process; the
  server's CPU is read from ``/proc`` (all threads, user + system).
* **client:** CPU per request of a client process making the calls, against ``garrison
  mock-upstream`` (16 tokens, no delay between stream chunks): aiohttp's ``ClientSession``
  (as the bare forwarder and the gateway use it) against a minimal keep-alive client on
  ``httptools``, plain answers and 20-event streams.

The minimal server and client are measuring instruments, not candidates: no timeouts, no
limits, no error handling, no TLS. What they show is a lower bound on what an HTTP stack
written for the job could cost, not a stack the gateway could ship.

``httptools`` is not a Garrison dependency: install it into the environment that runs this
script (``pip install httptools``); without it only the aiohttp rows are measured.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from statistics import median
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.loadgen import cpu_ticks, free_port

ANSWER = (
    b'{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"bench-model",'
    b'"choices":[{"index":0,"message":{"role":"assistant","content":"' + b"x" * 200 + b'"},'
    b'"finish_reason":"stop"}],"usage":{"prompt_tokens":10,"completion_tokens":16,'
    b'"total_tokens":26}}'
)
BODY = (
    b'{"model":"mock-small","messages":[{"role":"user",'
    b'"content":"Summarise the quarterly report in two sentences."}]}'
)
STREAM_BODY = BODY[:-1] + b',"stream":true}'
PATH = b"/v1/chat/completions"
WARM_UP = 20  # requests per worker before the timed ones (connections made, caches warm)
TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def have_httptools() -> bool:
    try:
        import httptools  # noqa: F401
    except ImportError:
        return False
    return True


class _ServerConn(asyncio.Protocol):
    """Minimal server connection: parse with llhttp, answer each request with ANSWER."""

    def __init__(self) -> None:
        import httptools

        self._parser = httptools.HttpRequestParser(self)
        self._transport: Any = None
        self._head = (
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
        )

    def connection_made(self, transport: Any) -> None:
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._parser.feed_data(data)

    def on_message_complete(self) -> None:
        self._transport.write(self._head % len(ANSWER) + ANSWER)


async def _serve(kind: str, port: int) -> None:
    if kind == "aiohttp":
        from aiohttp import web

        async def handler(request: web.Request) -> web.Response:
            await request.read()
            return web.Response(body=ANSWER, content_type="application/json")

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, backlog=2048).start()
    else:
        await asyncio.get_running_loop().create_server(_ServerConn, "127.0.0.1", port, backlog=2048)
    await asyncio.Event().wait()


class _ClientConn(asyncio.Protocol):
    """Minimal keep-alive client connection; body pieces counted, not kept."""

    def __init__(self) -> None:
        self.transport: Any = None
        self.parser: Any = None
        self.waiter: asyncio.Future[None] | None = None
        self.done = False
        self.pieces = 0

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_body(self, body: bytes) -> None:
        self.pieces += 1

    def on_message_complete(self) -> None:
        self.done = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.on_message_complete()


class _MinimalClient:
    def __init__(self, host: str, port: int) -> None:
        self._host, self._port = host, port
        self._idle: list[_ClientConn] = []
        self._head = (
            b"POST " + PATH + b" HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n"
        )

    async def post(self, body: bytes) -> int:
        import httptools

        loop = asyncio.get_running_loop()
        if self._idle:
            conn = self._idle.pop()
        else:
            _, conn = await loop.create_connection(_ClientConn, self._host, self._port)
        conn.parser = httptools.HttpResponseParser(conn)
        conn.done, conn.pieces = False, 0
        conn.transport.write(self._head % (self._host.encode(), len(body)) + body)
        while not conn.done:
            conn.waiter = loop.create_future()
            await conn.waiter
        self._idle.append(conn)
        return conn.pieces

    async def close(self) -> None:
        for conn in self._idle:
            conn.transport.close()


def _aiohttp_client(port: int, stream: bool) -> tuple[Callable[[], Any], Callable[[], Any]]:
    import aiohttp

    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=256),
        auto_decompress=False,
        skip_auto_headers=("User-Agent",),
    )
    url = f"http://127.0.0.1:{port}{PATH.decode()}"
    body = STREAM_BODY if stream else BODY
    headers = {"content-type": "application/json"}

    async def one() -> None:
        async with session.post(url, data=body, headers=headers) as resp:
            if stream:
                async for _ in resp.content.iter_any():
                    pass
            else:
                await resp.read()

    return one, session.close


def _minimal_client(port: int, stream: bool) -> tuple[Callable[[], Any], Callable[[], Any]]:
    client = _MinimalClient("127.0.0.1", port)
    body = STREAM_BODY if stream else BODY

    async def one() -> None:
        await client.post(body)

    return one, client.close


async def _load(one: Callable[[], Any], requests: int, concurrency: int) -> float:
    """Run ``requests`` calls ``concurrency`` at a time (after a warm-up); wall seconds."""

    async def worker(count: int) -> None:
        for _ in range(count):
            await one()

    await asyncio.gather(*(worker(WARM_UP) for _ in range(concurrency)))
    start = time.perf_counter()
    await asyncio.gather(*(worker(requests // concurrency) for _ in range(concurrency)))
    return time.perf_counter() - start


async def _client_round(kind: str, port: int, stream: bool, requests: int, c: int) -> float:
    make = _aiohttp_client if kind == "aiohttp" else _minimal_client
    one, close = make(port, stream)

    async def warm() -> None:
        await _load(one, c, c)

    await warm()
    cpu0 = time.process_time()
    await _load(one, requests, c)
    cpu = time.process_time() - cpu0
    await close()
    # The warm-up inside _load is not timed by the wall clock but is counted by process_time.
    return cpu / (_timed(requests, c) + WARM_UP * c) * 1e6


async def _server_round(server_pid: int, port: int, requests: int, c: int) -> float:
    client = _MinimalClient("127.0.0.1", port)

    async def one() -> None:
        await client.post(BODY)

    await _load(one, c, c)
    ticks0 = cpu_ticks(server_pid)
    await _load(one, requests, c)
    ticks = cpu_ticks(server_pid) - ticks0
    await client.close()
    return ticks / TICKS_PER_S / (_timed(requests, c) + WARM_UP * c) * 1e6


def _timed(requests: int, concurrency: int) -> int:
    """The calls ``_load`` times: whole rounds of ``concurrency`` workers."""
    return requests // concurrency * concurrency


def _spawn(argv: Sequence[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, *argv], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
    )


def _wait_port(port: int, proc: subprocess.Popen[bytes], within_s: float = 30.0) -> None:
    import socket

    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listened on {port} within {within_s} s")


def _run_loop(coro: Any) -> Any:
    import uvloop

    return uvloop.run(coro)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--serve", choices=("aiohttp", "httptools"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        _run_loop(_serve(args.serve, args.port))
        return 0
    kinds = ["aiohttp", "httptools"] if have_httptools() else ["aiohttp"]
    if len(kinds) == 1:
        print("httptools is not installed: only aiohttp is measured (pip install httptools)")
    if not have_httptools():
        print("the load for the server rows needs httptools: server rows skipped")
    results: dict[str, list[float]] = {}
    here = str(Path(__file__).resolve())
    for _ in range(args.rounds):
        # Server side: each kind of server in its own process, the same minimal load.
        for kind in kinds if have_httptools() else []:
            port = free_port()
            proc = _spawn([here, "--serve", kind, "--port", str(port)])
            try:
                _wait_port(port, proc)
                figure = _run_loop(_server_round(proc.pid, port, args.requests, args.concurrency))
            finally:
                proc.terminate()
                proc.wait(10)
            results.setdefault(f"server {kind}, plain", []).append(figure)
        # Client side: against the mock upstream (16 tokens, no delay between chunks).
        port = free_port()
        mock = _spawn(
            ["-m", "garrison.cli.main", "mock-upstream", "--port", str(port), "--tokens", "16"]
        )
        try:
            _wait_port(port, mock)
            for stream in (False, True):
                for kind in kinds:
                    figure = _run_loop(
                        _client_round(kind, port, stream, args.requests // 4, args.concurrency)
                    )
                    label = f"client {kind}, {'20-event stream' if stream else 'plain'}"
                    results.setdefault(label, []).append(figure)
        finally:
            mock.terminate()
            mock.wait(10)
    print(f"CPU per request, c={args.concurrency}, {args.rounds} rounds (µs: min / median)")
    for label, figures in results.items():
        print(f"  {label:36s} {min(figures):7.1f} / {median(figures):7.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
