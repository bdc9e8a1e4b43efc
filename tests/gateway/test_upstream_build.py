"""Tests for ``garrison.gateway.upstream``: the body, headers and URL sent to the upstream."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from multidict import CIMultiDict

from garrison.domain import AuthStyle, Level, Model, Secret, UpstreamApi
from garrison.gateway.apis import CHAT, COMPLETIONS, EMBEDDINGS, MESSAGES, REDIRECT_FIELDS, Endpoint
from garrison.gateway.upstream import (
    ANTHROPIC_DEFAULT_VERSION,
    REQUEST_ID_HEADER,
    build_upstream_body,
    upstream_headers,
    upstream_url,
)

UPSTREAM_KEY = "sk-upstream-abcdef0123456789"
REQUEST_ID = "3f1c0e4e-8a57-4a53-9f3b-7b0f5d7b2a11"
USER = [{"role": "user", "content": "hi"}]
BASE_HEADERS = {"content-type", "accept-encoding", "user-agent", REQUEST_ID_HEADER}


def _built(endpoint: Any, body: Any, m: Any) -> tuple[bytes, bool]:
    """The forwarded bytes and whether a usage chunk was asked for on the caller's behalf."""
    built = build_upstream_body(endpoint, body, m)
    return built.payload, built.injected_usage


def model(
    *,
    api: UpstreamApi = UpstreamApi.OPENAI,
    auth_style: AuthStyle = AuthStyle.BEARER,
    key: str | None = UPSTREAM_KEY,
) -> Model:
    return Model(
        id="m-1",
        name="assistant",
        upstream_url="http://10.0.0.7:8000/v1",
        upstream_model="meta-llama/Llama-3.1-8B-Instruct",
        api=api,
        auth_style=auth_style,
        level=Level.INTERNAL,
        compartments=frozenset(),
        upstream_key=Secret(key) if key is not None else None,
    )


ANTHROPIC_MODEL = model(api=UpstreamApi.ANTHROPIC, auth_style=AuthStyle.X_API_KEY)


def body_of(endpoint: Endpoint, body: dict[str, Any], m: Model | None = None) -> dict[str, Any]:
    raw, _ = _built(endpoint, body, m or model())
    parsed: dict[str, Any] = orjson.loads(raw)
    return parsed


def injected(endpoint: Endpoint, body: dict[str, Any]) -> bool:
    return _built(endpoint, body, model())[1]


def headers(
    endpoint: Endpoint = CHAT, m: Model | None = None, client: dict[str, str] | None = None
) -> CIMultiDict[str]:
    return upstream_headers(endpoint, m or model(), REQUEST_ID, CIMultiDict(client or {}))


# ── body ──────────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize("field", sorted(REDIRECT_FIELDS))
def test_redirect_field_is_stripped(field: str) -> None:
    body = {"model": "assistant", "messages": USER, field: "https://evil.example/v1"}
    assert field not in body_of(CHAT, body)


def test_every_redirect_field_is_stripped_at_once() -> None:
    body = {"model": "assistant", "messages": USER, **{f: "x" for f in REDIRECT_FIELDS}}
    assert set(body_of(CHAT, body)) == {"model", "messages"}


def test_other_fields_are_forwarded_unchanged() -> None:
    body = {"model": "assistant", "messages": USER, "temperature": 0.3, "tools": [{"a": 1}]}
    out = body_of(CHAT, body)
    assert (out["messages"], out["temperature"], out["tools"]) == (USER, 0.3, [{"a": 1}])


def test_model_is_replaced_by_the_upstream_name() -> None:
    assert body_of(CHAT, {"model": "assistant", "messages": USER})["model"] == (
        "meta-llama/Llama-3.1-8B-Instruct"
    )


def test_client_body_is_not_mutated() -> None:
    body = {"model": "assistant", "messages": USER, "stream": True, "api_base": "x"}
    snapshot = orjson.dumps(body)
    _built(CHAT, body, model())
    assert orjson.dumps(body) == snapshot


