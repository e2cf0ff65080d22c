"""Trading-pair spelling: ``BTC/USDT`` in bodies and storage, ``BTC-USDT`` in URL paths."""

from __future__ import annotations

import re

from cryptoorchestrator.platform.errors import InvalidInputError

_SYMBOL = re.compile(r"^[A-Z0-9]{1,20}/[A-Z0-9]{1,20}(:[A-Z0-9]{1,20})?$")


def normalize_symbol(symbol: str, *, field: str = "symbol") -> str:
    """Return ``symbol`` as ``BASE/QUOTE`` in upper case, accepting ``base-quote`` too."""
    text = symbol.strip().upper().replace("-", "/").replace("_", "/")
    if not _SYMBOL.match(text):
        raise InvalidInputError(
            field, f"malformed trading pair {symbol!r}", allowed="BASE/QUOTE, e.g. BTC/USDT"
        )
    return text


def symbol_to_path(symbol: str) -> str:
    """Return the URL-path and file-name spelling ``BTC-USDT`` of ``BTC/USDT``."""
    return normalize_symbol(symbol).replace("/", "-").replace(":", "_")


def symbol_from_path(text: str) -> str:
    """Return ``BTC/USDT`` from the path spelling ``BTC-USDT``."""
    if text.count("_") == 1 and "-" in text:  # BTC-USDT_USDT is the path form of BTC/USDT:USDT
        text = text.replace("_", ":")
    return normalize_symbol(text)
