"""The platform's metrics as ``ray.util.metrics`` series (Prometheus endpoint, Ray dashboard).

Ray exports every series with a ``ray_`` prefix from each node's metrics agent: scrape
``http://<node>:<metrics port>/metrics`` (``cluster.runtime.metrics_endpoint()``; fixed with
``CRYPTOORCH_RAY_METRICS_PORT``), or point the dashboard's Grafana at it.  Series:

========================================  =========  =========================================
``ray_cryptoorch_orders_total``           counter    orders by ``bot`` and ``status``
``ray_cryptoorch_fills_total``            counter    fills by ``bot`` and ``side``
``ray_cryptoorch_risk_checks_total``      counter    risk checks by ``outcome`` and ``limit``
``ray_cryptoorch_risk_check_seconds``     histogram  risk approval latency
``ray_cryptoorch_decision_seconds``       histogram  candle close to order decision, per bot
``ray_cryptoorch_equity``                 gauge      marked equity per ``bot``
``ray_cryptoorch_exposure``               gauge      gross exposure per ``bot``
``ray_cryptoorch_breaker_open``           gauge      1 while an ``exchange``'s breaker is open
``ray_cryptoorch_candle_lag_seconds``     gauge      newest closed candle's age per ``bot``
========================================  =========  =========================================
"""

from __future__ import annotations

import threading

from ray.util.metrics import Counter, Gauge, Histogram

#: Latency buckets (seconds): a risk check or a decision normally takes milliseconds; the tail
#: shows a contended node or a slow database.
LATENCY_BOUNDARIES = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0]

_BREAKER_OPEN = {"open": 1.0, "half_open": 0.5}


class RayTelemetry:
    """:class:`~cryptoorchestrator.platform.telemetry.Telemetry` on ``ray.util.metrics``.

    Create one per process (a bot actor, a bot group, the risk actor): Ray aggregates the
    series of every process of a node.
    """

    def __init__(self) -> None:
        self._orders = Counter(
            "cryptoorch_orders_total", "Orders by bot and status.", tag_keys=("bot", "status")
        )
        self._fills = Counter("cryptoorch_fills_total", "Fills by bot.", tag_keys=("bot", "side"))
        self._risk = Counter(
            "cryptoorch_risk_checks_total",
            "Risk checks by outcome and denying limit.",
            tag_keys=("outcome", "limit"),
        )
        self._risk_latency = Histogram(
            "cryptoorch_risk_check_seconds",
            "Risk check latency.",
            boundaries=LATENCY_BOUNDARIES,
        )
        self._decision = Histogram(
            "cryptoorch_decision_seconds",
            "Candle close to order decision.",
            boundaries=LATENCY_BOUNDARIES,
            tag_keys=("bot",),
        )
        self._equity = Gauge("cryptoorch_equity", "Marked equity per bot.", tag_keys=("bot",))
        self._exposure = Gauge("cryptoorch_exposure", "Gross exposure per bot.", tag_keys=("bot",))
        self._breaker = Gauge(
            "cryptoorch_breaker_open",
            "1 while the exchange's circuit breaker is open, 0.5 half-open, 0 closed.",
            tag_keys=("exchange",),
        )
        self._lag = Gauge(
            "cryptoorch_candle_lag_seconds",
            "Age of the newest closed candle a bot has seen.",
            tag_keys=("bot",),
        )

    def order(self, bot_id: int, status: str) -> None:
        """Count an order reaching ``status``."""
        self._orders.inc(1.0, tags={"bot": str(bot_id), "status": status})

    def fill(self, bot_id: int, side: str) -> None:
        """Count one fill."""
        self._fills.inc(1.0, tags={"bot": str(bot_id), "side": side})

    def risk_decision(self, limit: str | None, seconds: float) -> None:
        """Count a risk check by outcome (and the denying limit) and record its latency."""
        outcome = "approved" if limit is None else "denied"
        self._risk.inc(1.0, tags={"outcome": outcome, "limit": limit or ""})
        self._risk_latency.observe(max(seconds, 0.0))

    def decision_latency(self, bot_id: int, seconds: float) -> None:
        """Record the time from a candle's close to the bot's decision."""
        self._decision.observe(max(seconds, 0.0), tags={"bot": str(bot_id)})

    def equity(self, bot_id: int, equity: float, exposure: float) -> None:
        """Set a bot's equity and gross exposure."""
        self._equity.set(equity, tags={"bot": str(bot_id)})
        self._exposure.set(exposure, tags={"bot": str(bot_id)})

    def breaker(self, exchange: str, state: str) -> None:
        """Set an exchange breaker's state."""
        self._breaker.set(_BREAKER_OPEN.get(state, 0.0), tags={"exchange": exchange})

    def candle_lag(self, bot_id: int, seconds: float) -> None:
        """Set a bot's candle lag."""
        self._lag.set(max(seconds, 0.0), tags={"bot": str(bot_id)})


_lock = threading.Lock()
_process: list[RayTelemetry] = []


def process_telemetry() -> RayTelemetry:
    """Return this process's :class:`RayTelemetry`, created on first use.

    Bot actors, bot groups and the risk actor share one per process: each series may be
    declared once per process, and the bots of a group report through the same series.

    Returns
    -------
    RayTelemetry
        The process's telemetry.
    """
    with _lock:
        if not _process:
            _process.append(RayTelemetry())
        return _process[0]
