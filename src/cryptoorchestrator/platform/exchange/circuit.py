"""Circuit breakers per exchange account, and the process-wide registry the health route reads.

A breaker counts consecutive *infrastructure* failures (network errors, timeouts, 5xx, rate
limits: :class:`~cryptoorchestrator.platform.errors.RetryableExchangeError`).  After
``failure_threshold`` of them it opens: every call fails fast with
:class:`~cryptoorchestrator.platform.errors.CircuitOpenError` and nothing reaches the exchange.
After ``cooldown_s`` it half-opens and lets one probe through; success closes it, failure opens
it again for another cooldown.

An exchange that *answers* with a refusal (insufficient funds, invalid order, bad credentials)
is up, so those answers count as successes here: the breaker protects against an unreachable
exchange, not against our own mistakes.

A *listener* (:meth:`CircuitRegistry.set_listener`) hears of a breaker's transitions: the
circuit opening (``opened``) and closing again (``closed``), once per episode, and the first
authentication failure since the last success (``auth_failed``: the breaker sees every answer of
the account).  The notification system installs one in bot processes; this module knows
nothing of it.  A listener runs outside the breaker's lock and its exceptions are swallowed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TypeVar

from cryptoorchestrator.platform.errors import (
    AuthenticationError,
    CircuitOpenError,
    RetryableExchangeError,
)

T = TypeVar("T")

#: ``listener(breaker name, "opened" | "closed" | "auth_failed", details)``.
Listener = Callable[[str, str, dict[str, Any]], None]


class CircuitState(StrEnum):
    """The three states of a breaker (their values are what the health route shows)."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


def counts_as_failure(exc: BaseException) -> bool:
    """Return whether ``exc`` says the exchange is unreachable (the default failure test)."""
    if isinstance(exc, CircuitOpenError):
        return False
    return isinstance(exc, RetryableExchangeError | TimeoutError | ConnectionError)


