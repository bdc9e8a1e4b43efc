"""Tests for ``garrison.gateway.apis``: request checks and the two APIs' error shapes."""

from __future__ import annotations

from operator import attrgetter
from typing import Any

import orjson
import pytest
from anthropic._streaming import SSEDecoder as AnthropicSSEDecoder
from openai._streaming import SSEDecoder as OpenAISSEDecoder

from garrison import errors
from garrison.domain import UpstreamApi
from garrison.errors import BadRequest, GarrisonError
from garrison.gateway.apis import (
    CHAT,
    COMPLETIONS,
    EMBEDDINGS,
    ENDPOINTS,
    MESSAGES,
    Endpoint,
    error_body,
    error_for_upstream_status,
    error_payload,
    parse_body,
    stream_error_event,
)

OPENAI = UpstreamApi.OPENAI
ANTHROPIC = UpstreamApi.ANTHROPIC
USER = [{"role": "user", "content": "hi"}]

VALID: dict[str, dict[str, Any]] = {
    CHAT.path: {"model": "m", "messages": USER},
    COMPLETIONS.path: {"model": "m", "prompt": "hi"},
    EMBEDDINGS.path: {"model": "m", "input": "hi"},
    MESSAGES.path: {"model": "m", "messages": USER, "max_tokens": 16},
}


def refusal(endpoint: Endpoint, body: Any) -> str:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    with pytest.raises(BadRequest) as info:
        parse_body(endpoint, raw)
    return info.value.public_message


def with_field(endpoint: Endpoint, name: str, value: Any) -> dict[str, Any]:
    return {**VALID[endpoint.path], name: value}


def without_field(endpoint: Endpoint, name: str) -> dict[str, Any]:
    return {k: v for k, v in VALID[endpoint.path].items() if k != name}


# ── parse_body: accepted ──────────────────────────────────────────────────────────────────


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: e.kind)
def test_valid_body_is_returned_as_parsed(endpoint: Endpoint) -> None:
    body = VALID[endpoint.path]
    assert parse_body(endpoint, orjson.dumps(body)) == body


@pytest.mark.parametrize("endpoint", [CHAT, COMPLETIONS, MESSAGES], ids=lambda e: e.kind)
def test_streaming_is_accepted_where_the_endpoint_streams(endpoint: Endpoint) -> None:
    body = with_field(endpoint, "stream", True)
    assert parse_body(endpoint, orjson.dumps(body))["stream"] is True


@pytest.mark.parametrize("prompt", [["a", "b"], [[1, 2, 3]]])
def test_completions_prompt_may_be_a_list(prompt: list[Any]) -> None:
    body = with_field(COMPLETIONS, "prompt", prompt)
    assert parse_body(COMPLETIONS, orjson.dumps(body))["prompt"] == prompt


def test_unknown_fields_are_kept() -> None:
    body = with_field(CHAT, "temperature", 0.2)
    assert parse_body(CHAT, orjson.dumps(body))["temperature"] == 0.2


# ── parse_body: refused, each message naming what is wrong ─────────────────────────────────


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: e.kind)
def test_empty_body_is_refused_as_empty(endpoint: Endpoint) -> None:
    assert "empty" in refusal(endpoint, b"")


@pytest.mark.parametrize("raw", [b"{", b"not json", b'{"model": "m",}', b"\xff\xfe"])
def test_malformed_json_is_refused_as_not_valid_json(raw: bytes) -> None:
    assert "not valid JSON" in refusal(CHAT, raw)


@pytest.mark.parametrize("body", [[], "text", 3, None, True])
def test_non_object_body_is_refused_as_not_an_object(body: Any) -> None:
    assert "JSON object" in refusal(CHAT, body)


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: e.kind)
def test_missing_model_names_model(endpoint: Endpoint) -> None:
    assert "'model'" in refusal(endpoint, without_field(endpoint, "model"))


@pytest.mark.parametrize("value", ["", 3, None, ["m"], {"name": "m"}, True])
def test_bad_model_names_model(value: Any) -> None:
    assert "'model'" in refusal(CHAT, with_field(CHAT, "model", value))


@pytest.mark.parametrize(
    ("endpoint", "field"),
    [(CHAT, "messages"), (COMPLETIONS, "prompt"), (EMBEDDINGS, "input"), (MESSAGES, "messages")],
    ids=lambda x: x if isinstance(x, str) else x.kind,
)
def test_missing_required_field_is_named(endpoint: Endpoint, field: str) -> None:
    assert f"'{field}'" in refusal(endpoint, without_field(endpoint, field))


def test_missing_max_tokens_on_messages_is_named() -> None:
    assert "'max_tokens'" in refusal(MESSAGES, without_field(MESSAGES, "max_tokens"))


@pytest.mark.parametrize("value", ["hi", {"role": "user"}, 3, None, True])
def test_messages_that_are_not_a_list_are_named(value: Any) -> None:
    assert "'messages'" in refusal(CHAT, with_field(CHAT, "messages", value))


@pytest.mark.parametrize("value", [{"a": 1}, 3, None, True])
def test_prompt_that_is_not_string_or_list_is_named(value: Any) -> None:
    assert "'prompt'" in refusal(COMPLETIONS, with_field(COMPLETIONS, "prompt", value))


