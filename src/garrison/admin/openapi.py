"""The OpenAPI 3.1 document of the admin API, built from the route table and the request
models, so it cannot drift from what the server accepts."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson

from garrison import __version__
from garrison.admin import responses
from garrison.admin_wire import ADMIN_PREFIX

if TYPE_CHECKING:
    from garrison.admin.base import Route

_PARAM = re.compile(r"\{([a-z_]+)\}")
_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["type", "message"],
            "properties": {
                "type": {"type": "string", "description": "Error class, e.g. invalid_request."},
                "message": {"type": "string"},
                "rule": {
                    "type": ["string", "null"],
                    "description": "The directory rule refused, e.g. vendor-ceiling.",
                },
                "request_id": {"type": ["string", "null"]},
            },
        }
    },
}


_ERROR_REF = {"$ref": "#/components/responses/Error"}


def _json_body(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _operation(route: Route, schemas: dict[str, Any]) -> dict[str, Any]:
    op_id = route.handler.__name__
    answers: dict[str, Any] = {
        str(route.status): _json_body("OK", responses.body_of(op_id)),
        "400": _ERROR_REF,
        "401": _ERROR_REF,
        "403": _ERROR_REF,
        "404": _ERROR_REF,
        # The audit log cannot take the call's record (reads and writes are both refused).
        "503": _ERROR_REF,
    }
    if op_id in responses.PROPOSES and route.status != 202:
        answers["202"] = _json_body(
            "Accepted: the change waits for a second admin's approval.", responses.PENDING
        )
    if route.method != "GET":
        # Already exists, already decided, changed meanwhile.
        answers["409"] = _ERROR_REF
    op: dict[str, Any] = {
        "summary": route.summary,
        "operationId": op_id,
        "tags": [route.tag],
        "security": [{"garrisonKey": []}],
        "responses": dict(sorted(answers.items())),
    }
    if route.action is not None:
        op["x-garrison-action"] = route.action.value
    params = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in _PARAM.findall(route.path)
    ]
    params += [
        {
            "name": entry[0],
            "in": "query",
            "required": False,
            "description": entry[1],
            "schema": entry[2] if len(entry) > 2 else {"type": "string"},
        }
        for entry in route.query
    ]
    if params:
        op["parameters"] = params
    if route.body is not None:
        schema = route.body.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, sub in schema.pop("$defs", {}).items():
            schemas[name] = sub
        schemas[route.body.__name__] = schema
        op["requestBody"] = {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"$ref": f"#/components/schemas/{route.body.__name__}"}
                }
            },
        }
        op["responses"]["413"] = _ERROR_REF
    return op


def build(routes: Sequence[Route]) -> dict[str, Any]:
    schemas: dict[str, Any] = {"Error": _ERROR}
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(ADMIN_PREFIX + route.path, {})[route.method.lower()] = _operation(
            route, schemas
        )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Garrison admin API",
            "version": __version__,
            "description": (
                "Vendors, principals, keys and models. Authenticate with a Garrison key "
                "(Authorization: Bearer gk_...) whose principal holds an admin role."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": {
                "Error": {
                    "description": "Refused; the message names the rule.",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                    },
                }
            },
            "securitySchemes": {"garrisonKey": {"type": "http", "scheme": "bearer"}},
        },
    }


# Built once per route table (routes carry JSON Schemas, so they are not hashable).
_BUILT: dict[int, tuple[tuple[Route, ...], bytes]] = {}


def document(routes: tuple[Route, ...]) -> bytes:
    built = _BUILT.get(id(routes))
    if built is None or built[0] is not routes:
        built = (routes, orjson.dumps(build(routes)))
        _BUILT[id(routes)] = built
    return built[1]
