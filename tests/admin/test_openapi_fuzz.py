"""The admin API against its own OpenAPI document, under schemathesis.

Every operation gets generated requests (valid ones, and ones schemathesis breaks on
purpose); every answer must be no server error, carry a status the document lists for that
operation, and have a body the document's schema accepts. Bounded (a fixed number of examples
per operation, derandomized) so that it runs in the normal suite.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import hypothesis
import orjson
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    response_schema_conformance,
    status_code_conformance,
)

from garrison.admin.api import ROUTES
from garrison.admin_wire import ADMIN_PREFIX
from tests.support.admin import admin_call
from tests.support.world import World

pytestmark = pytest.mark.e2e

# Examples per operation and mode: ~47 operations x (positive + negative) stays well under
# a minute on two cores, and a fixed derandomized run finds the same cases every time.
EXAMPLES_PER_OPERATION = 8
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]


def _fuzz(doc: dict[str, Any], base: str, key: str) -> dict[str, list[int]]:
    """Operation label → the statuses it answered."""
    schema = schemathesis.openapi.from_dict(doc)
    session = requests.Session()
    session.headers["authorization"] = f"Bearer {key}"
    seen: dict[str, list[int]] = {}
    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]  # an Err fails the test here
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(
                max_examples=EXAMPLES_PER_OPERATION,
                derandomize=True,
                database=None,
                deadline=None,
                phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case: Any) -> None:
                response = case.call(base_url=base, session=session, timeout=10)
                case.validate_response(response, checks=CHECKS)
                seen.setdefault(case.operation.label, []).append(response.status_code)

            run()
    return seen


async def test_every_operation_holds_up_under_schemathesis(world: World) -> None:
    status, doc = await admin_call(world, world.admin_key, "GET", "/openapi.json")
    assert status == 200
    # Lists with something in them, so that their items are checked against the document.
    for path, body, expected in (
        ("/locks", {"kind": "principal", "target": "alice", "reason": "fuzz"}, 201),
        ("/incidents", {"title": "fuzz"}, 201),
        ("/principals", {"name": "erin", "org": "internal", "roles": ["auditor"]}, 202),
    ):
        status, answer = await admin_call(world, world.admin_key, "POST", path, body)
        assert status == expected, answer
    started = time.monotonic()
    seen = await asyncio.to_thread(_fuzz, doc, world.base, world.admin_key)
    elapsed = time.monotonic() - started
    # Every operation of the route table was exercised, and the reads answered (the cases
    # reached the routes rather than a 404 for a wrong path).
    assert {label.split(" ", 1)[1] for label in seen} == {ADMIN_PREFIX + r.path for r in ROUTES}
    for route in ROUTES:
        if route.method == "GET" and "{" not in route.path:
            statuses = seen[f"GET {ADMIN_PREFIX}{route.path}"]
            assert 200 in statuses, (route.path, statuses)
    assert elapsed < 60, elapsed


async def test_the_document_needs_an_admin_key(world: World) -> None:
    status, body = await admin_call(world, None, "GET", "/openapi.json")
    assert status == 401, body
    assert "paths" not in orjson.dumps(body).decode()
    # A principal with no admin role is refused too.
    status, body = await admin_call(world, world.keys["alice"], "GET", "/openapi.json")
    assert status == 403, body
