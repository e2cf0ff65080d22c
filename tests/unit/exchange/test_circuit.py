"""Circuit breaker: opening, failing fast, half-open probes, closing, and the registry."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from cryptoorchestrator.platform.errors import (
    CircuitOpenError,
    InsufficientFundsError,
    RateLimitedError,
    RetryableExchangeError,
)
from cryptoorchestrator.platform.exchange.circuit import (
    CircuitBreaker,
    CircuitRegistry,
    CircuitState,
    account_key,
    circuit_states,
    registry,
)


class FakeClock:
    """Monotonic seconds the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Exchange:
    """Counts calls and fails while ``down`` is set."""

    def __init__(self) -> None:
        self.calls = 0
        self.down: BaseException | None = None

    async def request(self) -> str:
        self.calls += 1
        if self.down is not None:
            raise self.down
        return "ok"


def run(breaker: CircuitBreaker, fn: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(breaker.call(fn))


def attempt(breaker: CircuitBreaker, fn: Callable[[], Awaitable[Any]]) -> BaseException | None:
    try:
        run(breaker, fn)
    except BaseException as exc:  # the test inspects what came out
        return exc
    return None


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def breaker(clock: FakeClock) -> CircuitBreaker:
    return CircuitBreaker(
        "binance:1", failure_threshold=3, cooldown_s=30, clock=clock, wall_clock=lambda: 0.0
    )


def test_opens_after_threshold_consecutive_failures_and_fails_fast(
    breaker: CircuitBreaker,
) -> None:
    ex = Exchange()
    ex.down = RetryableExchangeError("503 Service Unavailable")
    for n in range(1, 3):
        assert isinstance(attempt(breaker, ex.request), RetryableExchangeError)
        assert breaker.state is CircuitState.CLOSED
        assert breaker.snapshot()["failures"] == n
    assert isinstance(attempt(breaker, ex.request), RetryableExchangeError)
    assert breaker.state is CircuitState.OPEN
    calls = ex.calls
    err = attempt(breaker, ex.request)
    assert isinstance(err, CircuitOpenError)
    assert ex.calls == calls  # failing fast: the exchange was not called
    snap = breaker.snapshot()
    assert snap["state"] == "open"
    assert snap["failures"] == 3
    assert "503 Service Unavailable" in snap["last_error"]
    assert snap["opened_at"] == "1970-01-01T00:00:00+00:00"


def test_success_resets_the_consecutive_count(breaker: CircuitBreaker) -> None:
    ex = Exchange()
    for _ in range(5):
        ex.down = TimeoutError("read timed out")
        attempt(breaker, ex.request)
        attempt(breaker, ex.request)
        ex.down = None
        assert run(breaker, ex.request) == "ok"
    assert breaker.state is CircuitState.CLOSED
    assert breaker.snapshot()["failures"] == 0


def test_refusals_from_a_reachable_exchange_do_not_open_it(breaker: CircuitBreaker) -> None:
    ex = Exchange()
    ex.down = InsufficientFundsError("insufficient balance")
    for _ in range(10):
        assert isinstance(attempt(breaker, ex.request), InsufficientFundsError)
    assert breaker.state is CircuitState.CLOSED
    ex.down = KeyError("a bug of ours")
    for _ in range(10):
        assert isinstance(attempt(breaker, ex.request), KeyError)
    assert breaker.state is CircuitState.CLOSED


def test_half_open_probe_closes_on_success(breaker: CircuitBreaker, clock: FakeClock) -> None:
    ex = Exchange()
    ex.down = RateLimitedError("429")
    for _ in range(3):
        attempt(breaker, ex.request)
    clock.now += 29.9
    assert isinstance(attempt(breaker, ex.request), CircuitOpenError)
    clock.now += 0.2
    assert breaker.state is CircuitState.HALF_OPEN
    assert breaker.snapshot()["state"] == "half_open"
    ex.down = None
    calls = ex.calls
    assert run(breaker, ex.request) == "ok"
    assert ex.calls == calls + 1
    snap = breaker.snapshot()
    assert (snap["state"], snap["failures"], snap["opened_at"]) == ("closed", 0, None)


def test_failed_probe_reopens_for_another_cooldown(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    ex = Exchange()
    ex.down = RetryableExchangeError("down")
    for _ in range(3):
        attempt(breaker, ex.request)
    clock.now += 31
    calls = ex.calls
    assert isinstance(attempt(breaker, ex.request), RetryableExchangeError)
    assert ex.calls == calls + 1  # the probe went through
    assert breaker.state is CircuitState.OPEN
    clock.now += 29
    assert isinstance(attempt(breaker, ex.request), CircuitOpenError)
    assert ex.calls == calls + 1


def test_only_one_probe_at_a_time(breaker: CircuitBreaker, clock: FakeClock) -> None:
    breaker.record_failure(RetryableExchangeError("x"))
    breaker.record_failure(RetryableExchangeError("x"))
    breaker.record_failure(RetryableExchangeError("x"))
    clock.now += 31
    gate = asyncio.Event()
    calls = 0

    async def slow_probe() -> str:
        nonlocal calls
        calls += 1
        await gate.wait()
        return "ok"

    async def scenario() -> tuple[Any, Any]:
        first = asyncio.ensure_future(breaker.call(slow_probe))
        await asyncio.sleep(0)
        with pytest.raises(CircuitOpenError):
            await breaker.call(slow_probe)
        gate.set()
        return await first, breaker.state

    result, state = asyncio.run(scenario())
    assert (result, state, calls) == ("ok", CircuitState.CLOSED, 1)


def test_cancelled_probe_leaves_it_open_for_the_next_probe(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    for _ in range(3):
        breaker.record_failure(RetryableExchangeError("x"))
    clock.now += 31
    ex = Exchange()
    ex.down = asyncio.CancelledError()
    assert isinstance(attempt(breaker, ex.request), asyncio.CancelledError)
    assert breaker.state is CircuitState.HALF_OPEN
    ex.down = None
    assert run(breaker, ex.request) == "ok"
    assert breaker.state is CircuitState.CLOSED


def test_registry_shares_breakers_by_account_and_lists_them() -> None:
    reg = CircuitRegistry()
    a = reg.get(account_key("binance", 7), failure_threshold=2)
    assert reg.get("binance:7") is a
    assert a.failure_threshold == 2
    reg.get(account_key("kraken", None))
    a.record_failure(RetryableExchangeError("boom"))
    snap = reg.snapshot()
    assert list(snap) == ["binance:7", "kraken:public"]
    assert snap["binance:7"]["failures"] == 1
    assert snap["kraken:public"]["state"] == "closed"
    reg.remove("kraken:public")
    assert list(reg.snapshot()) == ["binance:7"]


def test_process_registry_is_what_the_health_route_reads() -> None:
    key = "test-circuit:health"
    registry.remove(key)
    breaker = registry.get(key)
    breaker.record_failure(RetryableExchangeError("x"))
    assert circuit_states()[key]["failures"] == 1
    registry.remove(key)
    assert key not in circuit_states()
