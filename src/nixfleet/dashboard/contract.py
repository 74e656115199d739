"""The published API contract: the OpenAPI schema served at /api/openapi.json.

What a route can answer comes from two places, so that no route repeats the answers
every route shares:

1. The route itself declares what only it can answer, through `errors`, `reply` and
   `page` in its decorator's `responses=` (a 409 where a state can conflict, an HTML body).
2. `complete` adds to every operation what the layers in front of the routes answer,
   read from the same facts those layers act on: the role line in `access.NEEDS` (401,
   403, the 303 to /login of a page), the route's parameters and body (400, 404, 413,
   415, 422), the rate limiter's route names (429), the Host check (421), the database
   (503) and CatchAll (500).

Every error has one body, `ErrorBody`, the shape `pipeline/errors` sends. CI runs
schemathesis against a running dashboard to keep all of this true (tests/dashboard/
test_api_contract.py).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

from nixfleet.dashboard.access import NEEDS
from nixfleet.dashboard.pipeline.ratelimit import route_name


class ErrorBody(BaseModel):
    """Every refusal and failure: a stable machine code and a sentence for people."""

    # The shape is sent as dicts (pipeline/errors); only the schema reads the model, so it
    # is built on the first request for it, not for each route's `responses=` at start-up.
    model_config = ConfigDict(defer_build=True)

    error: str = Field(description="stable machine code, e.g. not_found, rate_limited")
    detail: str = Field(description="what went wrong, as a sentence")
    request_id: str | None = Field(None, description="on a 500 only: the log names it too")


# The reason each status is given, as the schema's description of that answer.
WHY = {
    303: "no session: to the login page",
    400: "the body is not valid JSON",
    401: "not logged in (no valid session or credential)",
    403: "the caller's role does not allow it, or the CSRF check failed",
    404: "no such thing",
    409: "legal, but not in the current state",
    413: "the request body is over the size limit",
    415: "the body is not application/json",
    421: "the Host header names a host this dashboard does not serve",
    422: "a parameter or the body broke a rule",
    429: "too many requests from this address; Retry-After says when to try again",
    500: "an internal error; the dashboard log has the details under request_id",
    503: "the database is busy or full, nothing was changed; try again after Retry-After",
}
_RETRY_AFTER = {
    "Retry-After": {
        "description": "seconds until the same request may succeed",
        "required": True,
        "schema": {"type": "integer", "minimum": 1},
    }
}
_ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}
# Who a route's caller can be: an API token, or a browser session (whose state-changing
# requests also carry the X-CSRF-Token header). Routes with no role declare neither.
_SECURITY = {
    "apiToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "an API token (nft_…): its role, and its host, label or kind scope",
    },
    "session": {
        "type": "apiKey",
        "in": "cookie",
        "name": "nixfleet_session",
        "description": "a browser session (__Host-nixfleet_session over HTTPS); "
        "POST, PUT, PATCH and DELETE also need the X-CSRF-Token header",
    },
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """Return `responses=` entries for statuses answered with the error body."""
    return {s: {"model": ErrorBody, "description": WHY[s]} for s in statuses}


def reply(
    model: type[BaseModel], status: int = 200, *, also: str = ""
) -> dict[int | str, dict[str, Any]]:
    """Return the `responses=` entry of a JSON success answer shaped like model (`also`:
    another media type the same status may be sent as, e.g. on a format= parameter).

    Declared, not enforced: the route's dict is sent as it is (no response_model that
    would filter or re-validate it); the schemathesis run checks the two agree.
    """
    answer: dict[str, Any] = {"model": model, "description": model.__doc__ or "success"}
    if also:
        answer["content"] = {also: {"schema": {"type": "string"}}}
    return {status: answer}


def body(media_type: str, status: int = 200, what: str = "") -> dict[int | str, dict[str, Any]]:
    """Return the `responses=` entry of a non-JSON answer (a page, plain text, a stream)."""
    schema = {"type": "string"}
    return {
        status: {"description": what or media_type, "content": {media_type: {"schema": schema}}}
    }


def redirect() -> dict[int | str, dict[str, Any]]:
    """Return the `responses=` entry of a form post answered with a 303 to another page."""
    return {303: {"description": "done: on to the next page (Location)"}}


def page(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """Return the `responses=` entries of an HTML page answered with each of statuses."""
    return {s: body("text/html", s, "an HTML page")[s] for s in statuses}


def install(app: FastAPI) -> None:
    """Make app.openapi() answer the completed schema (made once, on the first request)."""
    generate: Callable[[], dict[str, Any]] = app.openapi
    made: dict[int, dict[str, Any]] = {}

    def openapi() -> dict[str, Any]:
        source = generate()  # FastAPI keeps it until the routes change
        if id(source) not in made:
            made.clear()
            made[id(source)] = complete(copy.deepcopy(source))
        return made[id(source)]

    app.openapi = openapi  # type: ignore[method-assign]


def complete(schema: dict[str, Any]) -> dict[str, Any]:
    """Return schema with every answer the pipeline in front of the routes can give."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["ErrorBody"] = ErrorBody.model_json_schema()
    schema["components"]["securitySchemes"] = _SECURITY
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            _complete_operation(path, method, operation)
    # FastAPI's own 422 body (a list of errors) is never sent: pipeline/errors sends ours.
    for unused in ("HTTPValidationError", "ValidationError"):
        if unused not in str(schema["paths"]):
            components.pop(unused, None)
    return schema


