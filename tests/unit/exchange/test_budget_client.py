"""A process's side of the shared budget: chunked leases, fallback, resync, the ccxt hook."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

import pytest

from cryptoorchestrator.platform.exchange.budget import (
    BucketSpec,
    BudgetBank,
    BudgetExhaustedError,
    ExchangeBudgetSettings,
    Grant,
    LeaseAsk,
    Observation,
    WeightLimit,
)
from cryptoorchestrator.platform.exchange.budget_client import (
    BudgetGate,
    BudgetRegistry,
    Cost,
    LocalBudgetSource,
    RequestBudget,
    api_host,
    key_id,
)

SPEC = BucketSpec(limit=100, window_s=10, safety=0.8, burst=0.5, lease_ttl_s=2)
KEY = "ip:binance@sim:host"


class Clock:
    """A clock that moves only when told, and a sleep that moves it."""

    def __init__(self, t: float = 1000.0) -> None:
        self.t = t
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.t += seconds
        await asyncio.sleep(0)


class CountingSource(LocalBudgetSource):
    """A local source that counts calls and can be switched off (a service that is down)."""

    def __init__(self, bank: BudgetBank) -> None:
        super().__init__(bank)
        self.calls = 0
        self.observed: list[Observation] = []
        self.down = False

    async def lease(
        self, asks: Sequence[LeaseAsk], observations: Sequence[Observation]
    ) -> list[Grant]:
        self.calls += 1
        if self.down:
            raise ConnectionError("budget service down")
        self.observed.extend(observations)
        return await super().lease(asks, observations)

    async def observe(self, observations: Sequence[Observation]) -> None:
        self.observed.extend(observations)
        await super().observe(observations)


def _config(**kwargs: Any) -> ExchangeBudgetSettings:
    values: dict[str, Any] = {
        "lease_fraction": 0.25,  # chunks of 10 tokens out of a capacity of 40
        "fallback_processes": 4,
        "max_wait_s": 60.0,
        "retry_s": 5.0,
        **kwargs,
    }
    return ExchangeBudgetSettings(**values)


def _budget(clock: Clock, **kwargs: Any) -> tuple[RequestBudget, CountingSource]:
    source = CountingSource(BudgetBank(clock=clock))
    budget = RequestBudget(_config(**kwargs), source, clock=clock, sleep=clock.sleep)
    return budget, source


def test_leases_come_in_chunks_so_most_calls_cost_no_remote_call() -> None:
    clock = Clock()
    budget, source = _budget(clock)

    async def main() -> None:
        for _ in range(10):
            await budget.acquire([Cost(KEY, SPEC, 1)])

    asyncio.run(main())
    assert source.calls == 1  # one chunk of 10 served ten calls
    assert budget.held(KEY) == pytest.approx(0)
    assert budget.stats["acquired"] == 10


def test_a_lease_expires_after_its_ttl() -> None:
    clock = Clock()
    budget, source = _budget(clock)
    asyncio.run(budget.acquire([Cost(KEY, SPEC, 1)]))
    assert budget.held(KEY) == pytest.approx(9)
    clock.t += SPEC.lease_ttl_s
    assert budget.held(KEY) == 0
    asyncio.run(budget.acquire([Cost(KEY, SPEC, 1)]))
    assert source.calls == 2


def test_buckets_are_charged_together_or_not_at_all() -> None:
    clock = Clock()
    budget, _ = _budget(clock, max_wait_s=0.0)
    orders = BucketSpec(limit=2, window_s=10, burst=0.5, lease_ttl_s=2)  # capacity 0.8
    order_key = "key:binance@sim:abc"

    async def main() -> None:
        await budget.acquire([Cost(KEY, SPEC, 1), Cost(order_key, orders, 1)])
        held = budget.held(KEY)
        with pytest.raises(BudgetExhaustedError, match="nothing was sent"):
            await budget.acquire([Cost(KEY, SPEC, 1), Cost(order_key, orders, 1)])
        assert budget.held(KEY) == pytest.approx(held)  # the IP's tokens were not spent

    asyncio.run(main())


def test_waits_for_the_refill_then_fails_fast_past_max_wait() -> None:
    clock = Clock()
    budget, _ = _budget(clock, max_wait_s=100.0)

    async def main() -> None:
        await budget.acquire([Cost(KEY, SPEC, 40)])  # the whole capacity
        await budget.acquire([Cost(KEY, SPEC, 4)])  # waits for the refill
        assert sum(clock.slept) == pytest.approx(4 / SPEC.rate, rel=1e-3)
        budget.config = _config(max_wait_s=1.0)
        with pytest.raises(BudgetExhaustedError):
            await budget.acquire([Cost(KEY, SPEC, 30)])

    asyncio.run(main())


def test_the_fallback_is_a_small_share_that_starts_empty_never_unlimited() -> None:
    clock = Clock()
    budget, source = _budget(clock, max_wait_s=0.0)
    source.down = True

    async def main() -> None:
        with pytest.raises(BudgetExhaustedError):
            await budget.acquire([Cost(KEY, SPEC, 1)])  # the share starts empty: no burst
        assert budget.on_fallback
        assert budget.stats["source_failures"] == 1
        budget.config = _config(max_wait_s=1e6)
        spent = 0.0
        start = clock.t
        while clock.t - start < 4.0:  # within retry_s: the service is not asked again
            await budget.acquire([Cost(KEY, SPEC, 1)])
            spent += 1
        share = SPEC.share(1 / 4)
        elapsed = clock.t - start
        assert spent <= share.rate * elapsed + share.capacity + 1
        assert source.calls == 1

    asyncio.run(main())


def test_back_on_the_service_after_retry_s() -> None:
    clock = Clock()
    budget, source = _budget(clock, max_wait_s=1e6)
    source.down = True

    async def main() -> None:
        await budget.acquire([Cost(KEY, SPEC, 1)])
        assert budget.on_fallback
        source.down = False
        clock.t += 5.0  # retry_s
        # What the fallback leased has expired by now too.
        await budget.acquire([Cost(KEY, SPEC, 5)])
        assert not budget.on_fallback

    asyncio.run(main())
    assert source.calls == 2


def test_exchange_counts_cut_local_leases_at_once_and_reach_the_service_next() -> None:
    clock = Clock()
    budget, source = _budget(clock)

    async def main() -> None:
        await budget.acquire([Cost(KEY, SPEC, 1)])
        assert budget.held(KEY) == pytest.approx(9)
        budget.observe_used(KEY, SPEC, used=76)  # 80 allowed, 76 counted: 4 left
        assert budget.held(KEY) == pytest.approx(4)
        for _ in range(4):
            await budget.acquire([Cost(KEY, SPEC, 1)])
        assert source.calls == 1
        await budget.acquire([Cost(KEY, SPEC, 1)])  # the next lease carries the count

    asyncio.run(main())
    assert [(o.key, o.used) for o in source.observed] == [(KEY, 76.0)]


def test_a_429_blocks_here_and_at_the_service_for_retry_after() -> None:
    clock = Clock()
    budget, source = _budget(clock, max_wait_s=100.0)

    async def main() -> None:
        await budget.acquire([Cost(KEY, SPEC, 1)])
        budget.block(KEY, 30.0)
        await asyncio.sleep(0)  # the service is told in the background
        await asyncio.sleep(0)
        assert budget.held(KEY) == 0
        await budget.acquire([Cost(KEY, SPEC, 1)])
        assert clock.slept[0] == pytest.approx(30.0)
        budget.block(KEY, 300.0)
        with pytest.raises(BudgetExhaustedError):
            await budget.acquire([Cost(KEY, SPEC, 1)])

    asyncio.run(main())
    assert any(o.key == KEY and o.block_s == 30.0 for o in source.observed)


def test_concurrent_tasks_share_one_lease_request_and_never_overspend() -> None:
    clock = Clock()
    budget, source = _budget(clock, max_wait_s=0.0)
    done: list[bool] = []

    async def one() -> None:
        try:
            await budget.acquire([Cost(KEY, SPEC, 1)])
            done.append(True)
        except BudgetExhaustedError:
            done.append(False)

    async def main() -> None:
        await asyncio.gather(*(one() for _ in range(100)))

    asyncio.run(main())
    bucket = source.bank.get(KEY)
    assert bucket is not None
    assert sum(done) <= bucket.granted_total + 1e-9  # every spent token was leased
    assert bucket.granted_total <= SPEC.capacity + 1e-9  # frozen clock: no more than the burst
    assert sum(done) == pytest.approx(SPEC.capacity)  # and all of it was usable
    assert source.calls <= 8  # chunks, one request in flight at a time: not one per task


def test_threads_with_loops_of_their_own_never_overspend() -> None:
    clock = Clock()
    budget, source = _budget(clock, max_wait_s=0.0)
    spent: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(4)

    def worker() -> None:
        async def main() -> int:
            n = 0
            for _ in range(50):
                try:
                    await budget.acquire([Cost(KEY, SPEC, 1)])
                    n += 1
                except BudgetExhaustedError:
                    pass
            return n

        start.wait()
        got = asyncio.run(main())
        with lock:
            spent.append(got)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    bucket = source.bank.get(KEY)
    assert bucket is not None
    assert sum(spent) <= bucket.granted_total + 1e-9
    assert bucket.granted_total <= SPEC.capacity + 1e-9


# ---------------------------------------------------------------------- the ccxt hook


class RateLimitExceeded(Exception):
    """Stands for ccxt's class of that name (a DDoSProtection)."""