class CircuitBreaker:
    """Fail fast while an exchange account keeps failing; probe again after a cooldown.

    Parameters
    ----------
    name
        What the breaker guards (``binance:7``), shown in errors and on the health route.
    failure_threshold
        Consecutive failures that open the circuit.
    cooldown_s
        Seconds the circuit stays open before a probe is allowed.
    clock
        Monotonic seconds; tests pass a controllable one.
    wall_clock
        Epoch seconds for ``opened_at`` as shown to people.
    is_failure
        Which exceptions count as failures (default: :func:`counts_as_failure`).
    listener
        Told of transitions (see the module docstring); None: nobody.
    """

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int = 5,
        cooldown_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        is_failure: Callable[[BaseException], bool] = counts_as_failure,
        listener: Listener | None = None,
    ) -> None:
        self.name = name
        self.failure_threshold = max(1, int(failure_threshold))
        self.cooldown_s = float(cooldown_s)
        self._clock = clock
        self._wall_clock = wall_clock
        self._is_failure = is_failure
        # Plain lock: the health route may read from another thread than the bot's loop.
        self._lock = threading.Lock()
        self._state = CircuitState.CLOSED
        self._failures = 0
        self._last_error: str | None = None
        self._opened_at_mono: float | None = None
        self._opened_at_wall: float | None = None
        self._probe_in_flight = False
        self.listener = listener
        #: Wall time the current open episode began (kept across half-open probes).
        self._episode_wall: float | None = None
        self._auth_failing = False

    def _tell(self, kind: str, details: dict[str, Any]) -> None:
        listener = self.listener
        if listener is None:
            return
        try:
            listener(self.name, kind, details)
        except Exception:  # noqa: S110 (telling someone must never break a call)
            pass

    def _episode(self, since: float | None) -> dict[str, Any]:
        return {
            "opened_at": since,
            "failures": self._failures,
            "last_error": self._last_error,
        }

    # ------------------------------------------------------------------------ reading

    @property
    def state(self) -> CircuitState:
        """Return the current state (an open circuit past its cooldown reads as half-open)."""
        with self._lock:
            return self._current_state()

    def snapshot(self) -> dict[str, Any]:
        """Return ``{state, failures, last_error, opened_at}`` (ISO-8601 UTC or None) and config."""
        with self._lock:
            opened = self._opened_at_wall
            return {
                "name": self.name,
                "state": self._current_state().value,
                "failures": self._failures,
                "last_error": self._last_error,
                "opened_at": (
                    None if opened is None else datetime.fromtimestamp(opened, tz=UTC).isoformat()
                ),
                "failure_threshold": self.failure_threshold,
                "cooldown_s": self.cooldown_s,
            }

    def _current_state(self) -> CircuitState:
        if (
            self._state is CircuitState.OPEN
            and self._opened_at_mono is not None
            and self._clock() - self._opened_at_mono >= self.cooldown_s
        ):
            return CircuitState.HALF_OPEN
        return self._state

    # ------------------------------------------------------------------------ calling

    async def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run ``fn()`` through the breaker.

        Raises
        ------
        CircuitOpenError
            Without calling ``fn`` while the circuit is open (or a probe is already running).
        """
        self._before_call()
        try:
            result = await fn()
        except BaseException as exc:
            self._after_failure(exc)
            raise
        self._after_success()
        return result

    def _before_call(self) -> None:
        with self._lock:
            state = self._current_state()
            if state is CircuitState.CLOSED:
                return
            if state is CircuitState.HALF_OPEN and not self._probe_in_flight:
                self._state = CircuitState.HALF_OPEN
                self._probe_in_flight = True
                return
            last = self._last_error
        raise CircuitOpenError(
            f"circuit of {self.name} is open after {self._failures} consecutive failures; "
            f"failing fast until a probe succeeds (last error: {last})"
        )

    def _after_success(self) -> None:
        with self._lock:
            closed = self._close()
            self._auth_failing = False
        if closed is not None:
            self._tell("closed", closed)

    def _close(self) -> dict[str, Any] | None:
        """Close the circuit (lock held); return the ended episode's details, if one ended."""
        ended = None if self._episode_wall is None else self._episode(self._episode_wall)
        self._state = CircuitState.CLOSED
        self._failures = 0
        self._opened_at_mono = None
        self._opened_at_wall = None
        self._probe_in_flight = False
        self._episode_wall = None
        return ended

    def _after_failure(self, exc: BaseException) -> None:
        told: list[tuple[str, dict[str, Any]]] = []
        with self._lock:
            self._failed(exc, told)
        for kind, details in told:
            self._tell(kind, details)

    def _failed(self, exc: BaseException, told: list[tuple[str, dict[str, Any]]]) -> None:
        """Count ``exc`` (lock held); append what the listener is to hear to ``told``."""
        probing = self._probe_in_flight
        self._probe_in_flight = False
        if not isinstance(exc, Exception):
            # Cancelled or interrupted: nothing was learnt about the exchange.
            if probing:
                self._state = CircuitState.OPEN
            return
        if not self._is_failure(exc):
            # The exchange answered (a refusal, a bug of ours): it is reachable.
            if isinstance(exc, AuthenticationError) and not self._auth_failing:
                self._auth_failing = True  # told once until a call succeeds again
                error = f"{type(exc).__name__}: {exc}"[:500]
                told.append(("auth_failed", {"error": error, "at": self._wall_clock()}))
            if probing or self._state is CircuitState.CLOSED:
                closed = self._close()
                if closed is not None:
                    told.append(("closed", closed))
            return
        self._failures += 1
        self._last_error = f"{type(exc).__name__}: {exc}"[:500]
        if probing or self._failures >= self.failure_threshold:
            self._state = CircuitState.OPEN
            self._opened_at_mono = self._clock()
            self._opened_at_wall = self._wall_clock()
            if self._episode_wall is None:  # a failed probe continues the episode
                self._episode_wall = self._opened_at_wall
                told.append(("opened", self._episode(self._episode_wall)))

    def record_success(self) -> None:
        """Count a success observed outside :meth:`call` (closes the circuit)."""
        self._after_success()

    def record_failure(self, exc: BaseException) -> None:
        """Count a failure observed outside :meth:`call`."""
        self._after_failure(exc)

    def reset(self) -> None:
        """Close the circuit and forget the failures (an operator's override)."""
        self._after_success()
        with self._lock:
            self._last_error = None


class CircuitRegistry:
    """Breakers by account key, shared by every client of that account in this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._breakers: dict[str, CircuitBreaker] = {}
        self._listener: Listener | None = None

    def get(self, key: str, **config: Any) -> CircuitBreaker:
        """Return the breaker of ``key``, creating it with ``config`` on first use."""
        with self._lock:
            breaker = self._breakers.get(key)
            if breaker is None:
                config.setdefault("listener", self._listener)
                breaker = self._breakers[key] = CircuitBreaker(key, **config)
            return breaker

    def set_listener(self, listener: Listener | None) -> None:
        """Tell ``listener`` of every breaker's transitions, present and future (None: stop)."""
        with self._lock:
            self._listener = listener
            for breaker in self._breakers.values():
                breaker.listener = listener

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Return every breaker's :meth:`CircuitBreaker.snapshot`, by key."""
        with self._lock:
            breakers = dict(self._breakers)
        return {key: b.snapshot() for key, b in sorted(breakers.items())}

    def remove(self, key: str) -> None:
        """Forget the breaker of ``key`` (an account was deleted)."""
        with self._lock:
            self._breakers.pop(key, None)

    def clear(self) -> None:
        """Forget every breaker (tests)."""
        with self._lock:
            self._breakers.clear()


#: The process-wide registry: clients register here, ``/api/health/detailed`` reads it.
registry = CircuitRegistry()


def account_key(exchange: str, account_id: int | str | None) -> str:
    """Return the registry key of an account: ``binance:7`` (``binance:public`` without one)."""
    return f"{exchange}:{account_id if account_id is not None else 'public'}"


def circuit_states() -> dict[str, dict[str, Any]]:
    """Return the state of every breaker in this process (for the health route)."""
    return registry.snapshot()
