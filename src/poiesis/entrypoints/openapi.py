"""The OpenAPI document the API serves at /openapi/openapi.json: exactly what it accepts and answers.

Written out rather than inferred from the handlers, which read their bodies themselves (to name the
field at fault) and share one path segment for GetTask and CancelTask. The schemas come from the
same msgspec types the server decodes and encodes, so they cannot drift from the code; the paths
are those of TES v1.1.0 plus the `owner` extension of ListTasks. Every error is the one JSON error
body. Generated clients and the schema-driven fuzz test read this document.
"""

from __future__ import annotations

from typing import Any

import msgspec

from poiesis import __version__
from poiesis.domain.listing import MAX_FILTER_CHARS, MAX_PAGE_SIZE
from poiesis.domain.states import State
from poiesis.domain.submission import NewTask
from poiesis.domain.tes import (
    CancelTaskResponse,
    CreateTaskResponse,
    ListTasksResponse,
    ServiceInfo,
    Task,
    TaskMinimal,
)

REF = "#/components/schemas/{name}"


class ErrorBody(msgspec.Struct, omit_defaults=True):
    """Every error the API answers: what went wrong, the status again, and the request field at
    fault when there is one (`executors[0].stdout`, `page_size`, `Host`)."""

    msg: str
    status_code: int
    field: str | None = None


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(name=name)}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


_ERRORS = {
    400: "invalid request: the body or a parameter is malformed or breaks a rule (see `field`)",
    401: "no credential, or one that does not prove who the caller is",
    403: "the caller may not do this (a cross-origin request, another owner's tasks)",
    404: "no such task visible to the caller",
    413: "the body is larger than the server accepts",
    415: "the body is not application/json",
    422: "the Idempotency-Key was already used with another request body",
    429: "the caller created tasks faster than its rate allows; retry after the Retry-After seconds",
    503: "the database (or the identity provider) cannot answer now; retry",
}


def _responses(ok: dict[str, Any], *errors: int) -> dict[str, Any]:
    out: dict[str, Any] = {"200": {"description": "OK"} | _json(ok)}
    for code in sorted({400, 401, 503, *errors}):
        out[str(code)] = {"description": _ERRORS[code]} | _json(_ref("ErrorBody"))
    return out


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


_VIEW = _query(
    "view",
    {"type": "string", "enum": ["MINIMAL", "BASIC", "FULL"], "default": "MINIMAL"},
    "How much of each task to return.",
)
_IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[ -~]+$"},
    "description": "Poiesis extension: a retry of a create with the same key and body answers the "
    "task the first one made (the key is the caller's own; it lives as long as that task).",
}
_ID = {
    "name": "id",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "The task id.",
}
_ANY_VIEW = {"anyOf": [_ref("Task"), _ref("TaskMinimal")]}


def document(*, security: list[str]) -> dict[str, Any]:
    """The OpenAPI 3.1 document; `security` names the schemes on (`bearer`, `basic`), if any."""
    _, schemas = msgspec.json.schema_components(
        [
            NewTask,
            Task,
            TaskMinimal,
            ServiceInfo,
            CreateTaskResponse,
            ListTasksResponse,
            CancelTaskResponse,
            ErrorBody,
        ],
        ref_template=REF,
    )
    schemas["Task"]["properties"].pop("owner", None)  # kept by the store, never sent
    schemas["NewTask"]["properties"]["executors"]["minItems"] = 1
    schemas["Executor"]["properties"]["command"]["minItems"] = 1
    schemas["ListTasksResponse"]["properties"]["tasks"]["items"] = _ANY_VIEW
    text = {"type": "string", "maxLength": MAX_FILTER_CHARS}
    list_params = [
        _query("name_prefix", text, "Only tasks whose name starts with this."),
        _query("state", {"type": "string", "enum": [s.value for s in State]}, "Only tasks in this state."),
        _query("tag_key", {"type": "array", "items": text}, "Only tasks with these tag keys."),
        _query("tag_value", {"type": "array", "items": text}, "The values of the tag_key filters, in order."),
        _query(
            "page_size",
            {"type": "integer", "minimum": 1},
            f"Tasks per page (default 256, at most {MAX_PAGE_SIZE} are returned).",
        ),
        _query("page_token", {"type": "string"}, "The next_page_token of the previous page."),
        _VIEW,
        _query(
            "owner", text, "Poiesis extension: only this owner's tasks. Admins only; others see their own."
        ),
    ]
    tes = "/ga4gh/tes/v1"
    paths: dict[str, Any] = {
        f"{tes}/service-info": {
            "get": {
                "operationId": "GetServiceInfo",
                "summary": "GetServiceInfo",
                "security": [],
                "responses": {"200": {"description": "OK"} | _json(_ref("ServiceInfo"))},
            }
        },
        f"{tes}/tasks": {
            "get": {
                "operationId": "ListTasks",
                "summary": "ListTasks",
                "parameters": list_params,
                "responses": _responses(_ref("ListTasksResponse"), 403),
            },
            "post": {
                "operationId": "CreateTask",
                "summary": "CreateTask",
                "parameters": [_IDEMPOTENCY_KEY],
                "requestBody": {"required": True} | _json(_ref("NewTask")),
                "responses": _responses(_ref("CreateTaskResponse"), 403, 413, 415, 422, 429),
            },
        },
        f"{tes}/tasks/{{id}}": {
            "get": {
                "operationId": "GetTask",
                "summary": "GetTask",
                "parameters": [_ID, _VIEW],
                "responses": _responses(_ANY_VIEW, 404),
            }
        },
        f"{tes}/tasks/{{id}}:cancel": {
            "post": {
                "operationId": "CancelTask",
                "summary": "CancelTask",
                "parameters": [_ID],
                "responses": _responses(_ref("CancelTaskResponse"), 403, 404, 415),
            }
        },
    }
    components: dict[str, Any] = {"schemas": schemas}
    schemes = {
        "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
        "basic": {"type": "http", "scheme": "basic"},
    }
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "Poiesis TES", "version": __version__, "description": "GA4GH TES v1.1.0"},
        "paths": paths,
        "components": components,
    }
    if security:
        components["securitySchemes"] = {name: schemes[name] for name in security}
        doc["security"] = [{name: []} for name in security]
    else:
        for path in paths.values():
            for operation in path.values():
                operation.pop("security", None)
                for code in ("401",):
                    operation["responses"].pop(code, None)
    return doc
