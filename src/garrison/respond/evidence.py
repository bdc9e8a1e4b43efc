"""The evidence bundle of an incident: every event of its timeline with an inclusion proof
against one signed checkpoint, the public keys, and the command that checks it all offline.

    garrison audit verify-proof evidence.json --pubkey pubkey.json

checks the checkpoint's signature with the key given on the command line (not the copy in
the bundle), then every event's inclusion in the signed tree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa

from garrison.audit.merkle import LeafHashes
from garrison.audit.sqlite_reader import AuditReader, prove_inclusion
from garrison.store.incidents import incident_report, timeline

VERIFY_COMMAND = "garrison audit verify-proof evidence.json --pubkey pubkey.json"


def build_evidence(
    engine: sa.Engine, db_path: Path, incident_id: str, public_keys: dict[str, str], now: float
) -> dict[str, Any]:
    with engine.connect() as conn:
        report = incident_report(conn, incident_id, now)
        events = timeline(conn, incident_id, limit=None)
    with AuditReader(db_path) as reader:
        checkpoints = reader.checkpoints()
        if not checkpoints:
            raise LookupError("no signed checkpoint yet")
        cp = checkpoints[-1]
        hashes = LeafHashes(reader.leaf_hashes(cp.tree_size))
        proven = []
        later = []
        for index, record in events:
            if index >= cp.tree_size:
                later.append(index)
                continue
            bundle = prove_inclusion(reader, index, record, hashes)
            proven.append(
                {
                    "index": index,
                    "record": record.decode(),
                    "proof": [p.hex() for p in bundle.proof],
                }
            )
    return {
        "v": 1,
        "type": "evidence",
        "incident": report["incident"],
        "checkpoint": cp.to_dict(),
        "public_keys": public_keys,
        "events": proven,
        # Events newer than the checkpoint (it is signed at least once a second): export again
        # to cover them.
        "not_yet_checkpointed": later,
        "verify": VERIFY_COMMAND,
    }
