"""Several gateway replicas on one PostgreSQL database, in this process, for tests.

``start_replicas`` runs ``garrison init --database-url`` (key files, schema, the first
security-admin) and starts ``n`` gateways on their own ports,
each a full ``Gateway`` with its own engine, audit writer, snapshot watcher and change
listener: all they share is the database. The admin enrolls through replica A's admin API;
everything after that goes through the public interface too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import sqlalchemy as sa

from garrison.bootstrap import init
from garrison.config import Settings
from garrison.gateway.limits import GatewayLimits
from garrison.mock import MockConfig, MockUpstream
from garrison.server import Gateway
from tests.support import pg


@dataclass
class Replicas:
    settings: Settings
    gateways: list[Gateway]
    mock: MockUpstream
    admin_key: str = ""
    keys: dict[str, str] = field(default_factory=dict)

    def base(self, i: int) -> str:
        return f"http://127.0.0.1:{self.gateways[i].port}"

    async def admin(
        self, i: int, method: str, path: str, body: Any = None, *, want: int | None = None
    ) -> Any:
        """One admin API call through replica ``i``; checks the status when ``want`` is set."""
        status, answer = await admin_call(self.base(i), self.admin_key, method, path, body)
        if want is not None:
            assert status == want, (method, path, status, answer)
        return answer


async def admin_call(
    base: str, key: str | None, method: str, path: str, body: Any = None
) -> tuple[int, Any]:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, f"{base}/admin/v1{path}", json=body, headers=headers) as resp,
    ):
        payload = await resp.read()
        return resp.status, (orjson.loads(payload) if payload else None)


def init_postgres(root: Path, url: str) -> tuple[Settings, str]:
    """``garrison init --database-url``: key files under ``root/data``, the schema, the
    internal org and the first security-admin on ``url``; returns settings for replicas
    (any port, detection off) and the admin's one-time enrollment code."""
    done = init(root / "data", database_url=url)
    settings = Settings(
        database_url=url, key_dir=done.settings.key_dir, port=0, detect_enabled=False
    )
    return settings, done.codes[0].code.reveal()


async def start_replicas(
    root: Path, url: str, n: int, *, limits: GatewayLimits | None = None
) -> Replicas:
    settings, code = init_postgres(root, url)
    if limits is not None:
        settings = Settings(
            database_url=settings.database_url,
            key_dir=settings.key_dir,
            port=0,
            detect_enabled=False,
            limits=limits,
        )
    mock = MockUpstream(MockConfig())
    await mock.start("127.0.0.1", 0)
    replicas = Replicas(settings=settings, gateways=[], mock=mock)
    try:
        for _ in range(n):
            gateway = Gateway(settings)
            await gateway.start()
            replicas.gateways.append(gateway)
        status, enrolled = await admin_call(
            replicas.base(0), None, "POST", "/enroll", {"code": code}
        )
        assert status == 201, enrolled
        replicas.admin_key = enrolled["key"]
    except BaseException:
        await stop_replicas(replicas)
        raise
    return replicas


async def stop_replicas(replicas: Replicas) -> None:
    for gateway in reversed(replicas.gateways):
        await gateway.stop()
    await replicas.mock.stop()


@contextlib.contextmanager
def blocked(database: str) -> Iterator[None]:
    """PostgreSQL lost, for every replica on ``database``: no new connection is allowed and
    every session on it is ended (as a failover or a cut network would); back on exit."""
    engine = sa.create_engine(
        pg.ADMIN_URL, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool
    )
    with engine.connect() as admin:
        admin.execute(sa.text(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false'))
        admin.execute(
            sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = :db AND pid <> pg_backend_pid()"
            ),
            {"db": database},
        )
        try:
            yield
        finally:
            admin.execute(sa.text(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true'))
