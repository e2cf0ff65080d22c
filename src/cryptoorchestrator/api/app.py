"""The FastAPI application factory; uvicorn loads ``cryptoorchestrator.api.app:create_app``.

``create_app(settings)`` wires settings, database sessions, auth, the cluster facade, the health
registry, the bot event hub and the market feed onto ``app.state``, installs the one error shape
and the pure-ASGI middleware stack (outermost first): liveness fast path, security headers, access
log, HEAD, CORS, rate limits, body size limit.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from anyio import to_thread
from fastapi import FastAPI
from sqlalchemy import select
from starlette.middleware.cors import CORSMiddleware

from cryptoorchestrator import __version__
from cryptoorchestrator.api.config import ApiOptions
from cryptoorchestrator.api.errors import install_error_handlers
from cryptoorchestrator.api.events import EventHub, SocketSlots
from cryptoorchestrator.api.facade import ClusterFacade, UnavailableCluster
from cryptoorchestrator.api.feeds import MarketFeed, StoreFeed
from cryptoorchestrator.api.health import HealthRegistry
from cryptoorchestrator.api.identity import Identity
from cryptoorchestrator.api.middleware import (
    AccessLog,
    AccessLogMiddleware,
    BodyLimitMiddleware,
    HeadMiddleware,
    LivenessMiddleware,
    SecurityHeaders,
    SecurityHeadersMiddleware,
    protect_server_logs,
)
from cryptoorchestrator.api.openapi import install_openapi
from cryptoorchestrator.api.proxies import TrustedProxies
from cryptoorchestrator.api.ratelimit import (
    MemoryBackend,
    RateLimitBackend,
    RateLimiter,
    RateLimitMiddleware,
    RateLimits,
    RedisBackend,
)
from cryptoorchestrator.api.reads import AsyncReads
from cryptoorchestrator.api.routers import (
    analytics,
    auth,
    bots,
    health,
    integrations,
    markets,
    runs,
    trading,
    ws,
)
from cryptoorchestrator.api.wiring import install_cluster, install_exchange_hooks
from cryptoorchestrator.platform.crypto import SecretBox
from cryptoorchestrator.platform.logs import api_log_writer, setup_api_logging
from cryptoorchestrator.platform.services.auth import AuthConfig
from cryptoorchestrator.platform.services.bots import bots_by_status
from cryptoorchestrator.platform.settings import Settings, get_settings
from cryptoorchestrator.platform.storage.db import check_database, session_factory
from cryptoorchestrator.platform.storage.models import Bot
from cryptoorchestrator.strategies.registry import load_strategy_paths

TAGS = [
    {"name": "auth", "description": "Accounts, tokens (refresh rotation), MFA."},
    {"name": "bots", "description": "Bot configuration, status, logs, start/stop."},
    {"name": "trading", "description": "Trades, orders, positions (keyset pagination)."},
    {"name": "markets", "description": "Stored market data."},
    {"name": "integrations", "description": "Exchange accounts (write-only credentials)."},
    {"name": "runs", "description": "Backtests and optimizations."},
    {"name": "risk", "description": "Risk limits, events, kill switch."},
    {"name": "health", "description": "Liveness and component health (no auth)."},
]


def _rate_backend(settings: Settings, options: ApiOptions) -> RateLimitBackend:
    use_redis = options.rate_limit_backend == "redis" or (
        options.rate_limit_backend == "auto" and settings.redis_url
    )
    if use_redis:
        if not settings.redis_url:
            from cryptoorchestrator.platform.errors import ConfigError

            raise ConfigError("rate_limit_backend=redis needs CRYPTOORCH_REDIS_URL")
        return RedisBackend(settings.redis_url, options.rate_limit_prefix)
    return MemoryBackend()


#: Path probed below an exchange endpoint's base URL, per exchange (the base itself otherwise).
PING_PATHS = {"binance": "/api/v3/ping"}


def _register_health(app: FastAPI) -> None:
    state = app.state
    registry: HealthRegistry = state.health

    def database() -> dict[str, Any]:
        return check_database(state.settings)

    def bots_check() -> dict[str, Any]:
        with state.session_factory() as session:
            return {"status": "healthy", "by_status": bots_by_status(session)}

    def circuit_breaker() -> dict[str, Any]:
        provider = getattr(state, "circuit_breakers", None)
        if provider is None:
            return {
                "status": "unavailable",
                "reason": "no execution clients installed (issue 7); no breaker to report",
                "exchanges": {},
            }
        exchanges: dict[str, dict[str, Any]] = provider()
        open_ = [name for name, s in exchanges.items() if s.get("state") == "open"]
        return {
            "status": "degraded" if open_ else "healthy",
            "open": open_,
            "exchanges": exchanges,
        }

    async def exchanges_reachable() -> dict[str, Any]:
        # Only the exchanges the operator configured, never the accounts' apiUrls: a tenant's
        # URL probed by an anonymous route made the head node scan its own network for anyone.
        # The full result (status code, latency) is for admins; the route strips it for others.
        import asyncio

        import httpx

        endpoints = dict(state.settings.exchange_endpoints)
        if not endpoints:
            return {
                "status": "unavailable",
                "reason": "no exchange endpoint configured (CRYPTOORCH_EXCHANGE_ENDPOINTS)",
                "exchanges": {},
            }

        async def probe(client: httpx.AsyncClient, name: str, base: str) -> dict[str, Any]:
            try:
                response = await client.get(base.rstrip("/") + PING_PATHS.get(name, ""))
            except (httpx.HTTPError, ValueError):
                return {"reachable": False}
            return {
                "reachable": response.status_code < 500,
                "status_code": response.status_code,
                "latency_ms": round(response.elapsed.total_seconds() * 1000, 1),
            }

        async with httpx.AsyncClient(
            timeout=1.5, follow_redirects=False, trust_env=False
        ) as client:
            names = sorted(endpoints)
            found = await asyncio.gather(*(probe(client, n, endpoints[n]) for n in names))
        results = dict(zip(names, found, strict=True))
        down = [name for name, result in results.items() if not result["reachable"]]
        return {
            "status": "unhealthy" if down else "healthy",
            "reason": f"unreachable: {', '.join(down)}" if down else None,
            "exchanges": results,
        }

    registry.register("database", database)
    registry.register("ray", lambda: state.cluster.ray_status())
    registry.register("risk_actor", lambda: state.cluster.risk_status())
    registry.register("circuit_breaker", circuit_breaker)
    registry.register("bots", bots_check)
    registry.register("exchanges", exchanges_reachable, external=True)


class PlatformAPI(FastAPI):
    """FastAPI with the platform's own middleware outermost.

    Starlette puts user middleware inside its error and telemetry layers; ours (liveness,
    security headers, access log, HEAD, CORS, rate limits, body limit) handle every message
    themselves and never raise, so they go outside: a liveness probe is answered without
    crossing FastAPI's three wrappers (a quarter of its cost), while route errors are still
    turned into responses by ServerErrorMiddleware inside, and the access log records the
    status actually sent.
    """

    def __init__(self, *args: Any, telemetry: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, telemetry=telemetry, **kwargs)  # type: ignore[arg-type]
        # With native telemetry switched off, FastAPI.__call__ and Starlette.__call__ come down
        # to setting scope["root_path"] and scope["app"] before the middleware stack.
        self._plain = telemetry is not None and not any(
            telemetry.get(k, True) for k in ("tracing", "metrics", "logs")
        )

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Enter the middleware stack directly when telemetry is off (what FastAPI then does)."""
        if not self._plain or scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        if self.root_path:
            scope["root_path"] = self.root_path
        scope["app"] = self
        if self.middleware_stack is None:
            self.middleware_stack = self.build_middleware_stack()
        await self.middleware_stack(scope, receive, send)

    def build_middleware_stack(self) -> Any:
        """Build FastAPI's stack without the user middleware, then wrap it in ours."""
        user, self.user_middleware = self.user_middleware, []
        try:
            app = super().build_middleware_stack()
        finally:
            self.user_middleware = user
        for cls, args, kwargs in reversed(user):
            app = cls(app, *args, **kwargs)
        return app


