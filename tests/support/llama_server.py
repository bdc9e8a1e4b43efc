"""Run llama-cpp-python's OpenAI-compatible server on a tiny local model, for tests.

Typical fixture::

    @pytest.fixture(scope="module")
    def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
        yield from serve_tiny_llama(tmp_path_factory)

or directly::

    with LlamaServer(tmp_path) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="unused")

The model is written by :func:`tests.support.tiny_gguf.write_tiny_gguf`; nothing is
downloaded. The only reason this helper skips a test is that llama-cpp-python[server] is
not installed; any other problem (a server that crashes or never becomes ready) is an
error that carries the server log.
"""

from __future__ import annotations

import contextlib
import http.client
import importlib.util
import os
import pathlib
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import IO, Final, Self

import pytest

from .tiny_gguf import write_tiny_gguf

DEFAULT_MODEL_ALIAS: Final = "tiny-llama"
DEFAULT_STARTUP_TIMEOUT: Final = 60.0
DEFAULT_STOP_TIMEOUT: Final = 10.0
N_CTX: Final = 256

# Importable modules that `python -m llama_cpp.server` needs (the [server] extra).
_REQUIRED_MODULES: Final = (
    "llama_cpp",
    "fastapi",
    "uvicorn",
    "sse_starlette",
    "starlette_context",
    "pydantic_settings",
)
_LOG_TAIL_CHARS: Final = 8000
# Loopback requests must never go through an HTTP proxy taken from the environment.
_NO_PROXY_OPENER: Final = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class LlamaServerError(RuntimeError):
    """The server process exited early or did not become ready in time."""


def llama_cpp_missing_reason() -> str | None:
    """Why llama-cpp-python[server] cannot be used, or None when it is installed."""
    missing = [name for name in _REQUIRED_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        return "missing module(s): " + ", ".join(missing)
    return None


def require_llama_cpp() -> None:
    """Skip the calling test when llama-cpp-python[server] is not installed."""
    reason = llama_cpp_missing_reason()
    if reason is not None:
        pytest.skip(f"llama-cpp-python[server] is not installed: {reason}")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class LlamaServer:
    """`python -m llama_cpp.server` serving the tiny random model on 127.0.0.1.

    ``workdir`` receives the model file (``tiny-llama.gguf``) and the server log
    (``llama-server.log``). ``embedding=True`` (the default) passes ``--embedding true``,
    which ``/v1/embeddings`` needs; chat and completions work unchanged in that mode (same
    greedy output). With ``embedding=False`` ``/v1/embeddings`` answers HTTP 500.
    """

    def __init__(
        self,
        workdir: pathlib.Path,
        *,
        embedding: bool = True,
        model_alias: str = DEFAULT_MODEL_ALIAS,
        seed: int = 0,
        startup_timeout: float = DEFAULT_STARTUP_TIMEOUT,
        stop_timeout: float = DEFAULT_STOP_TIMEOUT,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.workdir = pathlib.Path(workdir)
        self.embedding = embedding
        self.model_alias = model_alias
        self.seed = seed
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.extra_args = tuple(extra_args)
        self.model_path = self.workdir / "tiny-llama.gguf"
        self.log_path = self.workdir / "llama-server.log"
        self.port: int | None = None
        self.model_write_seconds: float | None = None
        self.startup_seconds: float | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    # -- public API -----------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """OpenAI-style base URL, e.g. ``http://127.0.0.1:PORT/v1``."""
        if self.port is None:
            raise RuntimeError("LlamaServer is not running")
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def origin(self) -> str:
        """``http://127.0.0.1:PORT`` (no path)."""
        if self.port is None:
            raise RuntimeError("LlamaServer is not running")
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def read_log(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def command(self) -> list[str]:
        if self.port is None:
            raise RuntimeError("no port chosen yet")
        return [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(self.model_path),
            "--model_alias",
            self.model_alias,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--interrupt_requests",
            "false",
            "--n_ctx",
            str(N_CTX),
            "--n_batch",
            str(N_CTX),
            "--n_threads",
            "1",
            "--n_threads_batch",
            "1",
            "--seed",
            str(self.seed),
            "--embedding",
            "true" if self.embedding else "false",
            *self.extra_args,
        ]

    def start(self) -> Self:
        """Write the model, start the server and wait until ``GET /v1/models`` answers."""
        if self._process is not None:
            raise RuntimeError("LlamaServer already started")
        require_llama_cpp()
        self.workdir.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        write_tiny_gguf(self.model_path, seed=self.seed)
        self.model_write_seconds = time.perf_counter() - started

        started = time.perf_counter()
        self.port = _free_port()
        self._log_file = self.log_path.open("wb")
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        self._process = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            env=env,
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.perf_counter() - started
        return self

    def stop(self) -> None:
        """Terminate the server (SIGTERM, then SIGKILL after ``stop_timeout``)."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=self.stop_timeout)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- internals ------------------------------------------------------------------------

    def _failure(self, what: str) -> LlamaServerError:
        log = self.read_log()
        if len(log) > _LOG_TAIL_CHARS:
            log = "...\n" + log[-_LOG_TAIL_CHARS:]
        return LlamaServerError(
            f"{what}\ncommand: {' '.join(self.command())}\nlog ({self.log_path}):\n{log}"
        )

    def _wait_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self.startup_timeout
        url = f"{self.base_url}/models"
        while True:
            returncode = self._process.poll()
            if returncode is not None:
                raise self._failure(f"llama_cpp.server exited with code {returncode} on startup")
            with (
                contextlib.suppress(OSError, http.client.HTTPException),
                _NO_PROXY_OPENER.open(url, timeout=2.0) as response,
            ):
                if response.status == 200:
                    return
            if time.monotonic() > deadline:
                raise self._failure(
                    f"llama_cpp.server not ready after {self.startup_timeout:g}s ({url})"
                )
            time.sleep(0.1)


@contextlib.contextmanager
def running_llama_server(
    workdir: pathlib.Path,
    *,
    embedding: bool = True,
    model_alias: str = DEFAULT_MODEL_ALIAS,
    seed: int = 0,
    extra_args: Sequence[str] = (),
) -> Iterator[LlamaServer]:
    """Context manager: a started :class:`LlamaServer`, stopped on exit."""
    with LlamaServer(
        workdir, embedding=embedding, model_alias=model_alias, seed=seed, extra_args=extra_args
    ) as server:
        yield server


def serve_tiny_llama(
    tmp_path_factory: pytest.TempPathFactory,
    *,
    embedding: bool = True,
    model_alias: str = DEFAULT_MODEL_ALIAS,
    seed: int = 0,
    extra_args: Sequence[str] = (),
) -> Iterator[LlamaServer]:
    """Generator for (module/session scoped) fixtures: ``yield from serve_tiny_llama(f)``."""
    workdir = tmp_path_factory.mktemp("llama")
    with running_llama_server(
        workdir, embedding=embedding, model_alias=model_alias, seed=seed, extra_args=extra_args
    ) as server:
        yield server
