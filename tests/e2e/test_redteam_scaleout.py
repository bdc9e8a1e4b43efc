"""Red-team findings on the scale-out deployment (issue 17): gateway replicas on one
PostgreSQL database. State is set only through the admin API and the data plane."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support import pg
from tests.support.replicas import Replicas, admin_call, start_replicas, stop_replicas

pytestmark = pytest.mark.skipif(not pg.available(), reason=pg.PG_SKIP_REASON)


@pytest.fixture
async def one(tmp_path: Path) -> AsyncIterator[Replicas]:
    with pg.fresh_database() as url:
        replicas = await start_replicas(tmp_path, url, 1)
        try:
            upstream = f"http://127.0.0.1:{replicas.mock.port}/v1"
            await replicas.admin(
                0,
                "POST",
                "/models",
                {
                    "name": "m",
                    "upstream_url": upstream,
                    "upstream_model": "mock-small",
                    "auth_style": "none",
                },
                want=201,
            )
            await replicas.admin(
                0,
                "POST",
                "/principals",
                {"name": "svc", "org": "internal", "kind": "service"},
                want=201,
            )
            issued = await replicas.admin(0, "POST", "/keys", {"principal": "svc"}, want=201)
            replicas.keys["svc"] = issued["key"]
            yield replicas
        finally:
            await stop_replicas(replicas)


async def test_a_nul_in_admin_text_is_a_clean_400_on_postgresql(one: Replicas) -> None:
    # PostgreSQL text cannot hold U+0000; SQLite can. The write failed as a 500 on
    # PostgreSQL: every bad input must get a clean error on both databases.
    since = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)).isoformat()
    status, answer = await admin_call(
        one.base(0),
        one.admin_key,
        "POST",
        "/incidents",
        {"title": "t\u0000x", "principals": ["svc"], "since": since},
    )
    assert status == 400, answer
    # The principal's own text (an access request's reason) is refused the same way.
    status, answer = await admin_call(
        one.base(0),
        one.keys["svc"],
        "POST",
        "/access/requests",
        {"model": "m", "duration_s": 600, "reason": "need it\u0000now"},
    )
    assert status == 400, answer
    opened = await one.admin(
        0, "POST", "/incidents", {"title": "probe", "principals": ["svc"], "since": since}, want=201
    )
    await one.admin(0, "GET", f"/incidents/{opened['id']}/report", want=200)
