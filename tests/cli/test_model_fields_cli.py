"""``garrison model add|update --allow-field``: the extra request fields a model's upstream
may receive, set through the CLI and enforced by the gateway at once."""

from __future__ import annotations

import httpx
import orjson

from tests.cli.conftest import Served, Upstream


def chat(served: Served, key: str, **extra: object) -> int:
    body = {"model": "vllm", "messages": [{"role": "user", "content": "hi"}], **extra}
    resp = httpx.post(
        f"{served.url}/v1/chat/completions",
        json=body,
        headers={"authorization": f"Bearer {key}"},
        timeout=30,
    )
    return resp.status_code


def last_forwarded(upstream: Upstream) -> dict[str, object]:
    body: dict[str, object] = orjson.loads(upstream.mock.seen[-1].body)
    return body


def test_allow_field_is_set_shown_replaced_and_cleared(served: Served, upstream: Upstream) -> None:
    token = served.make_principal("carol")
    served.ok(
        "model", "add", "vllm", "--upstream-url", upstream.url, "--upstream-model", "mock-small",
        "--allow-field", "top_k", "--allow-field", "chat_template_kwargs",
    )  # fmt: skip
    models = {m["name"]: m for m in served.as_json("model", "list")}
    assert models["vllm"]["extra_fields"] == ["chat_template_kwargs", "top_k"]
    assert chat(served, token, top_k=40, min_p=0.1) == 200
    sent = last_forwarded(upstream)
    assert (sent.get("top_k"), "min_p" in sent) == (40, False)

    changed = served.as_json("model", "update", "vllm", "--allow-field", "min_p")
    assert changed == {"changes": {"extra_fields": [["chat_template_kwargs", "top_k"], ["min_p"]]}}
    assert chat(served, token, top_k=40, min_p=0.1) == 200
    sent = last_forwarded(upstream)
    assert ("top_k" in sent, sent.get("min_p")) == (False, 0.1)

    served.ok("model", "update", "vllm", "--no-extra-fields")
    assert chat(served, token, top_k=40, min_p=0.1) == 200
    sent = last_forwarded(upstream)
    assert ("top_k" in sent, "min_p" in sent) == (False, False)


def test_allow_field_refuses_a_redirect_field(served: Served, upstream: Upstream) -> None:
    line = served.refused(
        "model", "add", "bad", "--upstream-url", upstream.url, "--allow-field", "chat_template"
    )
    assert "never forwarded" in line
    line = served.refused("model", "update", "assistant", "--allow-field", "api_base")
    assert "never forwarded" in line
