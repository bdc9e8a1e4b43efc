"""The OpenAPI 3.1 document of the admin API, built from the route table and the request
models, so it cannot drift from what the server accepts."""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson

from garrison import __version__
from garrison.admin.shape import ADMIN_PREFIX

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


def _operation(route: Route, schemas: dict[str, Any]) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": route.summary,
        "operationId": route.handler.__name__,
        "tags": [route.tag],
        "security": [{"garrisonKey": []}],
        "responses": {
            str(route.status): {
                "description": "OK",
                "content": {"application/json": {"schema": {}}},
            },
            "400": {"$ref": "#/components/responses/Error"},
            "401": {"$ref": "#/components/responses/Error"},
            "403": {"$ref": "#/components/responses/Error"},
            "404": {"$ref": "#/components/responses/Error"},
        },
    }
    if route.action is not None:
        op["x-garrison-action"] = route.action.value
    params = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in _PARAM.findall(route.path)
    ]
    params += [
        {
            "name": name,
            "in": "query",
            "required": False,
            "description": text,
            "schema": {"type": "string"},
        }
        for name, text in route.query
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
        op["responses"]["409"] = {"$ref": "#/components/responses/Error"}
        op["responses"]["413"] = {"$ref": "#/components/responses/Error"}
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


@functools.cache
def _cached(routes: tuple[Route, ...]) -> bytes:
    return orjson.dumps(build(routes))


def document(routes: tuple[Route, ...]) -> bytes:
    return _cached(routes)
