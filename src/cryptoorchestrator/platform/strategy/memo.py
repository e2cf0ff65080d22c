"""Indicator reuse across the trials of a batch: a per-batch cache the indicator calls go through.

An optimizer batch calls one strategy's ``signals`` once per parameter set on the same bars, so
``ema(close, 20)`` is computed again by every trial that has a 20-bar EMA.  Inside
:func:`indicator_cache`, every call of a function wrapped by :func:`memoised` (all the
indicators of :mod:`cryptoorchestrator.platform.strategy.indicators`, which the built-in
strategies import and user strategies should too) is looked up by ``(function, identity of
each input array, every other argument)``: a call made a second time is kept and serves every
later one (kept from the second, so that calls no other trial makes hold no memory).  The last
few first-time results wait in a small probation list: the trial right after, which often
shares them (a batch ordered by :attr:`Strategy.sweep_order`), finds them there, and they are
then kept like a second request's.  Outside
it, the wrappers call the indicator directly: backtests and live bots are unaffected.

Soundness rests on which arrays may key the cache: only *trusted* ones, i.e. read-only views
of the batch's bars made by :func:`indicator_cache` and read-only outputs of cached calls, all
held by the cache so that their identity cannot be reused by another array while it lives.
Nobody can write into them, so equal identity means equal content.  A call with any other
array (a temporary such as ``close * 2``, a user buffer) is computed directly and not cached.
A strategy that writes into an indicator output gets a read-only error in a batch;
:func:`signals_in_batch` then evaluates that trial again without the cache on the caller's
bars, so a trial's signals are always those of the strategy evaluated alone.  The cache lives
for one ``with`` block (one batch) and is bounded in bytes (least recently used go first).
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Generic, NamedTuple, ParamSpec, TypeVar

import numpy as np

from cryptoorchestrator.platform.errors import InvalidInputError, StrategyError
from cryptoorchestrator.platform.strategy.base import Signals, Strategy, run_signals

P = ParamSpec("P")
R = TypeVar("R")

#: Default memory bound of one batch's cache; about 30 float arrays of 1M bars.
DEFAULT_MAX_BYTES = 256 * 2**20

#: First-time results held on probation: at most this many, and this share of the bound.
PROBATION_ENTRIES = 8
PROBATION_SHARE = 4

_BAR_COLUMNS = ("open", "high", "low", "close", "volume")


class _Entry(NamedTuple):
    inputs: tuple[np.ndarray, ...]  # held so that the key's ids stay theirs
    result: Any
    nbytes: int


class IndicatorCache:
    """The cache of one batch: results by call key, and the arrays that may key it.

    Parameters
    ----------
    max_bytes
        Bound on the bytes of cached results; the least recently used go first beyond it.
    """

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_bytes < 0:
            raise InvalidInputError("max_bytes", f"{max_bytes} is negative", allowed=">= 0")
        self.max_bytes = max_bytes
        self.nbytes = 0
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[tuple[Any, ...], _Entry] = OrderedDict()
        self._trusted: dict[int, np.ndarray] = {}  # id -> array, held
        self._seen: set[tuple[Any, ...]] = set()  # keys asked for once
        # first-time results, newest last: a later trial's request promotes one to _entries
        self._probation: OrderedDict[tuple[Any, ...], _Entry] = OrderedDict()
        self._probation_bytes = 0

    def trust_bars(self, bars: R) -> R:
        """Return ``bars`` with read-only views of its OHLCV columns, trusted as cache keys.

        ``bars`` is a NamedTuple (``BarArrays``) or a dataclass (``Bars``) with ``open`` ...
        ``volume`` arrays; any other object is returned as it is, and nothing is then cached
        on its columns (every call is computed, as without a cache).
        """
        views: dict[str, np.ndarray] = {}
        for name in _BAR_COLUMNS:
            col = getattr(bars, name, None)
            if isinstance(col, np.ndarray):
                view = col.view()
                view.flags.writeable = False
                views[name] = view
        if not views:
            return bars
        if hasattr(bars, "_fields"):
            # rebuilt field by field: ``_replace`` trusts ``len()``, which BarArrays redefines
            out = type(bars)(*(views.get(f, getattr(bars, f)) for f in bars._fields))
        elif dataclasses.is_dataclass(bars) and not isinstance(bars, type):
            out = dataclasses.replace(bars, **views)
        else:
            return bars
        for view in views.values():
            self._trusted[id(view)] = view
        return out  # type: ignore[no-any-return]

    def _key(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> tuple[tuple[Any, ...], tuple[np.ndarray, ...]] | None:
        parts: list[Any] = [fn]
        arrays: list[np.ndarray] = []
        items = [(None, a) for a in args] + sorted(kwargs.items())
        for name, value in items:
            if name == "out":
                return None  # the caller's own buffer: its call is not ours to replace
            if isinstance(value, np.ndarray):
                if self._trusted.get(id(value)) is not value:
                    return None
                parts.append((name, "array", id(value)))
                arrays.append(value)
            elif isinstance(value, bool | int | float | str | None | np.generic):
                # the type is part of the key: 20 and 20.0 may take different paths
                parts.append((name, type(value).__name__, value))
            else:
                return None
        return tuple(parts), tuple(arrays)

    def call(self, fn: Callable[..., R], args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> R:
        """Return ``fn(*args, **kwargs)``, from the cache when the same call was made before."""
        found = self._key(fn, args, kwargs)
        if found is None:
            return fn(*args, **kwargs)
        key, inputs = found
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
            self.hits += 1
            return entry.result  # type: ignore[no-any-return]
        entry = self._probation.pop(key, None)
        if entry is not None:  # asked for again: kept from now on
            self._probation_bytes -= entry.nbytes
            self.hits += 1
            self._keep(key, entry)
            return entry.result  # type: ignore[no-any-return]
        self.misses += 1
        result = fn(*args, **kwargs)
        outputs = _arrays_of(result)
        if outputs is None:
            return result
        nbytes = sum(a.nbytes for a in outputs)
        first = key not in self._seen
        if nbytes > (self.max_bytes // PROBATION_SHARE if first else self.max_bytes):
            return result
        for arr in outputs:
            if self._trusted.get(id(arr)) is arr or any(
                np.may_share_memory(arr, x) for x in inputs
            ):
                return result  # an input handed back or a view of one: not ours to freeze
        # Each output is a new array of this entry alone (checked above), frozen and trusted.
        for arr in outputs:
            arr.flags.writeable = False
            self._trusted[id(arr)] = arr
        if not first:
            self._keep(key, _Entry(inputs, result, nbytes))
            return result
        # Kept for good from its second request on: holding results no later trial asks for
        # would only keep memory from being recycled (a strategy whose every call differs).
        # Until then it waits in probation, which holds the last few and a share of the bound.
        self._seen.add(key)
        self._probation[key] = _Entry(inputs, result, nbytes)
        self._probation_bytes += nbytes
        while (
            len(self._probation) > PROBATION_ENTRIES
            or self._probation_bytes > self.max_bytes // PROBATION_SHARE
        ):
            _, old = self._probation.popitem(last=False)
            self._probation_bytes -= old.nbytes
            self._untrust(old)
        return result

    def _keep(self, key: tuple[Any, ...], entry: _Entry) -> None:
        self._entries[key] = entry
        self.nbytes += entry.nbytes
        while self.nbytes > self.max_bytes:
            self._evict()

    def _evict(self) -> None:
        _, entry = self._entries.popitem(last=False)
        self.nbytes -= entry.nbytes
        self._untrust(entry)

    def _untrust(self, entry: _Entry) -> None:
        for arr in _arrays_of(entry.result) or ():
            # no longer held here: its id may go to another array, so it keys nothing
            self._trusted.pop(id(arr), None)

    def clear(self) -> None:
        """Drop every entry and every trusted array."""
        self._entries.clear()
        self._probation.clear()
        self._trusted.clear()
        self._seen.clear()
        self.nbytes = 0
        self._probation_bytes = 0


def _arrays_of(result: Any) -> tuple[np.ndarray, ...] | None:
    """Return the arrays of an indicator result (one array or a tuple of them), else None."""
    if isinstance(result, np.ndarray):
        return (result,)
    if isinstance(result, tuple) and result and all(isinstance(a, np.ndarray) for a in result):
        return tuple(result)
    return None


_ACTIVE: contextvars.ContextVar[IndicatorCache | None] = contextvars.ContextVar(
    "cryptoorchestrator_indicator_cache", default=None
)


def active_cache() -> IndicatorCache | None:
    """Return the cache of the batch being evaluated in this context, or None."""
    return _ACTIVE.get()


@contextmanager
def indicator_cache(max_bytes: int = DEFAULT_MAX_BYTES) -> Iterator[IndicatorCache]:
    """Cache memoised indicator calls for the duration of the ``with`` block (one batch).

    Register the batch's bars with :meth:`IndicatorCache.trust_bars` and give the strategy the
    bars it returns.  The cache is emptied when the block ends, so nothing is reused across
    batches; blocks nest (the inner one is used inside it).
    """
    cache = IndicatorCache(max_bytes)
    token = _ACTIVE.set(cache)
    try:
        yield cache
    finally:
        _ACTIVE.reset(token)
        cache.clear()


class _Memoised(Generic[P, R]):
    """An indicator whose calls go through the active batch cache (see :func:`memoised`)."""

    def __init__(self, fn: Callable[P, R]) -> None:
        functools.update_wrapper(self, fn)
        self._fn = fn

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        cache = _ACTIVE.get()
        if cache is None:
            return self._fn(*args, **kwargs)
        return cache.call(self._fn, args, kwargs)

    def __repr__(self) -> str:
        return f"<memoised {self._fn.__module__}.{self._fn.__qualname__}>"

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # By reference to the indicator: strategies pickled by value (Ray) carry no cache state.
        return memoised, (self._fn,)


def memoised(fn: Callable[P, R]) -> Callable[P, R]:
    """Wrap an indicator function so that its calls go through the active batch cache.

    ``fn`` must be pure: its result depends only on its arguments and it writes into none of
    them (true of every indicator in :mod:`cryptoorchestrator.indicators`).  Without an active
    cache the wrapper calls ``fn`` directly.  The wrapper pickles as ``memoised(fn)``.
    """
    return _Memoised(fn)


def signals_in_batch(
    strategy: Strategy, bars: Any, params: Mapping[str, Any], plain_bars: Any
) -> Signals:
    """Return ``run_signals(strategy, bars, params)`` under the active cache, else without it.

    ``bars`` is what :meth:`IndicatorCache.trust_bars` returned for ``plain_bars``.  If the
    strategy raises under the cache (say, it writes into a read-only indicator output or bar
    column), the trial is evaluated again on ``plain_bars`` with the cache switched off; so a
    trial's signals, or its error, are those of the strategy evaluated alone.

    Raises
    ------
    StrategyError
        If the strategy raises without the cache too.
    """
    try:
        return run_signals(strategy, bars, params)
    except StrategyError:
        if _ACTIVE.get() is None:
            raise
    token = _ACTIVE.set(None)
    try:
        return run_signals(strategy, plain_bars, params)
    finally:
        _ACTIVE.reset(token)
