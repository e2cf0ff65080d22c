"""Bounds on what users send: text, free-form JSON documents and exact money.

Some malformed values are not merely wrong but break what stores or computes them: text with a
NUL character or an unpaired surrogate (PostgreSQL and every UTF-8 encoder refuse it), JSON with
unbounded integers, non-finite numbers or deep nesting (big integers overflow floats, numpy and
JSON columns; ``NaN`` is not JSON), and decimals wider than the ``NUMERIC(38, 18)`` money
columns (PostgreSQL overflows, SQLite would keep text no other engine can read back).  Each
check raises :class:`InvalidInputError` naming the field and what is allowed, so the caller
answers 422 before a database, a strategy or a log sees the value.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from cryptoorchestrator.platform.errors import InvalidInputError
from cryptoorchestrator.platform.storage.types import MONEY_PRECISION, MONEY_SCALE

#: A NUL or any surrogate code point: a Python ``str`` decoded from JSON or UTF-8 only holds a
#: surrogate when it was sent unpaired (``"\ud800"``), and no encoder can write one back out.
_BAD_TEXT = re.compile("[\x00\ud800-\udfff]")
TEXT_RULE = "text without NUL characters or unpaired surrogates"

#: Digits of the money columns: ``MONEY_DIGITS`` in all, ``MONEY_PLACES`` after the point.
MONEY_DIGITS = MONEY_PRECISION
MONEY_PLACES = MONEY_SCALE
#: The first whole number a money column cannot hold.
MONEY_LIMIT = Decimal(10) ** (MONEY_DIGITS - MONEY_PLACES)
MONEY_RULE = (
    f"less than 1e{MONEY_DIGITS - MONEY_PLACES} in magnitude, at most {MONEY_PLACES} decimal places"
)


def text_problem(value: str) -> str | None:
    """Return why ``value`` cannot be stored as text, or None when it can."""
    if _BAD_TEXT.search(value) is None:
        return None
    if "\x00" in value:
        return "must not contain NUL characters"
    return "must not contain unpaired surrogates (invalid UTF-16 escapes)"


def check_text(field: str, value: str) -> str:
    """Return ``value`` if it holds no NUL character and no unpaired surrogate.

    Raises
    ------
    InvalidInputError
        Naming ``field`` otherwise.
    """
    problem = text_problem(value)
    if problem is not None:
        raise InvalidInputError(field, problem, allowed=TEXT_RULE)
    return value


@dataclass(frozen=True)
class JsonLimits:
    """How large a free-form JSON document (strategy parameters, a search space) may be.

    Integers stay within ``max_int`` in magnitude, 2**53 by default: every such integer is
    exact as a float64, in numpy and in JavaScript clients, so a value that passed here reads
    back the same everywhere.
    """

    max_depth: int = 4
    max_values: int = 1000
    max_text: int = 256
    max_key: int = 64
    max_int: int = 2**53


DEFAULT_LIMITS = JsonLimits()


def check_json(field: str, value: Any, limits: JsonLimits = DEFAULT_LIMITS) -> Any:
    """Return ``value`` if it is a bounded JSON document; raise naming the offending path.

    Allowed: ``None``, booleans, integers within ``limits.max_int``, finite floats, text of
    at most ``limits.max_text`` characters, and lists and string-keyed objects of those nested
    at most ``limits.max_depth`` deep, ``limits.max_values`` values in all.

    Raises
    ------
    InvalidInputError
        With the dotted path of the first offending value (``params.fast``, ``space.fast.1``).
    """
    count = 0
    stack: list[tuple[str, Any, int]] = [(field, value, 0)]
    while stack:
        path, item, depth = stack.pop()
        count += 1
        if count > limits.max_values:
            raise InvalidInputError(
                path, "too many values", allowed=f"at most {limits.max_values} in all"
            )
        if item is None or isinstance(item, bool):
            continue
        if isinstance(item, int):
            if abs(item) > limits.max_int:
                raise InvalidInputError(
                    path, "integer out of range", allowed=f"-2^53 to 2^53 ({limits.max_int})"
                )
            continue
        if isinstance(item, float):
            if not math.isfinite(item):
                raise InvalidInputError(path, "must be a finite number", allowed="finite numbers")
            continue
        if isinstance(item, str):
            if len(item) > limits.max_text:
                raise InvalidInputError(
                    path, "text too long", allowed=f"at most {limits.max_text} characters"
                )
            check_text(path, item)
            continue
        if isinstance(item, Mapping | list | tuple):
            if depth >= limits.max_depth:
                raise InvalidInputError(
                    path, "nested too deep", allowed=f"at most {limits.max_depth} levels"
                )
            if isinstance(item, Mapping):
                for key, child in item.items():
                    _check_key(path, key, limits)
                    stack.append((f"{path}.{key}", child, depth + 1))
            else:
                stack.extend((f"{path}.{i}", child, depth + 1) for i, child in enumerate(item))
            continue
        raise InvalidInputError(
            path, f"unsupported value of type {type(item).__name__}", allowed="JSON values"
        )
    return value


def _check_key(path: str, key: Any, limits: JsonLimits) -> None:
    # A bad key is named by its parent: the key itself cannot be shown safely.
    if not isinstance(key, str) or not 1 <= len(key) <= limits.max_key:
        raise InvalidInputError(
            path, "keys must be 1 to 64 characters", allowed=f"keys of 1-{limits.max_key} chars"
        )
    problem = text_problem(key)
    if problem is not None:
        raise InvalidInputError(path, f"keys {problem}", allowed=TEXT_RULE)


def check_money(field: str, value: Decimal, *, allowed: str | None = None) -> Decimal:
    """Return ``value`` if a money column stores it exactly on every database.

    Raises
    ------
    InvalidInputError
        Naming ``field`` if ``value`` is not finite, reaches ``MONEY_LIMIT`` in magnitude or
        has more than ``MONEY_PLACES`` decimal places (PostgreSQL would round them away).
    """
    rule = allowed or MONEY_RULE
    if not value.is_finite():
        raise InvalidInputError(field, "must be a finite number", allowed=rule)
    if value.copy_abs() >= MONEY_LIMIT:  # abs() would round to 28 digits first
        raise InvalidInputError(field, "too large", allowed=rule)
    _, digits, exponent = value.as_tuple()
    places = -int(exponent)
    for digit in reversed(digits):  # trailing zeros after the point are not precision
        if places <= 0 or digit != 0:
            break
        places -= 1
    if places > MONEY_PLACES:
        raise InvalidInputError(field, f"more than {MONEY_PLACES} decimal places", allowed=rule)
    return value
