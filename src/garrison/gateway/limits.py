"""Every limit of the data plane, named, with the reason for its value.

``GatewayLimits`` carries them into the app so a deployment (or a test) can tighten one
without touching code; the defaults are the constants below.
"""

from __future__ import annotations

from dataclasses import dataclass

from garrison.gateway.admission_limits import (
    MAX_BUFFERED_BODY_BYTES,
    MAX_BUFFERED_BODY_BYTES_PER_PRINCIPAL,
    MAX_CALLS_PER_MINUTE_PER_PRINCIPAL,
    MAX_CONCURRENT_PER_CREDENTIAL,
    MAX_CONCURRENT_PER_PRINCIPAL,
)
from garrison.gateway.answers import MAX_BUFFERED_RESPONSE_BYTES, NONSTREAM_MAX_SECONDS
from garrison.gateway.body_work import BODY_WORKERS, OFFLOAD_BODY_BYTES
from garrison.gateway.connections import (
    CONNECTION_RESERVE,
    MAX_CONNECTIONS,
    MAX_CONNECTIONS_PER_SOURCE,
    MAX_CONNECTIONS_PER_TRUSTED_PROXY,
)

# Request body: a long-context chat request with a few base64 images fits in 8 MiB; larger
# bodies are abuse or a mistake, and reading them costs memory before anything is decided.
MAX_BODY_BYTES = 8 * 1024 * 1024
# One header line (and the request line): 8 KiB is what nginx and aiohttp allow by default and
# holds any real bearer token or cookie; more is an attack on the parser.
MAX_HEADER_FIELD_BYTES = 8190
# Header count: real SDK calls send fewer than 30.
MAX_HEADERS = 100
# Slow clients: a request head must arrive within this many seconds of its first byte,
# otherwise the connection is closed (slowloris defence).
HEADER_READ_TIMEOUT_S = 10.0
# Slow clients: the whole body must arrive within this; 8 MiB at 2 Mbit/s takes ~34 s.
BODY_READ_TIMEOUT_S = 60.0
# Idle between requests on a kept-alive connection (re-armed after each request): SDK pools
# drop idle connections after 5 s (httpx) so they close first; an idle socket costs an
# attacker a reconnect every 15 s instead of holding a descriptor for minutes.
KEEPALIVE_TIMEOUT_S = 15.0
# Upstream connect: a model server on the same network answers in milliseconds; 5 s
# means it is down or unreachable.
UPSTREAM_CONNECT_TIMEOUT_S = 5.0
# Upstream read: the longest wait for the first byte or between two chunks. A large prompt
# on a busy server can take minutes to prefill.
UPSTREAM_READ_TIMEOUT_S = 300.0
# Longest stream: a generation that runs longer than 30 minutes is cut; it is either stuck
# or an extraction run that should have been split.
STREAM_MAX_SECONDS = 1800.0
# Largest non-streamed upstream answer read into memory (embeddings of a big batch fit).
MAX_RESPONSE_BYTES = 64 * 1024 * 1024
# Largest upstream error body read to build a scrubbed error for the client.
MAX_UPSTREAM_ERROR_BYTES = 64 * 1024
# Characters of an upstream error message passed on (after scrubbing).
MAX_ERROR_MESSAGE_CHARS = 500
# Calls in flight in one process: 1,000 concurrent streams is the design point; past 4,096
# the process refuses new calls (503) rather than exhaust memory or file descriptors.
MAX_CONCURRENT_REQUESTS = 4096
# Lock view staleness: a process that has not seen the directory (and so the locks) for this
# long refuses calls to restricted and critical models (fail closed, like Teleport's strict
# mode). 100 snapshot polls: long enough that a busy moment never trips it, short enough that
# a process cut off from its database stops serving sensitive models within seconds.
LOCK_VIEW_STALE_S = 5.0
# Stopping (SIGTERM/SIGINT): calls in flight get this long to finish before they are cut with
# an error in the API's shape. Kubernetes sends SIGKILL 30 s after SIGTERM by default; 20 s
# leaves room for the final outcomes, checkpoint and WAL checkpoint (systemd waits 90 s;
# `docker stop` waits only 10 s unless given `--stop-timeout 30`).
DRAIN_DEADLINE_S = 20.0


@dataclass(frozen=True, slots=True)
class GatewayLimits:
    max_body_bytes: int = MAX_BODY_BYTES
    max_header_field_bytes: int = MAX_HEADER_FIELD_BYTES
    max_headers: int = MAX_HEADERS
    header_read_timeout_s: float = HEADER_READ_TIMEOUT_S
    body_read_timeout_s: float = BODY_READ_TIMEOUT_S
    keepalive_timeout_s: float = KEEPALIVE_TIMEOUT_S
    upstream_connect_timeout_s: float = UPSTREAM_CONNECT_TIMEOUT_S
    upstream_read_timeout_s: float = UPSTREAM_READ_TIMEOUT_S
    stream_max_seconds: float = STREAM_MAX_SECONDS
    max_response_bytes: int = MAX_RESPONSE_BYTES
    max_concurrent_requests: int = MAX_CONCURRENT_REQUESTS
    lock_view_stale_s: float = LOCK_VIEW_STALE_S
    drain_deadline_s: float = DRAIN_DEADLINE_S
    max_concurrent_per_credential: int = MAX_CONCURRENT_PER_CREDENTIAL
    max_concurrent_per_principal: int = MAX_CONCURRENT_PER_PRINCIPAL
    max_calls_per_minute_per_principal: int = MAX_CALLS_PER_MINUTE_PER_PRINCIPAL
    max_buffered_body_bytes: int = MAX_BUFFERED_BODY_BYTES
    max_buffered_body_bytes_per_principal: int = MAX_BUFFERED_BODY_BYTES_PER_PRINCIPAL
    max_connections_per_source: int = MAX_CONNECTIONS_PER_SOURCE
    max_connections_per_trusted_proxy: int = MAX_CONNECTIONS_PER_TRUSTED_PROXY
    max_connections: int = MAX_CONNECTIONS
    connection_reserve: int = CONNECTION_RESERVE
    offload_body_bytes: int = OFFLOAD_BODY_BYTES
    body_workers: int = BODY_WORKERS
    max_buffered_response_bytes: int = MAX_BUFFERED_RESPONSE_BYTES
    nonstream_max_seconds: float = NONSTREAM_MAX_SECONDS
