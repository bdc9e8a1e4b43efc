"""``[storage] redis_url`` and ``redis_prefix``, and ``GARRISON_REDIS_URL``."""

from __future__ import annotations

from pathlib import Path

import pytest

from garrison.config import Settings, load_settings
from garrison.errors import ConfigError
from garrison.gateway.admission_limits import MAX_CALLS_PER_MINUTE_PER_PRINCIPAL
from garrison.gateway.limits import GatewayLimits

STORAGE = """
[storage]
database_url = "sqlite:////var/lib/garrison/garrison.db"
key_dir = "/var/lib/garrison/keys"
"""


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> Settings:
    path = tmp_path / "garrison.toml"
    path.write_text(text)
    return load_settings(path, env=env or {})


def test_without_redis_url_nothing_is_shared(tmp_path: Path) -> None:
    settings = load(tmp_path, STORAGE)
    assert settings.redis_url is None
    assert settings.redis_prefix == "garrison"


def test_redis_url_and_prefix_are_read(tmp_path: Path) -> None:
    text = STORAGE + 'redis_url = "redis://127.0.0.1:6379/0"\nredis_prefix = "prod-eu"\n'
    settings = load(tmp_path, text)
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.redis_prefix == "prod-eu"


def test_the_environment_names_redis_too(tmp_path: Path) -> None:
    settings = load(tmp_path, STORAGE, {"GARRISON_REDIS_URL": "rediss://cache.internal:6380/2"})
    assert settings.redis_url == "rediss://cache.internal:6380/2"


@pytest.mark.parametrize("url", ["http://127.0.0.1:6379", "127.0.0.1:6379"])
def test_a_redis_url_that_is_not_one_is_refused(tmp_path: Path, url: str) -> None:
    with pytest.raises(ConfigError, match="redis_url"):
        load(tmp_path, STORAGE + f'redis_url = "{url}"\n')


def test_the_call_rate_is_a_limit_like_the_others(tmp_path: Path) -> None:
    assert GatewayLimits().max_calls_per_minute_per_principal == MAX_CALLS_PER_MINUTE_PER_PRINCIPAL
    text = STORAGE + "[limits]\nmax_calls_per_minute_per_principal = 600\n"
    settings = load(tmp_path, text)
    assert settings.limits.max_calls_per_minute_per_principal == 600
