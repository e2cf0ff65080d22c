"""A process's side of the shared request budget: chunked leases, the ccxt hook, the fallback.

Every REST call a ccxt client makes passes :meth:`BudgetGate.acquire` first (installed over the
client's ``fetch2``, so the calls ccxt makes by itself, ``exchangeInfo`` when it loads markets,
pay too).  The call's weight comes from the endpoint table
(:mod:`~cryptoorchestrator.platform.exchange.weights`) and is charged to two buckets: the
exchange and egress IP's, and for orders the API key's.

The hot path pays no remote call per request: a process leases tokens in chunks
(``lease_fraction`` of a bucket) from the budget service, keeps them for at most
``lease_ttl_s``, and spends them locally under a lock.  Only when its chunk runs out does it
ask again, one request per bucket in flight however many tasks wait (the others wait on it).

Every answer's ``X-MBX-USED-WEIGHT-*`` resyncs the local leases at once and the service with
the next lease; a 429 or 418 blocks the IP's bucket for its ``Retry-After``, here at once and at
the service (for every process) right away.

When the service cannot be reached (its actor restarting, a timeout), the process falls back to
a share of its own, ``1 / fallback_processes`` of each bucket, starting empty, for ``retry_s``
before it asks the service again: slower, never unlimited.  When even that share would make a
call wait longer than ``max_wait_s``, the call fails fast with :class:`~cryptoorchestrator.
platform.exchange.budget.BudgetExhaustedError` and nothing is sent.

The service itself is whatever implements :class:`BudgetSource`: the cluster's named actor
(``cluster/budget_actor.py``) in bot processes, or :class:`LocalBudgetSource` over a
:class:`~cryptoorchestrator.platform.exchange.budget.BudgetBank`.  Processes opt in through
:data:`registry` (``registry.configure``); an unconfigured process is paced by ccxt alone.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import logging
import math
import socket
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

from cryptoorchestrator.platform.exchange.budget import (
    BucketSpec,
    BudgetBank,
    BudgetExhaustedError,
    Clock,
    ExchangeBudgetSettings,
    Grant,
    LeaseAsk,
    Observation,
    WeightLimit,
    bucket_specs,
    parse_retry_after,
    parse_used_weight,
)
from cryptoorchestrator.platform.exchange.weights import binance_weight, is_order_placement

log = logging.getLogger(__name__)

#: Block applied after a 429/418 that names no ``Retry-After``: a whole window would be safest,
#: but Binance always names one; this is for exchanges that do not.
DEFAULT_BLOCK_S = 10.0


class BudgetSource(Protocol):
    """Where leases come from: the cluster's budget service, or a local bank."""

    async def lease(
        self, asks: Sequence[LeaseAsk], observations: Sequence[Observation]
    ) -> list[Grant]:
        """Apply ``observations``, then grant each ask what its bucket can give now."""
        ...

    async def observe(self, observations: Sequence[Observation]) -> None:
        """Apply ``observations`` now (a block must reach every process at once)."""
        ...


class LocalBudgetSource:
    """A :class:`BudgetSource` over a bank in this process (a fallback share, tests)."""

    def __init__(self, bank: BudgetBank | None = None, *, fraction: float = 1.0) -> None:
        self.bank = bank if bank is not None else BudgetBank()
        self.fraction = float(fraction)

    async def lease(
        self, asks: Sequence[LeaseAsk], observations: Sequence[Observation]
    ) -> list[Grant]:
        """Apply ``observations`` and lease from the local bank (each spec scaled)."""
        self.bank.observe(observations)
        return self.bank.lease([self._scaled(a) for a in asks])

    async def observe(self, observations: Sequence[Observation]) -> None:
        """Apply ``observations`` to the local bank."""
        self.bank.observe(observations)

    def _scaled(self, ask: LeaseAsk) -> LeaseAsk:
        if self.fraction >= 1.0:
            return ask
        spec = ask.spec.share(self.fraction)
        return LeaseAsk(ask.key, spec, min(ask.want, spec.capacity), ask.need)


