"""``[identity] mfa_amr_by_level``: a level can take only some MFA methods. Through a real
provider (tests/idp) that reports a one-time code (amr "otp") for one person and a hardware
key (amr "hwk") for another: with restricted narrowed to ["hwk"], only the hardware key's
session reaches the restricted model, called with the ``openai`` client. Set-up through the
admin API."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import openai
import pytest

from garrison.domain import Level
from tests.e2e.test_oidc_signin import _chat, person, sign_in
from tests.support.idp import User, node_missing_reason
from tests.support.idp_world import idp_fixtures, restart_with
from tests.support.world import World

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(node_missing_reason() is not None, reason=str(node_missing_reason())),
]

USERS = {
    "u-otp": User("pw-otp", otp="565656"),  # a one-time code: amr pwd, otp, mfa
    "u-key": User("pw-key", otp="787878", factor="hwk"),  # a hardware key: pwd, hwk, mfa
}


idp, world = idp_fixtures(USERS)


async def _narrow_restricted_to_hardware_keys(world: World) -> None:
    """The same deployment restarted with ``mfa_amr_by_level = { restricted = ["hwk"] }``."""
    policy = dataclasses.replace(
        world.settings.identity_policy,
        mfa_amr_by_level=((Level.RESTRICTED, frozenset({"hwk"})),),
    )
    await restart_with(world, dataclasses.replace(world.settings, identity_policy=policy))


async def _two_people(world: World, tmp_path: Path) -> tuple[Path, Path]:
    """One person signed in with a one-time code, one with a hardware key (both MFA)."""
    sessions = []
    for name, user in (("otto", "u-otp"), ("kira", "u-key")):
        code = await person(world, name, clearance="restricted", compartments=["cyber"])
        result = await sign_in(world, user, USERS, tmp_path, code=code)
        assert result["mfa"] is True
        sessions.append(Path(result["session_file"]))
    return sessions[0], sessions[1]


async def test_by_default_any_mfa_method_reaches_a_restricted_model(
    world: World, tmp_path: Path
) -> None:
    otp, hwk = await _two_people(world, tmp_path)
    assert await asyncio.to_thread(_chat, otp, "cyber-model")
    assert await asyncio.to_thread(_chat, hwk, "cyber-model")


async def test_a_level_narrowed_to_hardware_keys_refuses_a_one_time_code(
    world: World, tmp_path: Path
) -> None:
    await _narrow_restricted_to_hardware_keys(world)
    otp, hwk = await _two_people(world, tmp_path)
    assert await asyncio.to_thread(_chat, hwk, "cyber-model")
    with pytest.raises(openai.NotFoundError):  # refused like an unknown model (no oracle)
        await asyncio.to_thread(_chat, otp, "cyber-model")
    await world.settle()
    denied = world.events("request.denied")[-1]
    assert "mfa.required" in denied["data"]["reasons"]
    # The provider reported each method, and the sessions recorded them.
    started = [e["data"]["amr"] for e in world.events("session.started")]
    assert ["pwd", "otp", "mfa"] in started and ["pwd", "hwk", "mfa"] in started
