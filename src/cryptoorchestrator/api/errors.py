"""The one place where failures become HTTP responses, all in one shape.

``{"code": str, "message": str, "details": [{"field": str, "message": str, ...}]}`` for platform
errors, request validation, Starlette's own 404/405, rate limits, body limits and crashes alike.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import psycopg
import psycopg_pool
import sqlalchemy.exc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from cryptoorchestrator.platform import errors as E

log = logging.getLogger("cryptoorchestrator.api")

#: Platform error class -> HTTP status; the most specific class in an error's MRO wins.
STATUS: dict[type[E.CryptoOrchError], int] = {
    E.InvalidInputError: 422,
    E.DataError: 422,
    E.StrategyError: 422,
    E.NotFoundError: 404,
    E.ConflictError: 409,
    E.CancelledError: 409,
    E.UnauthorizedError: 401,
    E.ForbiddenError: 403,
    E.AccountLockedError: 423,
    E.UnavailableError: 503,
    E.StorageError: 503,
    E.RetryableExchangeError: 503,
    E.FatalExchangeError: 502,
    E.ExchangeError: 502,
    E.ConfigError: 500,
    E.CryptoOrchError: 500,
}

HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
    429: "rate_limited",
    500: "internal_error",
    502: "bad_gateway",
    503: "not_available",
}

#: Allowed ranges shown with validation errors of these fields (the wire names).
ALLOWED = {"riskPerTrade": "0.1-5.0", "maxPositionSize": "1-100", "limit": "1-500"}


def error_body(code: str, message: str, details: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """Return the JSON error body."""
    return {"code": code, "message": message, "details": list(details)}


def status_of(exc: E.CryptoOrchError) -> int:
    """Return the HTTP status for a platform error."""
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]  # type: ignore[index]
    return 500


def platform_error_response(exc: E.CryptoOrchError) -> JSONResponse:
    """Render a platform error (shared by the handler and WebSocket code)."""
    status = status_of(exc)
    body = exc.to_dict()
    headers: dict[str, str] = {}
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(exc, E.AccountLockedError):
        headers["Retry-After"] = str(exc.retry_after)
    if status == 500:
        # Configuration errors may name paths or hosts; say only that something is wrong.
        log.error("platform error: %s", exc, exc_info=exc)
        body = error_body("internal_error", "internal server error")
    return JSONResponse(body, status_code=status, headers=headers)


def validation_details(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """Turn pydantic errors into ``[{field, message}]`` with dotted field paths."""
    out = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ())]
        if loc and loc[0] == "body":
            loc = loc[1:]
        field = ".".join(loc) or "body"
        detail: dict[str, Any] = {"field": field, "message": err.get("msg", "invalid")}
        allowed = ALLOWED.get(loc[-1]) if loc else None
        if allowed:
            detail["allowed"] = allowed
        out.append(detail)
    return out


async def _platform_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, E.CryptoOrchError)
    return platform_error_response(exc)


async def _validation_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    details = validation_details(exc.errors())
    fields = ", ".join(d["field"] for d in details[:5])
    return JSONResponse(
        error_body("invalid_input", f"invalid request: {fields}", details), status_code=422
    )


async def _http_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    return JSONResponse(
        error_body(code, message),
        status_code=exc.status_code,
        headers=dict(exc.headers or {}),
    )


async def _database_down_handler(request: Request, exc: Exception) -> JSONResponse:
    # The database refused or dropped the connection, or the pool ran dry: nothing is wrong
    # with the request, so say so with 503 and a hint to retry, not a 500.
    log.warning("database unavailable on %s %s: %s", request.method, request.url.path, exc)
    return JSONResponse(
        error_body("database_unavailable", "the database is unavailable; retry shortly"),
        status_code=503,
        headers={"Retry-After": "1"},
    )


async def _crash_handler(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse(error_body("internal_error", "internal server error"), status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that give every failure the one error shape."""
    app.add_exception_handler(E.CryptoOrchError, _platform_handler)
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(StarletteHTTPException, _http_handler)
    for db_down in (
        sqlalchemy.exc.OperationalError,
        sqlalchemy.exc.TimeoutError,
        psycopg.OperationalError,
        psycopg_pool.PoolTimeout,
    ):
        app.add_exception_handler(db_down, _database_down_handler)
    app.add_exception_handler(Exception, _crash_handler)
