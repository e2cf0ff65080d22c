"""Pure ASGI middleware (no BaseHTTPMiddleware: it costs a task and a copy per request).

* :class:`HeadMiddleware` answers HEAD wherever GET answers: same status and headers, no body.
* :class:`BodyLimitMiddleware` refuses request bodies over a limit with 413 in the error shape.
* :class:`AccessLogMiddleware` writes one line per request to ``logs/fastapi.log`` (path only,
  never the query string, which may carry a token).
* :class:`SecurityHeadersMiddleware` adds the browser hardening headers (CSP, nosniff, frame
  and referrer policies, HSTS over https) and ``Cache-Control: no-store`` under ``/api``.
* :class:`LivenessMiddleware`, outermost, answers ``GET``/``HEAD /api/health`` in one step with
  the same rate limiting, headers and access log line as the layers it skips (once start-up is
  over: until then the full stack answers 503 ``starting``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cryptoorchestrator.api.errors import send_error
from cryptoorchestrator.api.proxies import TrustedProxies
from cryptoorchestrator.platform.logs import redact

if TYPE_CHECKING:
    from cryptoorchestrator.api.ratelimit import RateLimiter

access_log = logging.getLogger("cryptoorchestrator.api.access")


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
        too_large = False
        response = 0  # 0: nothing sent yet, 1: the app's response passes, 2: ours replaced it

        async def counting_receive() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    too_large = True
                    raise _TooLarge
            return message

        async def guarded_send(message: Message) -> None:
            # Whoever catches _TooLarge (FastAPI turns a failed body read into 400) answers
            # after the overflow: that answer is replaced by the one 413.
            nonlocal response
            if message["type"] == "http.response.start":
                if too_large:
                    response = 2
                    await self._refuse(send)
                    return
                response = 1
            elif response == 2:
                return
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except _TooLarge:
            pass
        if too_large and response == 0:
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

    def __init__(
        self, writer: Any = None, client_ip: Callable[[Scope], str | None] | None = None
    ) -> None:
        self._writer = writer  # the app's own log file (tests run several apps per process)
        # The client as the rate limiter and audit log see it (trusted proxies only).
        self._client_ip = client_ip or TrustedProxies().client_ip
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
        state = scope.get("state")
        user_id = state.get("user_id") if state else None
        host = self._client_ip(scope)
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


#: The API answers JSON only: nothing may load, run, frame or submit anything from it.
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
#: Swagger UI and ReDoc pages: their bundles, styles and fonts from FastAPI's default CDNs,
#: their own inline scripts by hash (added per response), the OpenAPI document from here.
DOCS_CSP = (
    "default-src 'none'; script-src 'self' https://cdn.jsdelivr.net{hashes}; "
    "style-src 'self' https://cdn.jsdelivr.net https://fonts.googleapis.com 'unsafe-inline'; "
    "font-src https://fonts.gstatic.com; "
    "img-src 'self' data: https://fastapi.tiangolo.com https://cdn.redoc.ly; "
    "connect-src 'self'; worker-src blob:; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'none'"
)
#: The web dashboard's page (``/``): its own modules, styles and images only, API calls and the
#: ``/ws/bots`` socket to this origin ('self' covers ws:/wss: of it), no inline code, no CDN.
DASHBOARD_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; manifest-src 'self'; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'self'"
)
_INLINE_SCRIPT = re.compile(rb"<script(?![^>]*\bsrc\s*=)[^>]*>(.*?)</script>", re.S | re.I)


class SecurityHeaders:
    """The hardening headers of a response, by request.

    Every response: ``X-Content-Type-Options: nosniff``, ``X-Frame-Options: DENY``,
    ``Referrer-Policy: no-referrer``, ``Cross-Origin-Opener-Policy: same-origin``, a
    ``Permissions-Policy`` denying device features, and a ``Content-Security-Policy`` (the
    strict :data:`API_CSP`; :data:`DOCS_CSP` on the documentation pages; :data:`DASHBOARD_CSP`
    on the dashboard's page ``/``).  Over https (the
    connection's own scheme, or ``X-Forwarded-Proto`` from a trusted proxy):
    ``Strict-Transport-Security``.  Under ``/api``: ``Cache-Control: no-store`` unless the route
    chose its own, since responses carry account data, tokens and exchange details.

    Parameters
    ----------
    proxies
        Decides whether the client connected over https.
    hsts_max_age_s
        ``max-age`` of ``Strict-Transport-Security``; 0 sends none.
    docs_paths
        Paths of the Swagger UI / ReDoc pages (they get :data:`DOCS_CSP`).
    """

    COMMON: tuple[tuple[bytes, bytes], ...] = (
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        (b"referrer-policy", b"no-referrer"),
        (b"cross-origin-opener-policy", b"same-origin"),
        (
            b"permissions-policy",
            b"accelerometer=(), camera=(), geolocation=(), gyroscope=(), magnetometer=(), "
            b"microphone=(), payment=(), usb=()",
        ),
    )
    NO_STORE = (b"cache-control", b"no-store")

    def __init__(
        self, proxies: TrustedProxies, hsts_max_age_s: int, docs_paths: Iterable[str] = ()
    ) -> None:
        self.proxies = proxies
        self.docs_paths = frozenset(p for p in docs_paths if p)
        self.hsts = (
            (b"strict-transport-security", f"max-age={hsts_max_age_s}; includeSubDomains".encode())
            if hsts_max_age_s > 0
            else None
        )
        csp = (b"content-security-policy", API_CSP.encode())
        self._plain = [*self.COMMON, csp]  # outside /api
        self._api = [*self.COMMON, csp, self.NO_STORE]
        self._dashboard = [*self.COMMON, (b"content-security-policy", DASHBOARD_CSP.encode())]

    def for_scope(self, scope: Scope) -> list[tuple[bytes, bytes]]:
        """The headers for a response to ``scope`` (docs pages: without their CSP)."""
        path = scope["path"]
        if path in self.docs_paths:
            headers = list(self.COMMON)
        elif path.startswith("/api/") or path == "/api":
            headers = self._api
        elif path == "/":
            headers = self._dashboard
        else:
            headers = self._plain
        if self.hsts is not None and self.proxies.is_https(scope):
            headers = [*headers, self.hsts]
        return headers

    @staticmethod
    def docs_csp(body: bytes) -> tuple[bytes, bytes]:
        """The docs pages' CSP, allowing exactly the inline scripts of ``body`` by hash."""
        hashes = "".join(
            f" 'sha256-{base64.b64encode(hashlib.sha256(m.group(1)).digest()).decode()}'"
            for m in _INLINE_SCRIPT.finditer(body)
        )
        return (b"content-security-policy", DOCS_CSP.format(hashes=hashes).encode())


def _merge(
    headers: list[tuple[bytes, bytes]], extra: Iterable[tuple[bytes, bytes]]
) -> list[tuple[bytes, bytes]]:
    """``headers`` plus each of ``extra`` whose name the response did not set itself."""
    present = {name.lower() for name, _ in headers}
    return [*headers, *(h for h in extra if h[0] not in present)]


class SecurityHeadersMiddleware:
    """Add :class:`SecurityHeaders` to every HTTP response (errors, 413 and 429 included)."""

    def __init__(self, app: ASGIApp, headers: SecurityHeaders) -> None:
        self.app = app
        self.headers = headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Add the headers when the response starts (docs pages: once their body is known)."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = self.headers.for_scope(scope)
        if scope["path"] in self.headers.docs_paths:
            await self.app(scope, receive, self._docs_send(send, extra))
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = dict(message)
                message["headers"] = _merge(list(message.get("headers", [])), extra)
            await send(message)

        await self.app(scope, receive, with_headers)

    def _docs_send(self, send: Send, extra: list[tuple[bytes, bytes]]) -> Send:
        """Hold a docs page's start until its (small) body is complete, to hash its scripts."""
        start: Message | None = None
        chunks: list[bytes] = []

        async def docs_send(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = dict(message)
                return
            if message["type"] != "http.response.body" or start is None:
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = b"".join(chunks)
            headers = _merge(list(start.get("headers", [])), extra)
            start["headers"] = _merge(headers, [SecurityHeaders.docs_csp(body)])
            await send(start)
            await send({"type": "http.response.body", "body": body})

        return docs_send


class ServerLogRedactor(logging.Filter):
    """Mask tokens in a server log record's message and arguments, keeping their shape.

    uvicorn's access formatter unpacks ``record.args`` as a tuple, so the arguments are
    redacted one by one rather than merged into the message.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact in place; never drop the record."""
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        args = record.args
        if isinstance(args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in args)
        elif isinstance(args, dict):
            record.args = {k: redact(v) if isinstance(v, str) else v for k, v in args.items()}
        return True


def protect_server_logs() -> None:
    """Redact secrets in the server's own log lines (uvicorn's, on the console).

    uvicorn logs every WebSocket handshake with its query string on ``uvicorn.error``
    (``"WebSocket /ws/bots?token=..." [accepted]``) whatever its access-log setting, and its
    access log (when on) writes query strings too: a token sent as ``?token=`` must not reach
    the console.  Idempotent.
    """
    for name in ("uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, ServerLogRedactor) for f in logger.filters):
            logger.addFilter(ServerLogRedactor())


class LivenessMiddleware:
    """Answer ``GET``/``HEAD /api/health`` outermost, in one step: a probe must stay cheap.

    A liveness probe gets exactly what the full stack would give it: it is counted by the
    same :class:`~cryptoorchestrator.api.ratelimit.RateLimiter` (429 in the error shape over
    budget), carries the ``X-RateLimit-*`` and security headers, HEAD gets the headers without
    the body, and it is access-logged.  It only skips the layers' per-request wrappers, routing
    and dependency injection.  Requests that other layers would treat differently take the full
    stack: a body (size limit), an ``Origin`` (CORS), another path or method.  Liveness does
    not wait for start-up (detailed health says ``starting``).  The FastAPI route of the same
    path stays for the OpenAPI document and answers identically.
    """

    BODY = b'{"status":"ok"}'
    _FULL_STACK = frozenset((b"origin", b"content-length", b"transfer-encoding"))

    def __init__(
        self,
        app: ASGIApp,
        limiter: RateLimiter,
        log: AccessLog | None,
        path: str = "/api/health",
        security: SecurityHeaders | None = None,
    ) -> None:
        self.app = app
        self.limiter = limiter
        self.security = security
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
            if self.security is not None:
                headers = [*headers, *self.security.for_scope(scope)]
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
