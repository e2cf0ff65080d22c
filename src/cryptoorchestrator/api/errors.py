"""The one place where failures become HTTP responses, all in one shape.

``{"code": str, "message": str, "details": [{"field": str, "message": str, ...}]}`` for platform
errors, request validation, Starlette's own 404/405, rate limits, body limits and crashes alike.

Crashes are answered by :class:`CrashMiddleware`, inside the platform's own middleware, so a 500
carries the same security and rate-limit headers and access-log line as any other answer.
"""

from __future__ import annotations

import json
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
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cryptoorchestrator.platform import errors as E
from cryptoorchestrator.platform.services.bots import RANGES, WIRE_NAMES
from cryptoorchestrator.platform.validation import MONEY_RULE

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
ALLOWED = {
    **{WIRE_NAMES[key]: f"{lo}-{hi}" for key, (lo, hi) in RANGES.items()},
    "startingBalance": f"greater than 0, {MONEY_RULE}",
    "limit": "1-500",
}
#: Longest message and field name an error body repeats: requests may carry megabytes, and
#: an error that echoes them back turns one bad request into a large response.
MAX_MESSAGE = 500
MAX_FIELD = 200
MAX_DETAILS = 20


def safe_text(text: str, limit: int = MAX_MESSAGE) -> str:
    """Return ``text`` shortened to ``limit`` characters and encodable as UTF-8.

    Fields and messages can quote what the client sent (a dict key, a strategy name); an
    unpaired surrogate among them would make the JSON encoder itself fail with a 500, so they
    are written as ``\\udXXX`` escapes instead.
    """
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def error_body(code: str, message: str, details: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """Return the JSON error body; its text is bounded and always encodable."""
    return {
        "code": code,
        "message": safe_text(message),
        "details": [_safe_detail(d) for d in list(details)[:MAX_DETAILS]],
    }


def _safe_detail(detail: dict[str, Any]) -> dict[str, Any]:
    out = dict(detail)
    for key, value in detail.items():
        if isinstance(value, str):
            out[key] = safe_text(value, MAX_FIELD if key == "field" else MAX_MESSAGE)
    return out


def status_of(exc: E.CryptoOrchError) -> int:
    """Return the HTTP status for a platform error."""
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]  # type: ignore[index]
    return 500


def platform_error_response(exc: E.CryptoOrchError) -> JSONResponse:
    """Render a platform error (shared by the handler and WebSocket code)."""
    status = status_of(exc)
    raw = exc.to_dict()
    body = error_body(raw["code"], raw["message"], raw["details"])
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
    """Turn pydantic errors into ``[{field, message, allowed}]`` with dotted field paths.

    A validator may name a value inside the field (``subpath`` in the error's context, e.g.
    ``fast`` of ``params``) and what is allowed; a platform :class:`InvalidInputError` raised
    inside a validator gives its own reason and allowed values.  The input itself is never
    repeated.
    """
    out = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ())]
        if loc and loc[0] == "body":
            loc = loc[1:]
        ctx = err.get("ctx") or {}
        message = err.get("msg", "invalid")
        allowed = ctx.get("allowed") or (ALLOWED.get(loc[-1]) if loc else None)
        cause = ctx.get("error")
        if isinstance(cause, E.InvalidInputError):
            message, allowed = cause.reason, cause.allowed or allowed
        if ctx.get("subpath"):
            loc.append(str(ctx["subpath"]))
        detail: dict[str, Any] = {"field": ".".join(loc) or "body", "message": message}
        if allowed:
            detail["allowed"] = str(allowed)
        out.append(detail)
    return out


async def _platform_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, E.CryptoOrchError)
    return platform_error_response(exc)


async def _validation_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    details = validation_details(exc.errors())
    fields = ", ".join(safe_text(d["field"], MAX_FIELD) for d in details[:5])
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


class Starting(Exception):
    """Raised by the health routes' guard while start-up is not over.

    Parameters
    ----------
    reasons
        What start-up still waits for, one ``"<component>: <why>"`` each.
    """

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("starting")
        self.reasons = reasons


#: Seconds a client is asked to wait before probing a starting app again.
STARTING_RETRY_S = 5


async def _starting_handler(request: Request, exc: Exception) -> JSONResponse:
    # The health body's own shape (status, reasons, components), not the error shape: monitors
    # read ``status``, and "starting" must not read as "unhealthy" (nobody is paged for it).
    assert isinstance(exc, Starting)
    return JSONResponse(
        {"status": "starting", "reasons": exc.reasons, "components": {}},
        status_code=503,
        headers={"Retry-After": str(STARTING_RETRY_S)},
    )


async def _crash_handler(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse(error_body("internal_error", "internal server error"), status_code=500)


class CrashMiddleware:
    """Answer an unhandled exception with 500 in the error shape, then re-raise it.

    Starlette answers crashes in its outermost layer, outside every added middleware; this one
    is added first (innermost), where the answer still crosses the platform's layers.  The
    exception goes on to the server, which logs it, as Starlette's own layer does.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app; on a crash before the response started, send the 500 and re-raise."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception as exc:
            response = await _crash_handler(Request(scope), exc)
            if not started:
                await response(scope, receive, send)
            raise


async def send_error(
    send: Send,
    status: int,
    code: str,
    message: str,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """Send a complete JSON error response in the API's one error shape (for ASGI layers).

    Parameters
    ----------
    send
        The ASGI send callable.
    status
        HTTP status code.
    code, message
        The error's ``code`` and ``message``; ``details`` is empty.
    headers
        More response headers.
    """
    body = json.dumps({"code": code, "message": message, "details": []}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that give every failure the one error shape.

    Call it before adding any other middleware: :class:`CrashMiddleware` must be the innermost.

    Parameters
    ----------
    app
        The app.
    """
    app.add_exception_handler(E.CryptoOrchError, _platform_handler)
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(StarletteHTTPException, _http_handler)
    app.add_exception_handler(Starting, _starting_handler)
    for db_down in (
        sqlalchemy.exc.OperationalError,
        sqlalchemy.exc.TimeoutError,
        psycopg.OperationalError,
        psycopg_pool.PoolTimeout,
    ):
        app.add_exception_handler(db_down, _database_down_handler)
    app.add_middleware(CrashMiddleware)
