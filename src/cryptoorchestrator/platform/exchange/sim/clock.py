"""The simulated exchange clock: frozen, stepped by tests, or running at a multiple of real time."""

from __future__ import annotations

import time

from cryptoorchestrator.platform.errors import InvalidInputError


class SimClock:
    """Simulated exchange time in ms: frozen (``speed == 0``) or running ``speed`` x real time.

    Not thread-safe by itself: the simulator calls it under its lock.
    """

    def __init__(self, start_ms: int, speed: float = 0.0) -> None:
        if speed < 0:
            raise InvalidInputError("speed", "must be >= 0", allowed="0 (frozen) or a multiple")
        self._anchor_sim = int(start_ms)
        self._anchor_wall = time.monotonic()
        self._speed = float(speed)

    @property
    def speed(self) -> float:
        """Return how many simulated seconds pass per real second (0: frozen)."""
        return self._speed

    def now(self) -> int:
        """Return the current simulated time in ms since the epoch."""
        if self._speed == 0.0:
            return self._anchor_sim
        elapsed = time.monotonic() - self._anchor_wall
        return self._anchor_sim + int(elapsed * 1000.0 * self._speed)

    def set_time(self, ms: int) -> None:
        """Jump to ``ms``; the clock keeps its speed from there."""
        self._anchor_sim = int(ms)
        self._anchor_wall = time.monotonic()

    def advance(self, ms: int) -> None:
        """Move the clock forward by ``ms`` (must not be negative)."""
        if ms < 0:
            raise InvalidInputError("advance", "the clock cannot go backwards", allowed=">= 0")
        self.set_time(self.now() + int(ms))

    def set_speed(self, speed: float) -> None:
        """Change the speed from now on (0 freezes the clock)."""
        if speed < 0:
            raise InvalidInputError("speed", "must be >= 0", allowed="0 (frozen) or a multiple")
        now = self.now()
        self._speed = float(speed)
        self.set_time(now)
