"""Connecting the API to the cluster and to the exchanges (the seams of ``create_app``).

:func:`ray_cluster` is the Ray cluster facade, and :func:`cluster_tasks` the two background
tasks a head node then runs: the event relay (bot events to ``/ws/bots``) and the bot supervisor
(re-creating bots whose desired state is running).  :func:`breaker_states`,
:func:`connection_tester` and :func:`market_syncer` are the execution client's hooks for the
health and integrations routes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cryptoorchestrator.api.context import BreakerStates, ExchangeTester, Hook, MarketSyncer
from cryptoorchestrator.api.events import EventHub
from cryptoorchestrator.api.facade import ClusterFacade
from cryptoorchestrator.platform.crypto import SecretBox
from cryptoorchestrator.platform.notify.dispatcher import Dispatcher, dispatcher_hooks
from cryptoorchestrator.platform.notify.outbox import install_outbox
from cryptoorchestrator.platform.settings import Settings
from cryptoorchestrator.platform.storage.models import ExchangeAccount

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from cryptoorchestrator.cluster.facade import RayCluster


def breaker_states(cluster: ClusterFacade) -> BreakerStates:
    """Return the circuit breakers' states: this process's, and the cluster's bots' if it has any.

    Parameters
    ----------
    cluster
        The app's cluster facade (a facade without ``circuit_breakers`` contributes nothing).

    Returns
    -------
    BreakerStates
        Each exchange's breaker state, read at each call.
    """
    from cryptoorchestrator.platform.exchange.circuit import circuit_states

    remote = getattr(cluster, "circuit_breakers", None)

    def states() -> dict[str, dict[str, Any]]:
        found = dict(circuit_states())
        if callable(remote):
            found.update(remote())
        return found

    return states


def connection_tester(settings: Settings) -> ExchangeTester:
    """Return the test of an account's stored keys (no order is placed).

    Parameters
    ----------
    settings
        Platform settings (database, secret key, allowed hosts).

    Returns
    -------
    ExchangeTester
        Tests one account and returns the route's report of it.
    """

    def test(account: ExchangeAccount) -> dict[str, Any]:
        from cryptoorchestrator.platform.exchange.accounts import test_connection

        report = asyncio.run(test_connection(settings, account.id))
        return {
            "ok": report.ok,
            "permissions": report.permissions(),
            "error": report.error,
            "errorCode": report.error_code,
            "testedAt": report.tested_at.isoformat(),
        }

    return test


def market_syncer(settings: Settings) -> MarketSyncer:
    """Return the refresh of the shared market-data store from the operator's sources.

    Parameters
    ----------
    settings
        Platform settings (data directory, exchange endpoints).

    Returns
    -------
    MarketSyncer
        Downloads each stored dataset's new candles; one failing does not stop the others.
    """

    def sync() -> dict[str, Any]:
        # The store is shared by every user: it is refreshed only from the operator's sources
        # (Settings.exchange_endpoints, else the exchange's own public API), never from an
        # account's apiUrl, which a tenant chooses.
        from cryptoorchestrator.platform.data.download import download_ohlcv
        from cryptoorchestrator.platform.data.store import OhlcvStore

        store = OhlcvStore(settings.data_dir)
        results: dict[str, Any] = {}
        for d in store.list_datasets():
            key = f"{d.exchange}:{d.symbol}:{d.timeframe}"
            try:
                reports = download_ohlcv(
                    d.exchange,
                    d.symbol,
                    d.timeframe,
                    start=d.last or 0,
                    store=store,
                    api_url=settings.exchange_endpoints.get(d.exchange),
                    max_retries=2,
                )
                results[key] = {"rowsAdded": sum(r.rows_added for r in reports)}
            except Exception as exc:  # one exchange down must not hide the others
                results[key] = {"error": f"{type(exc).__name__}: {exc}"}
        return {"synced": results}

    return sync


def ray_cluster(settings: Settings) -> RayCluster:
    """Connect to (or start) Ray and return the cluster facade over it.

    Parameters
    ----------
    settings
        Platform settings (the Ray address among them).

    Returns
    -------
    RayCluster
        The facade of the bots, the risk actor and the job runner.
    """
    # Ray is imported only when the API serves a cluster.
    from cryptoorchestrator.cluster.facade import RayCluster

    # ray.init installs Ray's own SIGTERM handler (it exits at once), replacing the server's
    # graceful one: `docker stop` printed tracebacks from cancelled tasks instead of shutting
    # down as Ctrl-C does.  Keep the handler the server had.
    on_sigterm = signal.getsignal(signal.SIGTERM)
    cluster = RayCluster(settings)
    if on_sigterm is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_sigterm)
    from cryptoorchestrator.cluster.budget_actor import install_budget

    try:
        # The head node's market-data poller spends the same request budget as the bots.
        install_budget(settings)
    except Exception:  # its clients are then paced by ccxt alone; serving goes on
        logging.getLogger(__name__).warning("exchange budget not installed", exc_info=True)
    return cluster


def cluster_tasks(
    cluster: RayCluster,
    settings: Settings,
    hub: EventHub,
    supervise_interval_s: float,
    on_first_pass: Callable[[], None] | None = None,
) -> tuple[Hook, Hook]:
    """Return the hooks that start and stop the event relay and the bot supervisor.

    Parameters
    ----------
    cluster
        The Ray cluster facade.
    settings
        Platform settings.
    hub
        Where the relay publishes each bot event (for ``/ws/bots``).
    supervise_interval_s
        Seconds between the supervisor's passes.
    on_first_pass
        Called once, after the supervisor's first pass that completes.

    Returns
    -------
    tuple[Hook, Hook]
        ``(start, stop)``, for the app's lifespan.
    """
    from cryptoorchestrator.cluster.bots import supervise

    tasks: list[asyncio.Task[Any]] = []

    def publish(bot_id: int, event: dict[str, Any]) -> None:
        hub.publish(bot_id, event)

    async def start() -> None:
        tasks.append(asyncio.create_task(cluster.relay_events(publish)))
        tasks.append(asyncio.create_task(supervise(settings, supervise_interval_s, on_first_pass)))

    async def stop() -> None:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    return start, stop


def notification_tasks(
    settings: Settings, factory: sessionmaker[Session], box: SecretBox
) -> tuple[Dispatcher, Hook, Hook]:
    """Return the notification dispatcher and the hooks that start and stop its task.

    Also makes this process's sessions write the outbox rows of the facts they record (the
    head node changes bot statuses too).  With ``notify.dispatcher`` off the hooks do nothing:
    another replica sends (the dispatcher still serves the test sends of this one).

    Parameters
    ----------
    settings
        Platform settings (``settings.notify``).
    factory
        Session factory of the platform database.
    box
        The platform's secret box (channels' destinations).

    Returns
    -------
    tuple[Dispatcher, Hook, Hook]
        ``(dispatcher, start, stop)``, the hooks for the app's lifespan.
    """
    install_outbox()
    dispatcher = Dispatcher(factory, box, settings.notify)
    start, stop = dispatcher_hooks(dispatcher)
    if settings.notify.dispatcher:
        return dispatcher, start, stop

    async def nothing() -> None:
        return None

    return dispatcher, nothing, nothing
