"""Pure ASGI middleware (no BaseHTTPMiddleware: it costs a task and a copy per request).

* :class:`HeadMiddleware` answers HEAD wherever GET answers: same status and headers, no body.
* :class:`BodyLimitMiddleware` refuses request bodies over a limit with 413 in the error shape.
* :class:`AccessLogMiddleware` writes one line per request to ``logs/fastapi.log`` (path only,
  never the query string, which may carry a token).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

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


class LivenessMiddleware:
    """Answer ``GET /api/health`` before the framework: a liveness probe must stay cheap.

    Installed inside the rate-limit, HEAD and access-log middleware, so the probe is still
    counted, logged and answered for HEAD; it only skips routing and dependency injection.
    The FastAPI route of the same path stays for the OpenAPI document and answers identically.
    """

    BODY = b'{"status":"ok"}'

    def __init__(self, app: ASGIApp, path: str = "/api/health") -> None:
        self.app = app
        self.path = path
        self._headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(self.BODY)).encode()),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the liveness answer, or pass the request on."""
        if scope["type"] == "http" and scope["method"] == "GET" and scope["path"] == self.path:
            await send({"type": "http.response.start", "status": 200, "headers": self._headers})
            await send({"type": "http.response.body", "body": self.BODY})
            return
        await self.app(scope, receive, send)


class HeadMiddleware:
    """Serve HEAD as GET with the body dropped."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Rewrite HEAD to GET and swallow the body."""
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def send_no_body(message: Message) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return
                message = {"type": "http.response.body", "body": b""}
            await send(message)

        await self.app(dict(scope, method="GET"), receive, send_no_body)


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


class AccessLogMiddleware:
    """Log method, path, status, duration and client of every HTTP request.

    Lines go straight to the API log's background writer as finished JSON (no log record
    formatting, no redaction pass: the fields are structural and the path excludes the query
    string), which keeps logging from dominating cheap requests such as liveness probes.
    """

    def __init__(self, app: ASGIApp, writer: Any = None) -> None:
        self.app = app
        self._writer = writer  # the app's own log file (tests run several apps per process)
        self._second = -1
        self._stamp = ""
        self._json: dict[str | None, str] = {}

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
            self._log(scope, status, started)

    def _log(self, scope: Scope, status: int, started: float) -> None:
        if not access_log.isEnabledFor(logging.INFO):
            return
        client = scope.get("client")
        state: dict[str, Any] = scope.get("state") or {}
        method, path = scope["method"], scope["path"]
        duration_ms = round((time.perf_counter() - started) * 1000, 3)
        host = client[0] if client else None
        user_id = state.get("user_id")
        if self._writer is None:  # no background file handler (tests, embedding apps)
            fields = {
                "method": method,
                "path": path,
                "status": status,
                "duration_ms": duration_ms,
                "client": host,
                "user_id": user_id,
            }
            access_log.info("%s %s %d", method, path, status, extra=fields)
            return
        # The same JSON as JsonFormatter writes, assembled from cached pieces: a generic
        # json.dumps of the record was half the cost of a liveness probe.
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime('{"time": "%Y-%m-%dT%H:%M:%S', time.gmtime(second))
        q = self._quoted
        qmethod, qpath, qhost = q(method), q(path), q(host)
        message = q(f"{method} {path} {status}")
        self._writer.write_line(
            f'{self._stamp}.{int(now * 1000) % 1000:03d}+00:00", "level": "INFO", '
            f'"logger": "{access_log.name}", "message": {message}, "method": {qmethod}, '
            f'"path": {qpath}, "status": {status}, "duration_ms": {duration_ms}, '
            f'"client": {qhost}, "user_id": {"null" if user_id is None else int(user_id)}}}'
        )

    def _quoted(self, value: str | None) -> str:
        """JSON text of ``value``, cached (methods, paths and clients repeat endlessly)."""
        cached = self._json.get(value)
        if cached is None:
            if len(self._json) >= 4096:  # bounded: paths can carry ids
                self._json.clear()
            cached = self._json[value] = json.dumps(value)
        return cached
