"""Calling the admin API of a running ``World`` in tests, and making admins to call it as;
``Admins`` is the two-admin scene of the ``admins`` fixture (tests/admin/conftest.py)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
import sqlalchemy as sa

from garrison.domain import Level, PrincipalKind
from garrison.domain.provenance import Provenance
from garrison.store import Directory
from tests.support.world import World


async def admin_call(
    world: World,
    key: str | None,
    method: str,
    path: str,
    body: Any = None,
    *,
    raw: bytes | None = None,
    params: dict[str, str] | None = None,
    local_addr: str | None = None,
) -> tuple[int, Any]:
    """One call to ``/admin/v1{path}``; returns the status and the decoded JSON body."""
    headers = {"authorization": f"Bearer {key}"} if key is not None else {}
    data = raw if raw is not None else (None if body is None else orjson.dumps(body))
    if data is not None:
        headers["content-type"] = "application/json"
    connector = aiohttp.TCPConnector(local_addr=(local_addr, 0)) if local_addr else None
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.request(
            method, f"{world.base}/admin/v1{path}", data=data, headers=headers, params=params
        ) as resp,
    ):
        payload = await resp.read()
        return resp.status, (orjson.loads(payload) if payload else None)


def make_admin(
    world: World,
    name: str,
    roles: Iterable[str],
    *,
    org: str = "internal",
    clearance: Level = Level.INTERNAL,
    kind: PrincipalKind = PrincipalKind.HUMAN,
) -> str:
    """A principal holding ``roles`` (written directly, as set-up), and a key for it that
    counts as the person's own (provenance ``enrolled``, made by them), as if they had
    redeemed an invitation."""
    now = time.time()
    principal_id = world.directory.create_principal(
        name, org=org, kind=kind, clearance=clearance, roles=list(roles), now=now
    )
    return own_key(world.directory, principal_id, now=now)


def own_key(directory: Directory, principal_id: str, *, now: float, **kw: Any) -> str:
    """A key for ``principal_id`` recorded as their own (enrolled, made by them): test
    set-up standing in for `garrison enroll`."""
    return directory.create_key(
        principal_id, now=now, provenance=Provenance.ENROLLED, created_by=principal_id, **kw
    ).key.token.reveal()


def table_counts(world: World) -> dict[str, int]:
    """Row counts of the directory tables and the change feed (to prove nothing was written),
    on either database."""
    with world.directory.engine.connect() as conn:
        return {
            t: int(conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one())  # noqa: S608 - fixed names
            for t in ("orgs", "principals", "credentials", "models", "change_feed")
        }


_sources = itertools.count(1)


def lift_enroll_limits(world: World) -> None:
    """Tests that enroll many people raise the endpoint's attempt limits (their own test is
    tests/identity/test_enrollment.py)."""
    from garrison.admin.enroll_api import LIMITER_KEY

    limiter = world.gateway.http.app[LIMITER_KEY]
    limiter.per_source = limiter.overall = 10**9


async def invite_and_enroll(
    world: World,
    inviter_key: str,
    name: str,
    *,
    networks: Iterable[str] = (),
    expires_in_s: float | None = None,
) -> tuple[int, Any]:
    """The inviter asks for ``name``'s enrollment code and the person redeems it from an
    address of their own (127.1.x.y): returns the status and the issued key (or refusal)."""
    status, invitation = await admin_call(world, inviter_key, "POST", f"/principals/{name}/invite")
    if status != 201:
        return status, invitation
    n = next(_sources)
    body: dict[str, Any] = {"code": invitation["enrollment_code"], "networks": list(networks)}
    if expires_in_s is not None:
        body["expires_in_s"] = expires_in_s
    return await admin_call(
        world, None, "POST", "/enroll", body, local_addr=f"127.1.{n // 250 % 250}.{n % 250 + 1}"
    )


@dataclass
class Admins:
    world: World
    sec_2: str  # a second security-admin
    ivan: str  # cleared critical, no roles

    @property
    def admin(self) -> str:
        return self.world.admin_key

    async def ok(self, key: str, method: str, path: str, body: Any = None, want: int = 200) -> Any:
        status, answer = await admin_call(self.world, key, method, path, body)
        assert status == want, (method, path, status, answer)
        return answer

    async def refused(
        self, key: str, method: str, path: str, body: Any = None, *, status: int
    ) -> dict[str, Any]:
        got, answer = await admin_call(self.world, key, method, path, body)
        assert got == status, (method, path, got, answer)
        assert set(answer) == {"error"}, answer
        return dict(answer["error"])

    def principal(self, name: str) -> Any:
        snap = self.world.gateway.state.snapshot
        return next((p for p in snap.principals.values() if p.name == name), None)

    def model(self, name: str) -> Any:
        return self.world.gateway.state.snapshot.models[name]
