"""CryptoOrchestrator: backtest, optimize and run crypto trading bots on Ray.

``import cryptoorchestrator as co`` is cheap (no Ray, FastAPI or ccxt): every SDK entry point below
is imported on first use.

>>> import cryptoorchestrator as co
>>> bars = co.load_ohlcv("binance", "BTC/USDT", "1h", start="2021-01-01", end="2022-01-01")
>>> res = co.backtest("sma_cross", bars, params={"fast": 10, "slow": 50}, fee_bps=10)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> module that defines it; resolved lazily by __getattr__ so that importing the package
# does not pull in numba, Ray, FastAPI or ccxt.
_LAZY: dict[str, str] = {
    "Client": "cryptoorchestrator.client",
    "Settings": "cryptoorchestrator.platform.settings",
    "get_settings": "cryptoorchestrator.platform.settings",
    "load_ohlcv": "cryptoorchestrator.platform.data.store",
    "backtest": "cryptoorchestrator.strategies.sdk",
    "bots": "cryptoorchestrator.cluster.sdk",
    "risk": "cryptoorchestrator.cluster.sdk",
    "shutdown": "cryptoorchestrator.cluster.sdk",
    "check_lookahead": "cryptoorchestrator.strategies.sdk",
    "list_strategies": "cryptoorchestrator.strategies.sdk",
    "get_strategy": "cryptoorchestrator.strategies.sdk",
    "optimize": "cryptoorchestrator.cluster.optimize",
    "replay": "cryptoorchestrator.cluster.replay",
    "walk_forward": "cryptoorchestrator.cluster.optimize",
}

if TYPE_CHECKING:
    from cryptoorchestrator.client import Client
    from cryptoorchestrator.cluster.optimize import optimize, walk_forward
    from cryptoorchestrator.cluster.replay import replay
    from cryptoorchestrator.cluster.sdk import bots, risk, shutdown
    from cryptoorchestrator.platform.data.store import load_ohlcv
    from cryptoorchestrator.platform.settings import Settings, get_settings
    from cryptoorchestrator.strategies.sdk import (
        backtest,
        check_lookahead,
        get_strategy,
        list_strategies,
    )

__all__ = [
    "Client",
    "Settings",
    "__version__",
    "backtest",
    "bots",
    "check_lookahead",
    "get_settings",
    "get_strategy",
    "list_strategies",
    "load_ohlcv",
    "optimize",
    "replay",
    "risk",
    "shutdown",
    "walk_forward",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'cryptoorchestrator' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
