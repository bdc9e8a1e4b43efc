"""What the wire APIs document, for assertions."""

from __future__ import annotations

# Documented Anthropic error types (any error body or stream error event must use one).
ANTHROPIC_ERROR_TYPES = frozenset(
    {
        "invalid_request_error",
        "authentication_error",
        "permission_error",
        "not_found_error",
        "request_too_large",
        "rate_limit_error",
        "api_error",
        "overloaded_error",
        "timeout_error",
    }
)