class DDoSProtection(Exception):
    pass


class Throttled(DDoSProtection):
    pass


class FakeExchange:
    """Just what the gate touches of a ccxt exchange."""

    def __init__(self) -> None:
        self.urls = {"api": {"public": "https://api.binance.com/api/v3", "sapi": "https://x"}}
        self.calls: list[tuple[str, str, str]] = []
        self.last_response_headers: dict[str, str] | None = None
        self.answer_headers: dict[str, str] = {}
        self.fail: Exception | None = None

    def calculate_rate_limiter_cost(
        self, api: Any, method: str, path: str, params: Any, config: Any
    ) -> float:
        return float(config.get("cost", 1))

    async def fetch2(
        self, path: str, api: Any = "public", method: str = "GET", params: Any = None, config=None
    ) -> Any:
        self.calls.append((str(api), method, path))
        self.last_response_headers = dict(self.answer_headers)
        if self.fail is not None:
            raise self.fail
        return {"ok": True}


def _gate(clock: Clock, **kwargs: Any) -> tuple[BudgetGate, RequestBudget, CountingSource]:
    budget, source = _budget(clock, **kwargs)
    limit = WeightLimit(weight=100, window_s=10, orders=10, orders_window_s=10, ccxt_cost_factor=5)
    orders = BucketSpec(limit=10, window_s=10, lease_ttl_s=2)
    gate = BudgetGate(budget, "binance", KEY, SPEC, "key:binance@sim:k", orders, limit)
    return gate, budget, source


