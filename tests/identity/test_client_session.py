"""Tests for ``garrison.identity.client_session``: the CLI's 0600 session file."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from garrison.errors import ConfigError
from garrison.identity.client_session import (
    SESSION_FILE_MAX_BYTES,
    ClientSession,
    default_session_path,
    delete_session,
    load_session,
    save_session,
)
from garrison.identity.dpop import generate_proof_key


def _session() -> ClientSession:
    return ClientSession(
        access_token="tok",
        expires_at=1_700_000_600.0,
        dpop_private_jwk=generate_proof_key().as_dict(private=True),
        gateway_url="http://127.0.0.1:8080",
    )


def test_a_session_round_trips_owner_only(tmp_path: Path) -> None:
    path = save_session(_session(), tmp_path / "garrison" / "session.json")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    loaded = load_session(path)
    assert loaded.access_token == "tok"
    assert loaded.proof_key().is_private


def test_the_secret_parts_are_not_in_its_repr() -> None:
    text = repr(_session())
    assert "tok" not in text.replace("access_token", "")
    assert '"d"' not in text and "'d'" not in text


def test_a_session_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = save_session(_session(), tmp_path / "session.json")
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        load_session(path)


def test_no_session_says_to_log_in(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="garrison login"):
        load_session(tmp_path / "none.json")


def test_a_damaged_or_huge_session_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "session.json"
    path.write_text("{}")
    path.chmod(0o600)
    with pytest.raises(ConfigError, match="not a Garrison session"):
        load_session(path)
    path.write_text("x" * (SESSION_FILE_MAX_BYTES + 1))
    with pytest.raises(ConfigError, match="not a Garrison session"):
        load_session(path)


def test_a_public_key_in_the_session_is_refused(tmp_path: Path) -> None:
    session = ClientSession(
        access_token="tok",
        expires_at=1.0,
        dpop_private_jwk=generate_proof_key().as_dict(private=False),
        gateway_url="http://127.0.0.1:8080",
    )
    with pytest.raises(ConfigError, match="no private part"):
        session.proof_key()


def test_the_default_path_follows_the_environment(tmp_path: Path) -> None:
    assert default_session_path({"XDG_CONFIG_HOME": str(tmp_path)}) == (
        tmp_path / "garrison" / "session.json"
    )
    assert default_session_path({"GARRISON_SESSION_FILE": "/x/s.json"}) == Path("/x/s.json")


def test_delete(tmp_path: Path) -> None:
    path = save_session(_session(), tmp_path / "session.json")
    assert delete_session(path) is True
    assert delete_session(path) is False


def test_a_session_keeps_the_gateway_and_the_admin_api_apart(tmp_path: Path) -> None:
    import dataclasses

    session = dataclasses.replace(_session(), admin_url="http://127.0.0.1:8081")
    loaded = load_session(save_session(session, tmp_path / "session.json"))
    assert loaded.gateway_url == "http://127.0.0.1:8080"  # model calls
    assert loaded.admin_base == "http://127.0.0.1:8081"  # admin commands


def test_an_old_session_file_with_one_url_reads_as_one_listener(tmp_path: Path) -> None:
    import json

    path = tmp_path / "session.json"
    old = {
        "access_token": "tok",
        "expires_at": 1_700_000_600.0,
        "dpop_private_jwk": generate_proof_key().as_dict(private=True),
        "gateway_url": "http://127.0.0.1:8080",
    }
    path.write_text(json.dumps(old))
    path.chmod(0o600)
    loaded = load_session(path)
    assert loaded.admin_url is None
    assert loaded.gateway_url == loaded.admin_base == "http://127.0.0.1:8080"
