"""Pure ASGI middleware (no BaseHTTPMiddleware: it costs a task and a copy per request).

* :class:`HeadMiddleware` answers HEAD wherever GET answers: same status and headers, no body.
* :class:`BodyLimitMiddleware` refuses request bodies over a limit with 413 in the error shape.
* :class:`AccessLogMiddleware` writes one line per request to ``logs/fastapi.log`` (path only,
  never the query string, which may carry a token).
* :class:`LivenessMiddleware`, outermost, answers ``GET``/``HEAD /api/health`` in one step with
  the same rate limiting, headers and access log line as the layers it skips.
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from cryptoorchestrator.api.ratelimit import RateLimiter

access_log = logging.getLogger("cryptoorchestrator.api.access")


async def send_error(
    send: Send,
    status: int,
    code: str,
    message: str,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """Send a complete JSON error response in the API's one error shape."""
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


class HeadMiddleware:
    """Serve HEAD as GET with the body dropped."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Rewrite HEAD to GET and swallow the body."""
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        await self.app(dict(scope, method="GET"), receive, without_body(send))


def without_body(send: Send) -> Send:
    """Wrap ``send`` to pass the response's start and an empty body (what HEAD gets)."""

    async def send_no_body(message: Message) -> None:
        if message["type"] == "http.response.body":
            if message.get("more_body", False):
                return
            message = {"type": "http.response.body", "body": b""}
        await send(message)

    return send_no_body


class _TooLarge(Exception):
    """Raised inside the receive wrapper to abort a request whose body grew too large."""


