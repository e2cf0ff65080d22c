"""A request-weight budget shared by every process that calls one exchange from one IP.

Binance limits request *weight* per IP (6,000 a minute on spot) and bans an IP that keeps going
over; it limits orders per account too.  Bot processes on one host share the host's IP, and the
bots of one account share its API key, so they must share one budget: each process pacing
itself (ccxt's own limiter) lets N processes spend N budgets.

This module is the pure part, tested without Ray:

* :class:`BucketSpec` turns an exchange's limit into a token bucket that provably stays under
  it: with capacity ``C`` and refill rate ``r`` a bucket grants at most ``C + r * T`` over any
  ``T`` seconds; a lease may be spent up to ``lease_ttl_s`` after it was granted, so the calls
  that reach the exchange within one window of ``W`` seconds were granted within
  ``W + lease_ttl_s``, and ``r = (limit * safety - C) / (W + lease_ttl_s)`` keeps them under
  ``limit * safety``.  The margin ``1 - safety`` absorbs what the bound does not see (requests
  in flight, clocks, other programs on the IP).
* :class:`TokenBucket` is one such bucket, atomic under threads (one lock, no awaits inside).
* :class:`BudgetBank` holds the buckets by key (``ip:binance@api.binance.com:203.0.113.7``,
  ``key:binance@api.binance.com:<hash of the API key>``), grants *leases* (chunks of tokens,
  valid for ``lease_ttl_s``), resyncs from what the exchange says it has counted
  (``X-MBX-USED-WEIGHT-1M``) and blocks a bucket after a 429/418 for its ``Retry-After``.

Where the bank lives (a named Ray actor shared by the cluster, or a process's own fallback
share) and how bot processes take leases is :mod:`~cryptoorchestrator.platform.exchange.
budget_client`; the settings are :class:`ExchangeBudgetSettings`
(``CRYPTOORCH_EXCHANGE_BUDGET__*``).

A bank built with ``full=False`` starts empty.  A budget service that restarted does not know
what its predecessor granted in the current window; starting empty keeps the bound exact
across the restart (grants before it are bounded by ``C + r * t``, after it by ``r * (W - t)``).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from cryptoorchestrator.platform.errors import CircuitOpenError, InvalidInputError

Clock = Callable[[], float]


# ---------------------------------------------------------------------- settings


class WeightLimit(BaseModel):
    """An exchange's published limits: request weight per IP and orders per API key.

    ``ccxt_cost_factor`` converts ccxt's cost of an endpoint into this exchange's weight for
    the endpoints the platform's own table does not list (Binance: ccxt's cost 0.2 is weight 1,
    so 5).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    weight: int = Field(6000, gt=0, description="request weight per IP per window")
    window_s: float = Field(60.0, gt=0, description="the weight window, seconds")
    orders: int | None = Field(50, gt=0, description="orders per API key per orders_window_s")
    orders_window_s: float = Field(10.0, gt=0)
    ccxt_cost_factor: float = Field(1.0, gt=0)


def _default_limits() -> dict[str, WeightLimit]:
    # Binance spot: 6,000 weight per minute per IP, 50 orders per 10 s per account.
    return {"binance": WeightLimit(ccxt_cost_factor=5.0)}


