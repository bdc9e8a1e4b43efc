"""The evidence bundle of an incident: every event of its timeline with an inclusion proof
against one signed checkpoint, the public keys, and the command that checks it all offline.

    garrison audit verify-proof evidence.json --fingerprint FINGERPRINT

checks the checkpoint's signature with a key the checker obtained independently (given with
``--pubkey``, or the bundle's copy only if its fingerprint is the one given), then every
event's inclusion in the signed tree. A key shipped inside the bundle proves nothing by
itself: whoever could alter the bundle could replace it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa

from garrison.audit.checkpoint import fingerprint_of, load_public_b64
from garrison.audit.merkle import LeafHashes
from garrison.audit.sqlite_reader import open_reader, prove_inclusion
from garrison.store.incidents import incident_report, timeline

VERIFY_COMMAND = "garrison audit verify-proof evidence.json --fingerprint FINGERPRINT"


def build_evidence(
    engine: sa.Engine, database_url: str, incident_id: str, public_keys: dict[str, str], now: float
) -> dict[str, Any]:
    with engine.connect() as conn:
        report = incident_report(conn, incident_id, now)
        events = timeline(conn, incident_id, limit=None)
    with open_reader(database_url) as reader:
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


def signing_fingerprint(bundle: dict[str, Any]) -> str:
    """The fingerprint of the key that signed the bundle's checkpoint (from the bundle's own
    copy: to be compared with one obtained independently, never trusted by itself)."""
    kid = bundle["checkpoint"]["key_id"]
    return fingerprint_of(load_public_b64(bundle["public_keys"][kid]))


def verify_instructions(bundle: dict[str, Any], where: Path) -> str:
    """VERIFY.txt: how to check the bundle without trusting anything inside it."""
    kid = bundle["checkpoint"]["key_id"]
    fingerprint = signing_fingerprint(bundle)
    return (
        f"This bundle's checkpoint is signed by audit key {kid}\n"
        f"  fingerprint {fingerprint}\n\n"
        "Do not trust a key or fingerprint shipped in this bundle (this file included):\n"
        "whoever could alter the bundle could replace them. Obtain the gateway's audit key\n"
        "independently, from its operator (`garrison audit pubkey --fingerprint` on the\n"
        "gateway host) or from the copy you hold, then check the bundle against it:\n\n"
        f"  cd {where}\n"
        "  garrison audit verify-proof evidence.json --fingerprint <the fingerprint you obtained>\n"
        "or, with the key itself:\n"
        "  garrison audit verify-proof evidence.json --pubkey <the key file you obtained>\n"
    )
