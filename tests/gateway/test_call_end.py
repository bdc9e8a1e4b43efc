"""One place ends a call: ``gateway.outcome`` is the only module that writes a
``request.completed`` event, and no call site spells an outcome as a bare string."""

from __future__ import annotations

import ast
from pathlib import Path

from garrison.audit import AuditEvent, EventName
from garrison.domain import Reason
from garrison.gateway.outcome import ended_elsewhere
from garrison.store.instances import Unfinished

SRC = Path(__file__).resolve().parents[2] / "src" / "garrison"
OUTCOME_MODULE = SRC / "gateway" / "outcome.py"


def _names_completed(node: ast.expr) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "REQUEST_COMPLETED") or (
        isinstance(node, ast.Constant) and node.value == EventName.REQUEST_COMPLETED.value
    )


def _builds_payload(node: ast.Call) -> bool:
    func = node.func
    name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
    return name == "RequestCompleted"


def _writes_completed(path: Path) -> list[int]:
    """Lines that build an event named ``request.completed`` (its name as the first argument
    or as ``name=``) or its typed payload; readers that compare names do not count."""
    tree = ast.parse(path.read_text(), str(path))
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and (
            (node.args and _names_completed(node.args[0]))
            or any(k.arg == "name" and _names_completed(k.value) for k in node.keywords)
            or _builds_payload(node)
        )
    ]


def test_only_the_outcome_module_writes_request_completed() -> None:
    found = {
        str(path.relative_to(SRC)): lines
        for path in sorted(SRC.rglob("*.py"))
        if (lines := _writes_completed(path))
    }
    assert set(found) == {"gateway/outcome.py"}, found
    # end_call and ended_elsewhere, nothing else.
    assert len(found["gateway/outcome.py"]) == 2, found


def _outcome_keywords(path: Path) -> list[int]:
    tree = ast.parse(path.read_text(), str(path))
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.keyword)
        and node.arg == "outcome"
        and isinstance(node.value, (ast.Constant, ast.JoinedStr))
    ]


def test_no_gateway_call_site_spells_an_outcome_as_a_string() -> None:
    found = {
        path.name: lines
        for path in sorted((SRC / "gateway").glob("*.py"))
        if (lines := _outcome_keywords(path))
    }
    assert found == {}


def test_a_dead_process_call_ends_with_its_allowed_record_facts() -> None:
    allowed = {"endpoint": "chat", "client_address": "10.0.0.9", "org_id": "org_1", "x": 1}
    call = Unfinished("gw1-req", "prn_1", "key_1", "assistant", allowed)
    event = ended_elsewhere(call, instance="gw1", recorded_by="gw2", at=5.0)
    # The record, byte for byte (its data is a payload's: lists are tuples until encoded).
    assert event.encode(3) == AuditEvent(
        EventName.REQUEST_COMPLETED,
        at=5.0,
        actor="garrison",
        request_id="gw1-req",
        principal_id="prn_1",
        credential_id="key_1",
        model="assistant",
        data={
            "endpoint": "chat",
            "client_address": "10.0.0.9",
            "org_id": "org_1",
            "status": None,
            "outcome": "process_ended",
            "reasons": [Reason.PROCESS_ENDED.value],
            "instance": "gw1",
            "recorded_by": "gw2",
        },
    ).encode(3)
    assert event.name is EventName.REQUEST_COMPLETED and event.payload is not None


def test_a_dead_process_call_of_an_old_record_keeps_its_address() -> None:
    """An allowed record is read for its address whichever key named it."""
    call = Unfinished("gw1-req", None, None, None, {"address": "10.0.0.9"})
    event = ended_elsewhere(call, instance="gw1", recorded_by="gw2", at=5.0)
    assert event.data["client_address"] == "10.0.0.9"
