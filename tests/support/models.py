"""Models registered straight into a ``Directory`` for the store's own tests (end-to-end tests
register theirs through the admin API): a keyed model behind a bearer credential, and a
keyless local one. A test names what it depends on (name, upstream model, compartments, the
key); the rest is the shape these tests share."""

from __future__ import annotations

from collections.abc import Sequence

from garrison.domain import AuthStyle, Level, UpstreamApi
from garrison.store import Directory

# Where the keyed model's upstream is said to be (nothing listens: the store never calls it).
KEYED_URL = "http://127.0.0.1:9/v1"
# Where the keyless local model's upstream is said to be.
LOCAL_URL = "http://127.0.0.1:10/v1"


def keyed_model(
    d: Directory,
    name: str,
    *,
    upstream_key: str,
    now: float,
    upstream_model: str = "up-small",
    compartments: Sequence[str] = (),
) -> str:
    """An internal OpenAI-style model at ``KEYED_URL`` that takes ``upstream_key`` as a bearer
    credential; returns its id."""
    return d.create_model(
        name,
        upstream_url=KEYED_URL,
        upstream_model=upstream_model,
        api=UpstreamApi.OPENAI,
        auth_style=AuthStyle.BEARER,
        level=Level.INTERNAL,
        compartments=compartments,
        upstream_key=upstream_key,
        now=now,
    )


def keyless_model(
    d: Directory,
    name: str,
    *,
    now: float,
    api: UpstreamApi = UpstreamApi.OPENAI,
    compartments: Sequence[str] = (),
) -> str:
    """A public model ``llama`` at ``LOCAL_URL`` that needs no credential; returns its id."""
    return d.create_model(
        name,
        upstream_url=LOCAL_URL,
        upstream_model="llama",
        api=api,
        auth_style=AuthStyle.NONE,
        level=Level.PUBLIC,
        compartments=compartments,
        now=now,
    )