class ExchangeBudgetSettings(BaseModel):
    """The shared request budget's settings (``CRYPTOORCH_EXCHANGE_BUDGET__*``).

    Exchanges not named in ``limits`` are paced by ccxt alone.  A key of ``limits`` is an
    exchange id (``binance``) or ``<exchange>@<host[:port]>`` for one API host (a testnet, the
    simulator), which wins over the exchange's own.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = Field(True, description="share one budget per exchange, IP and API key")
    limits: dict[str, WeightLimit] = Field(default_factory=_default_limits)
    safety: float = Field(0.8, gt=0, le=1, description="share of the exchange's limit we use")
    burst: float = Field(0.5, gt=0, le=0.95, description="share of the budget usable at once")
    lease_fraction: float = Field(
        0.02, gt=0, le=1, description="tokens a process leases at once, as a share of a bucket"
    )
    lease_ttl_s: float = Field(5.0, gt=0, description="seconds a lease may be spent")
    fallback_processes: int = Field(
        8,
        ge=1,
        description="processes assumed to share an IP while the budget service is down: each "
        "then spends at most 1/N of the budget (never unlimited)",
    )
    max_wait_s: float = Field(
        10.0, ge=0, description="longest wait for budget before a call fails fast"
    )
    call_timeout_s: float = Field(2.0, gt=0, description="timeout of a lease from the service")
    retry_s: float = Field(5.0, gt=0, description="seconds on the fallback before asking again")
    egress_id: str | None = Field(
        None,
        description="the identity of this node's egress IP; nodes behind one NAT set the same "
        "value (default: the address of the node's default route)",
    )

    def limit_for(self, exchange: str, host: str) -> WeightLimit | None:
        """Return the limits of ``exchange`` at API host ``host`` (None: not budgeted)."""
        ex = exchange.strip().lower()
        return self.limits.get(f"{ex}@{host}") or self.limits.get(ex)


# ---------------------------------------------------------------------- errors


class BudgetExhaustedError(CircuitOpenError):
    """No request budget within ``max_wait_s``: the call failed fast and nothing was sent.

    A :class:`~cryptoorchestrator.platform.errors.CircuitOpenError` as far as callers go: an
    order refused this way provably never left the process.
    """

    code = "exchange_budget_exhausted"


# ---------------------------------------------------------------------- buckets


@dataclass(frozen=True)
class BucketSpec:
    """A token bucket that keeps any window of ``window_s`` under ``limit * safety``.

    Parameters
    ----------
    limit
        The exchange's limit per window (weight, or orders).
    window_s
        The exchange's window in seconds.
    safety
        Share of ``limit`` we allow ourselves.
    burst
        Share of that allowance usable at once (the capacity); the rest refills over the
        window.
    lease_ttl_s
        Seconds a leased token may be spent after it was granted.
    """

    limit: float
    window_s: float
    safety: float = 0.8
    burst: float = 0.5
    lease_ttl_s: float = 5.0

    def __post_init__(self) -> None:
        if not self.limit > 0:
            raise InvalidInputError("limit", "must be > 0")
        if not self.window_s > 0:
            raise InvalidInputError("window_s", "must be > 0")
        if not 0 < self.safety <= 1:
            raise InvalidInputError("safety", "must be in (0, 1]")
        if not 0 < self.burst < 1:
            raise InvalidInputError("burst", "must be in (0, 1)")
        if not self.lease_ttl_s >= 0:
            raise InvalidInputError("lease_ttl_s", "must be >= 0")

    @property
    def allowance(self) -> float:
        """Return what we allow ourselves per window: ``limit * safety``."""
        return self.limit * self.safety

    @property
    def capacity(self) -> float:
        """Return the bucket's capacity (the burst)."""
        return self.allowance * self.burst

    @property
    def rate(self) -> float:
        """Return the refill rate in tokens per second."""
        return (self.allowance - self.capacity) / (self.window_s + self.lease_ttl_s)

    def share(self, fraction: float) -> BucketSpec:
        """Return the spec of a ``fraction`` of this budget (a process's fallback share)."""
        return BucketSpec(
            self.limit * fraction, self.window_s, self.safety, self.burst, self.lease_ttl_s
        )

    def to_tuple(self) -> tuple[float, float, float, float, float]:
        """Return the spec as a plain tuple (it travels with each lease request)."""
        return (self.limit, self.window_s, self.safety, self.burst, self.lease_ttl_s)

    @classmethod
    def from_tuple(cls, values: Sequence[float]) -> BucketSpec:
        """Return the spec :meth:`to_tuple` wrote."""
        return cls(*(float(v) for v in values))


@dataclass(frozen=True)
class Grant:
    """The answer to one lease request.

    Attributes
    ----------
    granted
        Tokens granted (0: none now).
    ttl_s
        Seconds the granted tokens may be spent.
    wait_s
        With nothing granted: seconds until the request could be granted (the bucket's refill,
        or a ``Retry-After`` block).
    """

    granted: float
    ttl_s: float
    wait_s: float = 0.0


