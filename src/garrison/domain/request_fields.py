"""Request fields an admin may allow a model's upstream to receive beyond the documented ones.

vLLM and llama.cpp accept sampling parameters the OpenAI API does not document (``top_k``,
``min_p``, ``repetition_penalty``, ``chat_template_kwargs`` …). The gateway forwards only
each API's documented fields (``garrison.gateway.fields``); an admin names the extra ones a
model's upstream understands. Some names are never allowed, whatever an admin says: they
redirect or re-key a call through a permissive upstream (LiteLLM honours them), or replace
the model's prompt template.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from garrison.errors import BadRequest

# Extra fields per model: vLLM documents about 25 extra sampling parameters; more than this
# is a list copied without thought.
MAX_EXTRA_FIELDS = 32
# A field name: lower-case JSON identifier, as every documented and vendor field is.
EXTRA_FIELD_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")

# Never forwarded, even when an admin lists them: each lets a caller choose where the call
# goes, with which credential, or with which prompt template.
NEVER_FORWARDED = frozenset(
    {
        "api_base",
        "api_key",
        "api_type",
        "api_version",
        "base_url",
        "chat_template",
        "custom_llm_provider",
        "deployment_id",
        "engine",
        "extra_body",
        "extra_headers",
        "extra_query",
        "fallbacks",
        "headers",
        "model",
        "model_list",
        "organization",
        "user_config",
        "azure_ad_token",
        "aws_access_key_id",
        "aws_secret_access_key",
        "aws_region_name",
        "vertex_project",
        "vertex_location",
        "vertex_credentials",
        "mock_response",
        "proxy",
        "url",
    }
)


def extra_field_allowed(name: str) -> bool:
    return EXTRA_FIELD_NAME.fullmatch(name) is not None and name not in NEVER_FORWARDED


def check_extra_fields(names: Iterable[str]) -> frozenset[str]:
    """The validated set of ``names``; ``BadRequest`` names the first bad one."""
    out: set[str] = set()
    for name in names:
        if not isinstance(name, str) or not EXTRA_FIELD_NAME.fullmatch(name):
            raise BadRequest(
                f"extra field {str(name)[:80]!r} is not a field name "
                "(lower-case letters, digits and '_', at most 64 characters)"
            )
        if name in NEVER_FORWARDED:
            raise BadRequest(f"extra field {name!r} is never forwarded to an upstream")
        out.add(name)
    if len(out) > MAX_EXTRA_FIELDS:
        raise BadRequest(f"at most {MAX_EXTRA_FIELDS} extra fields per model")
    return frozenset(out)
