"""``garrison audit export``: each line keeps the record exactly as hashed (a string whose
UTF-8 bytes are the leaf) and carries the same record parsed beside it, with an RFC 3339
time; the proofs still verify against the exact bytes."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import orjson
import pytest

from garrison.audit.checkpoint import Checkpoint
from garrison.audit.merkle import leaf_hash, verify_inclusion
from garrison.timestamps import rfc3339
from tests.cli.conftest import Served

pytestmark = pytest.mark.e2e

# Longer than the gateway's checkpoint interval (1 s): the idle writer signs one meanwhile.
PAUSE_S = 1.5


def test_export_keeps_the_hashed_bytes_and_adds_the_parsed_event(
    served: Served, tmp_path: Path
) -> None:
    # Characters orjson writes as raw UTF-8 (not \u escapes): the bytes must survive as is.
    served.make_principal("zoe")
    served.ok("lock", "principal", "zoe", "--reason", 'zoë: tab\there, quote " and ✓')
    time.sleep(PAUSE_S)
    path = tmp_path / "export.jsonl"
    served.ok("audit", "export", "--proofs", "--out", str(path))
    header, *lines = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    checkpoint = Checkpoint.from_dict(header["checkpoint"])
    assert header["time"] == rfc3339(checkpoint.at)
    stored = dict(served.query("SELECT seq - 1, leaf_hash FROM audit_events"))
    assert len(lines) >= checkpoint.tree_size > 0
    assert any("zoë" in line["record"] for line in lines)
    for line in lines:
        exact = line["record"].encode()
        assert leaf_hash(exact) == bytes(stored[line["index"]])
        assert line["event"] == orjson.loads(exact)
        assert line["event"]["i"] == line["index"]
        assert line["time"] == rfc3339(line["event"]["at"])
        assert line["time"].endswith("Z")
        assert datetime.fromisoformat(line["time"]).timestamp() == pytest.approx(
            line["event"]["at"], abs=0.001
        )
        if line["index"] < checkpoint.tree_size:
            proof = [bytes.fromhex(p) for p in line["proof"]]
            verify_inclusion(
                leaf_hash(exact),
                line["index"],
                checkpoint.tree_size,
                proof,
                bytes.fromhex(checkpoint.root),
            )


def test_export_without_proofs_has_the_same_two_views(served: Served) -> None:
    out = served.ok("audit", "export")
    lines = [orjson.loads(line) for line in out.splitlines()]
    assert lines and all(set(line) == {"index", "time", "record", "event"} for line in lines)
    for line in lines:
        assert line["event"] == orjson.loads(line["record"])