@pytest.mark.parametrize("value", [{"a": 1}, 3, None, False])
def test_embedding_input_that_is_not_string_or_list_is_named(value: Any) -> None:
    assert "'input'" in refusal(EMBEDDINGS, with_field(EMBEDDINGS, "input", value))


@pytest.mark.parametrize("value", [True, False, 16.0, "16", None, [16]])
def test_max_tokens_that_is_not_an_integer_is_named(value: Any) -> None:
    assert "'max_tokens'" in refusal(MESSAGES, with_field(MESSAGES, "max_tokens", value))


def test_required_field_refusal_says_what_type_is_expected() -> None:
    assert "a list of messages" in refusal(CHAT, without_field(CHAT, "messages"))


@pytest.mark.parametrize("value", ["true", 1, 0, None, {}])
def test_non_boolean_stream_is_named(value: Any) -> None:
    assert "'stream'" in refusal(CHAT, with_field(CHAT, "stream", value))


def test_stream_on_embeddings_is_refused_naming_streaming() -> None:
    assert "stream" in refusal(EMBEDDINGS, with_field(EMBEDDINGS, "stream", True)).lower()


def test_stream_false_on_embeddings_is_accepted() -> None:
    body = with_field(EMBEDDINGS, "stream", False)
    assert parse_body(EMBEDDINGS, orjson.dumps(body)) == body


def test_refusal_is_a_400() -> None:
    with pytest.raises(BadRequest) as info:
        parse_body(CHAT, b"[]")
    assert info.value.status == 400


# ── error shapes ──────────────────────────────────────────────────────────────────────────

ALL_ERRORS: list[type[GarrisonError]] = sorted(
    (
        cls
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, GarrisonError)
    ),
    key=lambda cls: cls.__name__,
)

# The ``type`` each API documents for a status (OpenAI: "Error codes" guide; Anthropic:
# "Errors" page and ``anthropic.types.shared.ErrorType``).
OPENAI_TYPE: dict[type[GarrisonError], str] = {
    errors.BadRequest: "invalid_request_error",
    errors.ClientError: "invalid_request_error",
    errors.Unauthenticated: "invalid_request_error",
    errors.Forbidden: "permission_error",
    errors.NotFound: "invalid_request_error",
    errors.WrongApi: "invalid_request_error",
    errors.UnsupportedRoute: "invalid_request_error",
    errors.RequestTimeout: "invalid_request_error",
    errors.PayloadTooLarge: "invalid_request_error",
    errors.RateLimited: "rate_limit_error",
    errors.UpstreamError: "server_error",
    errors.UpstreamFailed: "server_error",
    errors.UpstreamTimeout: "server_error",
    errors.GarrisonError: "server_error",
    errors.ServerError: "server_error",
    errors.AuditUnavailable: "server_error",
    errors.DetectionLeaseLost: "server_error",
    errors.AuditRecordInvalid: "server_error",
    errors.Overloaded: "server_error",
    errors.ShuttingDown: "server_error",
    errors.ConfigError: "server_error",
}
ANTHROPIC_TYPE: dict[type[GarrisonError], str] = {
    errors.BadRequest: "invalid_request_error",
    errors.ClientError: "invalid_request_error",
    errors.Unauthenticated: "authentication_error",
    errors.Forbidden: "permission_error",
    errors.NotFound: "not_found_error",
    errors.WrongApi: "not_found_error",
    errors.UnsupportedRoute: "not_found_error",
    errors.RequestTimeout: "invalid_request_error",
    errors.PayloadTooLarge: "request_too_large",
    errors.RateLimited: "rate_limit_error",
    errors.UpstreamError: "api_error",
    errors.UpstreamFailed: "api_error",
    errors.UpstreamTimeout: "timeout_error",
    errors.GarrisonError: "api_error",
    errors.ServerError: "api_error",
    errors.AuditUnavailable: "api_error",
    errors.DetectionLeaseLost: "api_error",
    errors.AuditRecordInvalid: "api_error",
    errors.Overloaded: "overloaded_error",
    errors.ShuttingDown: "api_error",
    errors.ConfigError: "api_error",
}
# Conflict (409) is a control-plane error with no documented data-plane type; it must still
# carry a type the SDKs know.
ANTHROPIC_KNOWN_TYPES = {
    "invalid_request_error",
    "authentication_error",
    "billing_error",
    "permission_error",
    "not_found_error",
    "request_too_large",
    "rate_limit_error",
    "timeout_error",
    "api_error",
    "overloaded_error",
    "conflict_error",
}


def test_every_error_class_has_an_expected_openai_type() -> None:
    assert set(OPENAI_TYPE) | {errors.Conflict} == set(ALL_ERRORS)


@pytest.mark.parametrize("cls", sorted(OPENAI_TYPE, key=attrgetter("__name__")), ids=repr)
def test_openai_error_type_for_each_status(cls: type[GarrisonError]) -> None:
    assert error_payload(OPENAI, cls())["error"]["type"] == OPENAI_TYPE[cls]


