"""Connecting the API to the cluster and to the exchanges (the seams of ``create_app``).

``install_cluster`` replaces the "not available" facade with the Ray cluster and starts the two
background tasks a head node runs: the event relay (bot events to ``/ws/bots``) and the bot
supervisor (re-creating bots whose desired state is running).  ``install_exchange_hooks`` gives
the integrations and health routes their execution-client callables.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from typing import Any

from fastapi import FastAPI

from cryptoorchestrator.platform.settings import Settings

log = logging.getLogger("cryptoorchestrator.api")


def install_exchange_hooks(app: FastAPI, settings: Settings) -> None:
    """Enable circuit-breaker health, connection tests and the (operator's) market sync."""
    from cryptoorchestrator.platform.exchange.circuit import circuit_states

    def breakers() -> dict[str, dict[str, Any]]:
        states = dict(circuit_states())
        cluster = app.state.cluster
        remote = getattr(cluster, "circuit_breakers", None)
        if callable(remote):
            states.update(remote())
        return states

    def tester(account: Any, credentials: Any) -> dict[str, Any]:
        from cryptoorchestrator.platform.exchange.accounts import test_connection

        report = asyncio.run(test_connection(settings, account.id))
        return {
            "ok": report.ok,
            "permissions": report.permissions(),
            "error": report.error,
            "errorCode": report.error_code,
            "testedAt": report.tested_at.isoformat(),
        }

    def syncer() -> dict[str, Any]:
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

    app.state.circuit_breakers = breakers
    app.state.exchange_tester = tester
    app.state.exchange_syncer = syncer


def install_cluster(app: FastAPI, settings: Settings, supervise_interval_s: float) -> None:
    """Use the Ray cluster and run the relay and supervisor while the app lives."""
    from cryptoorchestrator.cluster.bots import supervise
    from cryptoorchestrator.cluster.facade import RayCluster

    # ray.init installs Ray's own SIGTERM handler (it exits at once), replacing the server's
    # graceful one: `docker stop` printed tracebacks from cancelled tasks instead of shutting
    # down as Ctrl-C does.  Keep the handler the server had.
    on_sigterm = signal.getsignal(signal.SIGTERM)
    cluster = RayCluster(settings)
    if on_sigterm is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_sigterm)
    app.state.cluster = cluster
    tasks: list[asyncio.Task[Any]] = []

    async def start() -> None:
        tasks.append(asyncio.create_task(cluster.relay_events(app.state.event_hub.publish)))
        tasks.append(asyncio.create_task(supervise(settings, supervise_interval_s)))

    async def stop() -> None:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    app.state.on_start.append(start)
    app.state.on_stop.append(stop)
