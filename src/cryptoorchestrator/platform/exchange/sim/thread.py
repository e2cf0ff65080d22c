"""Running a simulator in a background thread, for sync code: tests, the CLI, a bot in a thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa

from cryptoorchestrator.platform.errors import InvalidInputError
from cryptoorchestrator.platform.exchange.sim.server import ExchangeSimulator


@contextmanager
def run_simulator_in_thread(
    data: Mapping[str, pa.Table | str | Path] | pa.Table | str | Path | None = None,
    *,
    simulator: ExchangeSimulator | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    **kwargs: Any,
) -> Iterator[ExchangeSimulator]:
    """Run a simulator in a background thread with its own event loop; yield it once serving.

    Pass either ``data`` plus :class:`ExchangeSimulator` keyword arguments, or a ready
    ``simulator``.  ``sim.base_url`` is set when the block starts; the server stops on exit.
    """
    if simulator is None:
        if data is None:
            raise InvalidInputError("data", "give candles or a ready simulator")
        simulator = ExchangeSimulator(data, **kwargs)
    sim = simulator
    loop = asyncio.new_event_loop()
    started = threading.Event()
    failure: list[BaseException] = []

    def serve() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(sim.start(host, port))
        except BaseException as exc:  # handed to the caller's thread below
            failure.append(exc)
            started.set()
            loop.close()
            return
        started.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(sim.stop())
            loop.close()

    thread = threading.Thread(target=serve, name="exchange-simulator", daemon=True)
    thread.start()
    started.wait(60)
    if failure:
        raise failure[0]
    try:
        yield sim
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
