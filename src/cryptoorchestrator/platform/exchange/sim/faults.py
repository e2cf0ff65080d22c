"""Fault-injection switches of the exchange simulator, for reliability tests of clients and bots.

Each switch is a plain field of :class:`FaultState`; counters (``*_next``) are consumed one per
request (``drop_next_orders`` one per accepted new order), so a test can say "the next 3 requests
fail" and then watch the client recover.  The same switches are set at start
(``ExchangeSimulator(faults={...})``, ``--fault key=value``), through the Python API
(``sim.set_faults(...)``) and over HTTP (``POST /_sim/faults`` with a JSON object).

Switches
--------
latency_ms
    Delay every request by this many milliseconds.
fail_next, fail_status
    The next ``fail_next`` requests answer ``fail_status`` (default 503) with a plain-text body,
    as a gateway in front of Binance does; ccxt raises ``ExchangeNotAvailable``.
rate_limit_next, retry_after_s
    The next ``rate_limit_next`` requests answer 429 with ``Retry-After`` and Binance's -1003 body;
    ccxt raises ``DDoSProtection`` (or its subclass ``RateLimitExceeded``).
timeout_next, hang_s
    The next ``timeout_next`` requests hang ``hang_s`` seconds (default 30, or until the simulator
    stops) before answering; a client with a shorter timeout raises ``RequestTimeout``.
drop_next_orders, drop_mode
    The next ``drop_next_orders`` new orders are accepted and booked, then their answer is lost:
    ``drop_mode="503"`` answers 503 without the order, ``"close"`` closes the connection.
path_prefix
    When not empty, only requests whose path starts with it are faulted (e.g. ``/api/v3/order``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from cryptoorchestrator.platform.errors import InvalidInputError

_DROP_MODES = ("503", "close")


@dataclass
class FaultState:
    """The current fault switches (all off by default)."""

    latency_ms: int = 0
    fail_next: int = 0
    fail_status: int = 503
    rate_limit_next: int = 0
    retry_after_s: int = 1
    timeout_next: int = 0
    hang_s: float = 30.0
    drop_next_orders: int = 0
    drop_mode: str = "503"
    path_prefix: str = ""

    def update(self, changes: Mapping[str, Any]) -> None:
        """Apply ``changes`` (field -> value), converting and checking each value.

        Raises
        ------
        InvalidInputError
            If a field is unknown or a value has the wrong type or range.
        """
        types = {f.name: f.type for f in fields(self)}
        staged: dict[str, Any] = {}
        for key, value in changes.items():
            if key not in types:
                raise InvalidInputError(f"faults.{key}", "unknown fault switch", allowed=types)
            kind = types[key]
            try:
                if kind == "int":
                    converted: Any = int(value)
                elif kind == "float":
                    converted = float(value)
                else:
                    converted = str(value)
            except (TypeError, ValueError):
                raise InvalidInputError(f"faults.{key}", f"not a {kind}: {value!r}") from None
            if kind in ("int", "float") and converted < 0:
                raise InvalidInputError(f"faults.{key}", "must be >= 0")
            if key == "drop_mode" and converted not in _DROP_MODES:
                raise InvalidInputError("faults.drop_mode", "unknown mode", allowed=_DROP_MODES)
            if key == "fail_status" and not 500 <= converted <= 599:
                raise InvalidInputError(
                    "faults.fail_status", "must be a 5xx status", allowed="500..599"
                )
            staged[key] = converted
        for key, value in staged.items():
            setattr(self, key, value)

    def to_dict(self) -> dict[str, Any]:
        """Return the switches as a JSON-ready dict."""
        return asdict(self)

    def applies_to(self, path: str) -> bool:
        """Return whether faults apply to a request for ``path``."""
        return not self.path_prefix or path.startswith(self.path_prefix)


def parse_fault_args(items: Iterable[str]) -> dict[str, str]:
    """Return ``{"latency_ms": "200"}`` from CLI words like ``latency_ms=200``.

    Raises
    ------
    InvalidInputError
        If a word is not ``key=value``.
    """
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InvalidInputError(
                "--fault",
                f"expected key=value, got {item!r}",
                allowed=[f.name for f in fields(FaultState)],
            )
        out[key.strip()] = value.strip()
    return out