class BodyLimitMiddleware:
    """Answer 413 when the request body exceeds ``max_bytes`` (declared or streamed)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check Content-Length first, then count what is actually received."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        has_body = False
        for name, value in scope["headers"]:
            if name == b"transfer-encoding":
                has_body = True
            elif name == b"content-length":
                has_body = value != b"0"
                try:
                    declared = int(value)
                except ValueError:
                    await send_error(send, 400, "bad_request", "malformed Content-Length")
                    return
                if declared > self.max_bytes:
                    await self._refuse(send)
                    return
        if not has_body:
            # Nothing to count (most GETs): skip the receive/send wrappers entirely.
            await self.app(scope, receive, send)
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        await send_error(
            send,
            413,
            "payload_too_large",
            f"request body larger than {self.max_bytes} bytes",
            [(b"connection", b"close")],
        )


class AccessLog:
    """Write one JSON line per HTTP request: method, path, status, duration, client, user id.

    Lines go straight to the API log's background writer as finished JSON (no log record
    formatting, no redaction pass: the fields are structural and the path excludes the query
    string), which keeps logging from dominating cheap requests such as liveness probes.
    Without a writer (tests, embedding apps) the same fields go through ``logging``.
    """

    def __init__(self, writer: Any = None) -> None:
        self._writer = writer  # the app's own log file (tests run several apps per process)
        self._second = -1
        self._stamp = ""  # '{"time": "<date>T<time to the second>'
        self._ms = -1
        self._stamp_ms = ""  # the same to the millisecond
        # (method, path, status, client) -> the line's middle (up to the duration's value) and
        # end (up to the user id): requests repeat these endlessly (bounded cache).
        self._parts: dict[tuple[str, str, int, str | None], tuple[str, str]] = {}

    def __call__(self, scope: Scope, status: int, started: float) -> None:
        """Log the request of ``scope`` answered with ``status``, started at ``started``."""
        if not access_log.isEnabledFor(logging.INFO):
            return
        duration_ms = (time.perf_counter() - started) * 1000
        client = scope.get("client")
        state = scope.get("state")
        user_id = state.get("user_id") if state else None
        host = client[0] if client else None
        if self._writer is None:  # no background file handler (tests, embedding apps)
            method, path = scope["method"], scope["path"]
            fields = {
                "method": method,
                "path": path,
                "status": status,
                "duration_ms": round(duration_ms, 3),
                "client": host,
                "user_id": user_id,
            }
            access_log.info("%s %s %d", method, path, status, extra=fields)
            return
        # The same JSON as JsonFormatter writes, assembled from cached pieces: a generic
        # json.dumps of the record was half the cost of a liveness probe.
        key = (scope["method"], scope["path"], status, host)
        parts = self._parts.get(key)
        if parts is None:
            parts = self._cache(key)
        ms = int(time.time() * 1000)
        if ms != self._ms:
            self._ms = ms
            second = ms // 1000
            if second != self._second:
                self._second = second
                self._stamp = time.strftime('{"time": "%Y-%m-%dT%H:%M:%S', time.gmtime(second))
            self._stamp_ms = f"{self._stamp}.{ms % 1000:03d}"
        self._writer.write_line(
            f"{self._stamp_ms}{parts[0]}{duration_ms:.3f}{parts[1]}"
            f"{'null' if user_id is None else int(user_id)}}}"
        )

    def _cache(self, key: tuple[str, str, int, str | None]) -> tuple[str, str]:
        if len(self._parts) >= 4096:  # bounded: paths can carry ids
            self._parts.clear()
        method, path, status, host = key
        q = json.dumps
        parts = self._parts[key] = (
            f'+00:00", "level": "INFO", "logger": "{access_log.name}", '
            f'"message": {q(f"{method} {path} {status}")}, "method": {q(method)}, '
            f'"path": {q(path)}, "status": {status}, "duration_ms": ',
            f', "client": {q(host)}, "user_id": ',
        )
        return parts


class AccessLogMiddleware:
    """Log every HTTP request with :class:`AccessLog` once it is answered."""

    def __init__(self, app: ASGIApp, log: AccessLog) -> None:
        self.app = app
        self.log = log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Time the request and log it once the response has started."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            self.log(scope, status, started)


class LivenessMiddleware:
    """Answer ``GET``/``HEAD /api/health`` outermost, in one step: a probe must stay cheap.

    A liveness probe gets exactly what the full stack would give it: it is counted by the
    same :class:`~cryptoorchestrator.api.ratelimit.RateLimiter` (429 in the error shape over
    budget), carries the ``X-RateLimit-*`` headers, HEAD gets the headers without the body,
    and it is access-logged.  It only skips the layers' per-request wrappers, routing and
    dependency injection.  Requests that other layers would treat differently take the full
    stack: a body (size limit), an ``Origin`` (CORS), another path or method.  The FastAPI
    route of the same path stays for the OpenAPI document and answers identically.
    """

    BODY = b'{"status":"ok"}'
    _FULL_STACK = frozenset((b"origin", b"content-length", b"transfer-encoding"))

    def __init__(
        self,
        app: ASGIApp,
        limiter: RateLimiter,
        log: AccessLog | None,
        path: str = "/api/health",
    ) -> None:
        self.app = app
        self.limiter = limiter
        self.log = log
        self._log = None if log is None else log.__call__  # a bound method calls faster
        self.path = path
        self._headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(self.BODY)).encode()),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the liveness answer, or pass the request on."""
        if (
            scope["type"] != "http"
            or scope["path"] != self.path
            or scope["method"] not in ("GET", "HEAD")
        ):
            await self.app(scope, receive, send)
            return
        slow = self._FULL_STACK
        for name, _ in scope["headers"]:
            if name in slow:
                await self.app(scope, receive, send)
                return
        started = time.perf_counter()
        status = 500
        try:
            limiter = self.limiter
            if limiter.immediate:  # in memory: no coroutine to create and await
                headers, retry = limiter.check_now(scope)
            else:
                headers, retry = await limiter.check(scope)
            if retry:
                status = 429
                head = scope["method"] == "HEAD"
                await limiter.refuse(scope, without_body(send) if head else send, headers, retry)
                return
            status = 200
            await send(
                {"type": "http.response.start", "status": 200, "headers": self._headers + headers}
            )
            body = self.BODY if scope["method"] == "GET" else b""
            await send({"type": "http.response.body", "body": body})
        finally:
            if self._log is not None:
                self._log(scope, status, started)