def create_app(
    settings: Settings | None = None,
    *,
    options: ApiOptions | None = None,
    cluster: ClusterFacade | None = None,
    feed: MarketFeed | None = None,
) -> FastAPI:
    """Build the API.

    Parameters
    ----------
    settings
        Platform settings; ``get_settings()`` when omitted (how uvicorn calls it).
    options
        API options; read from ``CRYPTOORCH_API_*`` when omitted.
    cluster
        The cluster facade (bots, risk, jobs).  When omitted: the Ray cluster if
        ``CRYPTOORCH_API_CLUSTER=ray`` (what ``cryptoorch serve`` sets), else
        :class:`UnavailableCluster`, whose routes answer 503.
    feed
        Market data for ``/ws/market-data``; the Parquet store's newest candles by default.
    """
    settings = settings or get_settings()
    options = options or ApiOptions()
    # The operator's strategies, registered before the first request: tenants pick by name.
    load_strategy_paths(settings.strategy_paths)
    setup_api_logging(settings.log_dir, settings.log_level)
    protect_server_logs()
    secret = settings.resolved_secret_key()
    auth_config = AuthConfig(
        secret_key=secret,
        access_ttl=timedelta(minutes=options.access_token_minutes),
        refresh_ttl=timedelta(days=options.refresh_token_days),
        max_failed_logins=options.max_failed_logins,
        lockout=timedelta(minutes=options.lockout_minutes),
    )
    backend = _rate_backend(settings, options)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Fewer threads than anyio's 40 for sync routes: on a busy head node 40 threads only
        # fight over the GIL, and the queue in front of them is fair (FIFO); measured on
        # /api/trades at 50 connections: p99 466 ms with 40 threads, 228 ms with 4.
        to_thread.current_default_thread_limiter().total_tokens = options.threads
        for hook in app.state.on_start:
            await hook()
        # Everything built so far (app, models, ORM mappers, ccxt/ray modules) lives as long as
        # the process: freezing it keeps the cyclic GC from re-scanning it on every full
        # collection, which were the long pauses in the API's latency tail.
        gc.collect()
        gc.freeze()
        yield
        for hook in app.state.on_stop:
            await hook()
        await backend.close()

    app = PlatformAPI(
        title="CryptoOrchestrator API",
        version=__version__,
        description="Backtest, optimize and run crypto trading bots. Errors always have the "
        'shape {"code", "message", "details": [{"field", "message"}]}.',
        openapi_tags=TAGS,
        lifespan=lifespan,
        # FastAPI's native OpenTelemetry looks up its providers on every request (~5 us, a
        # fifth of a liveness probe): on only when asked for.
        telemetry=None if options.otel else {"tracing": False, "metrics": False, "logs": False},
        # Starlette builds a slash redirect's absolute Location from the Host header (an open
        # redirect for anyone who can set it); routes are declared exactly, others are 404.
        redirect_slashes=False,
    )
    factory = session_factory(settings)
    app.state.settings = settings
    app.state.options = options
    # The one notion of "the client's address" (rate limits, audit log, access log, sockets).
    app.state.proxies = proxies = TrustedProxies(options.trusted_proxies)
    app.state.ws_slots = SocketSlots(options.ws_max_per_ip, options.ws_max_per_user)
    app.state.session_factory = factory
    app.state.auth_config = auth_config
    app.state.identity = Identity(auth_config, factory, user_ttl_s=options.user_cache_s)
    app.state.secret_box = SecretBox(secret)
    app.state.reads = reads = AsyncReads.for_settings(settings)
    app.state.cluster = cluster or UnavailableCluster()
    app.state.feed = feed or StoreFeed(
        settings.data_dir, options.market_exchange, options.market_timeframe, options.ws_poll_s / 2
    )
    app.state.health = HealthRegistry()
    app.state.on_start = []
    app.state.on_stop = []
    if reads is not None:
        app.state.on_start.append(reads.open)
        app.state.on_stop.append(reads.close)
    install_exchange_hooks(app, settings)
    if cluster is None and options.cluster == "ray":
        install_cluster(app, settings, options.supervise_interval_s)

    def owner_of(bot_id: int) -> int | None:
        with factory() as session:
            return session.scalar(select(Bot.user_id).where(Bot.id == bot_id))

    app.state.event_hub = EventHub(owner_of)
    _register_health(app)
    install_error_handlers(app)
    for module in (health, auth, bots, trading, markets, integrations, runs, analytics, ws):
        app.include_router(module.router)
    install_openapi(app)

    # add_middleware puts each new one outside the previous ones: add innermost first.
    limiter = RateLimiter(
        backend,
        RateLimits(
            default=options.rate_limit,
            auth=options.rate_limit_auth,
            window_s=options.rate_limit_window_s,
        ),
        app.state.identity.identify,
        proxies.client_ip,
    )
    access = (
        AccessLog(api_log_writer(settings.log_dir), proxies.client_ip)
        if options.access_log
        else None
    )
    security = SecurityHeaders(
        proxies,
        options.hsts_max_age_s,
        (app.docs_url or "", app.redoc_url or "", app.swagger_ui_oauth2_redirect_url or ""),
    )
    app.add_middleware(BodyLimitMiddleware, max_bytes=options.max_body_bytes)
    app.add_middleware(RateLimitMiddleware, limiter=limiter)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["Authorization", "Content-Type"],
            expose_headers=["X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"],
        )
    app.add_middleware(HeadMiddleware)
    if access is not None:
        app.add_middleware(AccessLogMiddleware, log=access)
    app.add_middleware(SecurityHeadersMiddleware, headers=security)
    # Outermost: liveness probes are counted, headed and logged here with the same limiter,
    # security headers and access log, without crossing the layers above one by one.
    app.add_middleware(LivenessMiddleware, limiter=limiter, log=access, security=security)
    return app