def test_weights_come_from_the_table_and_orders_also_charge_the_key() -> None:
    gate, _, _ = _gate(Clock())
    klines = gate.costs(["public"], "GET", "klines", {"symbol": "BTCUSDT", "limit": 500}, 0.4)
    assert [(c.key, c.amount) for c in klines] == [(KEY, 2)]
    tickers = gate.costs("public", "GET", "ticker/24hr", {}, 16)
    assert tickers[0].amount == 80
    depth = gate.costs("public", "GET", "depth", {"symbol": "X", "limit": 1000}, 10)
    assert depth[0].amount == 50
    order = gate.costs(["private"], "post", "order", {"symbol": "BTCUSDT"}, 0.2)
    assert [(c.key, c.amount) for c in order] == [(KEY, 1), ("key:binance@sim:k", 1)]
    # Outside the table: ccxt's cost times the exchange's factor.
    sapi = gate.costs(["sapi"], "GET", "capital/config/getall", {}, 2)
    assert sapi[0].amount == 10


def test_installed_hook_charges_first_and_learns_from_the_answer() -> None:
    clock = Clock()
    gate, budget, source = _gate(clock, max_wait_s=100.0)
    exchange = FakeExchange()
    gate.install(exchange)
    gate.install(exchange)  # idempotent

    async def main() -> None:
        exchange.answer_headers = {"X-MBX-USED-WEIGHT-10S": "70"}
        await exchange.fetch2("klines", ["public"], "GET", {"symbol": "X"}, {"cost": 0.4})
        # 80 allowed, 70 counted: 10 may still go, more than the 10 - 2 = 8 held.
        assert budget.held(KEY) == pytest.approx(8)
        exchange.answer_headers = {"X-MBX-USED-WEIGHT-10S": "78"}
        await exchange.fetch2("klines", ["public"], "GET", {"symbol": "X"}, {"cost": 0.4})
        assert budget.held(KEY) == pytest.approx(2)  # 80 - 78: the 6 held were cut to 2
        exchange.answer_headers = {"Retry-After": "20"}
        exchange.fail = Throttled("binance 429")
        with pytest.raises(Throttled):
            await exchange.fetch2("klines", ["public"], "GET", {"symbol": "X"}, {})
        exchange.fail = None
        calls = len(exchange.calls)
        await exchange.fetch2("klines", ["public"], "GET", {"symbol": "X"}, {})
        assert len(exchange.calls) == calls + 1
        assert sum(clock.slept) >= 20.0  # waited out Retry-After before sending again

    asyncio.run(main())
    assert budget.stats["blocks"] == 1


def test_an_exhausted_budget_sends_nothing() -> None:
    clock = Clock()
    gate, budget, source = _gate(clock, max_wait_s=0.0)
    exchange = FakeExchange()
    gate.install(exchange)
    source.down = True  # and the fallback share starts empty

    async def main() -> None:
        with pytest.raises(BudgetExhaustedError):
            await exchange.fetch2("order", ["private"], "POST", {"symbol": "X"}, {})

    asyncio.run(main())
    assert exchange.calls == []


