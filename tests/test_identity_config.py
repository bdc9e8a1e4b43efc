"""Tests for ``[identity]`` in garrison.toml: public_url, people_bearer_keys, mfa_from_level."""

from __future__ import annotations

from pathlib import Path

import pytest

from garrison.config import Settings, load_settings
from garrison.domain import Level
from garrison.errors import ConfigError
from garrison.policy.context import NO_PEOPLE_KEYS, IdentityPolicy

STORAGE = """
[storage]
database_url = "sqlite:////var/lib/garrison/garrison.db"
key_dir = "/var/lib/garrison/keys"
"""


def load(tmp_path: Path, identity: str) -> Settings:
    path = tmp_path / "garrison.toml"
    path.write_text(STORAGE + "\n[identity]\n" + identity)
    return load_settings(path, env={})


def test_the_defaults(tmp_path: Path) -> None:
    settings = load(tmp_path, "")
    assert settings.public_url is None
    assert settings.token_public_url == "http://127.0.0.1:8080"
    assert settings.identity_policy == IdentityPolicy(Level.RESTRICTED, None)


def test_all_three_settings(tmp_path: Path) -> None:
    settings = load(
        tmp_path,
        'public_url = "https://Garrison.example.org/"\n'
        'people_bearer_keys = "internal-and-below"\n'
        'mfa_from_level = "critical"\n',
    )
    assert settings.token_public_url == "https://Garrison.example.org"
    assert settings.identity_policy == IdentityPolicy(Level.CRITICAL, int(Level.INTERNAL))


def test_people_keys_can_be_switched_off_everywhere(tmp_path: Path) -> None:
    policy = load(tmp_path, 'people_bearer_keys = "none"\n').identity_policy
    assert policy.people_key_max_level == NO_PEOPLE_KEYS


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('public_url = "garrison.example.org"', "http"),
        ('public_url = "https://garrison.example.org/v1"', "origin only"),
        ('public_url = "https://garrison.example.org/?x=1"', "origin only"),
        ('people_bearer_keys = "some"', "people_bearer_keys"),
        ('people_bearer_keys = "secret-and-below"', "people_bearer_keys"),
        ('mfa_from_level = "high"', "mfa_from_level"),
        ('public_ulr = "https://x.example"', "public_url"),
    ],
)
def test_bad_values_are_refused_by_name(tmp_path: Path, line: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(tmp_path, line + "\n")


def test_mfa_can_be_narrowed_to_some_methods_per_level(tmp_path: Path) -> None:
    settings = load(tmp_path, 'mfa_amr_by_level = { critical = ["hwk", "sc"] }\n')
    policy = settings.identity_policy
    assert policy.mfa_amr_by_level == ((Level.CRITICAL, frozenset({"hwk", "sc"})),)
    # At critical only a hardware key or smart card counts; other levels take any MFA.
    assert policy.mfa_counts(Level.CRITICAL, ("pwd", "hwk", "mfa"))
    assert not policy.mfa_counts(Level.CRITICAL, ("pwd", "otp", "mfa"))
    assert policy.mfa_counts(Level.RESTRICTED, ("pwd", "otp", "mfa"))


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('mfa_amr_by_level = ["hwk"]', "must be a table"),
        ('mfa_amr_by_level = { secret = ["hwk"] }', "must name a level"),
        ("mfa_amr_by_level = { critical = [] }", "non-empty list"),
        ("mfa_amr_by_level = { critical = [1] }", "amr values"),
        ('mfa_amr_by_level = { internal = ["hwk"] }', "below mfa_from_level"),
    ],
)
def test_bad_mfa_amr_by_level_is_refused(tmp_path: Path, line: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(tmp_path, line + "\n")
