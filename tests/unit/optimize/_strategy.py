"""A minimal SMA-cross strategy for the optimizer's tests, independent of the registry."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from cryptoorchestrator.indicators import crossed_above, crossed_below, sma
from cryptoorchestrator.platform.errors import InvalidInputError


@dataclass(frozen=True)
class P:
    name: str
    default: int
    low: int
    high: int


class SmaCross:
    name = "sma_cross"
    params = {"fast": P("fast", 10, 2, 500), "slow": P("slow", 50, 3, 1000)}

    def validate_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        out = {k: p.default for k, p in self.params.items()}
        out.update(params)
        for k, v in out.items():
            p = self.params[k]
            if not p.low <= v <= p.high:
                raise InvalidInputError(f"params.{k}", f"{v} out of range", allowed=f"{p.low}..")
        return out

    def signals(self, bars: Any, params: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        fast = sma(bars.close, params["fast"])
        slow = sma(bars.close, params["slow"])
        return crossed_above(fast, slow), crossed_below(fast, slow)


class Exploding(SmaCross):
    """Raises for one parameter value, to show failed trials are recorded and the study goes on."""

    name = "exploding"

    def signals(self, bars: Any, params: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        if params["fast"] == 10:
            raise ZeroDivisionError("boom")
        return super().signals(bars, params)


def random_bars(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.concatenate([[close[0]], close[:-1]])
    high = np.maximum(open_, close) * 1.001
    low = np.minimum(open_, close) * 0.999
    ts = 1_600_000_000_000 + np.arange(n, dtype=np.int64) * 3_600_000
    return {
        "timestamp": ts,
        "open": open_,
        "high": high,
        "low": low,
        "close": close,
        "volume": np.ones(n),
    }
