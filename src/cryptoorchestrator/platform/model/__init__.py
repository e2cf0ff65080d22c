"""The leaf domain model: identifiers, enums and value types shared by every layer above.

This package imports nothing else of ours.
"""

from cryptoorchestrator.platform.model.enums import (
    BotMode,
    BotStatus,
    OrderSide,
    OrderStatus,
    OrderType,
    RunStatus,
)
from cryptoorchestrator.platform.model.symbols import (
    normalize_symbol,
    symbol_from_path,
    symbol_to_path,
)
from cryptoorchestrator.platform.model.timeframe import TIMEFRAMES, timeframe_to_ms

__all__ = [
    "TIMEFRAMES",
    "BotMode",
    "BotStatus",
    "OrderSide",
    "OrderStatus",
    "OrderType",
    "RunStatus",
    "normalize_symbol",
    "symbol_from_path",
    "symbol_to_path",
    "timeframe_to_ms",
]
