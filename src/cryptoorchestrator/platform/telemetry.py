"""What the trading path reports for monitoring: a protocol the bot runtime and risk gate call.

The platform layer never imports Ray, so it reports through :class:`Telemetry`, handed in by
whoever builds the runtime: :class:`NullTelemetry` (the default: backtests, replays, unit
tests) or the cluster's ``RayTelemetry`` (``cluster/metrics.py``), which exports each call as a
``ray.util.metrics`` series on the node's Prometheus endpoint and in Ray's dashboard.  The bot
actor hands it to ``BotRuntime`` (orders by status, fills, decision latency, equity and
exposure, candle lag) and reports its exchange breakers each candle; the risk actor records
every decision of its approval path (outcome, denying limit, latency).
"""

from __future__ import annotations

from typing import Protocol


class Telemetry(Protocol):
    """Sink of the platform's operational measurements (cheap, never raises, never blocks)."""

    def order(self, bot_id: int, status: str) -> None:
        """Count an order reaching ``status`` (submitted, filled, cancelled, rejected...)."""

    def fill(self, bot_id: int, side: str) -> None:
        """Count one fill."""

    def risk_decision(self, limit: str | None, seconds: float) -> None:
        """Record a risk check's latency; ``limit`` names the limit that denied, None approved."""

    def decision_latency(self, bot_id: int, seconds: float) -> None:
        """Record the time from a candle's close to the bot's order decision."""

    def equity(self, bot_id: int, equity: float, exposure: float) -> None:
        """Set a bot's marked equity and gross exposure (quote currency)."""

    def breaker(self, exchange: str, state: str) -> None:
        """Set an exchange circuit breaker's state (closed, open, half_open)."""

    def candle_lag(self, bot_id: int, seconds: float) -> None:
        """Set how far behind the exchange's clock a bot's newest closed candle is."""


class NullTelemetry:
    """Telemetry that records nothing."""

    def order(self, bot_id: int, status: str) -> None:
        """Record nothing."""

    def fill(self, bot_id: int, side: str) -> None:
        """Record nothing."""

    def risk_decision(self, limit: str | None, seconds: float) -> None:
        """Record nothing."""

    def decision_latency(self, bot_id: int, seconds: float) -> None:
        """Record nothing."""

    def equity(self, bot_id: int, equity: float, exposure: float) -> None:
        """Record nothing."""

    def breaker(self, exchange: str, state: str) -> None:
        """Record nothing."""

    def candle_lag(self, bot_id: int, seconds: float) -> None:
        """Record nothing."""
