"""Clocks: engines take one through their constructor, so tests can drive time exactly."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    """Where an engine reads the time from."""

    def now_ms(self) -> int:
        """Return the current time in milliseconds since the epoch (UTC)."""
        ...

    def monotonic(self) -> float:
        """Return a monotonic time in seconds, for timeouts and rates."""
        ...


class LiveClock:
    """The wall clock."""

    def now_ms(self) -> int:
        """Return the current UTC time in epoch milliseconds."""
        return time.time_ns() // 1_000_000

    def monotonic(self) -> float:
        """Return ``time.monotonic()``."""
        return time.monotonic()


class TestClock:
    """A clock that moves only when told to (deterministic tests)."""

    __test__ = False  # not a pytest test class

    def __init__(self, start_ms: int = 1_700_000_000_000) -> None:
        self._ms = start_ms

    def now_ms(self) -> int:
        """Return the clock's time."""
        return self._ms

    def monotonic(self) -> float:
        """Return the clock's time in seconds."""
        return self._ms / 1000.0

    def advance(self, ms: int) -> None:
        """Move the clock forward by ``ms`` milliseconds."""
        if ms < 0:
            raise ValueError("a clock cannot go backwards")
        self._ms += ms

    def set(self, ms: int) -> None:
        """Jump to ``ms`` (never backwards)."""
        if ms < self._ms:
            raise ValueError("a clock cannot go backwards")
        self._ms = ms


def ms_to_datetime(ms: int) -> datetime:
    """Return the aware UTC datetime of an epoch-millisecond timestamp."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC)
