"""``garrison demo``: a mock model server, a gateway and a seeded example, until Ctrl-C.

The example is the situation Garrison exists for: an internal team and a contractor
(vendor) share a general assistant, and only the internal, cleared team may reach the
restricted cyber model. The contractor's key works only from the contractor's network
(here 127.0.0.0/8, so the demo works on one machine).
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import click

from garrison.bootstrap import init, open_directory
from garrison.config import Settings
from garrison.domain import AuthStyle, Level, PrincipalKind, UpstreamApi, VendorStatus
from garrison.gateway.runtime import Gateway
from garrison.mock import MockConfig, MockUpstream
from garrison.store import Directory


@dataclass(frozen=True, slots=True)
class DemoKeys:
    alice: str
    bob: str


def seed(directory: Directory, upstream_base: str) -> DemoKeys:
    """An internal team, a vendor, two models; returns the two users' keys."""
    now = time.time()
    directory.create_vendor(
        "contractor-co",
        sponsor="admin",
        contract_start=now - 3600,
        contract_end=now + 90 * 86400,
        networks=["127.0.0.0/8"],
        seat_limit=5,
        ceiling_level=Level.INTERNAL,
        agreement_ref="MSA-2026-001 (demo)",
        now=now,
    )
    directory.set_vendor_status("contractor-co", VendorStatus.ACTIVE, now=now)
    directory.create_principal(
        "alice",
        org="internal",
        kind=PrincipalKind.HUMAN,
        clearance=Level.RESTRICTED,
        compartments=["cyber"],
        now=now,
    )
    directory.create_principal(
        "bob@contractor-co",
        org="contractor-co",
        kind=PrincipalKind.HUMAN,
        clearance=Level.INTERNAL,
        now=now,
    )
    directory.create_model(
        "assistant",
        upstream_url=upstream_base,
        upstream_model="mock-small",
        api=UpstreamApi.OPENAI,
        auth_style=AuthStyle.BEARER,
        level=Level.INTERNAL,
        upstream_key="demo-upstream-key",
        now=now,
    )
    directory.create_model(
        "assistant-claude",
        upstream_url=upstream_base,
        upstream_model="mock-small",
        api=UpstreamApi.ANTHROPIC,
        auth_style=AuthStyle.X_API_KEY,
        level=Level.INTERNAL,
        upstream_key="demo-upstream-key",
        now=now,
    )
    directory.create_model(
        "cyber-model",
        upstream_url=upstream_base,
        upstream_model="mock-large",
        api=UpstreamApi.OPENAI,
        auth_style=AuthStyle.BEARER,
        level=Level.RESTRICTED,
        compartments=["cyber"],
        upstream_key="demo-upstream-key",
        now=now,
    )
    alice = directory.create_key("alice", now=now, expires_in=7 * 86400, note="demo")
    bob = directory.create_key(
        "bob@contractor-co",
        now=now,
        expires_in=7 * 86400,
        networks=["127.0.0.0/8"],
        note="demo: contractor network only",
    )
    return DemoKeys(alice=alice.key.token.reveal(), bob=bob.key.token.reveal())


def _snippet(base: str, keys: DemoKeys, config: Path) -> str:
    return f"""
Gateway:  {base}/v1   (mock upstream behind it)

Keys (shown once):
  alice (internal, restricted + cyber):        {keys.alice}
  bob@contractor-co (vendor, internal only):   {keys.bob}

Try it:
  python - <<'PY'
  from openai import OpenAI
  client = OpenAI(base_url="{base}/v1", api_key="{keys.bob}")
  print([m.id for m in client.models.list()])          # bob sees only 'assistant'
  r = client.chat.completions.create(model="assistant",
        messages=[{{"role": "user", "content": "hello"}}])
  print(r.choices[0].message.content)
  client.chat.completions.create(model="cyber-model",
        messages=[{{"role": "user", "content": "hi"}}])  # 404: not cleared
  PY

  curl -s {base}/v1/chat/completions -H "Authorization: Bearer {keys.alice}" \\
       -H 'content-type: application/json' \\
       -d '{{"model":"cyber-model","messages":[{{"role":"user","content":"hi"}}]}}'

Admin (the CLI drives the admin API with the first admin's key, in {config.parent}):
  export GARRISON_CONFIG={config} GARRISON_ADMIN_URL={base}
  garrison vendor show contractor-co                      # seats, keys, last use, sources
  garrison lock vendor contractor-co --reason drill       # bob stops at once, streams cut
  garrison locks                                          # garrison unlock LOCK_ID --reason ok
  garrison audit tail -n 20                               # every call and admin action
  garrison audit verify                                   # the tamper-evident log checks out

Ctrl-C to stop.
"""


async def run_demo(data_dir: Path | None, *, port: int, upstream_port: int) -> None:
    temporary = data_dir is None
    root = Path(tempfile.mkdtemp(prefix="garrison-demo-")) if data_dir is None else data_dir
    mock = MockUpstream(
        MockConfig(tokens=24, chunk_delay_ms=20, expected_api_key="demo-upstream-key")
    )
    upstream = await mock.start("127.0.0.1", upstream_port)
    gateway: Gateway | None = None
    try:
        done = init(root / "data", port=port)
        keys = seed(open_directory(done.settings), f"http://127.0.0.1:{upstream}/v1")
        settings = Settings(
            database_url=done.settings.database_url,
            key_dir=done.settings.key_dir,
            host="127.0.0.1",
            port=port,
            witness_dir=done.settings.witness_dir,
        )
        gateway = Gateway(settings)
        bound = await gateway.start()
        click.echo(_snippet(f"http://127.0.0.1:{bound}", keys, done.config_path))
        await asyncio.Event().wait()
    finally:
        if gateway is not None:
            await gateway.stop()
        await mock.stop()
        if temporary:
            shutil.rmtree(root, ignore_errors=True)