def test_registry_builds_gates_per_ip_and_key_only_when_configured() -> None:
    reg = BudgetRegistry()
    exchange = FakeExchange()
    assert reg.attach(exchange, "binance", None, "k") is None  # not configured: ccxt alone
    config = ExchangeBudgetSettings(egress_id="nat-1")
    budget = reg.configure(config, None)
    assert budget is not None
    assert reg.configure(ExchangeBudgetSettings(enabled=False), None) is budget  # first wins
    gate = reg.attach(exchange, "Binance", None, "my-api-key")
    assert gate is not None
    assert gate.ip_key == "ip:binance@api.binance.com:nat-1"
    assert gate.key_key == f"key:binance@api.binance.com:{key_id('my-api-key')}"
    assert "my-api-key" not in gate.key_key
    assert exchange._budget_gate is gate  # noqa: SLF001
    public = reg.gate(FakeExchange(), "binance", "http://127.0.0.1:9/", None)
    assert public is not None
    assert public.ip_key == "ip:binance@127.0.0.1:9:nat-1"
    assert public.key_key is None
    assert reg.gate(FakeExchange(), "kraken", None) is None  # no limits configured
    reg.configure(ExchangeBudgetSettings(enabled=False), None, replace=True)
    assert reg.gate(FakeExchange(), "binance", None) is None


def test_api_host_prefers_the_spot_rest_root() -> None:
    assert api_host(FakeExchange(), None) == "api.binance.com"
    assert api_host(FakeExchange(), "http://127.0.0.1:8765") == "127.0.0.1:8765"
    assert api_host(object(), None) == "default"


def test_ccxt_clients_built_by_the_platform_attach_the_process_budget() -> None:
    from cryptoorchestrator.platform.exchange import budget_client
    from cryptoorchestrator.platform.exchange.candle_feed import _stream_client
    from cryptoorchestrator.platform.exchange.ccxt_client import CcxtExecutionClient

    async def build() -> tuple[Any, Any, Any]:
        plain = CcxtExecutionClient.for_exchange("binance", api_url="http://127.0.0.1:9")
        budget_client.registry.configure(ExchangeBudgetSettings(egress_id="e"), None)
        try:
            shared = CcxtExecutionClient.for_exchange(
                "binance", api_url="http://127.0.0.1:9", api_key="k", secret="s"
            )
            stream = _stream_client("binance", "http://127.0.0.1:9")
        finally:
            budget_client.registry.clear()
        for c in (plain.exchange, shared.exchange, stream):
            await c.close()
        return plain, shared, stream

    plain, shared, stream = asyncio.run(build())
    assert getattr(plain.exchange, "_budget_gate", None) is None
    gate = shared.exchange._budget_gate  # noqa: SLF001
    assert gate.ip_key == "ip:binance@127.0.0.1:9:e"
    assert gate.key_key is not None
    assert stream._budget_gate.ip_key == gate.ip_key  # noqa: SLF001


def test_a_batch_of_orders_shares_one_lease_of_the_key_bucket() -> None:
    """A group's orders on one candle: their needs add up to one lease, not one call each."""
    clock = Clock()
    budget, source = _budget(clock, lease_fraction=0.02)
    orders = BucketSpec(limit=50, window_s=10, lease_ttl_s=5)  # a chunk would be 0.4 order
    key = "key:binance@sim:k"

    async def main() -> None:
        await asyncio.gather(*(budget.acquire([Cost(key, orders, 1)]) for _ in range(10)))

    asyncio.run(main())
    assert budget.stats["acquired"] == 10
    assert source.calls == 1


def test_a_cancelled_caller_does_not_fail_the_others_waiting_on_its_lease() -> None:
    clock = Clock()

    class SlowSource(CountingSource):
        async def lease(
            self, asks: Sequence[LeaseAsk], observations: Sequence[Observation]
        ) -> list[Grant]:
            if self.calls == 0:
                self.calls += 1
                await asyncio.sleep(3600)  # the first lease hangs until its caller is cancelled
            return await super().lease(asks, observations)

    source = SlowSource(BudgetBank(clock=clock))
    budget = RequestBudget(_config(call_timeout_s=1e6), source, clock=clock, sleep=clock.sleep)

    async def main() -> None:
        leader = asyncio.create_task(budget.acquire([Cost(KEY, SPEC, 1)]))
        await asyncio.sleep(0.01)  # the leader's lease is in flight
        follower = asyncio.create_task(budget.acquire([Cost(KEY, SPEC, 1)]))
        await asyncio.sleep(0.01)  # the follower waits on it
        leader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await leader
        await asyncio.wait_for(follower, 60)  # leased again by itself

    asyncio.run(main())
    assert budget.stats["acquired"] == 1
