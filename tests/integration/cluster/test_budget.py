"""Two processes on one IP share the budget actor's request weight against a limiting simulator.

The simulator enforces Binance's per-IP weight limit (429, then 418 bans) and counts what it
served per window.  Two Ray workers, each with the platform's ccxt execution client built as a
bot process builds it (``CcxtExecutionClient.for_exchange`` after ``install_budget``), poll as
fast as they can.  Without the budget they are refused; with it, together they stay under the
limit in every window, even with the budget actor restarted under them.  Nothing here asserts
on timing: the workers' pace is whatever the machine gives them, and the sim counts.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pytest

from cryptoorchestrator.cluster.budget_actor import get_budget_actor
from cryptoorchestrator.platform.exchange.budget import ExchangeBudgetSettings, WeightLimit
from cryptoorchestrator.platform.exchange.sim import ExchangeSimulator, run_simulator_in_thread

pytestmark = [pytest.mark.ray, pytest.mark.slow]

#: The simulator's limit: 90 weight per IP per 3 s window (Binance: 6,000 per minute).
LIMIT = 90
WINDOW_S = 3.0
#: Calls per worker after loading the markets (exchangeInfo: 20), klines and tickers at 2 each.
CALLS = 25
WEIGHT_PER_WORKER = 20 + 2 * CALLS
#: Generous deadlines for conditions (a busy machine), never a measurement.
PATIENT_S = 300.0


def _config(enabled: bool = True) -> dict[str, Any]:
    limit = WeightLimit(weight=LIMIT, window_s=WINDOW_S, orders=None, ccxt_cost_factor=5)
    return ExchangeBudgetSettings(
        enabled=enabled,
        limits={"binance": limit},
        # 60 % of the limit: the margin absorbs requests in flight and a fallback overlap.
        safety=0.6,
        burst=0.5,
        lease_fraction=0.25,
        lease_ttl_s=0.5,
        fallback_processes=2,
        max_wait_s=PATIENT_S,
        call_timeout_s=30.0,
        retry_s=1.0,
        egress_id="test-host",
    ).model_dump()


def _hammer_class(ray: Any) -> Any:
    @ray.remote(num_cpus=0)
    class Hammer:
        """One process polling the simulator through the platform's execution client."""

        def __init__(self, config: dict[str, Any], base_url: str) -> None:
            from cryptoorchestrator.cluster.budget_actor import install_budget

            self.budget = install_budget(ExchangeBudgetSettings(**config), replace=True)
            self.base_url = base_url
            self.done = 0
            self.errors: list[str] = []

        async def run(self, calls: int) -> dict[str, Any]:
            from cryptoorchestrator.platform.exchange.ccxt_client import CcxtExecutionClient

            client = CcxtExecutionClient.for_exchange("binance", api_url=self.base_url)
            try:
                for i in range(calls):
                    try:
                        if i % 2:
                            await client.fetch_ticker("BTC/USDT")
                        else:
                            await client.fetch_ohlcv("BTC/USDT", "1h", limit=10)
                        self.done += 1
                    except Exception as exc:  # recorded: the test asserts there are none
                        self.errors.append(f"{type(exc).__name__}: {exc}"[:300])
            finally:
                await client.close()
            stats = dict(self.budget.stats) if self.budget is not None else None
            return {"done": self.done, "errors": self.errors, "stats": stats}

        async def progress(self) -> int:
            return self.done

    return Hammer


@pytest.fixture
def sim(candles: pa.Table) -> Iterator[ExchangeSimulator]:
    with run_simulator_in_thread(
        {"BTC/USDT": candles}, weight_limit=LIMIT, weight_window_s=WINDOW_S
    ) as simulator:
        yield simulator


def _wait_for(condition: Any, what: str) -> None:
    deadline = time.monotonic() + PATIENT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.2)


def test_without_the_budget_two_processes_are_refused(ray_session: Any, candles: Any) -> None:
    """The control: the same load without the budget goes over the limit (429, then 418)."""
    ray = ray_session
    # One window longer than the test: the load is over the limit whatever its pace.
    with run_simulator_in_thread(
        {"BTC/USDT": candles}, weight_limit=LIMIT, weight_window_s=864_000
    ) as control:
        hammer = _hammer_class(ray)
        workers = [hammer.remote(_config(enabled=False), control.base_url) for _ in range(2)]
        results = ray.get([w.run.remote(CALLS) for w in workers], timeout=PATIENT_S)
        assert control.weights is not None
        stats = control.weights.stats()
    assert all(r["stats"] is None for r in results)  # no budget in these processes
    assert 2 * WEIGHT_PER_WORKER > LIMIT
    assert stats["refused_429"] + stats["refused_418"] > 0
    for w in workers:
        ray.kill(w)


def test_two_processes_share_one_budget_through_an_actor_restart(
    ray_session: Any, sim: ExchangeSimulator
) -> None:
    ray = ray_session
    actor = get_budget_actor()
    hammer = _hammer_class(ray)
    workers = [hammer.remote(_config(), sim.base_url) for _ in range(2)]
    runs = [w.run.remote(CALLS) for w in workers]

    # Restart the budget actor once both processes are trading on its leases.
    _wait_for(
        lambda: min(ray.get([w.progress.remote() for w in workers], timeout=PATIENT_S)) >= 5,
        "both workers to make 5 calls",
    )
    ray.kill(actor, no_restart=False)
    results = ray.get(runs, timeout=PATIENT_S)
    snapshot = ray.get(actor.snapshot.remote(), timeout=PATIENT_S)

    assert [r["errors"] for r in results] == [[], []]
    assert [r["done"] for r in results] == [CALLS, CALLS]
    assert sim.weights is not None
    stats = sim.weights.stats()
    served = sim.weights.served()
    # Together they spent more than one window's limit, so the budget had to pace them...
    assert sum(served.values()) == 2 * WEIGHT_PER_WORKER > LIMIT
    # ...and no window saw more than the limit, nor any refusal.
    assert stats["max_served"] <= LIMIT, served
    assert (stats["refused_429"], stats["refused_418"]) == (0, 0)
    for r in results:
        assert r["stats"]["acquired"] == CALLS + 1  # every call passed the budget (+ markets)
    # The actor that answers now is the restarted one (its buckets started empty).
    assert snapshot["restarted"] is True
    for w in workers:
        ray.kill(w)
