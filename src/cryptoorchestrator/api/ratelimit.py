"""Fixed-window rate limits per user (authenticated) or per client IP, as pure ASGI middleware.

Every HTTP response carries ``X-RateLimit-Limit``, ``X-RateLimit-Remaining`` and
``X-RateLimit-Reset`` (epoch seconds when the window ends); over the limit the answer is 429 with
``Retry-After`` (seconds).  ``/api/auth/*`` has its own, stricter budget keyed by IP, so password
guessing cannot borrow from the API budget.  ``/api/health*`` has its own, generous budget keyed
by IP: monitors polling health must never be refused because the same address (a NAT, a load
balancer) spent the API budget, and health polling must not spend the users' API budget either.
Counters live in memory (one process) or in Redis (shared by every replica; one atomic INCR +
PEXPIRE script per request).  If Redis fails, requests are let through: an outage of the
limiter must not take the API down.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cryptoorchestrator.api.errors import send_error
from cryptoorchestrator.api.proxies import TrustedProxies

log = logging.getLogger("cryptoorchestrator.api.ratelimit")

_LUA = """
local c = redis.call('INCR', KEYS[1])
if c == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return c
"""


class RateLimitBackend(Protocol):
    """Counts hits in the current window."""

    async def hit(self, key: str, window_s: int, now: float) -> int:
        """Count one hit of ``key`` in the window containing ``now``; return the count."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class MemoryBackend:
    """Counters in this process's memory (one replica)."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._window: int = -1

    def counts(self, window: int) -> dict[str, int]:
        """The counters of window number ``window``, which drops every older counter.

        All keys share window boundaries, so one reset frees every old counter.  The same dict
        object serves every window (cleared in place), so a caller may keep it.
        """
        if window != self._window:
            self._counts.clear()
            self._window = window
        return self._counts

    def count(self, key: str, window_s: int, now: float) -> int:
        """Count a hit without awaiting (nothing to wait for); counters reset with the window."""
        counts = self.counts(int(now // window_s))
        count = counts.get(key, 0) + 1
        counts[key] = count
        return count

    async def hit(self, key: str, window_s: int, now: float) -> int:
        """Count a hit; counters reset when the window changes."""
        return self.count(key, window_s, now)

    async def close(self) -> None:
        """Nothing to release."""


class RedisBackend:
    """Counters in Redis, shared by every API replica using the same ``prefix``."""

    def __init__(self, url: str, prefix: str) -> None:
        import redis.asyncio as aioredis

        self.client = aioredis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self.prefix = prefix
        self._script = self.client.register_script(_LUA)

    async def hit(self, key: str, window_s: int, now: float) -> int:
        """Atomically increment ``prefix:key:window`` (expiring with the window)."""
        window = int(now // window_s)
        result = await self._script(
            keys=[f"{self.prefix}:{key}:{window}"], args=[window_s * 1000 + 1000]
        )
        return int(result)

    async def close(self) -> None:
        """Close the connection pool."""
        await self.client.aclose()


#: Budgets, indexed by :func:`budget_of`: the API, ``/api/auth/*``, ``/api/health*``.
API, AUTH, HEALTH = 0, 1, 2
#: The health budget when none is given, as a multiple of the API budget: generous, because
#: monitors poll often, yet bounded, because the detailed checks reach the database.
HEALTH_FACTOR = 10


def budget_of(path: str) -> int:
    """Return which budget a request path counts against (:data:`API`, :data:`AUTH`, ...).

    Parameters
    ----------
    path
        The request path.

    Returns
    -------
    int
        :data:`AUTH` under ``/api/auth/``, :data:`HEALTH` for ``/api/health`` and below it,
        else :data:`API`.
    """
    if path.startswith("/api/auth/"):
        return AUTH
    if path.startswith("/api/health") and (len(path) == 11 or path[11] == "/"):
        return HEALTH
    return API


@dataclass(frozen=True)
class RateLimits:
    """Budgets per window.

    Attributes
    ----------
    default, auth
        Requests per window on the API (per user or IP) and on ``/api/auth/*`` (per IP).
    window_s
        The window's length in seconds.
    health
        Requests per window on ``/api/health*`` (per IP); ``HEALTH_FACTOR`` times ``default``
        when None.
    """

    default: int
    auth: int
    window_s: int
    health: int | None = None

    def of(self, budget: int) -> int:
        """Return the limit of ``budget`` (:data:`API`, :data:`AUTH` or :data:`HEALTH`)."""
        if budget == AUTH:
            return self.auth
        if budget == HEALTH:
            return self.health if self.health is not None else self.default * HEALTH_FACTOR
        return self.default


class RateLimiter:
    """Count requests against :class:`RateLimits` and build the ``X-RateLimit-*`` headers.

    Shared by :class:`RateLimitMiddleware` and the liveness fast path
    (:class:`~cryptoorchestrator.api.middleware.LivenessMiddleware`), so both count in the same
    backend with the same keys.  What changes once per window (the reset header, the in-memory
    counters) is looked up when a window starts, not per request.

    Parameters
    ----------
    identify
        Maps a bearer token to a user id, or None when it is not a valid access token; invalid
        tokens are limited per IP (the route itself will answer 401).
    client_ip
        The client address of a request (:meth:`TrustedProxies.client_ip
        <cryptoorchestrator.api.proxies.TrustedProxies.client_ip>`); the peer when omitted.
        Forwarded headers count only through it, so a forged ``X-Forwarded-For`` cannot pick
        a fresh budget per request.
    """

    def __init__(
        self,
        backend: RateLimitBackend,
        limits: RateLimits,
        identify: Callable[[str], int | None],
        client_ip: Callable[[Scope], str | None] | None = None,
    ) -> None:
        self.backend = backend
        self.limits = limits
        self.identify = identify
        self.client_ip = client_ip or TrustedProxies().client_ip
        # The in-memory backend never waits: count inline, without a coroutine per request.
        self._memory = backend if isinstance(backend, MemoryBackend) else None
        self.immediate = self._memory is not None  # check_now may be used instead of check
        self._limits = tuple(limits.of(b) for b in (API, AUTH, HEALTH))  # by budget
        self._limit_headers = tuple((b"x-ratelimit-limit", str(n).encode()) for n in self._limits)
        self._window_start = 0.0  # [start, reset) is the current window
        self._reset = 0
        self._reset_header = (b"x-ratelimit-reset", b"0")
        self._counts: dict[str, int] = {}  # the in-memory backend's counters of this window
        # client address -> its counter keys (API, auth and health budgets); bounded
        self._ip_keys: dict[str, tuple[str, str, str]] = {}

    def _roll(self, now: float) -> None:
        """Enter the window containing ``now``."""
        window_s = self.limits.window_s
        index = int(now // window_s)
        self._window_start = index * window_s
        self._reset = (index + 1) * window_s
        self._reset_header = (b"x-ratelimit-reset", str(self._reset).encode())
        if self._memory is not None:
            self._counts = self._memory.counts(index)

    def _key(self, scope: Scope, budget: int) -> str:
        """The counter key: ``api:user:<id>`` for a valid bearer token, else ``<budget>:ip:<ip>``.

        Sets ``scope["state"]["user_id"]`` for the access log when the token is valid.  The
        auth and health budgets are per IP only (no token check on a monitor's probe).
        """
        if budget == API:
            for name, value in scope["headers"]:
                if name == b"authorization":
                    text = value.decode("latin-1")
                    if text[:7].lower() == "bearer ":
                        user_id = self.identify(text[7:].strip())
                        if user_id is not None:
                            scope.setdefault("state", {})["user_id"] = user_id
                            return f"api:user:{user_id}"
                    break
        client = self.client_ip(scope) or "unknown"
        keys = self._ip_keys.get(client)
        if keys is None:
            if len(self._ip_keys) >= 4096:  # bounded: one entry per client address
                self._ip_keys.clear()
            keys = self._ip_keys[client] = (
                f"api:ip:{client}",
                f"auth:ip:{client}",
                f"health:ip:{client}",
            )
        return keys[budget]

    def check_now(self, scope: Scope) -> tuple[list[tuple[bytes, bytes]], int]:
        """:meth:`check` without a coroutine, for the in-memory backend (``immediate``)."""
        budget = budget_of(scope["path"])
        key = self._key(scope, budget)
        now = time.time()
        if not self._window_start <= now < self._reset:
            self._roll(now)
        counts = self._counts
        count = counts.get(key, 0) + 1
        counts[key] = count
        limit = self._limits[budget]  # _answer, inlined: this runs for every probe
        headers = [
            self._limit_headers[budget],
            (b"x-ratelimit-remaining", str(limit - count if count < limit else 0).encode()),
            self._reset_header,
        ]
        if count > limit:
            return headers, max(1, math.ceil(self._reset - now))
        return headers, 0

    async def check(self, scope: Scope) -> tuple[list[tuple[bytes, bytes]], int]:
        """Count the request; return its ``X-RateLimit-*`` headers and the ``Retry-After``.

        The second value is 0 while the budget lasts, else the seconds (at least 1) until the
        window ends.  A failing backend (Redis down) lets the request through.
        """
        if self.immediate:
            return self.check_now(scope)
        budget = budget_of(scope["path"])
        key = self._key(scope, budget)
        now = time.time()
        if not self._window_start <= now < self._reset:
            self._roll(now)
        try:
            count = await self.backend.hit(key, self.limits.window_s, now)
        except Exception as exc:  # Redis down: let traffic through rather than fail closed
            log.warning("rate limiter backend failed: %s", exc)
            count = 0
        return self._answer(budget, count, now)

    def _answer(self, budget: int, count: int, now: float) -> tuple[list[tuple[bytes, bytes]], int]:
        limit = self._limits[budget]
        headers = [
            self._limit_headers[budget],
            (b"x-ratelimit-remaining", str(limit - count if count < limit else 0).encode()),
            self._reset_header,
        ]
        if count > limit:
            return headers, max(1, math.ceil(self._reset - now))
        return headers, 0

    async def refuse(
        self, scope: Scope, send: Send, headers: list[tuple[bytes, bytes]], retry: int
    ) -> None:
        """Answer 429 in the error shape with the limit headers and ``Retry-After``."""
        limit = self.limits.of(budget_of(scope["path"]))
        window = self.limits.window_s
        await send_error(
            send,
            429,
            "rate_limited",
            f"Rate limit exceeded: {limit} requests per {window} s; retry in {retry} s",
            [*headers, (b"retry-after", str(retry).encode())],
        )


class RateLimitMiddleware:
    """Apply a :class:`RateLimiter` and add the ``X-RateLimit-*`` headers to every response."""

    def __init__(self, app: ASGIApp, limiter: RateLimiter) -> None:
        self.app = app
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Count the request and answer 429 when the budget is spent."""
        if scope["type"] != "http" or scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)
            return
        headers, retry = await self.limiter.check(scope)
        if retry:
            await self.limiter.refuse(scope, send, headers, retry)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = dict(message)
                message["headers"] = [*message.get("headers", []), *headers]
            await send(message)

        await self.app(scope, receive, with_headers)
