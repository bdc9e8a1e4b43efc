"""``garrison demo``: a mock model server, a gateway and a worked example, until Ctrl-C.

The example is the situation Garrison exists for, played through the admin API exactly as
the CLI drives it (every person makes their own key; nothing is written behind the API's
back): ``garrison init`` seats two security-admins, ana and ben, who each enroll; ana invites
two approvers (dee, eve), the internal analyst alice and the contractor bob — a second admin
(ben) approves each invitation that carries access; bob asks for the critical model
``oracle``, dee (the contractor's sponsor) and eve approve, and bob's call succeeds.

One machine plays several: each person enrolls from their own loopback address
(127.0.x.1, Linux), since a redemption from an address the inviter used is refused.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import httpx

from garrison.bootstrap import init, write_credential
from garrison.config import Settings
from garrison.mock import MockConfig, MockUpstream
from garrison.server import Gateway

UPSTREAM_KEY = "demo-upstream-key"
# Each person enrolls from their own loopback address (one machine plays several).
ADDRESSES = {
    "ana": "127.0.2.1",
    "ben": "127.0.3.1",
    "dee": "127.0.4.1",
    "eve": "127.0.5.1",
    "alice": "127.0.6.1",
    "bob@contractor-co": "127.0.7.1",
}


class DemoError(RuntimeError):
    pass


@dataclass
class Demo:
    base: str
    keys: dict[str, str] = field(default_factory=dict)

    async def call(
        self, who: str | None, method: str, path: str, body: Any = None, source: str | None = None
    ) -> Any:
        headers = {"authorization": f"Bearer {self.keys[who]}"} if who else {}
        transport = httpx.AsyncHTTPTransport(local_address=source) if source else None
        async with httpx.AsyncClient(transport=transport, trust_env=False, timeout=30) as http:
            resp = await http.request(
                method, f"{self.base}/admin/v1{path}", json=body, headers=headers
            )
        if resp.status_code >= 400:
            raise DemoError(f"{method} {path} as {who}: {resp.status_code} {resp.text}")
        return resp.json()

    async def enroll(self, name: str, code: str, networks: list[str] | None = None) -> None:
        issued = await self.call(
            None, "POST", "/enroll", {"code": code, "networks": networks or []}, ADDRESSES[name]
        )
        self.keys[name] = issued["key"]

    async def invite(self, name: str, org: str, clearance: str, **more: Any) -> str:
        """ana adds a person; when that takes a second admin, ben approves; returns the code."""
        body = {"name": name, "org": org, "clearance": clearance, "invite": True, **more}
        created = await self.call("ana", "POST", "/principals", body)
        if "pending" in created:
            await self.call("ben", "POST", f"/changes/{created['pending']['id']}/approve")
            created = await self.call("ana", "POST", f"/principals/{name}/invite", {})
        return str(created["enrollment_code"])


async def seed(demo: Demo, codes: dict[str, str], upstream_base: str) -> str:
    """The example, through the admin API; returns bob's first answer from the oracle."""
    await demo.enroll("ana", codes["ana"])
    await demo.enroll("ben", codes["ben"])
    for approver in ("dee", "eve"):
        await demo.enroll(
            approver, await demo.invite(approver, "internal", "internal", roles=["approver"])
        )
    now = time.time()
    await demo.call(
        "ana",
        "POST",
        "/vendors",
        {
            "name": "contractor-co",
            "sponsor": "dee",
            "contract_end": datetime.fromtimestamp(now + 90 * 86400, UTC).isoformat(),
            "networks": ["127.0.0.0/8"],
            "seat_limit": 5,
            "ceiling": "critical",
            "agreement_ref": "MSA-2026-001 (demo)",
        },
    )
    await demo.call("ana", "POST", "/vendors/contractor-co/status", {"status": "active"})
    alice = await demo.invite("alice", "internal", "restricted", compartments=["cyber"])
    await demo.enroll("alice", alice)
    bob = await demo.invite("bob@contractor-co", "contractor-co", "critical")
    await demo.enroll("bob@contractor-co", bob, ["127.0.0.0/8"])
    for name, api, level, comps, upstream_model in (
        ("assistant", "openai", "internal", [], "mock-small"),
        ("assistant-claude", "anthropic", "internal", [], "mock-small"),
        ("cyber-model", "openai", "restricted", ["cyber"], "mock-large"),
        ("oracle", "openai", "critical", [], "mock-large"),
    ):
        added = await demo.call(
            "ana",
            "POST",
            "/models",
            {
                "name": name,
                "upstream_url": upstream_base,
                "upstream_model": upstream_model,
                "api": api,
                "upstream_key": UPSTREAM_KEY,
                "level": level,
                "compartments": comps,
            },
        )
        if "pending" in added:
            # A restricted or critical model (or one on a protected model's server) takes a
            # second admin: ben approves what ana proposed.
            await demo.call("ben", "POST", f"/changes/{added['pending']['id']}/approve", {})
    # The contractor asks for the critical model; two people approve (one is the sponsor).
    demo.keys["bob"] = demo.keys["bob@contractor-co"]
    request = await demo.call(
        "bob",
        "POST",
        "/access/requests",
        {
            "model": "oracle",
            "duration_s": 4 * 3600,
            "reason": "demo: incident 42 triage",
        },
    )
    await demo.call("dee", "POST", f"/access/requests/{request['id']}/approve")
    await demo.call("eve", "POST", f"/access/requests/{request['id']}/approve")
    async with httpx.AsyncClient(trust_env=False, timeout=30) as http:
        resp = await http.post(
            f"{demo.base}/v1/chat/completions",
            headers={"authorization": f"Bearer {demo.keys['bob']}"},
            json={"model": "oracle", "messages": [{"role": "user", "content": "hello"}]},
        )
    if resp.status_code != 200:
        raise DemoError(f"bob's call to the oracle: {resp.status_code} {resp.text}")
    return str(resp.json()["choices"][0]["message"]["content"])