@dataclass(frozen=True)
class Cost:
    """What one call costs in one bucket."""

    key: str
    spec: BucketSpec
    amount: float


class _Held:
    """Tokens a process holds for one bucket: chunks with their own expiry, oldest first."""

    __slots__ = ("chunks", "spec")

    def __init__(self, spec: BucketSpec) -> None:
        self.spec = spec
        self.chunks: deque[list[float]] = deque()  # [expires at, tokens]

    def valid(self, now: float) -> float:
        while self.chunks and (self.chunks[0][0] <= now or self.chunks[0][1] <= 1e-9):
            self.chunks.popleft()
        return sum(c[1] for c in self.chunks)

    def spend(self, amount: float) -> None:
        left = amount
        for chunk in self.chunks:
            used = min(chunk[1], left)
            chunk[1] -= used
            left -= used
            if left <= 1e-9:
                break

    def clamp(self, keep: float) -> None:
        """Hold at most ``keep`` tokens, giving up the newest chunks' first."""
        excess = sum(c[1] for c in self.chunks) - max(0.0, keep)
        for chunk in reversed(self.chunks):
            if excess <= 1e-9:
                break
            dropped = min(chunk[1], excess)
            chunk[1] -= dropped
            excess -= dropped


class RequestBudget:
    """This process's leases on the shared buckets, spent locally and refilled in chunks.

    Parameters
    ----------
    config
        Chunk size, timeouts, fallback share.
    source
        The shared budget service (None: the fallback share only).
    clock
        Monotonic seconds.
    sleep
        Awaitable pause (tests pass one that advances their clock).
    """

    def __init__(
        self,
        config: ExchangeBudgetSettings,
        source: BudgetSource | None,
        *,
        clock: Clock = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self.config = config
        self.source = source
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._held: dict[str, _Held] = {}
        self._blocked_until: dict[str, float] = {}
        self._pending: dict[str, tuple[float | None, float]] = {}  # key -> (used, seen at)
        self._refills: dict[str, concurrent.futures.Future[float]] = {}
        self._demand: dict[str, float] = {}  # key -> what waiting callers need in all
        self._fallback: LocalBudgetSource | None = None
        self._fallback_until = -1.0
        #: Counters for tests and monitoring.
        self.stats: dict[str, int] = {
            "acquired": 0,
            "lease_calls": 0,
            "fallback_leases": 0,
            "source_failures": 0,
            "exhausted": 0,
            "blocks": 0,
        }

    # ------------------------------------------------------------------ reading

    def held(self, key: str) -> float:
        """Return the valid tokens this process holds for ``key``."""
        with self._lock:
            held = self._held.get(key)
            return 0.0 if held is None else held.valid(self._clock())

    @property
    def on_fallback(self) -> bool:
        """Whether leases currently come from the process's own fallback share."""
        with self._lock:
            return self._clock() < self._fallback_until

    # ------------------------------------------------------------------ acquiring

    async def acquire(self, costs: Sequence[Cost]) -> None:
        """Spend ``costs`` from this process's leases, leasing more as needed.

        All buckets are charged together or not at all.

        Raises
        ------
        BudgetExhaustedError
            If the budget would not allow the call within ``max_wait_s`` (nothing is spent).
        """
        costs = [c for c in costs if c.amount > 0]
        if not costs:
            return
        deadline = self._clock() + self.config.max_wait_s
        missing = self._try_spend(costs)
        if not missing:
            self._count("acquired")
            return
        # Waiting callers' needs add up, so one lease serves all the callers of a batch (a
        # group's orders on one candle) instead of one lease call each.
        self._add_demand(costs, 1.0)
        try:
            while True:
                wait = self._blocked(costs)
                if wait <= 0:
                    wait = await self._refill(missing)
                if wait > 0:
                    if self._clock() + wait > deadline:
                        self._count("exhausted")
                        keys = ", ".join(c.key for c in costs)
                        raise BudgetExhaustedError(
                            f"exchange request budget exhausted for {keys}: next in "
                            f"{wait:.1f} s, more than max_wait_s={self.config.max_wait_s}; "
                            "nothing was sent"
                        )
                    await self._sleep(wait)
                missing = self._try_spend(costs)
                if not missing:
                    self._count("acquired")
                    return
        finally:
            self._add_demand(costs, -1.0)

    def _count(self, name: str) -> None:
        with self._lock:
            self.stats[name] += 1

    def _add_demand(self, costs: Sequence[Cost], sign: float) -> None:
        with self._lock:
            for cost in costs:
                left = self._demand.get(cost.key, 0.0) + sign * cost.amount
                if left > 1e-9:
                    self._demand[cost.key] = left
                else:
                    self._demand.pop(cost.key, None)

    def _try_spend(self, costs: Sequence[Cost]) -> list[Cost]:
        """Spend ``costs`` if every bucket holds enough; else return what is missing."""
        with self._lock:
            now = self._clock()
            missing: list[Cost] = []
            for cost in costs:
                if self._blocked_until.get(cost.key, -1.0) > now:
                    missing.append(cost)
                    continue
                held = self._held.setdefault(cost.key, _Held(cost.spec))
                have = held.valid(now)
                if have + 1e-9 < cost.amount:
                    missing.append(Cost(cost.key, cost.spec, cost.amount - have))
            if missing:
                return missing
            for cost in costs:
                self._held[cost.key].spend(cost.amount)
            return []

    def _held_now(self, key: str) -> float:
        with self._lock:
            held = self._held.get(key)
            return 0.0 if held is None else held.valid(self._clock())

    def _blocked(self, costs: Sequence[Cost]) -> float:
        with self._lock:
            now = self._clock()
            return max((self._blocked_until.get(c.key, -1.0) - now for c in costs), default=0.0)

    async def _refill(self, missing: Sequence[Cost]) -> float:
        """Lease what is missing (one request per bucket in flight); return the wait, if any."""
        mine: list[tuple[Cost, concurrent.futures.Future[float]]] = []
        theirs: list[concurrent.futures.Future[float]] = []
        with self._lock:
            for cost in missing:
                future = self._refills.get(cost.key)
                if future is not None and not future.done():
                    theirs.append(future)
                    continue
                future = concurrent.futures.Future()
                self._refills[cost.key] = future
                mine.append((cost, future))
        wait = 0.0
        if mine:
            try:
                # One loop iteration for the callers of the same batch to add their needs.
                await asyncio.sleep(0)
                waits = await self._lease([c for c, _ in mine])
            except BaseException:
                # Our caller was cancelled (the source's failures fall back, never raise): the
                # others waiting on this lease just try again.
                for _, future in mine:
                    future.set_result(0.0)
                self._forget(mine)
                raise
            for (_, future), w in zip(mine, waits, strict=True):
                future.set_result(w)
            self._forget(mine)
            wait = max(waits, default=0.0)
        for future in theirs:
            # Shielded: one waiter being cancelled must not cancel the lease the others need.
            wait = max(wait, await asyncio.shield(asyncio.wrap_future(future)))
        return wait

    def _forget(self, mine: Sequence[tuple[Cost, concurrent.futures.Future[float]]]) -> None:
        with self._lock:
            for cost, future in mine:
                if self._refills.get(cost.key) is future:
                    del self._refills[cost.key]

    async def _lease(self, missing: Sequence[Cost]) -> list[float]:
        """Ask the source (or the fallback) for chunks; keep what is granted; return waits."""
        with self._lock:
            demand = dict(self._demand)
        asks = [
            LeaseAsk(
                c.key,
                c.spec,
                max(
                    c.amount,
                    c.spec.capacity * self.config.lease_fraction,
                    demand.get(c.key, 0.0) - self._held_now(c.key),
                ),
                c.amount,
            )
            for c in missing
        ]
        observations = self._take_pending()
        grants = await self._ask(asks, observations)
        waits: list[float] = []
        with self._lock:
            now = self._clock()
            for ask, grant in zip(asks, grants, strict=True):
                if grant.granted > 0:
                    held = self._held.setdefault(ask.key, _Held(ask.spec))
                    held.spec = ask.spec
                    held.chunks.append([now + grant.ttl_s, grant.granted])
                    waits.append(0.0)
                else:
                    waits.append(max(grant.wait_s, 1e-3))
        return waits

    async def _ask(
        self, asks: Sequence[LeaseAsk], observations: Sequence[Observation]
    ) -> list[Grant]:
        """Lease from the service, or from the fallback share while it is unreachable."""
        with self._lock:
            use_source = self.source is not None and self._clock() >= self._fallback_until
        if use_source and self.source is not None:
            with self._lock:
                self.stats["lease_calls"] += 1
            try:
                grants = await asyncio.wait_for(
                    self.source.lease(asks, observations), self.config.call_timeout_s
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 (any failure of the service: fall back)
                fallback = self._start_fallback(exc)
            else:
                with self._lock:
                    self._fallback = None  # back on the service: a later fallback starts empty
                return grants
        else:
            fallback = self._start_fallback(None)
        with self._lock:
            self.stats["fallback_leases"] += 1
        return await fallback.lease(asks, observations)

    def _start_fallback(self, exc: BaseException | None) -> LocalBudgetSource:
        """Return the fallback share, a fresh empty one if none is in use (never unlimited).

        After a failure of the service (``exc``), the share is used for ``retry_s`` before the
        service is asked again.
        """
        with self._lock:
            if exc is not None:
                self.stats["source_failures"] += 1
                self._fallback_until = (
                    self._clock() + self.config.retry_s if self.source is not None else math.inf
                )
            elif self.source is None:
                self._fallback_until = math.inf
            if self._fallback is None:
                # Empty: the service may have granted this window's budget before it failed.
                self._fallback = LocalBudgetSource(
                    BudgetBank(clock=self._clock, full=False),
                    fraction=1.0 / self.config.fallback_processes,
                )
                if exc is not None:
                    log.warning(
                        "exchange budget service unavailable (%s: %s); spending a 1/%d share "
                        "for %.0f s",
                        type(exc).__name__,
                        exc,
                        self.config.fallback_processes,
                        self.config.retry_s,
                    )
            return self._fallback

    # ------------------------------------------------------------------ what exchanges say

    def observe_used(self, key: str, spec: BucketSpec, used: float) -> None:
        """Resync from the exchange's count ``used`` of ``key``'s current window.

        Local leases are cut at once to what is left (our allowance less ``used``); the
        service learns it with this process's next lease.
        """
        with self._lock:
            now = self._clock()
            held = self._held.get(key)
            if held is not None:
                held.clamp(spec.allowance - used)
            self._pending[key] = (used, now)

    def block(self, key: str, seconds: float) -> None:
        """Spend nothing on ``key`` for ``seconds`` (a 429/418); tell the service right away."""
        with self._lock:
            now = self._clock()
            self._blocked_until[key] = max(self._blocked_until.get(key, -1.0), now + seconds)
            held = self._held.get(key)
            if held is not None:
                held.chunks.clear()
            self.stats["blocks"] += 1
            fallback = self._fallback
        observation = [Observation(key, None, seconds, 0.0)]
        if fallback is not None:
            fallback.bank.observe(observation)
        if self.source is not None:
            self._fire(self.source.observe(observation))

    def _take_pending(self) -> list[Observation]:
        with self._lock:
            now = self._clock()
            pending, self._pending = self._pending, {}
        return [Observation(k, used, 0.0, now - at) for k, (used, at) in pending.items()]

    def _fire(self, coro: Awaitable[Any]) -> None:
        """Run ``coro`` in the background: a block is best effort beyond this process."""

        async def run() -> None:
            try:
                await asyncio.wait_for(coro, self.config.call_timeout_s)
            except Exception as exc:  # noqa: BLE001 (best effort)
                log.debug("could not tell the budget service: %s", exc)

        try:
            task = asyncio.get_running_loop().create_task(run())
        except RuntimeError:  # no loop: the local block still holds
            close = getattr(coro, "close", None)
            if close is not None:
                close()
            return
        _background.add(task)
        task.add_done_callback(_background.discard)


_background: set[asyncio.Task[None]] = set()


# ---------------------------------------------------------------------- the ccxt hook


class BudgetGate:
    """The budget of one ccxt client: its buckets and how its calls are weighed.

    Parameters
    ----------
    budget
        The process's :class:`RequestBudget`.
    exchange_id
        ccxt's id.
    ip_key, ip_spec
        The (exchange, API host, egress IP) bucket.
    key_key, key_spec
        The API key's orders bucket (None: a public client, or no order limit).
    limit
        The exchange's limits (for ccxt's cost factor).
    """

    def __init__(
        self,
        budget: RequestBudget,
        exchange_id: str,
        ip_key: str,
        ip_spec: BucketSpec,
        key_key: str | None,
        key_spec: BucketSpec | None,
        limit: WeightLimit,
    ) -> None:
        self.budget = budget
        self.exchange_id = exchange_id
        self.ip_key = ip_key
        self.ip_spec = ip_spec
        self.key_key = key_key
        self.key_spec = key_spec
        self.limit = limit

    def costs(
        self, api: Any, method: str, path: str, params: Mapping[str, Any], ccxt_cost: float | None
    ) -> list[Cost]:
        """Return what a call costs: its weight on the IP, and an order on the API key."""
        section = api[0] if isinstance(api, list | tuple) and api else api
        method = str(method).upper()
        if self.exchange_id.startswith("binance") and section in ("public", "private"):
            weight = binance_weight(method, path, params)
        elif ccxt_cost is not None:
            weight = float(ccxt_cost) * self.limit.ccxt_cost_factor
        else:
            weight = self.limit.ccxt_cost_factor
        out = [Cost(self.ip_key, self.ip_spec, weight)]
        if (
            self.key_key is not None
            and self.key_spec is not None
            and section == "private"
            and is_order_placement(method, path)
        ):
            out.append(Cost(self.key_key, self.key_spec, 1.0))
        return out

    async def acquire(self, costs: Sequence[Cost]) -> None:
        """Wait for ``costs`` (see :meth:`RequestBudget.acquire`)."""
        await self.budget.acquire(costs)

    def after(self, headers: Mapping[str, str] | None, rate_limited: bool) -> None:
        """Learn from an answer's headers; after a 429/418 block the IP for ``Retry-After``."""
        for window_s, used in parse_used_weight(headers).items():
            if abs(window_s - self.ip_spec.window_s) < 1e-6:
                self.budget.observe_used(self.ip_key, self.ip_spec, used)
        if rate_limited:
            retry = parse_retry_after(headers)
            self.budget.block(self.ip_key, DEFAULT_BLOCK_S if retry is None else retry)

    def install(self, exchange: Any) -> Any:
        """Charge every REST call of the ccxt ``exchange`` here first; return ``exchange``.

        ``fetch2`` is where every REST call of ccxt passes (the implicit API methods, and what
        ccxt calls by itself), with the endpoint's path and parameters; the instance attribute
        set here takes precedence over the class's method.
        """
        if getattr(exchange, "_budget_gate", None) is self:
            return exchange
        original = exchange.fetch2
        gate = self

        async def fetch2(
            path: str,
            api: Any = "public",
            method: str = "GET",
            params: Any = None,
            config: Any = None,
        ) -> Any:
            params = {} if params is None else params
            config = {} if config is None else config
            ccxt_cost = None
            try:
                ccxt_cost = exchange.calculate_rate_limiter_cost(api, method, path, params, config)
            except Exception:  # noqa: BLE001, S110 (a missing cost is the table's fallback)
                pass
            await gate.acquire(gate.costs(api, method, path, params, ccxt_cost))
            rate_limited = False
            try:
                return await original(path, api, method, params, config)
            except Exception as exc:
                rate_limited = _is_rate_limit(exc)
                raise
            finally:
                headers = getattr(exchange, "last_response_headers", None)
                gate.after(headers if isinstance(headers, Mapping) else None, rate_limited)

        exchange.fetch2 = fetch2
        exchange._budget_gate = gate  # noqa: SLF001 (marks the instance as installed)
        return exchange


def _is_rate_limit(exc: BaseException) -> bool:
    """Return whether ccxt raised for a 429/418 (``DDoSProtection`` and its subclasses)."""
    return any(cls.__name__ == "DDoSProtection" for cls in type(exc).__mro__)


# ---------------------------------------------------------------------- the process registry


def default_egress_id() -> str:
    """Return this node's address on its default route (no packet is sent), else its name."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: routing only, nothing is sent
            return str(probe.getsockname()[0])
    except OSError:
        return socket.gethostname() or "localhost"


def api_host(exchange: Any, api_url: str | None) -> str:
    """Return the API host a client sends to (``api_url``'s, else ccxt's REST root's)."""
    url = api_url
    if not url:
        api = (getattr(exchange, "urls", None) or {}).get("api")
        if isinstance(api, dict):
            # The spot REST root where the exchange has one (Binance: api.binance.com).
            first = api.get("public") or api.get("rest") or api.get("spot")
            urls = [first] if isinstance(first, str) else []
            url = next((u for u in [*urls, *_strings(api)] if u.startswith("http")), None)
        elif isinstance(api, str):
            url = api
    parts = urlsplit(url or "")
    return parts.netloc.lower() or "default"


def _strings(tree: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    for value in tree.values():
        if isinstance(value, str):
            out.append(value)
        elif isinstance(value, Mapping):
            out.extend(_strings(value))
    return out


def key_id(api_key: str) -> str:
    """Return a short, one-way name of an API key (keys never travel to the service)."""
    return hashlib.sha256(api_key.encode()).hexdigest()[:16]


class BudgetRegistry:
    """The process's shared budget: configured once by whoever knows the service."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._config: ExchangeBudgetSettings | None = None
        self._budget: RequestBudget | None = None
        self._egress: str | None = None

    @property
    def budget(self) -> RequestBudget | None:
        """Return the process's budget (None: not configured, or disabled)."""
        with self._lock:
            return self._budget

    def configure(
        self,
        config: ExchangeBudgetSettings,
        source: BudgetSource | None,
        *,
        replace: bool = False,
    ) -> RequestBudget | None:
        """Share ``source``'s budget with every client built in this process from now on.

        Later calls keep the first configuration unless ``replace``.  Returns the process's
        budget (None when ``config.enabled`` is false).
        """
        with self._lock:
            if self._config is not None and not replace:
                return self._budget
            self._config = config
            self._egress = config.egress_id or default_egress_id()
            self._budget = RequestBudget(config, source) if config.enabled else None
            return self._budget

    def gate(
        self, exchange: Any, exchange_id: str, api_url: str | None, api_key: str | None = None
    ) -> BudgetGate | None:
        """Return the gate for a client of ``exchange_id`` (None: not budgeted)."""
        with self._lock:
            config, budget, egress = self._config, self._budget, self._egress
        if config is None or budget is None:
            return None
        host = api_host(exchange, api_url)
        limit = config.limit_for(exchange_id, host)
        if limit is None:
            return None
        ip_spec, key_spec = bucket_specs(config, limit)
        ex = exchange_id.strip().lower()
        key_key = f"key:{ex}@{host}:{key_id(api_key)}" if api_key else None
        return BudgetGate(budget, ex, f"ip:{ex}@{host}:{egress}", ip_spec, key_key, key_spec, limit)

    def attach(
        self, exchange: Any, exchange_id: str, api_url: str | None, api_key: str | None = None
    ) -> BudgetGate | None:
        """Install the gate on the ccxt ``exchange`` if this process budgets it; return it."""
        gate = self.gate(exchange, exchange_id, api_url, api_key)
        if gate is not None:
            gate.install(exchange)
        return gate

    def clear(self) -> None:
        """Forget the configuration (tests)."""
        with self._lock:
            self._config = self._budget = self._egress = None


#: The process's registry: bot processes configure it, ccxt clients attach through it.
registry = BudgetRegistry()


__all__ = [
    "BudgetGate",
    "BudgetRegistry",
    "BudgetSource",
    "Cost",
    "LocalBudgetSource",
    "RequestBudget",
    "api_host",
    "default_egress_id",
    "key_id",
    "registry",
]