def _complete_operation(path: str, method: str, operation: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    _only_declared(responses)
    need = NEEDS[f"{method.upper()} {path}"]
    if need.role is not None:
        operation["security"] = (
            [{"apiToken": []}, {"session": []}] if need.tokens else [{"session": []}]
        )
    params = operation.get("parameters", [])
    content = operation.get("requestBody", {}).get("content", {})
    statuses = {413, 421, 500, 503}
    if need.role is not None:
        statuses |= {303, 403} if need.page else {401, 403}
    if any(p["in"] == "path" for p in params):
        statuses.add(404)
    if params or content:
        statuses.add(422)
    if "application/json" in content:
        statuses |= {400, 415}
    scope = {"type": "http", "path": path, "method": method.upper()}
    if route_name(scope) is not None:
        statuses.add(429)
    for status in sorted(statuses):
        _declare(responses, status)


def _declare(responses: dict[str, Any], status: int) -> None:
    key = str(status)
    if status == 422 and "HTTPValidationError" in str(responses.get(key, "")):
        del responses[key]  # FastAPI's default; the body we send is ErrorBody
    if key in responses:
        return  # the route said it itself
    if status == 303:
        responses[key] = {"description": WHY[303]}
        return
    answer: dict[str, Any] = {
        "description": WHY[status],
        "content": {"application/json": {"schema": dict(_ERROR_REF)}},
    }
    if status in (429, 503):
        answer["headers"] = copy.deepcopy(_RETRY_AFTER)
    responses[key] = answer


def _only_declared(responses: dict[str, Any]) -> None:
    """Drop what FastAPI guessed where the route declared its answer itself.

    1. A route returning dict[str, Any] gets an "any object" schema, which `reply`'s model
       is merged into: the model is the contract.
    2. A route returning a bare Response gets an empty JSON schema for its status code:
       gone where the route named another media type, or another success status.
    """
    for answer in responses.values():
        content = answer.get("content", {})
        for media in content.values():
            found = media.get("schema", {})
            if "$ref" in found and len(found) > 1:
                media["schema"] = {"$ref": found["$ref"]}
        if len(content) > 1 and content.get("application/json", {}).get("schema") == {}:
            del content["application/json"]
    guessed = responses.get("200", {}).get("content", {})
    successes = [k for k in responses if k[0] in "23" and k != "200"]
    if (
        successes
        and list(guessed) == ["application/json"]
        and guessed["application/json"].get("schema") in ({}, None)
    ):
        del responses["200"]
