"""The one typed context of a running API, built once by ``create_app``.

Everything a route, a WebSocket or a health check needs from the app (settings, sessions,
identity, the cluster, the read backends, the exchange hooks) is a field of :class:`AppContext`,
stored on ``app.state.context``; routes get it through ``ContextDep``
(:mod:`cryptoorchestrator.api.deps`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI
from sqlalchemy.orm import Session

from cryptoorchestrator.api.config import ApiOptions
from cryptoorchestrator.api.events import EventHub, SocketSlots
from cryptoorchestrator.api.facade import ClusterFacade
from cryptoorchestrator.api.feeds import MarketFeed
from cryptoorchestrator.api.health import HealthRegistry
from cryptoorchestrator.api.identity import Identity
from cryptoorchestrator.api.proxies import TrustedProxies
from cryptoorchestrator.platform.crypto import SecretBox
from cryptoorchestrator.platform.services.auth import AuthConfig
from cryptoorchestrator.platform.services.trade_reads import TradeReads
from cryptoorchestrator.platform.settings import Settings
from cryptoorchestrator.platform.storage.models import ExchangeAccount

#: Run when the app starts or stops (inside its lifespan).
Hook = Callable[[], Awaitable[None]]
#: Each exchange's circuit breaker state, by exchange name.
BreakerStates = Callable[[], dict[str, dict[str, Any]]]
#: Tests an account's stored keys; returns the report the connection-test route shows.
ExchangeTester = Callable[[ExchangeAccount], dict[str, Any]]
#: Refreshes the shared market-data store; returns ``{"synced": {dataset: result}}``.
MarketSyncer = Callable[[], dict[str, Any]]


@dataclass(eq=False)
class Readiness:
    """What the app still waits for before it serves: start-up is over when nothing is pending.

    Until then ``/api/health`` and ``/api/health/detailed`` answer 503 with status
    ``starting`` (a load balancer keeps traffic away, a monitor does not page anyone), then
    their usual answer.

    Attributes
    ----------
    pending
        Component name -> what it waits for (``database``, ``cluster``, ``supervisor``).
        Changed in place only: the liveness fast path holds this very dict.
    """

    pending: dict[str, str] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        """Whether start-up is over."""
        return not self.pending

    def wait_for(self, name: str, reason: str) -> None:
        """Mark ``name`` as not ready yet, waiting for ``reason``."""
        self.pending[name] = reason

    def done(self, name: str) -> None:
        """Mark ``name`` as ready (a no-op when it was not pending)."""
        self.pending.pop(name, None)

    def reasons(self) -> list[str]:
        """Return ``"<name>: <what it waits for>"`` per pending component, sorted by name."""
        return [f"{name}: {why}" for name, why in sorted(self.pending.items())]


class RecentResults:
    """The last few results of a costly read, by key (least recently used go first).

    For answers that cannot change once computed: a finished backtest's report is the stored
    spec run again, with its data range pinned, so the same request gets the same answer.
    Thread-safe (synchronous routes run on a thread pool); two first requests may both compute.
    """

    def __init__(self, size: int = 8) -> None:
        self.size = size
        self._items: OrderedDict[Any, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0

    def get(self, key: Any, compute: Callable[[], Any]) -> Any:
        """Return the result kept for ``key``, else ``compute()`` kept for next time."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key]
        value = compute()
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return value


@dataclass(eq=False)
class AppContext:
    """What the API's routes share, one per app.

    Attributes
    ----------
    settings, options
        Platform settings and API options.
    session_factory
        Makes the ORM session of a request.
    auth_config, identity, secret_box
        Token settings, the cached bearer-token checks, credential encryption.
    proxies
        The one notion of "the client's address" (rate limits, audit log, access log, sockets).
    ws_slots
        Caps on open WebSockets.
    trades
        The read backend of ``/api/trades``, chosen for the database.
    cluster
        Bots, risk and jobs (:class:`~cryptoorchestrator.api.facade.UnavailableCluster` without
        a cluster).
    feed
        Market data for ``/ws/market-data``.
    health
        The components of ``/api/health/detailed`` and ``/external-apis``.
    event_hub
        Bot events for ``/ws/bots``.
    circuit_breakers, exchange_tester, exchange_syncer
        The execution client's hooks (health, connection test, market sync).
    on_start, on_stop
        Run by the lifespan, in order.
    readiness
        What start-up still waits for (the health routes answer ``starting`` until it is over).
    reports
        The last finished backtests' reports (``GET /api/backtests/{id}/report``).
    """

    settings: Settings
    options: ApiOptions
    session_factory: Callable[[], Session]
    auth_config: AuthConfig
    identity: Identity
    secret_box: SecretBox
    proxies: TrustedProxies
    ws_slots: SocketSlots
    trades: TradeReads
    cluster: ClusterFacade
    feed: MarketFeed
    health: HealthRegistry
    event_hub: EventHub
    circuit_breakers: BreakerStates
    exchange_tester: ExchangeTester
    exchange_syncer: MarketSyncer
    on_start: list[Hook] = field(default_factory=list)
    on_stop: list[Hook] = field(default_factory=list)
    readiness: Readiness = field(default_factory=Readiness)
    reports: RecentResults = field(default_factory=RecentResults)


def context_of(app: FastAPI) -> AppContext:
    """Return the context ``create_app`` stored on ``app``.

    Parameters
    ----------
    app
        An app built by :func:`~cryptoorchestrator.api.app.create_app`.

    Returns
    -------
    AppContext
        Its context.
    """
    context: AppContext = app.state.context
    return context