@pytest.mark.parametrize("cls", sorted(ANTHROPIC_TYPE, key=attrgetter("__name__")), ids=repr)
def test_anthropic_error_type_for_each_status(cls: type[GarrisonError]) -> None:
    assert error_payload(ANTHROPIC, cls())["error"]["type"] == ANTHROPIC_TYPE[cls]


@pytest.mark.parametrize("cls", ALL_ERRORS, ids=repr)
def test_anthropic_error_type_is_one_the_api_documents(cls: type[GarrisonError]) -> None:
    assert error_payload(ANTHROPIC, cls())["error"]["type"] in ANTHROPIC_KNOWN_TYPES


@pytest.mark.parametrize("cls", ALL_ERRORS, ids=repr)
def test_openai_error_shape_has_message_type_param_and_code(cls: type[GarrisonError]) -> None:
    payload = error_payload(OPENAI, cls())
    assert set(payload) == {"error"}
    assert set(payload["error"]) == {"message", "type", "param", "code"}


@pytest.mark.parametrize("cls", ALL_ERRORS, ids=repr)
def test_openai_error_code_is_the_error_code(cls: type[GarrisonError]) -> None:
    assert error_payload(OPENAI, cls())["error"]["code"] == cls.code


@pytest.mark.parametrize("cls", ALL_ERRORS, ids=repr)
def test_anthropic_error_shape_is_type_error_with_type_and_message(
    cls: type[GarrisonError],
) -> None:
    payload = error_payload(ANTHROPIC, cls())
    assert payload["type"] == "error"
    assert set(payload["error"]) == {"type", "message"}


@pytest.mark.parametrize("api", [OPENAI, ANTHROPIC])
def test_error_body_carries_the_public_message_only(api: UpstreamApi) -> None:
    exc = errors.UpstreamFailed("upstream 10.0.0.7 said sk-secret", public_message="Try again.")
    body = error_body(api, exc)
    assert (b"Try again." in body, b"10.0.0.7" in body, b"sk-secret" in body) == (
        True,
        False,
        False,
    )


@pytest.mark.parametrize("api", [OPENAI, ANTHROPIC])
def test_error_body_is_the_json_of_the_payload(api: UpstreamApi) -> None:
    exc = errors.NotFound()
    assert orjson.loads(error_body(api, exc)) == error_payload(api, exc)


# ── stream_error_event ────────────────────────────────────────────────────────────────────


def test_openai_stream_error_event_is_a_bare_data_event() -> None:
    event = stream_error_event(OPENAI, errors.UpstreamFailed())
    assert event == b"data: " + error_body(OPENAI, errors.UpstreamFailed()) + b"\n\n"


def test_anthropic_stream_error_event_is_named_error() -> None:
    event = stream_error_event(ANTHROPIC, errors.UpstreamFailed())
    expected = b"event: error\ndata: " + error_body(ANTHROPIC, errors.UpstreamFailed()) + b"\n\n"
    assert event == expected


def test_openai_sdk_decodes_the_stream_error_event_as_an_error_payload() -> None:
    raw = stream_error_event(OPENAI, errors.UpstreamTimeout())
    (sse,) = list(OpenAISSEDecoder().iter_bytes(iter([raw])))
    assert (sse.event, sse.json()["error"]["message"]) == (
        None,
        errors.UpstreamTimeout.default_message,
    )


def test_anthropic_sdk_decodes_the_stream_error_event_as_an_error_event() -> None:
    raw = stream_error_event(ANTHROPIC, errors.Overloaded())
    (sse,) = list(AnthropicSSEDecoder().iter_bytes(iter([raw])))
    assert (sse.event, sse.json()["error"]["type"]) == ("error", "overloaded_error")


# ── error_for_upstream_status ─────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, errors.BadRequest),
        (422, errors.BadRequest),
        (404, errors.NotFound),
        (413, errors.PayloadTooLarge),
        (429, errors.RateLimited),
    ],
)
def test_upstream_client_error_maps_to_the_same_kind(status: int, cls: type[GarrisonError]) -> None:
    assert type(error_for_upstream_status(status, "m")) is cls


@pytest.mark.parametrize("status", [400, 404, 413, 422, 429])
def test_upstream_client_error_keeps_the_scrubbed_message(status: int) -> None:
    assert error_for_upstream_status(status, "too long").public_message == "too long"


@pytest.mark.parametrize("status", [400, 404, 413, 422, 429])
def test_upstream_client_error_without_message_uses_the_default(status: int) -> None:
    exc = error_for_upstream_status(status, "")
    assert exc.public_message == type(exc).default_message


@pytest.mark.parametrize("status", [401, 403, 405, 409, 418])
def test_upstream_credential_or_odd_errors_become_upstream_errors(status: int) -> None:
    exc = error_for_upstream_status(status, "invalid key sk-abc")
    assert (isinstance(exc, errors.UpstreamError), exc.status) == (True, 502)


@pytest.mark.parametrize("status", [401, 403])
def test_upstream_credential_error_message_is_not_passed_on(status: int) -> None:
    exc = error_for_upstream_status(status, "invalid key sk-abc")
    assert "sk-abc" not in exc.public_message