class TokenBucket:
    """One token bucket; every method is atomic (a lock, nothing awaited inside).

    Parameters
    ----------
    spec
        Capacity and refill rate.
    clock
        Monotonic seconds (tests pass a controllable one).
    full
        Start full (a fresh budget) or empty (one that lost its state, a fallback share).
    """

    def __init__(self, spec: BucketSpec, *, clock: Clock = time.monotonic, full: bool = True):
        self._lock = threading.Lock()
        self._clock = clock
        self.spec = spec
        self._tokens = spec.capacity if full else 0.0
        self._updated = clock()
        self._blocked_until = -math.inf
        self._leases: deque[tuple[float, float]] = deque()  # (expires at, tokens), unexpired
        self.granted_total = 0.0

    # ------------------------------------------------------------------ reading

    @property
    def tokens(self) -> float:
        """Return the tokens available now."""
        with self._lock:
            self._refill(self._clock())
            return self._tokens

    def outstanding(self) -> float:
        """Return the tokens leased whose lease has not expired (maybe not spent yet)."""
        with self._lock:
            return self._outstanding(self._clock())

    def blocked_for(self) -> float:
        """Return the seconds this bucket stays blocked by a ``Retry-After`` (0: not)."""
        with self._lock:
            return max(0.0, self._blocked_until - self._clock())

    def snapshot(self) -> dict[str, float]:
        """Return the bucket's state for monitoring."""
        with self._lock:
            now = self._clock()
            self._refill(now)
            return {
                "tokens": self._tokens,
                "capacity": self.spec.capacity,
                "rate": self.spec.rate,
                "outstanding": self._outstanding(now),
                "blocked_s": max(0.0, self._blocked_until - now),
                "granted_total": self.granted_total,
            }

    # ------------------------------------------------------------------ changing

    def take(self, want: float, need: float | None = None) -> Grant:
        """Lease up to ``want`` tokens if at least ``need`` (default ``want``) are there.

        A ``need`` above the capacity is granted when the bucket is full, leaving it in debt
        (the refill pays it back), so no request is too heavy to ever pass.
        """
        need = want if need is None else min(need, want)
        if want <= 0:
            return Grant(0.0, self.spec.lease_ttl_s)
        with self._lock:
            now = self._clock()
            self._refill(now)
            if now < self._blocked_until:
                return Grant(0.0, self.spec.lease_ttl_s, self._blocked_until - now)
            floor = min(need, self.spec.capacity)
            if self._tokens + 1e-9 < floor:
                return Grant(0.0, self.spec.lease_ttl_s, (floor - self._tokens) / self.spec.rate)
            granted = max(need, min(want, self._tokens))
            self._tokens -= granted
            self.granted_total += granted
            self._leases.append((now + self.spec.lease_ttl_s, granted))
            return Grant(granted, self.spec.lease_ttl_s)

    def clamp(self, remaining: float) -> None:
        """Hold at most ``remaining`` tokens (an exchange said less is left than we thought)."""
        with self._lock:
            self._refill(self._clock())
            self._tokens = min(self._tokens, max(0.0, remaining))

    def observe(self, used: float, age_s: float = 0.0) -> None:
        """Resync from the exchange's count of the current window (``X-MBX-USED-WEIGHT-*``).

        What is left for us is our allowance less what the exchange counted and less the
        leases still out (some may be counted already: erring towards less is safe).  Only
        ever lowers the tokens; an observation older than a window is ignored.
        """
        if age_s > self.spec.window_s:
            return
        with self._lock:
            now = self._clock()
            self._refill(now)
            left = self.spec.allowance - float(used) - self._outstanding(now)
            self._tokens = min(self._tokens, max(0.0, left))

    def block(self, seconds: float) -> None:
        """Grant nothing for ``seconds`` (a 429/418's ``Retry-After``) and empty the bucket."""
        with self._lock:
            now = self._clock()
            self._refill(now)
            self._tokens = min(self._tokens, 0.0)
            self._blocked_until = max(self._blocked_until, now + max(0.0, seconds))

    def respec(self, spec: BucketSpec) -> None:
        """Apply a changed spec (the limits were reconfigured); never adds tokens."""
        with self._lock:
            self._refill(self._clock())
            self.spec = spec
            self._tokens = min(self._tokens, spec.capacity)

    # ------------------------------------------------------------------ internals

    def _refill(self, now: float) -> None:
        elapsed = now - self._updated
        if elapsed > 0:
            self._tokens = min(self.spec.capacity, self._tokens + elapsed * self.spec.rate)
            self._updated = now

    def _outstanding(self, now: float) -> float:
        while self._leases and self._leases[0][0] <= now:
            self._leases.popleft()
        return sum(amount for _, amount in self._leases)


@dataclass(frozen=True)
class LeaseAsk:
    """One bucket's part of a lease request.

    Attributes
    ----------
    key
        The bucket (``ip:...`` or ``key:...``).
    spec
        The bucket's spec as the asker configured it (the bank creates the bucket from it).
    want
        Tokens wanted (a chunk).
    need
        Tokens needed now (at most ``want``); less than that is no use to the asker.
    """

    key: str
    spec: BucketSpec
    want: float
    need: float

    def to_wire(self) -> tuple[str, tuple[float, ...], float, float]:
        """Return the ask as plain values for a remote call."""
        return (self.key, self.spec.to_tuple(), self.want, self.need)

    @classmethod
    def from_wire(cls, values: Sequence[Any]) -> LeaseAsk:
        """Return the ask :meth:`to_wire` wrote."""
        key, spec, want, need = values
        return cls(str(key), BucketSpec.from_tuple(spec), float(want), float(need))


@dataclass(frozen=True)
class Observation:
    """What an exchange said about a bucket: its count of the window, or a block.

    Attributes
    ----------
    key
        The bucket.
    used
        The exchange's count of the current window (None: not known).
    block_s
        Seconds to grant nothing (a 429/418's ``Retry-After``; 0: none).
    age_s
        How long ago it was observed when it was sent.
    """

    key: str
    used: float | None = None
    block_s: float = 0.0
    age_s: float = 0.0

    def to_wire(self) -> tuple[str, float | None, float, float]:
        """Return the observation as plain values for a remote call."""
        return (self.key, self.used, self.block_s, self.age_s)

    @classmethod
    def from_wire(cls, values: Sequence[Any]) -> Observation:
        """Return the observation :meth:`to_wire` wrote."""
        key, used, block_s, age_s = values
        return cls(str(key), None if used is None else float(used), float(block_s), float(age_s))


