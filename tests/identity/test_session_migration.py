"""Migration 0014: the ``session_roles`` table goes (a session's roles travel in its token)
and ``sessions`` records each sign-in session; down again, the old table is back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from garrison.store import make_engine, schema
from garrison.store.db import _MIGRATIONS


def _to(engine: sa.Engine, revision: str, *, down: bool = False) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        (command.downgrade if down else command.upgrade)(cfg, revision)


def _tables(engine: sa.Engine) -> set[str]:
    return set(sa.inspect(engine).get_table_names())


def test_0014_swaps_session_roles_for_sessions_and_back(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'g.db'}")
    _to(engine, "0013")
    assert "session_roles" in _tables(engine) and "sessions" not in _tables(engine)
    _to(engine, "0014")
    assert "session_roles" not in _tables(engine) and "sessions" in _tables(engine)
    # The migrated table is the one the code writes (same columns, same index).
    inspector = sa.inspect(engine)
    columns = {c["name"] for c in inspector.get_columns("sessions")}
    assert columns == {c.name for c in schema.sessions.columns}
    assert [i["column_names"] for i in inspector.get_indexes("sessions")] == [["principal_id"]]
    _to(engine, "0013", down=True)
    assert "session_roles" in _tables(engine) and "sessions" not in _tables(engine)


# ── the records themselves (identity_links) ───────────────────────────────────────────────
def _directory(tmp_path: Path) -> tuple[sa.Engine, str]:
    from garrison.domain import Level, OrgKind, PrincipalKind
    from garrison.keyring import Sealer, create_key_files, load_pepper
    from garrison.store import Directory, migrate

    engine = make_engine(f"sqlite:///{tmp_path / 'g.db'}")
    migrate(engine)
    create_key_files(tmp_path / "keys")
    d = Directory(
        engine,
        actor="prn_x",
        pepper=load_pepper(tmp_path / "keys"),
        sealer=Sealer.from_dir(tmp_path / "keys"),
    )
    d.create_org("internal", OrgKind.INTERNAL, now=NOW)
    pid = d.create_principal(
        "carol", org="internal", kind=PrincipalKind.HUMAN, clearance=Level.INTERNAL, now=NOW
    )
    return engine, pid


NOW = 1_700_000_000.0


def _session(sid: str, pid: str, issued: float) -> Any:
    from garrison.store.identity_links import SessionRecord

    return SessionRecord(
        id=sid,
        principal_id=pid,
        issuer="https://idp.example",
        subject="carol-sub",
        provider="default",
        jkt="thumb",
        amr=("pwd", "otp", "mfa"),
        acr=None,
        roles=("auditor",),
        issued_at=issued,
        expires_at=issued + 3600,
        address="10.0.0.5",
    )


def _started(sid: str, pid: str, issued: float) -> Any:
    from garrison.audit.payloads_identity import SessionStarted

    return SessionStarted(
        client_address="10.0.0.5",
        jkt="thumb",
        provider="default",
        issuer="https://idp.example",
        person="carol@example.com",
        principal_id=pid,
        session_id=sid,
        amr=("pwd", "otp", "mfa"),
        acr=None,
        auth_time=issued,
        expires_at=issued + 3600,
        roles=("auditor",),
        roles_dropped=(),
    )


def test_a_session_is_recorded_with_its_event_and_listed(tmp_path: Path) -> None:
    from garrison.store import identity_links

    engine, pid = _directory(tmp_path)
    identity_links.record_session(
        engine, _session("ses_a", pid, NOW), started=_started("ses_a", pid, NOW), request_id="r-1"
    )
    with engine.connect() as conn:
        (row,) = identity_links.list_sessions(conn, pid, now=NOW + 1)
        assert identity_links.session_owner(conn, "ses_a") == pid
        assert identity_links.session_owner(conn, "ses_nope") is None
        outbox = conn.execute(sa.select(schema.audit_outbox)).all()
    assert row["id"] == "ses_a" and row["amr"] == ["pwd", "otp", "mfa"] and row["live"]
    assert row["roles"] == ["auditor"] and row["jkt"] == "thumb"
    started = [r for r in outbox if r.name == "session.started"]
    assert len(started) == 1 and started[0].credential_id == "ses_a"
    # Expired: listed only when asked for.
    with engine.connect() as conn:
        assert identity_links.list_sessions(conn, pid, now=NOW + 7200) == []
        assert len(identity_links.list_sessions(conn, pid, now=NOW + 7200, include_ended=True)) == 1


def test_old_rows_are_pruned_after_the_keep_window(tmp_path: Path) -> None:
    from garrison.store import identity_links
    from garrison.store.identity_links import SESSION_RECORD_KEEP_S

    engine, pid = _directory(tmp_path)
    identity_links.record_session(
        engine, _session("ses_old", pid, NOW), started=_started("ses_old", pid, NOW)
    )
    # Just inside the window: kept.
    just = NOW + 3600 + SESSION_RECORD_KEEP_S - 1
    identity_links.record_session(
        engine, _session("ses_b", pid, just), started=_started("ses_b", pid, just)
    )
    with engine.connect() as conn:
        assert identity_links.session_owner(conn, "ses_old") == pid
    # Past it: the next start prunes the old row.
    identity_links.record_session(
        engine, _session("ses_c", pid, just + 2), started=_started("ses_c", pid, just + 2)
    )
    with engine.connect() as conn:
        assert identity_links.session_owner(conn, "ses_old") is None
        assert identity_links.session_owner(conn, "ses_b") == pid


def test_a_listing_is_bounded(tmp_path: Path, monkeypatch: Any) -> None:
    from garrison.store import identity_links

    monkeypatch.setattr(identity_links, "SESSIONS_LIST_MAX", 3)
    engine, pid = _directory(tmp_path)
    for n in range(5):
        identity_links.record_session(
            engine, _session(f"ses_{n}", pid, NOW + n), started=_started(f"ses_{n}", pid, NOW + n)
        )
    with engine.connect() as conn:
        rows = identity_links.list_sessions(conn, pid, now=NOW + 10)
    assert [r["id"] for r in rows] == ["ses_4", "ses_3", "ses_2"]  # newest first
