"""Migration 0008: keys that exist before provenance become ``legacy``, with their creator
copied from the audit log; new keys record who made them and how."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from garrison.audit.sqlite_sink import integrate_outbox
from garrison.domain import Level, OrgKind, PrincipalKind
from garrison.domain.provenance import Provenance
from garrison.keyring import Sealer, create_key_files, load_pepper
from garrison.store import Directory, make_engine, migrate
from garrison.store.db import _MIGRATIONS
from garrison.store.snapshot import load_snapshot


def _upgrade(engine: sa.Engine, revision: str) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def test_existing_keys_become_legacy_with_their_creator(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'g.db'}")
    _upgrade(engine, "0007")
    now = time.time()
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO orgs (id, name, kind, created_at) VALUES ('org_1','o','internal',:n)"
            ),
            {"n": now},
        )
        conn.execute(
            sa.text(
                "INSERT INTO principals (id, name, org_id, kind, clearance, compartments, status,"
                " created_at) VALUES ('prn_1','p','org_1','human',1,'[]','active',:n)"
            ),
            {"n": now},
        )
        for kid in ("k1", "k2"):
            conn.execute(
                sa.text(
                    "INSERT INTO credentials (id, principal_id, secret_hash, created_at, networks)"
                    " VALUES (:k,'prn_1',x'00',:n,'[]')"
                ),
                {"k": kid, "n": now},
            )
        record = orjson.dumps({"actor": "prn_admin", "name": "credential.created"})
        conn.execute(
            sa.text(
                "INSERT INTO audit_events (seq, at, name, credential_id, record)"
                " VALUES (1, :n, 'credential.created', 'k1', :r)"
            ),
            {"n": now, "r": record},
        )
    _upgrade(engine, "head")
    with engine.connect() as conn:
        rows = dict(
            (r[0], (r[1], r[2]))
            for r in conn.execute(sa.text("SELECT id, provenance, created_by FROM credentials"))
        )
    assert rows == {"k1": ("legacy", "prn_admin"), "k2": ("legacy", None)}
    engine.dispose()


def test_new_keys_record_provenance_and_creator(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'g.db'}")
    migrate(engine)
    create_key_files(tmp_path / "keys")
    d = Directory(
        engine,
        actor="prn_x",
        pepper=load_pepper(tmp_path / "keys"),
        sealer=Sealer.from_dir(tmp_path / "keys"),
    )
    now = time.time()
    d.create_org("internal", OrgKind.INTERNAL, now=now)
    d.create_principal(
        "svc", org="internal", kind=PrincipalKind.SERVICE, clearance=Level.INTERNAL, now=now
    )
    made = d.create_key("svc", now=now, provenance=Provenance.SERVICE)
    legacy = d.create_key("svc", now=now)
    snap = load_snapshot(engine, Sealer.from_dir(tmp_path / "keys"))
    # No writer runs here: give the outbox's events their leaf index, as a gateway would.
    integrate_outbox(tmp_path / "g.db")
    assert snap.credentials[made.key.key_id].provenance == "service"
    assert snap.credentials[made.key.key_id].created_by == "prn_x"
    assert snap.credentials[legacy.key.key_id].provenance == "legacy"
    with engine.connect() as conn:
        data = [
            orjson.loads(r[0])["data"]
            for r in conn.execute(
                sa.text("SELECT record FROM audit_events WHERE name='credential.created'")
            )
        ]
    assert [e["provenance"] for e in data] == ["service", "legacy"]
    assert all(e["created_by"] == "prn_x" for e in data)
    engine.dispose()