@pytest.mark.parametrize("endpoint", [CHAT, COMPLETIONS], ids=lambda e: e.kind)
def test_include_usage_is_injected_when_streaming_openai(endpoint: Endpoint) -> None:
    body = {"model": "assistant", "messages": USER, "prompt": "hi", "stream": True}
    assert body_of(endpoint, body)["stream_options"] == {"include_usage": True}


def test_injection_is_reported() -> None:
    assert injected(CHAT, {"model": "assistant", "messages": USER, "stream": True})


def test_include_usage_already_requested_is_not_injected() -> None:
    body = {
        "model": "a",
        "messages": USER,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    assert not injected(CHAT, body)


def test_include_usage_already_requested_is_forwarded_as_sent() -> None:
    options = {"include_usage": True, "continuous_usage_stats": True}
    body = {"model": "a", "messages": USER, "stream": True, "stream_options": options}
    assert body_of(CHAT, body)["stream_options"] == options


def test_include_usage_false_is_overridden_and_reported_as_injected() -> None:
    body = {
        "model": "a",
        "messages": USER,
        "stream": True,
        "stream_options": {"include_usage": False},
    }
    assert (body_of(CHAT, body)["stream_options"], injected(CHAT, body)) == (
        {"include_usage": True},
        True,
    )


def test_other_stream_options_are_kept_when_injecting() -> None:
    options = {"continuous_usage_stats": True}
    body = {"model": "a", "messages": USER, "stream": True, "stream_options": options}
    assert body_of(CHAT, body)["stream_options"] == {**options, "include_usage": True}


def test_non_object_stream_options_are_replaced_when_injecting() -> None:
    body = {"model": "a", "messages": USER, "stream": True, "stream_options": "yes"}
    assert body_of(CHAT, body)["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("stream", [False, None])
def test_include_usage_is_not_injected_without_streaming(stream: bool | None) -> None:
    body: dict[str, Any] = {"model": "a", "messages": USER}
    if stream is not None:
        body["stream"] = stream
    assert ("stream_options" in body_of(CHAT, body), injected(CHAT, body)) == (False, False)


def test_include_usage_is_not_injected_for_anthropic_streams() -> None:
    body = {"model": "a", "messages": USER, "max_tokens": 8, "stream": True}
    raw, was_injected = _built(MESSAGES, body, ANTHROPIC_MODEL)
    assert ("stream_options" in orjson.loads(raw), was_injected) == (False, False)


# ── headers ───────────────────────────────────────────────────────────────────────────────


def test_only_the_gateway_headers_are_sent_without_a_key() -> None:
    sent = headers(m=model(auth_style=AuthStyle.NONE, key=None))
    assert set(sent) == BASE_HEADERS


def test_client_headers_are_not_forwarded() -> None:
    client = {
        "authorization": "Bearer gk_0123456789abcdef_" + "A" * 43,
        "cookie": "session=1",
        "x-forwarded-for": "1.2.3.4",
        "host": "garrison.example",
        "openai-organization": "org-abc",
        "x-api-key": "client-key",
        "content-length": "10",
    }
    sent = headers(m=model(auth_style=AuthStyle.NONE, key=None), client=client)
    assert set(sent) == BASE_HEADERS


def test_client_authorization_is_not_forwarded_to_an_unauthenticated_upstream() -> None:
    client = {"authorization": "Bearer gk_client"}
    sent = headers(m=model(auth_style=AuthStyle.NONE, key=None), client=client)
    assert "authorization" not in sent


def test_body_headers_are_json_identity_encoded() -> None:
    sent = headers()
    assert (sent["content-type"], sent["accept-encoding"]) == ("application/json", "identity")


def test_request_id_is_sent() -> None:
    assert headers()[REQUEST_ID_HEADER] == REQUEST_ID


def test_user_agent_names_garrison() -> None:
    assert headers()["user-agent"].startswith("garrison/")


def test_bearer_credential_is_injected_as_authorization() -> None:
    assert (
        headers(m=model(auth_style=AuthStyle.BEARER))["authorization"] == f"Bearer {UPSTREAM_KEY}"
    )


def test_bearer_credential_replaces_the_client_authorization() -> None:
    sent = headers(m=model(auth_style=AuthStyle.BEARER), client={"authorization": "Bearer gk_x"})
    assert sent.getall("authorization") == [f"Bearer {UPSTREAM_KEY}"]


def test_bearer_style_sends_no_x_api_key() -> None:
    assert "x-api-key" not in headers(m=model(auth_style=AuthStyle.BEARER))


def test_x_api_key_credential_is_injected_as_x_api_key() -> None:
    assert headers(m=model(auth_style=AuthStyle.X_API_KEY))["x-api-key"] == UPSTREAM_KEY


def test_x_api_key_style_sends_no_authorization() -> None:
    assert "authorization" not in headers(m=model(auth_style=AuthStyle.X_API_KEY))


def test_auth_style_none_sends_no_credential_even_with_a_key() -> None:
    sent = headers(m=model(auth_style=AuthStyle.NONE))
    assert ("authorization" in sent, "x-api-key" in sent) == (False, False)


@pytest.mark.parametrize("style", [AuthStyle.BEARER, AuthStyle.X_API_KEY])
def test_missing_key_sends_no_credential(style: AuthStyle) -> None:
    sent = headers(m=model(auth_style=style, key=None))
    assert ("authorization" in sent, "x-api-key" in sent) == (False, False)


@pytest.mark.parametrize("endpoint", [CHAT, COMPLETIONS, EMBEDDINGS], ids=lambda e: e.kind)
def test_openai_calls_send_no_anthropic_headers(endpoint: Endpoint) -> None:
    client = {"anthropic-version": "2023-06-01", "anthropic-beta": "tools-2024-04-04"}
    sent = headers(endpoint, client=client)
    assert ("anthropic-version" in sent, "anthropic-beta" in sent) == (False, False)


def test_valid_client_anthropic_version_is_forwarded() -> None:
    sent = headers(MESSAGES, ANTHROPIC_MODEL, {"anthropic-version": "2024-10-22"})
    assert sent["anthropic-version"] == "2024-10-22"


def test_missing_anthropic_version_gets_the_default() -> None:
    assert headers(MESSAGES, ANTHROPIC_MODEL)["anthropic-version"] == ANTHROPIC_DEFAULT_VERSION


@pytest.mark.parametrize(
    "version",
    ["latest", "2023-6-1", "2023-06-01; x=1", "", "2023-06-01 ", "2023-06-01\n", "../../etc"],
)
def test_invalid_anthropic_version_is_replaced_by_the_default(version: str) -> None:
    sent = headers(MESSAGES, ANTHROPIC_MODEL, {"anthropic-version": version})
    assert sent["anthropic-version"] == ANTHROPIC_DEFAULT_VERSION


def test_valid_anthropic_beta_is_forwarded() -> None:
    beta = "prompt-caching-2024-07-31,tools-2024-04-04"
    assert headers(MESSAGES, ANTHROPIC_MODEL, {"anthropic-beta": beta})["anthropic-beta"] == beta


@pytest.mark.parametrize("beta", ["UPPER", "x" * 201, "a b", "a;b", "-leading", "tools\n", "é"])
def test_invalid_anthropic_beta_is_dropped(beta: str) -> None:
    assert "anthropic-beta" not in headers(MESSAGES, ANTHROPIC_MODEL, {"anthropic-beta": beta})


def test_absent_anthropic_beta_is_not_sent() -> None:
    assert "anthropic-beta" not in headers(MESSAGES, ANTHROPIC_MODEL)


def test_anthropic_call_headers_are_the_allowlisted_ones_only() -> None:
    client = {"anthropic-version": "2023-06-01", "x-stainless-os": "Linux", "cookie": "a=b"}
    sent = headers(MESSAGES, ANTHROPIC_MODEL, client)
    assert set(sent) == BASE_HEADERS | {"x-api-key", "anthropic-version"}


# ── URL ───────────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("endpoint", "suffix"),
    [(CHAT, "/chat/completions"), (COMPLETIONS, "/completions"), (EMBEDDINGS, "/embeddings")],
    ids=lambda x: x if isinstance(x, str) else x.kind,
)
def test_url_is_the_registry_url_plus_the_endpoint_suffix(endpoint: Endpoint, suffix: str) -> None:
    assert upstream_url(model(), endpoint) == "http://10.0.0.7:8000/v1" + suffix