def _snippet(base: str, keys: dict[str, str], config: Path, answer: str) -> str:
    # This interpreter's bin directory: `make run` does not put the venv on PATH.
    bindir = Path(sys.executable).parent
    return f"""
Gateway:  {base}/v1   (mock upstream behind it)

What just happened (every step through the admin API, as the CLI does it):
  garrison init --admin ana --admin ben    two security-admins, one enrollment code each
  ana, ben: garrison enroll CODE           each makes their own key (nobody else sees it)
  ana invites dee, eve (approvers), alice, bob@contractor-co; ben approves each invitation
      that carries access; each person enrolls from their own address
  bob asks for the critical model 'oracle'; dee (the sponsor) and eve approve
  bob's call to 'oracle' succeeded: {answer[:40]!r}...

Keys (each person's own; shown once):
  alice (internal, restricted + cyber):        {keys["alice"]}
  bob@contractor-co (vendor, critical grant):  {keys["bob"]}

Try it (paste into a shell; the first line adds the openai client to this venv, once):

{bindir}/python -m pip install -q openai
{bindir}/python - <<'PY'
from openai import OpenAI
client = OpenAI(base_url="{base}/v1", api_key="{keys["bob"]}")
print([m.id for m in client.models.list()])          # bob: the assistants and 'oracle'
r = client.chat.completions.create(model="oracle",
      messages=[{{"role": "user", "content": "hello"}}])
print(r.choices[0].message.content)                  # granted for 4 hours
try:
    client.chat.completions.create(model="cyber-model",
        messages=[{{"role": "user", "content": "hi"}}])
except Exception as exc:
    print(type(exc).__name__)                        # NotFoundError: not cleared
PY

curl -s {base}/v1/chat/completions -H "Authorization: Bearer {keys["alice"]}" \\
     -H 'content-type: application/json' \\
     -d '{{"model":"cyber-model","messages":[{{"role":"user","content":"hi"}}]}}'

# Admin: the CLI acts as ana (her key is in the config's credential file, as
# `garrison enroll CODE --save` leaves it).

export PATH="{bindir}:$PATH" GARRISON_CONFIG={config} GARRISON_ADMIN_URL={base}
garrison whoami                                     # ana, provenance enrolled
garrison key list                                   # who made each key, and how
garrison access grants                              # bob's grant, approved by two
garrison vendor show contractor-co                  # seats, keys, last use, sources
garrison lock vendor contractor-co --reason drill   # bob stops at once, streams cut
garrison locks                                      # garrison unlock LOCK_ID --reason ok
garrison audit tail -n 20                           # every call and admin action
garrison audit verify                               # the tamper-evident log checks out

Ctrl-C to stop.
"""


async def run_demo(data_dir: Path | None, *, port: int, upstream_port: int) -> None:
    temporary = data_dir is None
    root = Path(tempfile.mkdtemp(prefix="garrison-demo-")) if data_dir is None else data_dir
    mock = MockUpstream(MockConfig(tokens=24, chunk_delay_ms=20, expected_api_key=UPSTREAM_KEY))
    upstream = await mock.start("127.0.0.1", upstream_port)
    gateway: Gateway | None = None
    try:
        done = init(root / "data", port=port, admins=("ana", "ben"))
        settings = Settings(
            database_url=done.settings.database_url,
            key_dir=done.settings.key_dir,
            host="127.0.0.1",
            port=port,
            witness_dir=done.settings.witness_dir,
        )
        gateway = Gateway(settings)
        bound = await gateway.start()
        base = f"http://127.0.0.1:{bound}"
        demo = Demo(base)
        codes = {c.name: c.code.reveal() for c in done.codes}
        answer = await seed(demo, codes, f"http://127.0.0.1:{upstream}/v1")
        assert done.settings.admin_credential_file is not None
        write_credential(done.settings.admin_credential_file, demo.keys["ana"])
        click.echo(_snippet(base, demo.keys, done.config_path, answer))
        await asyncio.Event().wait()
    finally:
        if gateway is not None:
            await gateway.stop()
        await mock.stop()
        if temporary:
            shutil.rmtree(root, ignore_errors=True)
