"""An OpenAI- and Anthropic-compatible mock model server on aiohttp.

It stands in for a real LLM upstream behind the gateway: answers are deterministic, every
request is recorded (``seen``), and special model names trigger failure modes (``fail-400``,
``fail-500``, ``hang``, ``slow-stream``, ``drop``). Responses deliberately carry headers and
error details a real upstream would leak, so gateway tests can check that they are scrubbed.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from . import responses as r
from .wire import (
    ANTHROPIC_PATH,
    Reject,
    add_leaky_headers,
    api_error,
    bad_request,
    include_usage,
    is_anthropic,
    json_response,
    lower_headers,
    read_json,
    require_messages,
)

# Largest request body accepted: tests send oversized prompts to exercise gateway limits.
CLIENT_MAX_SIZE = 64 * 1024 * 1024
# How long `hang` sleeps before answering: far past any sane gateway timeout.
HANG_SECONDS = 3600.0
# Chunks sent by `slow-stream`: enough that a test always cuts the stream in the middle.
SLOW_STREAM_CHUNKS = 10_000
# Seconds between `slow-stream` chunks: slow enough to cut, fast enough to see progress.
SLOW_STREAM_DELAY_S = 0.02
# Grace period for handlers at shutdown (stop() disconnects in-flight ones first): fast teardown.
SHUTDOWN_TIMEOUT_S = 0.5
# Body length `drop` announces but never delivers, so clients see a truncated answer.
DROP_DECLARED_LENGTH = 4096

# Model names that select a failure mode; any other name is a normal deterministic model.
FAIL_400 = "fail-400"
FAIL_500 = "fail-500"
HANG = "hang"
SLOW_STREAM = "slow-stream"
DROP = "drop"

# Control endpoints for out-of-process tests; not recorded, not authenticated.
CONTROL_PREFIX = "/_mock/"

# Marks a request whose cancellation is already recorded, so it is recorded once.
_CANCEL_HANDLED = web.RequestKey("garrison_mock_cancel_handled", bool)


@dataclass(frozen=True)
class MockConfig:
    """Behaviour of a :class:`MockUpstream`."""

    latency_ms: float = 0.0  # delay before the first byte of the answer
    tokens: int = 16  # completion tokens per answer
    chunk_delay_ms: float = 0.0  # delay between stream chunks
    expected_api_key: str | None = None  # if set, requests must carry it, else 401


@dataclass(frozen=True)
class SeenRequest:
    """One request as the mock received it (``request_id`` is ``""`` if the header was absent)."""

    path: str
    request_id: str
    headers: dict[str, str]
    body: bytes


class MockUpstream:
    """A mock LLM upstream: serve :meth:`app`, or run it with :meth:`start` / :meth:`stop`."""

    def __init__(self, config: MockConfig = MockConfig()) -> None:
        self.config = config
        self.seen: list[SeenRequest] = []
        self.seen_request_ids: list[str] = []
        self.cancelled_request_ids: list[str] = []
        self.host: str | None = None
        self.port: int | None = None
        self._runner: web.AppRunner | None = None
        self._in_flight: dict[int, web.Request] = {}  # by id(): requests are unhashable

    # --- lifecycle ---------------------------------------------------------------------

    def app(self) -> web.Application:
        """A fresh application bound to this instance's config and recorded state."""
        app = web.Application(client_max_size=CLIENT_MAX_SIZE, middlewares=[self._middleware()])
        app.on_response_prepare.append(add_leaky_headers)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_post(ANTHROPIC_PATH, self._messages)
        app.router.add_get(CONTROL_PREFIX + "seen", self._control_seen)
        app.router.add_post(CONTROL_PREFIX + "reset", self._control_reset)
        return app

    def reset(self) -> None:
        """Forget every recorded request and cancellation."""
        self.seen.clear()
        self.seen_request_ids.clear()
        self.cancelled_request_ids.clear()

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Serve on the running loop; returns the bound port (useful with ``port=0``)."""
        if self._runner is not None:
            raise RuntimeError("MockUpstream is already started")
        runner = web.AppRunner(
            self.app(),
            handler_cancellation=True,  # so `hang` / `slow-stream` see client disconnects
            shutdown_timeout=SHUTDOWN_TIMEOUT_S,
            access_log=None,
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.host = host
        self.port = int(runner.addresses[0][1])
        return self.port

    async def stop(self) -> None:
        """Stop serving; in-flight requests are disconnected, so their handlers are cancelled."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        # Drop in-flight connections first so `hang` handlers are cancelled right away
        # instead of holding shutdown for the graceful timeout.
        for request in list(self._in_flight.values()):
            if request.transport is not None:
                request.transport.close()
        await runner.cleanup()

    async def __aenter__(self) -> MockUpstream:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        """``http://host:port`` of the running server (no ``/v1`` suffix)."""
        if self.port is None:
            raise RuntimeError("MockUpstream is not started")
        return f"http://{self.host}:{self.port}"

    # --- recording, auth, cancellation ---------------------------------------------------

    def _middleware(self) -> Middleware:
        @web.middleware
        async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
            if request.path.startswith(CONTROL_PREFIX):
                return await handler(request)
            request_id = request.headers.get("x-request-id", "")
            try:
                body = await request.read()
            except web.HTTPException:
                self._record(request, request_id, b"")
                raise
            self._record(request, request_id, body)
            if not self._authorized(request):
                return api_error(
                    request,
                    401,
                    "Incorrect API key provided.",
                    openai_type="invalid_request_error",
                    anthropic_type="authentication_error",
                    code="invalid_api_key",
                )
            self._in_flight[id(request)] = request
            try:
                return await handler(request)
            except Reject as reject:
                return reject.response
            except asyncio.CancelledError:
                self._record_cancelled(request)
                raise
            finally:
                self._in_flight.pop(id(request), None)

        return middleware

    def _record(self, request: web.Request, request_id: str, body: bytes) -> None:
        self.seen_request_ids.append(request_id)
        headers = lower_headers(request.headers)
        self.seen.append(SeenRequest(request.path, request_id, headers, body))

    def _record_cancelled(self, request: web.Request) -> None:
        if not request.get(_CANCEL_HANDLED, False):
            request[_CANCEL_HANDLED] = True
            self.cancelled_request_ids.append(request.headers.get("x-request-id", ""))

    def _authorized(self, request: web.Request) -> bool:
        expected = self.config.expected_api_key
        if expected is None:
            return True
        auth = request.headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        candidates = [request.headers.get("x-api-key", "")]
        if scheme.lower() == "bearer":
            candidates.append(token.strip())
        return any(secrets.compare_digest(c.encode(), expected.encode()) for c in candidates)

    # --- shared answer logic --------------------------------------------------------------

    async def _answer(
        self,
        request: web.Request,
        model: str,
        *,
        stream: bool,
        build: Callable[[int], r.JsonObject],
        build_events: Callable[[int], Iterator[bytes]] | None = None,
    ) -> web.StreamResponse:
        """Apply latency and the model's failure mode, then answer (streamed or not)."""
        if self.config.latency_ms > 0:
            await asyncio.sleep(self.config.latency_ms / 1000)
        if model == FAIL_400:
            return self._fail_400(request)
        if model == FAIL_500:
            message = f"The server had an error while processing your request. {r.LEAK_TRACE}"
            return api_error(
                request, 500, message, openai_type="server_error", anthropic_type="api_error"
            )
        if model == HANG:
            await asyncio.sleep(HANG_SECONDS)
        if model == DROP:
            return await self._drop(request, stream)
        tokens, delay_s = self.config.tokens, self.config.chunk_delay_ms / 1000
        if model == SLOW_STREAM:
            tokens, delay_s = SLOW_STREAM_CHUNKS, SLOW_STREAM_DELAY_S
        if stream and build_events is not None:
            return await self._stream(request, build_events(tokens), delay_s)
        if model == SLOW_STREAM:
            await asyncio.sleep(tokens * delay_s)  # as long as the stream would have taken
        return json_response(build(tokens))

    def _fail_400(self, request: web.Request) -> web.Response:
        where = f"upstream host {r.LEAK_HOST}, org {r.LEAK_ORG}"
        if is_anthropic(request):
            message = f"prompt is too long: maximum context length is {r.CONTEXT_LIMIT} tokens"
        else:
            message = f"This model's maximum context length is {r.CONTEXT_LIMIT} tokens"
        return api_error(
            request,
            400,
            f"{message} ({where}). Please reduce the length of the messages.",
            openai_type="invalid_request_error",
            anthropic_type="invalid_request_error",
            param="messages",
            code="context_length_exceeded",
            headers={r.LEAK_HEADER: "leak"},
        )

    async def _drop(self, request: web.Request, stream: bool) -> web.StreamResponse:
        """Send headers and part of a body, then close the connection."""
        response = web.StreamResponse()
        if stream:
            response.content_type = "text/event-stream"
            partial = b'data: {"id":"chatcmpl-drop","object":"chat.completion.ch'
        else:
            response.content_type = "application/json"
            response.content_length = DROP_DECLARED_LENGTH
            partial = b'{"id":"drop","object":"chat.comple'
        await response.prepare(request)
        await response.write(partial)
        if request.transport is not None:
            request.transport.close()
        return response

    async def _stream(
        self, request: web.Request, events: Iterable[bytes], delay_s: float
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Cache-Control": "no-cache"})
        response.content_type = "text/event-stream"
        await response.prepare(request)
        try:
            for index, event in enumerate(events):
                if index and delay_s > 0:
                    await asyncio.sleep(delay_s)
                await response.write(event)
            await response.write_eof()
        except ConnectionResetError:
            # How a disconnect shows up when handlers are not cancelled on disconnect
            # (app() on a runner without handler_cancellation) or a write wins the race.
            self._record_cancelled(request)
        return response

    # --- endpoints ------------------------------------------------------------------------

    async def _models(self, request: web.Request) -> web.StreamResponse:
        if self.config.latency_ms > 0:
            await asyncio.sleep(self.config.latency_ms / 1000)
        return json_response(r.models_list())

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await read_json(request)
        model: str = body["model"]
        words, last_user = r.messages_text(require_messages(request, body))
        prompt_tokens = max(1, words)
        usage_wanted = include_usage(body)
        return await self._answer(
            request,
            model,
            stream=body.get("stream") is True,
            build=lambda n: r.chat_completion(
                model, r.generate_pieces(last_user, n), prompt_tokens
            ),
            build_events=lambda n: r.chat_stream(
                model, r.generate_pieces(last_user, n), prompt_tokens, usage_wanted
            ),
        )

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body = await read_json(request)
        model: str = body["model"]
        prompts = r.prompt_list(body.get("prompt"))
        prompt_tokens = max(1, sum(r.count_words(p) for p in prompts))
        usage_wanted = include_usage(body)

        def choices(n: int) -> list[list[str]]:
            return [r.generate_pieces(p, n) for p in prompts]

        return await self._answer(
            request,
            model,
            stream=body.get("stream") is True,
            build=lambda n: r.text_completion(model, choices(n), prompt_tokens),
            build_events=lambda n: r.text_completion_stream(
                model, choices(n), prompt_tokens, usage_wanted
            ),
        )

    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        body = await read_json(request)
        model: str = body["model"]
        inputs = r.embeddings_input(body.get("input"))
        if not inputs:
            raise bad_request(request, "input: must be a non-empty string or array", "input")
        encoding = "base64" if body.get("encoding_format") == "base64" else "float"
        return await self._answer(
            request, model, stream=False, build=lambda _n: r.embeddings(model, inputs, encoding)
        )

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        body = await read_json(request)
        model: str = body["model"]
        require_messages(request, body)
        input_tokens, last_user = r.anthropic_input_tokens(body)
        return await self._answer(
            request,
            model,
            stream=body.get("stream") is True,
            build=lambda n: r.anthropic_message(
                model, r.generate_pieces(last_user, n), input_tokens
            ),
            build_events=lambda n: r.anthropic_stream(
                model, r.generate_pieces(last_user, n), input_tokens
            ),
        )

    async def _control_seen(self, request: web.Request) -> web.StreamResponse:
        return json_response(
            {"request_ids": self.seen_request_ids, "cancelled": self.cancelled_request_ids}
        )

    async def _control_reset(self, request: web.Request) -> web.StreamResponse:
        self.reset()
        return json_response({"reset": True})


def _new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def run_mock_upstream(host: str, port: int, config: MockConfig) -> None:
    """Serve a :class:`MockUpstream` until interrupted (blocking; uses uvloop if present)."""
    web.run_app(
        MockUpstream(config).app(),
        host=host,
        port=port,
        handler_cancellation=True,
        shutdown_timeout=SHUTDOWN_TIMEOUT_S,
        loop=_new_event_loop(),
    )
