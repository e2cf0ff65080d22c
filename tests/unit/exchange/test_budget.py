"""The shared request budget's pure parts: specs, buckets, banks, headers (a test clock)."""

from __future__ import annotations

import threading

import pytest

from cryptoorchestrator.platform.errors import CircuitOpenError, InvalidInputError
from cryptoorchestrator.platform.exchange.budget import (
    BucketSpec,
    BudgetBank,
    BudgetExhaustedError,
    ExchangeBudgetSettings,
    LeaseAsk,
    Observation,
    TokenBucket,
    WeightLimit,
    bucket_specs,
    interval_name,
    parse_retry_after,
    parse_used_weight,
)
from cryptoorchestrator.platform.settings import Settings


class Clock:
    """A clock that moves only when told."""

    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


SPEC = BucketSpec(limit=100, window_s=10, safety=0.8, burst=0.5, lease_ttl_s=2)


def test_spec_derives_capacity_and_rate_from_the_limit() -> None:
    assert SPEC.allowance == pytest.approx(80)
    assert SPEC.capacity == pytest.approx(40)
    # The rest of the allowance refills over a window plus a lease's lifetime.
    assert SPEC.rate == pytest.approx(40 / 12)
    assert SPEC.share(0.25).capacity == pytest.approx(10)
    assert BucketSpec.from_tuple(SPEC.to_tuple()) == SPEC


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("limit", {"limit": 0}),
        ("window_s", {"window_s": 0}),
        ("safety", {"safety": 1.5}),
        ("burst", {"burst": 1.0}),
        ("lease_ttl_s", {"lease_ttl_s": -1}),
    ],
)
def test_spec_rejects_bad_values_naming_the_field(field: str, kwargs: dict[str, float]) -> None:
    values = {"limit": 10.0, "window_s": 1.0, **kwargs}
    with pytest.raises(InvalidInputError) as info:
        BucketSpec(**values)
    assert info.value.field == field


def test_bucket_refills_at_its_rate_up_to_its_capacity() -> None:
    clock = Clock()
    bucket = TokenBucket(SPEC, clock=clock)
    assert bucket.tokens == pytest.approx(40)
    assert bucket.take(40).granted == pytest.approx(40)
    assert bucket.tokens == pytest.approx(0)
    clock.t += 3
    assert bucket.tokens == pytest.approx(10)
    clock.t += 1000
    assert bucket.tokens == pytest.approx(40)  # never above the capacity


def test_take_grants_up_to_want_once_need_is_there_else_says_how_long() -> None:
    clock = Clock()
    bucket = TokenBucket(SPEC, clock=clock, full=False)
    refused = bucket.take(8, need=5)
    assert refused.granted == 0
    assert refused.wait_s == pytest.approx(5 / SPEC.rate)
    clock.t += refused.wait_s
    partial = bucket.take(8, need=5)
    assert partial.granted == pytest.approx(5)  # all there was: more than needed is a bonus
    assert partial.ttl_s == SPEC.lease_ttl_s
    clock.t += 8 / SPEC.rate
    assert bucket.take(8, need=5).granted == pytest.approx(8)


def test_a_call_heavier_than_the_capacity_passes_when_full_and_leaves_a_debt() -> None:
    clock = Clock()
    bucket = TokenBucket(SPEC, clock=clock)
    grant = bucket.take(60)
    assert grant.granted == 60
    assert bucket.tokens == pytest.approx(-20)
    refused = bucket.take(1)
    assert refused.granted == 0
    assert refused.wait_s == pytest.approx(21 / SPEC.rate)


def test_a_restarted_bank_starts_empty_and_a_fresh_one_full() -> None:
    clock = Clock()
    ask = LeaseAsk("ip:x", SPEC, 10, 10)
    assert BudgetBank(clock=clock).lease([ask])[0].granted == 10
    empty = BudgetBank(clock=clock, full=False).lease([ask])[0]
    assert empty.granted == 0
    assert empty.wait_s == pytest.approx(10 / SPEC.rate)


def test_any_window_stays_under_the_allowance_even_with_leases_spent_late() -> None:
    """A greedy taker, each lease spent at the last moment its ttl allows: the bound holds."""
    clock = Clock(0.0)
    bucket = TokenBucket(SPEC, clock=clock)
    spent: list[tuple[float, float]] = []  # (when it reaches the exchange, tokens)
    step = 0.05
    while clock.t < 120:
        grant = bucket.take(3, need=1)
        if grant.granted:
            spent.append((clock.t + grant.ttl_s, grant.granted))
        clock.t += step
    assert sum(n for _, n in spent) > 5 * SPEC.allowance  # the test kept the bucket busy
    worst = 0.0
    for start, _ in spent:
        window = sum(n for t, n in spent if start <= t < start + SPEC.window_s)
        worst = max(worst, window)
    assert worst <= SPEC.allowance + 1e-6
    assert worst > 0.9 * SPEC.allowance  # and it is not needlessly slow


