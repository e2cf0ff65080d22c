"""The simulator's per-IP weight limit, and the budget's ccxt hook learning from its headers."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from typing import Any

import pyarrow as pa
import pytest

from cryptoorchestrator.platform.exchange.budget import (
    BudgetExhaustedError,
    ExchangeBudgetSettings,
    WeightLimit,
)
from cryptoorchestrator.platform.exchange.budget_client import BudgetRegistry, LocalBudgetSource
from cryptoorchestrator.platform.exchange.ccxt_factory import build_ccxt_client
from cryptoorchestrator.platform.exchange.sim import run_simulator_in_thread
from cryptoorchestrator.platform.exchange.sim.ratelimit import WeightLimiter


class Clock:
    def __init__(self, t: float = 1_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_limiter_counts_weight_per_ip_and_window() -> None:
    clock = Clock(1_000.0)  # windows of 10 s: [1000, 1010)
    limiter = WeightLimiter(10, 10, clock=clock)
    assert limiter.header == "X-MBX-USED-WEIGHT-10S"
    first = limiter.charge("1.1.1.1", "GET", "/api/v3/klines", {"symbol": "BTCUSDT"})
    assert (first.status, first.used) == (200, 2)
    assert limiter.charge("1.1.1.1", "GET", "/api/v3/ticker/price", {}).used == 6  # no symbol
    assert limiter.charge("2.2.2.2", "POST", "/api/v3/order", {}).used == 1  # another IP
    clock.t = 1_010.0
    assert limiter.charge("1.1.1.1", "GET", "/api/v3/klines", {}).used == 2  # a new window
    assert limiter.max_served() == 6


def test_limiter_answers_429_then_bans_who_ignores_retry_after() -> None:
    clock = Clock(1_000.0)
    limiter = WeightLimiter(10, 10, ban_s=120, clock=clock)
    for _ in range(5):
        assert limiter.charge("ip", "GET", "/api/v3/klines", {}).status == 200
    clock.t = 1_004.0
    over = limiter.charge("ip", "GET", "/api/v3/klines", {})
    assert (over.status, over.used, over.retry_after_s) == (429, 12, 6)  # to the next window
    clock.t = 1_005.0
    banned = limiter.charge("ip", "GET", "/api/v3/ping", {})
    assert (banned.status, banned.retry_after_s) == (418, 120)
    clock.t = 1_030.0  # a new window, still banned
    assert limiter.charge("ip", "GET", "/api/v3/ping", {}).status == 418
    clock.t = 1_126.0
    assert limiter.charge("ip", "GET", "/api/v3/ping", {}).status == 200
    assert limiter.max_served() == 10  # refused requests are counted, never served
    assert limiter.stats()["refused_429"] == 1
    assert limiter.stats()["refused_418"] == 2


def _get(url: str) -> tuple[int, dict[str, str], Any]:
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:  # noqa: S310 (loopback)
            return resp.status, dict(resp.headers), json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read())


@pytest.fixture
def small_table() -> pa.Table:
    hour = 3_600_000
    n = 50
    ts = [1_700_000_000_000 + i * hour for i in range(n)]
    price = [100.0 + i for i in range(n)]
    return pa.table(
        {
            "timestamp": pa.array(ts, pa.int64()),
            "open": price,
            "high": [p + 1 for p in price],
            "low": [p - 1 for p in price],
            "close": price,
            "volume": [10.0] * n,
        }
    )


def test_simulator_sends_the_used_weight_and_refuses_over_the_limit(
    small_table: pa.Table,
) -> None:
    # A window far longer than the test (ten days): the count does not roll over under it.
    with run_simulator_in_thread(small_table, weight_limit=10, weight_window_s=864_000) as sim:
        status, headers, _ = _get(sim.base_url + "/api/v3/klines?symbol=BTCUSDT&interval=1h")
        assert status == 200
        assert headers["X-MBX-USED-WEIGHT-10D"] == "2"
        for _ in range(4):
            assert _get(sim.base_url + "/api/v3/klines?symbol=BTCUSDT&interval=1h")[0] == 200
        status, headers, body = _get(sim.base_url + "/api/v3/ping")
        assert status == 429
        assert body["code"] == -1003
        assert int(headers["Retry-After"]) > 0
        assert _get(sim.base_url + "/api/v3/ping")[0] == 418
        assert _get(sim.base_url + "/_sim/stats")[0] == 200  # admin routes are not limited
        status, _, figures = _get(sim.base_url + "/_sim/weights")
        assert status == 200
        assert figures == {
            "limit": 10.0,
            "window_s": 864_000.0,
            "max_served": 10.0,
            "refused_429": 1,
            "refused_418": 1,
        }
        assert sim.weights is not None
        assert sim.weights.max_served() == 10


def test_the_hook_resyncs_from_the_simulator_headers(small_table: pa.Table) -> None:
    limit = WeightLimit(weight=1000, window_s=864_000, orders=None, ccxt_cost_factor=5)
    config = ExchangeBudgetSettings(
        limits={"binance": limit}, lease_fraction=1.0, egress_id="test", max_wait_s=600
    )
    with run_simulator_in_thread(small_table, weight_limit=1000, weight_window_s=864_000) as sim:
        # Another program on this IP spent 780 of the 1000: our 800 (safety 0.8) is all but gone.
        for _ in range(39):
            assert _get(sim.base_url + "/api/v3/exchangeInfo")[0] == 200
        registry = BudgetRegistry()
        budget = registry.configure(config, LocalBudgetSource())
        assert budget is not None

        async def main() -> float:
            client = build_ccxt_client("binance", sim.base_url, kind="async")
            gate = registry.attach(client, "binance", sim.base_url)
            assert gate is not None
            try:
                await client.load_markets()  # exchangeInfo: 20, the count is now 800
                held = budget.held(gate.ip_key)  # a 400 lease, less 20, cut to 800 - 800
                # The refill of a ten-day window takes hours: fail fast, send nothing.
                with pytest.raises(BudgetExhaustedError, match="nothing was sent"):
                    await client.fetch_ohlcv("BTC/USDT", "1h", limit=5)
                return held
            finally:
                await client.close()

        held = asyncio.run(main())
        assert sim.weights is not None
        stats = sim.weights.stats()
    assert held == 0
    assert stats["max_served"] == 800  # 780 + exchangeInfo's 20; the klines were not sent
    assert stats["refused_429"] == 0
