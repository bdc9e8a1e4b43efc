"""Mock OpenAI/Anthropic upstream for tests, benchmarks and ``garrison mock-upstream``."""

from .responses import (
    CONTEXT_LIMIT,
    LEAK_HEADER,
    LEAK_HOST,
    LEAK_ORG,
    LEAK_TRACE,
    LEAKY_HEADERS,
    MODEL_IDS,
)
from .server import (
    DROP,
    FAIL_400,
    FAIL_500,
    HANG,
    SLOW_STREAM,
    MockConfig,
    MockUpstream,
    SeenRequest,
    run_mock_upstream,
)

__all__ = [
    "CONTEXT_LIMIT",
    "DROP",
    "FAIL_400",
    "FAIL_500",
    "HANG",
    "LEAKY_HEADERS",
    "LEAK_HEADER",
    "LEAK_HOST",
    "LEAK_ORG",
    "LEAK_TRACE",
    "MODEL_IDS",
    "SLOW_STREAM",
    "MockConfig",
    "MockUpstream",
    "SeenRequest",
    "run_mock_upstream",
]
