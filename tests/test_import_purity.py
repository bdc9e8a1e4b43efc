"""Pure cores are pure at import time (DESIGN.md, rule 1 of the layout).

Each pure module is imported in a fresh interpreter, so nothing an earlier test imported can
hide what the module itself pulls in; the test then lists the loaded modules and fails on any
database or HTTP library and on any store, gateway or admin module.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Importing a pure module must not load any of these (top-level package names).
FORBIDDEN_LIBRARIES = frozenset(
    {"sqlalchemy", "alembic", "sqlite3", "_sqlite3", "aiohttp", "httpx", "psycopg", "redis"}
)
# ...nor any module of the I/O planes of Garrison itself.
FORBIDDEN_GARRISON = ("garrison.store", "garrison.gateway", "garrison.admin")

PURE_MODULES = (
    "garrison.domain",
    "garrison.domain.snapshot",
    "garrison.policy",
    "garrison.policy.context",
    "garrison.policy.engine",
    "garrison.policy.reference",
    "garrison.detect.base",
    "garrison.detect.detectors",
    "garrison.detect.leaked_keys",
    "garrison.detect.model_use",
    "garrison.detect.network",
    "garrison.detect.refusals",
    "garrison.detect.timing",
    "garrison.detect.volume",
    "garrison.detect.engine",
    "garrison.detect.observation",
    "garrison.detect.rules",
    "garrison.audit",
    "garrison.audit.events",
    "garrison.audit.payloads",
    "garrison.audit.payload_base",
    "garrison.audit.payloads_directory",
    "garrison.audit.payloads_respond",
    "garrison.audit.frozen",
    "garrison.audit.merkle",
    "garrison.audit.checkpoint",
    "garrison.audit.proofs",
    "garrison.audit.verify",
    "garrison.audit.findings",
    "garrison.audit.columns",
    "garrison.identity.keys",
)

_PROBE = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
print(json.dumps(sorted(sys.modules)))
"""

SRC = Path(__file__).resolve().parents[1] / "src"


def loaded_by(module: str) -> set[str]:
    """The modules a fresh interpreter has loaded after importing ``module``."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
    }
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, module],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=60,
    )
    return set(json.loads(out.stdout))


def offenders(loaded: set[str]) -> list[str]:
    libraries = {m for m in loaded if m.split(".")[0] in FORBIDDEN_LIBRARIES}
    planes = {m for m in loaded if any(m == p or m.startswith(p + ".") for p in FORBIDDEN_GARRISON)}
    return sorted(libraries | planes)


@pytest.mark.parametrize("module", PURE_MODULES)
def test_pure_module_loads_no_database_http_or_plane_module(module: str) -> None:
    loaded = loaded_by(module)
    assert module in loaded
    assert offenders(loaded) == []


_OFFLINE_VERIFY = """
import sys
for name in sys.argv[1].split(","):
    sys.modules[name] = None  # importing any database or HTTP library now fails

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from garrison.audit.checkpoint import GENESIS_PREV, Signer
from garrison.audit.events import AuditEvent, EventName
from garrison.audit.merkle import CompactTree, LeafHashes, inclusion_proof, leaf_hash
from garrison.audit.proofs import check_inclusion_bundle
from garrison.audit.verify import verify_log

signer = Signer([Ed25519PrivateKey.generate()])
records = [
    AuditEvent(EventName.REQUEST_ALLOWED, at=float(i), request_id=f"r{i}").encode(i)
    for i in range(10)
]
hashes = [leaf_hash(r) for r in records]
tree = CompactTree()
tree.extend(hashes)
checkpoint = signer.sign(tree.size, tree.root(), 10.0, GENESIS_PREV)
keys = signer.public_keys()
rows = [(i + 1, r, h) for i, (r, h) in enumerate(zip(records, hashes))]
assert verify_log(rows, [checkpoint], keys).ok
tampered = [*rows[:3], (4, records[3].replace(b"r3", b"r9"), hashes[3]), *rows[4:]]
assert not verify_log(tampered, [checkpoint], keys).ok
bundle = {
    "type": "inclusion",
    "index": 3,
    "record": records[3].decode(),
    "proof": [p.hex() for p in inclusion_proof(3, tree.size, LeafHashes(hashes))],
    "checkpoint": checkpoint.to_dict(),
}
assert check_inclusion_bundle(bundle, keys) == 3
print("verified")
"""


def test_the_offline_verifier_runs_with_the_pure_core_alone() -> None:
    """An auditor's laptop: verify a log from plain rows and check an inclusion proof in an
    interpreter where no database or HTTP library can be imported at all."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
    }
    blocked = ",".join(sorted(FORBIDDEN_LIBRARIES))
    out = subprocess.run(
        [sys.executable, "-c", _OFFLINE_VERIFY, blocked],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "verified"


def test_the_probe_sees_what_an_io_module_loads() -> None:
    """The check can fail: the SQLite sink loads sqlite3 and the store."""
    found = offenders(loaded_by("garrison.audit.sqlite_sink"))
    assert "sqlite3" in found
    assert "garrison.store.db" in found


def test_storage_names_on_the_audit_face_still_resolve_lazily() -> None:
    """The temporary shim: old ``from garrison.audit import AuditLog`` keeps working."""
    import garrison.audit as face
    from garrison.audit import AuditLog, SqliteAuditSink
    from garrison.audit.sqlite_sink import SqliteAuditSink as sink
    from garrison.audit.writer import AuditLog as log

    assert AuditLog is log
    assert SqliteAuditSink is sink
    with pytest.raises(AttributeError, match="NoSuchName"):
        _ = face.NoSuchName
