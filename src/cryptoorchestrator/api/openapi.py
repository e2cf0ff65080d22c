"""The OpenAPI document, with every status a route can answer declared in the one error shape.

FastAPI documents a route's success and, for routes with parameters, a 422 whose schema
(``HTTPValidationError``) is not what this API sends.  Clients and fuzzers (schemathesis runs
in CI) read the document as a contract, so :func:`install_openapi` declares what the middleware
and the error handlers really answer, each with the ``Error`` schema:

* every route: 422 (validation), 429 (rate limit, with ``Retry-After``), 503 (the database or
  the cluster is unavailable, with the reason);
* routes that take a bearer token: 401 (with ``WWW-Authenticate``) and 403 (role);
* routes under ``/api`` other than health: 404 (unknown or someone else's resource: ids reveal
  nothing) and 409 (a conflict with the resource's state);
* routes with a request body: 400 (not JSON) and 413 (body limit);
* routes that check a password or a second factor: 401 and 423 (locked, with ``Retry-After``).

The bearer token is declared as OAuth2's password flow (token URL ``/api/auth/token``), so
Swagger UI's Authorize dialog at ``/docs`` asks for an email and a password.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field

#: Routes that check a password or a second factor themselves (no bearer token needed for the
#: first two): they count failures and answer 423 while the account is locked.
CREDENTIAL_ROUTES = (
    "/api/auth/login",
    "/api/auth/token",
    "/api/auth/refresh",
    "/api/auth/mfa/confirm",
    "/api/auth/mfa/disable",
    "/api/auth/mfa/backup-codes",
)


class ErrorDetail(BaseModel):
    """One offending field."""

    field: str = Field(description="dotted path of the field, e.g. params.fast")
    message: str
    allowed: Any | None = Field(None, description="the allowed values or range, when known")


class ErrorPublic(BaseModel):
    """The one error shape of every failure."""

    code: str = Field(description="machine-readable, e.g. invalid_input, not_found")
    message: str = Field(description="what went wrong, for a person")
    details: list[ErrorDetail] = Field(description="the offending fields, if any")


_REF = {"$ref": "#/components/schemas/Error"}
_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}}
_DESCRIPTIONS: dict[int, tuple[str, dict[str, Any] | None]] = {
    400: ("malformed request body (not JSON of the declared shape)", None),
    401: (
        "not authenticated, wrong credentials, or an expired or revoked token",
        {"WWW-Authenticate": {"schema": {"type": "string"}}},
    ),
    403: ("authenticated, but the role does not allow this", None),
    404: ("not found (another user's resources are not found either)", None),
    409: ("conflicts with the resource's current state", None),
    413: ("request body over the size limit", None),
    422: ("invalid input: the details name each field and what is allowed", None),
    423: ("account locked after repeated failures", _RETRY_AFTER),
    429: ("rate limited", _RETRY_AFTER),
    503: ("the database, the cluster or a component is unavailable; retry later", None),
}


def _response(status: int, existing: dict[str, Any] | None) -> dict[str, Any]:
    description, headers = _DESCRIPTIONS[status]
    if existing and existing.get("description") and status == 503:
        # Keep the route's own words (e.g. "a component is unhealthy; the body says which").
        description = existing["description"]
    out: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": _REF}},
    }
    if headers:
        out["headers"] = headers
    return out


def _statuses(path: str, method: str, operation: dict[str, Any]) -> list[int]:
    statuses = [422, 429, 503]
    if operation.get("security"):
        statuses += [401, 403]
    if path.startswith("/api/") and not path.startswith("/api/health"):
        statuses += [404, 409]
    if "requestBody" in operation:
        statuses += [400, 413]
    if path in CREDENTIAL_ROUTES:
        statuses += [401, 423]
    return sorted(set(statuses))


def document_errors(schema: dict[str, Any]) -> dict[str, Any]:
    """Declare the error statuses of every operation in ``schema`` (changed in place)."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    error_schema = ErrorPublic.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(error_schema.pop("$defs", {}))
    components["Error"] = error_schema
    # FastAPI's default 422 schemas describe a body this API never sends.
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    for path, item in schema.get("paths", {}).items():
        for method, operation in item.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            for status in _statuses(path, method, operation):
                key = str(status)
                responses[key] = _response(status, responses.get(key))
    return schema


def install_openapi(app: FastAPI) -> None:
    """Make ``app.openapi()`` return the document with its error statuses declared."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
                tags=app.openapi_tags,
                servers=app.servers,
            )
            app.openapi_schema = document_errors(schema)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
