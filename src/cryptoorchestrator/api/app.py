"""The FastAPI application factory; uvicorn loads ``cryptoorchestrator.api.app:create_app``.

``create_app(settings)`` builds the one :class:`~cryptoorchestrator.api.context.AppContext`
(settings, database sessions and reads, auth, the cluster facade, the health registry, the bot
event hub, the market feed, the exchange hooks) and stores it on ``app.state.context``; it
installs the one error shape and the pure-ASGI middleware stack (outermost first): liveness fast
path, security headers, access log, HEAD, CORS, rate limits, body size limit, crashes.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from anyio import to_thread
from fastapi import Depends, FastAPI
from sqlalchemy import select
from starlette.middleware.cors import CORSMiddleware

from cryptoorchestrator import __version__
from cryptoorchestrator.api.config import ApiOptions
from cryptoorchestrator.api.context import AppContext, Hook, Readiness, context_of
from cryptoorchestrator.api.deps import TOKEN_URL, not_starting
from cryptoorchestrator.api.errors import install_error_handlers
from cryptoorchestrator.api.events import EventHub, SocketSlots
from cryptoorchestrator.api.facade import ClusterFacade, UnavailableCluster
from cryptoorchestrator.api.feeds import MarketFeed
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
from cryptoorchestrator.api.routers import (
    analytics,
    auth,
    backtests,
    bots,
    dashboard,
    health,
    integrations,
    markets,
    notifications,
    optimizations,
    risk,
    strategies,
    trading,
    ws,
)
from cryptoorchestrator.api.wiring import (
    breaker_states,
    cluster_tasks,
    connection_tester,
    market_syncer,
    notification_tasks,
    ray_cluster,
)
from cryptoorchestrator.platform.crypto import SecretBox
from cryptoorchestrator.platform.logs import api_log_writer, setup_api_logging
from cryptoorchestrator.platform.services.auth import AuthConfig
from cryptoorchestrator.platform.services.bots import bots_by_status
from cryptoorchestrator.platform.services.market_sources import market_hub
from cryptoorchestrator.platform.services.trade_reads import trade_reads_for
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
    {"name": "notifications", "description": "Alert channels (write-only secrets), delivery log."},
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


def _register_health(context: AppContext) -> None:
    registry = context.health

    def database() -> dict[str, Any]:
        return check_database(context.settings)

    def bots_check() -> dict[str, Any]:
        with context.session_factory() as session:
            return {"status": "healthy", "by_status": bots_by_status(session)}

    def circuit_breaker() -> dict[str, Any]:
        exchanges = context.circuit_breakers()
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

        endpoints = dict(context.settings.exchange_endpoints)
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
    registry.register("ray", lambda: context.cluster.ray_status())
    registry.register("risk_actor", lambda: context.cluster.risk_status())
    registry.register("circuit_breaker", circuit_breaker)
    registry.register("bots", bots_check)
    registry.register("exchanges", exchanges_reachable, external=True)


#: Seconds between readiness probes while start-up waits for a component.
READY_POLL_S = 1.0
#: Seconds one readiness probe of a component may take before it counts as not ready yet.
READY_PROBE_S = 5.0
#: Seconds start-up waits for its components at most: then health reports them as they are
#: (``unhealthy``), since a part that never comes up is a failure, not a slow start.
READY_GRACE_S = 300.0
#: Component statuses that end the wait: ``unavailable`` means nothing was configured to run.
_UP = ("healthy", "degraded", "unavailable")


def _readiness(supervised: bool) -> Readiness:
    """Return the start-up state of a new app: everything pending."""
    readiness = Readiness()
    readiness.wait_for("database", "waiting for the database to answer")
    readiness.wait_for("cluster", "waiting for the cluster and its risk actor")
    if supervised:
        readiness.wait_for("supervisor", "waiting for the bot supervisor's first pass")
    return readiness


async def probe_readiness(context: AppContext) -> bool:
    """Check each component start-up still waits for; mark those now up; return readiness.

    Parameters
    ----------
    context
        The app's context (its ``readiness`` is updated).

    Returns
    -------
    bool
        Whether start-up is over.
    """
    readiness = context.readiness

    async def up(check: Any) -> bool:
        try:
            result = await asyncio.wait_for(to_thread.run_sync(check), READY_PROBE_S)
        except Exception:  # not up yet (timed out or failing): probed again later
            return False
        return isinstance(result, dict) and result.get("status") in _UP

    cluster = context.cluster
    if "database" in readiness.pending and await up(lambda: check_database(context.settings)):
        readiness.done("database")
    # Looked up inside the probe: a facade without a status method is simply not ready.
    if (
        "cluster" in readiness.pending
        and await up(lambda: cluster.ray_status())
        and await up(lambda: cluster.risk_status())
    ):
        readiness.done("cluster")
    return readiness.ready


async def _wait_until_ready(context: AppContext, grace_s: float = READY_GRACE_S) -> None:
    """Probe the pending components until start-up is over or ``grace_s`` ran out."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace_s
    while not await probe_readiness(context):
        if loop.time() >= deadline:
            context.readiness.pending.clear()
            return
        await asyncio.sleep(READY_POLL_S)


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
        Market data for ``/ws/market-data``; by default a hub over the operator's sources
        (``CRYPTOORCH_MARKET_FEED``: the exchanges through ccxt, or the Parquet store), its
        pollers stopped with the app.
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
        # Fewer threads than anyio's 40 for sync routes: on a busy head node more threads only
        # fight over the GIL, while the queue in front of them is fair (FIFO), so a small pool
        # shortens the latency tail.
        to_thread.current_default_thread_limiter().total_tokens = options.threads
        context = context_of(app)
        for hook in context.on_start:
            await hook()
        # The hooks started the supervisor's task (with a cluster), which marks its part ready
        # after its first pass; the database and the cluster are probed once here, so an app
        # whose parts are up is ready when it starts serving, and in the background otherwise
        # (health says "starting" meanwhile).
        waiting: asyncio.Task[None] | None = None
        if not await probe_readiness(context):
            waiting = asyncio.create_task(_wait_until_ready(context))
        # Everything built so far (app, models, ORM mappers, ccxt/ray modules) lives as long as
        # the process: freezing it keeps the cyclic GC from re-scanning it on every full
        # collection, which were the long pauses in the API's latency tail.
        gc.collect()
        gc.freeze()
        yield
        if waiting is not None:
            waiting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiting
        for hook in context.on_stop:
            await hook()
        await backend.close()

    app = FastAPI(
        title="CryptoOrchestrator API",
        version=__version__,
        description="Backtest, optimize and run crypto trading bots. Errors always have the "
        'shape {"code", "message", "details": [{"field", "message"}]}.\n\n'
        "**Logging in here**: press *Authorize* and enter your email as *username* and your "
        f"password (the OAuth2 password flow, `POST {TOKEN_URL}`, form-encoded). With MFA on, "
        "append the current TOTP code or a backup code to the password after a colon: "
        "`my password:123456`. Scripts may use `POST /api/auth/login` (JSON) instead.",
        openapi_tags=TAGS,
        lifespan=lifespan,
        # FastAPI's native OpenTelemetry looks up its providers on every request (a large
        # share of a liveness probe's cost): on only when asked for.
        telemetry=None if options.otel else {"tracing": False, "metrics": False, "logs": False},
        # Starlette builds a slash redirect's absolute Location from the Host header (an open
        # redirect for anyone who can set it); routes are declared exactly, others are 404.
        redirect_slashes=False,
    )
    factory = session_factory(settings)

    def owner_of(bot_id: int) -> int | None:
        with factory() as session:
            return session.scalar(select(Bot.user_id).where(Bot.id == bot_id))

    on_start: list[Hook] = []
    on_stop: list[Hook] = []
    hub = EventHub(owner_of)
    supervised = cluster is None and options.cluster == "ray"
    readiness = _readiness(supervised)
    if supervised:
        ray = ray_cluster(settings)
        # Ready only once the supervisor has looked at every bot (resumed those meant to run).
        start, stop = cluster_tasks(
            ray,
            settings,
            hub,
            options.supervise_interval_s,
            on_first_pass=lambda: readiness.done("supervisor"),
        )
        on_start.append(start)
        on_stop.append(stop)
        cluster = ray
    cluster = cluster or UnavailableCluster()
    trades = trade_reads_for(settings, factory)
    on_start.insert(0, trades.open)
    on_stop.insert(0, trades.close)
    feed = feed or market_hub(
        settings, default_exchange=options.market_exchange, poll_s=options.ws_poll_s
    )
    on_stop.append(feed.close)
    context = AppContext(
        settings=settings,
        options=options,
        session_factory=factory,
        auth_config=auth_config,
        identity=Identity(auth_config, factory, user_ttl_s=options.user_cache_s),
        secret_box=SecretBox(secret),
        # The one notion of "the client's address" (rate limits, audit log, access log, sockets).
        proxies=TrustedProxies(options.trusted_proxies),
        ws_slots=SocketSlots(options.ws_max_per_ip, options.ws_max_per_user),
        trades=trades,
        cluster=cluster,
        feed=feed,
        health=HealthRegistry(),
        event_hub=hub,
        circuit_breakers=breaker_states(cluster),
        exchange_tester=connection_tester(settings),
        exchange_syncer=market_syncer(settings),
        on_start=on_start,
        on_stop=on_stop,
        readiness=readiness,
    )
    app.state.context = context
    # The outbox's delivery task (atomic claims: any number of replicas may run one).
    notifier, notify_start, notify_stop = notification_tasks(settings, factory, context.secret_box)
    app.state.notify_dispatcher = notifier
    on_start.append(notify_start)
    on_stop.insert(0, notify_stop)
    _register_health(context)
    install_error_handlers(app)
    # Until start-up is over, detailed health answers 503 "starting" (liveness stays 200).
    app.include_router(health.router, dependencies=[Depends(not_starting)])
    for module in (
        auth,
        bots,
        trading,
        markets,
        integrations,
        strategies,
        backtests,
        optimizations,
        risk,
        analytics,
        notifications,
        ws,
    ):
        app.include_router(module.router)
    app.include_router(dashboard.router)  # the web dashboard at / (same API, same headers)
    install_openapi(app)

    # add_middleware puts each new one outside the previous ones: add innermost first.
    limiter = RateLimiter(
        backend,
        RateLimits(
            default=options.rate_limit,
            auth=options.rate_limit_auth,
            window_s=options.rate_limit_window_s,
            # health=None: HEALTH_FACTOR times the API budget, per IP and apart from it, so
            # monitors are never refused for the API traffic of their address.
        ),
        context.identity.identify,
        context.proxies.client_ip,
    )
    access = (
        AccessLog(api_log_writer(settings.log_dir), context.proxies.client_ip)
        if options.access_log
        else None
    )
    security = SecurityHeaders(
        context.proxies,
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
    app.add_middleware(
        LivenessMiddleware,
        limiter=limiter,
        log=access,
        security=security,
    )
    return app
