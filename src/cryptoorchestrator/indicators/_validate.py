"""Argument checks shared by the indicator wrappers.

The indicators layer imports nothing else of ours, so its error type lives here: a ``ValueError``
subclass that names the argument and the allowed values, like the platform's InvalidInputError.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

MAX_PERIOD = 100_000
MA_TYPES = {0: "SMA", 1: "EMA", 2: "WMA", 3: "DEMA", 4: "TEMA", 5: "TRIMA", 6: "KAMA"}


class IndicatorInputError(ValueError):
    """An indicator argument is wrong; the message names it and what is allowed.

    Parameters
    ----------
    field
        Name of the offending argument (``"timeperiod"``, ``"high"``).
    message
        What was wrong, in words.
    allowed
        The allowed values or range, shown to the user.
    """

    def __init__(self, field: str, message: str, *, allowed: str | None = None) -> None:
        self.field = field
        self.reason = message
        self.allowed = allowed
        text = f"{field}: {message}"
        if allowed:
            text += f" (allowed: {allowed})"
        super().__init__(text)

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuilt from its fields, so the error survives pickling (process pools, Ray tasks).
        return (_rebuild_indicator_error, (self.field, self.reason, self.allowed))


def _rebuild_indicator_error(field: str, message: str, allowed: str | None) -> IndicatorInputError:
    return IndicatorInputError(field, message, allowed=allowed)


def as_series(value: Any, name: str) -> np.ndarray:
    """Return ``value`` as a 1-D C-contiguous float64 array, converting at most once.

    Integer, boolean and float32 input is converted; a float64 contiguous array (read-only ones
    from Ray's object store included) is used as it is, never copied or written.
    """
    array = value if isinstance(value, np.ndarray) else np.asarray(value)
    if array.dtype.kind not in "fiub":
        raise IndicatorInputError(
            name,
            f"dtype {array.dtype} is not numeric",
            allowed="float64, float32, integer or boolean arrays",
        )
    if array.ndim != 1:
        raise IndicatorInputError(
            name, f"expected a 1-D array, got shape {array.shape}", allowed="1-D arrays"
        )
    if array.dtype != np.float64 or not array.flags.c_contiguous:
        array = np.ascontiguousarray(array, dtype=np.float64)
    return array


def same_length(**arrays: np.ndarray) -> int:
    """Return the common length of ``arrays``; raise naming the first one that differs."""
    items = list(arrays.items())
    first_name, first = items[0]
    n = first.shape[0]
    for name, array in items[1:]:
        if array.shape[0] != n:
            raise IndicatorInputError(
                name,
                f"length {array.shape[0]} differs from {first_name}'s length {n}",
                allowed=f"arrays of length {n}",
            )
    return n


def period(value: Any, name: str, minimum: int, maximum: int = MAX_PERIOD) -> int:
    """Return ``value`` as an int in ``[minimum, maximum]``; raise naming ``name`` otherwise."""
    if isinstance(value, bool | np.bool_):
        raise IndicatorInputError(
            name, "a boolean is not a period", allowed=_range(minimum, maximum)
        )
    try:
        result = operator.index(value)
    except TypeError:
        raise IndicatorInputError(
            name, f"{value!r} is not an integer", allowed=_range(minimum, maximum)
        ) from None
    if not minimum <= result <= maximum:
        raise IndicatorInputError(
            name, f"{result} is out of range", allowed=_range(minimum, maximum)
        )
    return result


def number(value: Any, name: str, minimum: float | None = None) -> float:
    """Return ``value`` as a finite float (at least ``minimum``); raise naming ``name``."""
    try:
        result = float(value)
    except (TypeError, ValueError):
        raise IndicatorInputError(
            name, f"{value!r} is not a number", allowed="real numbers"
        ) from None
    allowed = "finite real numbers" if minimum is None else f"finite numbers >= {minimum}"
    if not np.isfinite(result) or (minimum is not None and result < minimum):
        raise IndicatorInputError(name, f"{result} is out of range", allowed=allowed)
    return result


def matype(value: Any, name: str) -> int:
    """Return a TA-Lib moving-average type this package implements (0-6)."""
    allowed = ", ".join(f"{k}={v}" for k, v in MA_TYPES.items())
    try:
        result = operator.index(value)
    except TypeError:
        raise IndicatorInputError(name, f"{value!r} is not an integer", allowed=allowed) from None
    if result not in MA_TYPES:
        raise IndicatorInputError(name, f"{result} is not supported", allowed=allowed)
    return result


def periods(values: Sequence[int] | np.ndarray, name: str, minimum: int) -> np.ndarray:
    """Return a non-empty list of periods as an int64 array, each checked like ``period``."""
    items = list(np.asarray(values).ravel()) if isinstance(values, np.ndarray) else list(values)
    if not items:
        raise IndicatorInputError(name, "no periods given", allowed="a non-empty sequence")
    checked = [period(v, f"{name}[{i}]", minimum) for i, v in enumerate(items)]
    return np.asarray(checked, dtype=np.int64)


def output(
    out: np.ndarray | None,
    shape: tuple[int, ...],
    name: str = "out",
    *,
    inputs: Mapping[str, np.ndarray],
) -> np.ndarray:
    """Return ``out`` if it is a writeable C-contiguous float64 array of ``shape``, or allocate.

    ``inputs`` are the validated input arrays by argument name; an ``out`` that shares memory
    with one of them is refused (see :func:`separate`).
    """
    if out is None:
        return np.empty(shape, dtype=np.float64)
    if not isinstance(out, np.ndarray):
        raise IndicatorInputError(name, "must be a numpy array", allowed="numpy.ndarray or None")
    if out.dtype != np.float64 or out.shape != shape:
        raise IndicatorInputError(
            name,
            f"got {out.dtype} of shape {out.shape}",
            allowed=f"a float64 array of shape {shape}",
        )
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise IndicatorInputError(
            name, "must be C-contiguous and writeable", allowed="a fresh np.empty buffer"
        )
    separate(out, name, inputs)
    return out


def outputs(
    out: tuple[np.ndarray, ...] | None,
    count: int,
    n: int,
    name: str = "out",
    *,
    inputs: Mapping[str, np.ndarray],
) -> tuple[np.ndarray, ...]:
    """Return ``count`` output buffers of length ``n`` (checked, or newly allocated).

    Each buffer is checked as :func:`output` checks one, and no two may share memory.
    """
    if out is None:
        return tuple(np.empty(n, dtype=np.float64) for _ in range(count))
    if not isinstance(out, tuple | list) or len(out) != count:
        raise IndicatorInputError(
            name, f"expected {count} arrays", allowed=f"a tuple of {count} float64 arrays or None"
        )
    checked = tuple(output(o, (n,), f"{name}[{i}]", inputs=inputs) for i, o in enumerate(out))
    for i, a in enumerate(checked):
        separate(a, f"{name}[{i}]", {f"{name}[{j}]": b for j, b in enumerate(checked[:i])})
    return checked


def hlcv(*arrays: np.ndarray) -> dict[str, np.ndarray]:
    """Name validated bar inputs for :func:`output`: ``high, low, close[, volume]``."""
    return dict(zip(("high", "low", "close", "volume"), arrays, strict=False))


def separate(out: np.ndarray, name: str, others: Mapping[str, np.ndarray]) -> None:
    """Refuse an output buffer that shares memory with any of ``others`` (by argument name).

    Kernels read their inputs while writing their outputs, often bars behind or ahead (running
    sums drop ``x[i - period]``, MACD and STOCH stage intermediates in an output), so an output
    aliasing an input would silently corrupt the result. Buffers here are C-contiguous, for which
    the bounds test of ``np.may_share_memory`` is exact and O(1).

    Raises
    ------
    IndicatorInputError
        Naming ``name`` and the array it overlaps.
    """
    for other_name, other in others.items():
        if np.may_share_memory(out, other):
            raise IndicatorInputError(
                name,
                f"shares memory with {other_name!r}; the result would overwrite values still to "
                "be read",
                allowed=f"a buffer separate from every input and output (not {other_name})",
            )


def _range(minimum: int, maximum: int) -> str:
    return f"integers {minimum}..{maximum}"