class BudgetBank:
    """Token buckets by key, created on first use from the spec their first lease names.

    Parameters
    ----------
    clock
        Monotonic seconds (tests pass a controllable one).
    full
        Whether new buckets start full (see :class:`TokenBucket`).
    """

    def __init__(self, *, clock: Clock = time.monotonic, full: bool = True) -> None:
        self._clock = clock
        self._full = full
        self._lock = threading.Lock()
        self._buckets: dict[str, TokenBucket] = {}

    def bucket(self, key: str, spec: BucketSpec) -> TokenBucket:
        """Return the bucket of ``key``, created from ``spec`` (or respecified to it)."""
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = TokenBucket(spec, clock=self._clock, full=self._full)
                return bucket
        if bucket.spec != spec:
            bucket.respec(spec)
        return bucket

    def get(self, key: str) -> TokenBucket | None:
        """Return the bucket of ``key`` if it exists."""
        with self._lock:
            return self._buckets.get(key)

    def lease(self, asks: Iterable[LeaseAsk]) -> list[Grant]:
        """Grant each ask what its bucket can give now (each bucket on its own)."""
        return [self.bucket(a.key, a.spec).take(a.want, a.need) for a in asks]

    def observe(self, observations: Iterable[Observation]) -> None:
        """Apply what exchanges said (resyncs and blocks) to the buckets that exist."""
        for obs in observations:
            bucket = self.get(obs.key)
            if bucket is None:
                continue
            if obs.used is not None:
                bucket.observe(obs.used, obs.age_s)
            if obs.block_s > 0:
                bucket.block(max(0.0, obs.block_s - obs.age_s))

    def snapshot(self) -> dict[str, dict[str, float]]:
        """Return every bucket's state, by key."""
        with self._lock:
            buckets = dict(self._buckets)
        return {key: b.snapshot() for key, b in sorted(buckets.items())}


def bucket_specs(
    config: ExchangeBudgetSettings, limit: WeightLimit
) -> tuple[BucketSpec, BucketSpec | None]:
    """Return the specs of an exchange's IP bucket and API-key (orders) bucket."""
    ip = BucketSpec(limit.weight, limit.window_s, config.safety, config.burst, config.lease_ttl_s)
    orders = None
    if limit.orders is not None:
        orders = BucketSpec(
            limit.orders, limit.orders_window_s, config.safety, config.burst, config.lease_ttl_s
        )
    return ip, orders


def parse_used_weight(headers: Mapping[str, str] | None) -> dict[float, float]:
    """Return ``{window seconds: used weight}`` from Binance's ``X-MBX-USED-WEIGHT-<n><unit>``.

    ``X-MBX-USED-WEIGHT-1M: 1234`` gives ``{60.0: 1234.0}``; unreadable values are skipped.
    """
    out: dict[float, float] = {}
    for name, value in (headers or {}).items():
        lower = str(name).lower()
        if not lower.startswith("x-mbx-used-weight-"):
            continue
        interval = lower.rsplit("-", 1)[1]
        seconds = _interval_s(interval)
        if seconds is None:
            continue
        try:
            out[seconds] = float(str(value).split(",")[-1].strip())
        except ValueError:
            continue
    return out


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Return a ``Retry-After`` in seconds (None: absent or not a number of seconds)."""
    for name, value in (headers or {}).items():
        if str(name).lower() == "retry-after":
            try:
                return max(0.0, float(str(value).split(",")[-1].strip()))
            except ValueError:
                return None
    return None


_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def _interval_s(text: str) -> float | None:
    """Return ``1m`` as 60.0 (Binance's interval letters); None when unreadable."""
    unit = _UNITS.get(text[-1:]) if text else None
    if unit is None or not text[:-1].isdigit():
        return None
    return int(text[:-1]) * unit


def interval_name(seconds: float) -> str:
    """Return Binance's name of a window (60 -> ``1M``, 10 -> ``10S``)."""
    for letter, unit in (("D", 86400), ("H", 3600), ("M", 60)):
        if seconds >= unit and seconds % unit == 0:
            return f"{int(seconds // unit)}{letter}"
    return f"{max(1, round(seconds))}S"


__all__ = [
    "BucketSpec",
    "BudgetBank",
    "BudgetExhaustedError",
    "ExchangeBudgetSettings",
    "Grant",
    "LeaseAsk",
    "Observation",
    "TokenBucket",
    "WeightLimit",
    "bucket_specs",
    "interval_name",
    "parse_retry_after",
    "parse_used_weight",
]
