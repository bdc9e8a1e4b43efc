"""A world people sign in to through a real provider (``tests.support.idp.TestIdp``): the
provider runs for a test module; each test's world trusts it, with the enrolment and sign-in
attempt limits raised so a test's many sign-ins from one address are not throttled (their
own tests are tests/identity/test_enrollment.py and the sign-in limiter's)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest

from garrison.admin.session_api import SIGNIN_KEY
from garrison.config import Settings
from garrison.identity.oidc_config import OidcProvider, OidcSettings
from garrison.server import Gateway
from tests.support.admin import lift_enroll_limits
from tests.support.idp import CLIENT_ID, TestIdp, User
from tests.support.world import World, start_world, stop_world


@contextmanager
def running_idp(directory: Path, users: Mapping[str, User]) -> Iterator[TestIdp]:
    """The provider, knowing ``users``, for as long as the block runs."""
    provider = TestIdp(directory, dict(users)).start()
    try:
        yield provider
    finally:
        provider.stop()


@asynccontextmanager
async def idp_world(directory: Path, idp: TestIdp) -> AsyncIterator[World]:
    """A world whose sign-in trusts ``idp``, its attempt limits raised."""
    oidc = OidcSettings((OidcProvider(issuer=idp.issuer, client_id=CLIENT_ID),))
    world = await start_world(directory, oidc=oidc)
    lift_enroll_limits(world)
    lift_signin_limits(world)
    try:
        yield world
    finally:
        await stop_world(world)


def idp_fixtures(users: Mapping[str, User]) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """A test module's ``idp`` fixture (one provider for the module, knowing ``users``) and
    ``world`` fixture (each test's world, trusting it): ``idp, world = idp_fixtures(USERS)``."""

    @pytest.fixture(scope="module")
    def idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestIdp]:
        with running_idp(tmp_path_factory.mktemp("idp"), users) as provider:
            yield provider

    @pytest.fixture
    async def world(tmp_path: Path, idp: TestIdp) -> AsyncIterator[World]:
        async with idp_world(tmp_path, idp) as w:
            yield w

    return idp, world


def lift_signin_limits(world: World) -> None:
    """Raise the sign-in exchange's per-source limit on the listener that serves it (the
    admin API's own, when it has one)."""
    server = world.gateway.admin_http or world.gateway.http
    server.app[SIGNIN_KEY].limiter.per_source = 10**6


async def restart_with(world: World, settings: Settings) -> None:
    """The same deployment restarted with ``settings`` (its sign-in limit raised again)."""
    await world.gateway.stop()
    world.settings = settings
    world.gateway = Gateway(settings)
    await world.gateway.start()
    lift_signin_limits(world)
