"""Request weights of exchange endpoints: what each REST call costs against a per-IP budget.

Binance counts every request against a *request weight* budget per IP (6,000 a minute on spot),
and its documentation gives each endpoint a weight: an order costs 1, the account 20, the order
book by ``limit``, some calls much more without a ``symbol`` (every market's 24-hour ticker: 80).
An IP that goes over answers 429 with ``Retry-After``, and one that keeps going is banned (418).

:data:`BINANCE_SPOT` is that table for the ``/api/v3`` endpoints; the shared request budget
(:mod:`~cryptoorchestrator.platform.exchange.budget`) charges by it and the exchange simulator
counts by it, as Binance does.  Endpoints it does not list are charged by ccxt's own cost of
the endpoint times the exchange's factor (Binance: ccxt's cost 0.2 is weight 1).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class EndpointWeight:
    """The weight of one endpoint.

    Parameters
    ----------
    weight
        The weight of a call (with a ``symbol`` where that matters).
    no_symbol
        The weight of a call without a ``symbol`` (every market at once); None: ``weight``.
    by_limit
        ``((max limit, weight), ...)`` in increasing order: the weight of a call whose ``limit``
        is at most the first bound that holds it; above the last bound, the last weight.
    default_limit
        The ``limit`` the exchange assumes when a call names none.
    """

    weight: float
    no_symbol: float | None = None
    by_limit: tuple[tuple[int, float], ...] = ()
    default_limit: int | None = None

    def of(self, params: Mapping[str, object]) -> float:
        """Return the weight of a call with ``params`` (its query or body parameters)."""
        if self.no_symbol is not None and not params.get("symbol") and not params.get("symbols"):
            return self.no_symbol
        if self.by_limit:
            raw = params.get("limit", self.default_limit)
            try:
                limit = int(str(raw)) if raw is not None else None
            except ValueError:
                limit = None
            if limit is None:
                return self.by_limit[-1][1]  # unknown: the heaviest tier, never an undercount
            for bound, weight in self.by_limit:
                if limit <= bound:
                    return weight
            return self.by_limit[-1][1]
        return self.weight


#: Binance spot ``/api/v3`` weights (IP budget), by (HTTP method, path after ``/api/v3/``).
#: From Binance's "Spot API" documentation; klines cost 2 whatever their limit there (older
#: tables charged 1 to 10 by limit, which ``by_limit`` can express where an exchange does).
BINANCE_SPOT: Mapping[tuple[str, str], EndpointWeight] = {
    ("GET", "ping"): EndpointWeight(1),
    ("GET", "time"): EndpointWeight(1),
    ("GET", "exchangeInfo"): EndpointWeight(20),
    ("GET", "depth"): EndpointWeight(
        5, by_limit=((100, 5), (500, 25), (1000, 50), (5000, 250)), default_limit=100
    ),
    ("GET", "trades"): EndpointWeight(25),
    ("GET", "historicalTrades"): EndpointWeight(25),
    ("GET", "aggTrades"): EndpointWeight(2),
    ("GET", "klines"): EndpointWeight(2),
    ("GET", "uiKlines"): EndpointWeight(2),
    ("GET", "avgPrice"): EndpointWeight(2),
    ("GET", "ticker/24hr"): EndpointWeight(2, no_symbol=80),
    ("GET", "ticker/price"): EndpointWeight(2, no_symbol=4),
    ("GET", "ticker/bookTicker"): EndpointWeight(2, no_symbol=4),
    ("GET", "account"): EndpointWeight(20),
    ("POST", "order"): EndpointWeight(1),
    ("POST", "order/test"): EndpointWeight(1),
    ("GET", "order"): EndpointWeight(4),
    ("DELETE", "order"): EndpointWeight(1),
    ("GET", "openOrders"): EndpointWeight(6, no_symbol=80),
    ("DELETE", "openOrders"): EndpointWeight(1),
    ("GET", "allOrders"): EndpointWeight(20),
    ("GET", "myTrades"): EndpointWeight(20),
}

#: Weight of a Binance ``/api/v3`` call the table does not list: the heaviest common one, so an
#: unknown call is never charged less than it costs.
BINANCE_UNKNOWN = 20.0

#: Orders placed: the calls Binance counts against an account's order-rate limit.
ORDER_PLACEMENTS = frozenset({("POST", "order"), ("POST", "order/oco"), ("POST", "sor/order")})


def binance_weight(method: str, path: str, params: Mapping[str, object]) -> float:
    """Return the IP weight of a Binance spot call, ``path`` relative to ``/api/v3/``."""
    entry = BINANCE_SPOT.get((method.upper(), path.strip("/")))
    return BINANCE_UNKNOWN if entry is None else entry.of(params)


def is_order_placement(method: str, path: str) -> bool:
    """Return whether the call places an order (counted per API key as well as per IP)."""
    return (method.upper(), path.strip("/")) in ORDER_PLACEMENTS


__all__ = [
    "BINANCE_SPOT",
    "BINANCE_UNKNOWN",
    "EndpointWeight",
    "binance_weight",
    "is_order_placement",
]
