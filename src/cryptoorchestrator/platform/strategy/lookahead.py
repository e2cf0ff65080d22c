"""Look-ahead check: a signal at bar t must not change when the bars after t are removed.

For a prefix of the history ending at bar ``T`` (``bars[:T+1]``), every signal and per-bar stop
at bars ``0..T`` must equal the full-history run's.  :func:`check_lookahead` runs the strategy on
many such prefixes and reports the earliest bar whose value differs.  It is a test over the prefix
ends it tries, not a proof.

Which prefix ends, and why
--------------------------
A leak that reads ``k`` bars ahead shows, on the prefix ending at ``T``, only at bars
``T-k+1..T``.  The common leak reads the next bar (``k = 1``): it shows only on the prefix ending
exactly at the leaking bar, so one prefix cannot stand in for several candidate bars, and checking
every bar costs ``n`` prefix runs of average length ``n/2``.  By default the check therefore tries
the bars where a leak can change what is traded:

* every bar where a full-history signal (long or short entries or exits) or the presence of a stop
  (set or NaN) differs from the bar before, and the bar before it: for a one-bar signal at ``p``
  that is ``p-1``, ``p`` and ``p+1``, so a leak that creates, moves or alters a signal is on a
  tried bar.  The engine reads a per-bar stop only at the entry bar of the position it opens, and
  entry bars are tried, so a leak in a stop that changes a trade is on a tried bar too;
* the first and last few bars, and ``n_checks`` bars spread evenly.

Each prefix run is compared with the full run at all of its bars in one vectorised pass (bars are
views, not copies), so a leak that reads further ahead is also caught at earlier bars; the
earliest differing bar over all prefixes is reported, no search needed.  Once a bad bar is found,
later prefixes are only compared before it.

What the default cannot see: a leak that only *deletes* a signal at a bar with no full-history
change beside it leaves no trace in the full run (e.g. "skip entries before a crash" written so that
an unknown next bar keeps the entry).  ``every_bar=True`` tries every prefix end and catches it,
at quadratic cost.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cryptoorchestrator.platform.errors import InvalidInputError
from cryptoorchestrator.platform.strategy.bars import Bars
from cryptoorchestrator.platform.strategy.base import Signals, Strategy, run_signals

_SIGNAL_FIELDS = ("long_entries", "long_exits", "short_entries", "short_exits")
_STOP_FIELDS = ("stop_loss", "take_profit", "trailing_stop")
_FIELDS = _SIGNAL_FIELDS + _STOP_FIELDS
#: Prefix ends always tried at each end of the history (off-by-one leaks cluster there).
_EDGE = 3


@dataclass(frozen=True)
class LookaheadReport:
    """Outcome of :func:`check_lookahead`.

    ``checked_cuts`` are the prefix ends tried (the last bar kept, ascending);
    ``first_bad_bar`` is the earliest bar whose signal or stop changed when later bars were
    removed (``None`` if none), ``signal`` the field that changed there, ``cut`` the last bar of
    the prefix that revealed it, ``timestamp`` that bar's time in ms, ``details`` the values on
    both sides, ``n_bars`` the bars checked and ``every_bar`` whether every prefix end was tried.
    """

    strategy: str
    params: dict[str, Any]
    ok: bool
    checked_cuts: tuple[int, ...]
    first_bad_bar: int | None = None
    signal: str | None = None
    cut: int | None = None
    timestamp: int | None = None
    details: list[str] = field(default_factory=list)
    n_bars: int = 0
    every_bar: bool = False

    def __str__(self) -> str:
        if self.ok and self.every_bar:
            return (
                f"{self.strategy} {self.params}: no look-ahead found at any of the "
                f"{len(self.checked_cuts)} prefix ends of {self.n_bars} bars"
            )
        if self.ok:
            return (
                f"{self.strategy} {self.params}: no look-ahead found at the "
                f"{len(self.checked_cuts)} prefix ends tried of {self.n_bars} bars (each bar where "
                "a signal or stop changes and the bar before, the first and last bars, evenly "
                "spread samples); other bars were not tried (every_bar=True or --every-bar tries "
                "them all)"
            )
        return (
            f"{self.strategy} {self.params}: LOOK-AHEAD at bar {self.first_bad_bar} "
            f"(timestamp {self.timestamp}): {self.signal} changed when the bars after bar "
            f"{self.cut} were removed"
        )


def _values(sig: Signals, name: str, n: int) -> np.ndarray:
    """Return field ``name`` of ``sig`` over its first ``n`` bars (``None``: never / no stop)."""
    arr = getattr(sig, name)
    if arr is None:
        return np.full(n, np.nan) if name in _STOP_FIELDS else np.zeros(n, dtype=np.bool_)
    return np.asarray(arr)[:n]


def _changes(arr: np.ndarray) -> np.ndarray:
    """Return the bars where a signal (or whether a stop is set) differs from the bar before.

    Bar 0 counts as a change when the signal is on (or the stop set) there.
    """
    on = arr if arr.dtype == np.bool_ else ~np.isnan(arr)
    before = np.empty_like(on)
    before[0] = False
    before[1:] = on[:-1]
    return np.flatnonzero(on != before)


def _first_diff(a: np.ndarray, b: np.ndarray) -> int:
    """Return the first index where ``a`` and ``b`` differ (NaN equals NaN), or -1."""
    if a.dtype == np.bool_:
        if np.array_equal(a, b):
            return -1
        return int(np.flatnonzero(a != b)[0])
    # Equal bits are equal values: one cheap pass settles the usual case.
    if np.array_equal(a.view(np.uint64), b.view(np.uint64)):
        return -1
    bad = np.flatnonzero((a != b) & ~(np.isnan(a) & np.isnan(b)))
    return int(bad[0]) if bad.size else -1


def _show(arr: np.ndarray, bar: int) -> str:
    value = arr[bar]
    return str(bool(value)) if arr.dtype == np.bool_ else repr(float(value))


def lookahead_cuts(
    full: Signals, n: int, *, n_checks: int = 20, min_bars: int = 1, every_bar: bool = False
) -> np.ndarray:
    """Return the prefix ends :func:`check_lookahead` tries, ascending (see the module notes).

    Parameters
    ----------
    full
        The strategy's signals over all ``n`` bars.
    n
        Number of bars.
    n_checks
        Evenly spread prefix ends added to the event bars.
    min_bars
        Shortest prefix tried: the first prefix end is bar ``min_bars - 1``.
    every_bar
        Try every prefix end instead.
    """
    lo, hi = min_bars - 1, n - 2  # the prefix ending at bar n-1 is the full history
    if hi < lo:
        return np.zeros(0, dtype=np.int64)
    if every_bar:
        return np.arange(lo, hi + 1, dtype=np.int64)
    parts = [
        np.arange(lo, min(lo + _EDGE, hi + 1)),
        np.arange(max(lo, hi - _EDGE + 1), hi + 1),
        np.linspace(lo, hi, num=max(n_checks, 0)).round().astype(np.int64),
    ]
    for name in _FIELDS:
        arr = getattr(full, name)
        if arr is not None:
            at = _changes(np.asarray(arr))
            parts += [at, at - 1]
    cuts = np.unique(np.concatenate(parts).astype(np.int64))
    return cuts[(cuts >= lo) & (cuts <= hi)]


def check_lookahead(
    strategy: Strategy,
    bars: Bars,
    params: Mapping[str, Any],
    *,
    n_checks: int = 20,
    min_bars: int = 1,
    every_bar: bool = False,
) -> LookaheadReport:
    """Test on ``bars`` that signals and stops ignore later bars; name the first bad bar.

    The strategy is run on the full history and on prefixes ending at the bars chosen by
    :func:`lookahead_cuts`: every bar where a signal or stop changes and the bar before it, the
    first and last bars and ``n_checks`` spread bars (or every bar).  A clean report means no
    leak showed at those prefix ends, not that none exists elsewhere.

    Parameters
    ----------
    strategy, bars, params
        The strategy, validated bars and validated parameters.
    n_checks
        Evenly spread prefix ends added to the event bars.
    min_bars
        Shortest prefix tried (1: from the first bar on).
    every_bar
        Try every prefix end: also catches leaks that only delete a signal, at a cost quadratic
        in the number of bars.

    Raises
    ------
    InvalidInputError
        If ``n_checks`` is negative or ``min_bars`` below 1.
    StrategyError
        If the strategy raises on the history or on a prefix.
    """
    if n_checks < 0:
        raise InvalidInputError("n_checks", f"{n_checks} is negative", allowed=">= 0")
    if min_bars < 1:
        raise InvalidInputError("min_bars", f"{min_bars} is below 1", allowed=">= 1")
    n = len(bars)
    name = strategy.name or type(strategy).__name__
    full = run_signals(strategy, bars, params)
    whole = {f: _values(full, f, n) for f in _FIELDS}
    cuts = lookahead_cuts(full, n, n_checks=n_checks, min_bars=min_bars, every_bar=every_bar)
    best: tuple[int, str, int] | None = None
    details: list[str] = []
    tried = 0
    for cut in cuts.tolist():
        # Only bars before the best found so far can still improve on it.
        limit = cut + 1 if best is None else min(cut + 1, best[0])
        if limit <= 0:
            break
        tried += 1
        part = run_signals(strategy, bars.slice(0, cut + 1), params)
        for sig_name in _FIELDS:
            if getattr(full, sig_name) is None and getattr(part, sig_name) is None:
                continue
            ours = _values(part, sig_name, limit)
            bar = _first_diff(whole[sig_name][:limit], ours)
            if bar >= 0:
                best, limit = (bar, sig_name, cut), bar
                details = [
                    f"{sig_name} at bar {bar}: {_show(whole[sig_name], bar)} with the full "
                    f"history, {_show(ours, bar)} with bars 0..{cut}"
                ]
    checked = tuple(cuts[:tried].tolist())
    if best is None:
        return LookaheadReport(name, dict(params), True, checked, n_bars=n, every_bar=every_bar)
    bar, sig_name, cut = best
    return LookaheadReport(
        name,
        dict(params),
        False,
        checked,
        bar,
        sig_name,
        cut,
        int(bars.timestamp[bar]),
        details,
        n_bars=n,
        every_bar=every_bar,
    )