def test_observe_resyncs_down_to_what_the_exchange_says_is_left() -> None:
    clock = Clock()
    bucket = TokenBucket(SPEC, clock=clock)
    bucket.take(5)  # outstanding: may not be counted by the exchange yet
    bucket.observe(used=60)
    assert bucket.tokens == pytest.approx(80 - 60 - 5)
    bucket.observe(used=0)  # never raises the tokens
    assert bucket.tokens == pytest.approx(15)
    bucket.observe(used=1000)
    assert bucket.tokens == 0
    clock.t += SPEC.lease_ttl_s  # the lease expired: it no longer counts as outstanding
    stale = TokenBucket(SPEC, clock=clock)
    stale.observe(used=80, age_s=SPEC.window_s + 1)  # older than a window: ignored
    assert stale.tokens == pytest.approx(40)


def test_block_grants_nothing_until_retry_after_has_passed() -> None:
    clock = Clock()
    bucket = TokenBucket(SPEC, clock=clock)
    bucket.block(30)
    refused = bucket.take(1)
    assert refused.granted == 0
    assert refused.wait_s == pytest.approx(30)
    assert bucket.blocked_for() == pytest.approx(30)
    clock.t += 30
    assert bucket.take(1).granted == 1  # refilled meanwhile, from empty


def test_bank_applies_observations_and_respecs_buckets() -> None:
    clock = Clock()
    bank = BudgetBank(clock=clock)
    bank.lease([LeaseAsk("ip:a", SPEC, 1, 1)])
    bank.observe([Observation("ip:a", used=70), Observation("ip:unknown", used=1)])
    snap = bank.snapshot()
    assert list(snap) == ["ip:a"]
    assert snap["ip:a"]["tokens"] == pytest.approx(80 - 70 - 1)
    bank.observe([Observation("ip:a", block_s=10, age_s=4)])
    assert bank.snapshot()["ip:a"]["blocked_s"] == pytest.approx(6)
    smaller = BucketSpec(limit=10, window_s=10, lease_ttl_s=2)
    bank.bucket("ip:b", SPEC)
    assert bank.bucket("ip:b", smaller).tokens == pytest.approx(smaller.capacity)


def test_wire_forms_round_trip() -> None:
    ask = LeaseAsk("key:x", SPEC, 7, 2)
    assert LeaseAsk.from_wire(ask.to_wire()) == ask
    obs = Observation("ip:x", 12.0, 3.0, 0.5)
    assert Observation.from_wire(obs.to_wire()) == obs


def test_threads_never_take_more_than_the_bucket_holds() -> None:
    bucket = TokenBucket(SPEC, clock=Clock())  # frozen clock: no refill
    granted: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def taker() -> None:
        start.wait()
        mine = 0.0
        for _ in range(500):
            mine += bucket.take(0.5).granted
        with lock:
            granted.append(mine)

    threads = [threading.Thread(target=taker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(granted) == pytest.approx(SPEC.capacity)
    assert bucket.granted_total == pytest.approx(SPEC.capacity)


def test_headers_are_read_as_binance_writes_them() -> None:
    headers = {"x-mbx-used-weight": "9", "X-MBX-USED-WEIGHT-1M": "1234", "X-Other": "1"}
    assert parse_used_weight(headers) == {60.0: 1234.0}
    assert parse_used_weight({"X-MBX-USED-WEIGHT-10S": "5", "x-mbx-used-weight-1h": "x"}) == {
        10.0: 5.0
    }
    assert parse_used_weight(None) == {}
    assert parse_retry_after({"Retry-After": "7"}) == 7.0
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) is None
    assert parse_retry_after({}) is None
    assert [interval_name(s) for s in (60, 10, 2, 3600, 86400, 90)] == [
        "1M",
        "10S",
        "2S",
        "1H",
        "1D",
        "90S",
    ]


def test_settings_carry_the_limits_and_env_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    config = Settings().exchange_budget
    assert config.enabled
    binance = config.limit_for("Binance", "api.binance.com")
    assert binance is not None
    assert binance.weight == 6000
    assert binance.window_s == 60
    assert config.limit_for("kraken", "api.kraken.com") is None
    ip, orders = bucket_specs(config, binance)
    assert ip.allowance == pytest.approx(4800)
    assert orders is not None
    assert orders.limit == 50
    monkeypatch.setenv(
        "CRYPTOORCH_EXCHANGE_BUDGET__LIMITS",
        '{"binance@127.0.0.1:9999": {"weight": 60, "window_s": 2}, "binance": {"weight": 1200}}',
    )
    monkeypatch.setenv("CRYPTOORCH_EXCHANGE_BUDGET__EGRESS_ID", "nat-1")
    config = Settings().exchange_budget
    assert config.egress_id == "nat-1"
    local = config.limit_for("binance", "127.0.0.1:9999")
    assert local == WeightLimit(weight=60, window_s=2)
    other = config.limit_for("binance", "api.binance.com")
    assert other is not None
    assert other.weight == 1200


def test_settings_refuse_bad_values() -> None:
    with pytest.raises(ValueError, match="safety"):
        ExchangeBudgetSettings(safety=0)
    with pytest.raises(ValueError, match="fallback_processes"):
        ExchangeBudgetSettings(fallback_processes=0)
    with pytest.raises(ValueError, match="weight"):
        WeightLimit(weight=0)


def test_exhausted_means_nothing_was_sent() -> None:
    # Callers treat it as an open circuit: an order refused this way never left the process.
    assert issubclass(BudgetExhaustedError, CircuitOpenError)
