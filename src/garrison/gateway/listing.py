"""How the gateway describes models to callers: the models list, one model, and the hint
for a model called through the wire API it does not speak.

Only models the caller may use are ever described; what decides that lives in the handlers.
"""

from __future__ import annotations

from typing import Any

from garrison.domain import Model, UpstreamApi
from garrison.errors import WrongApi

# The path each wire API's calls go to, for the hint.
_API_NAMES: dict[UpstreamApi, str] = {
    UpstreamApi.OPENAI: "the OpenAI API (/v1/chat/completions, /v1/completions, /v1/embeddings)",
    UpstreamApi.ANTHROPIC: "the Anthropic Messages API (/v1/messages)",
}


def model_entry(api: UpstreamApi, model: Model) -> dict[str, Any]:
    """One model, in the shape of ``api``'s models list."""
    if api is UpstreamApi.ANTHROPIC:
        return {
            "type": "model",
            "id": model.name,
            "display_name": model.name,
            "created_at": "1970-01-01T00:00:00Z",
        }
    return {"id": model.name, "object": "model", "created": 0, "owned_by": "garrison"}


def models_list(api: UpstreamApi, models: list[Model]) -> dict[str, Any]:
    data = [model_entry(api, m) for m in models]
    if api is UpstreamApi.ANTHROPIC:
        return {
            "data": data,
            "has_more": False,
            "first_id": models[0].name if models else None,
            "last_id": models[-1].name if models else None,
        }
    return {"object": "list", "data": data}


def wrong_api(model: Model) -> WrongApi:
    """The answer to a caller who may use ``model`` but called it through the other API."""
    return WrongApi(
        f"model speaks {model.api.value}",
        public_message=f"The model '{model.name}' is served through {_API_NAMES[model.api]}.",
    )
