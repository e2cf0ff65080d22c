"""Look-ahead check: signals up to bar t must not change when bars after t are removed.

The strategy is run once on the full history and again on prefixes ending at ``n_checks``
cut points spread over the history (plus the last warm-up bars); every signal of a prefix must
equal the full run's signal on the same bars.  The first offending bar is reported.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cryptoorchestrator.platform.strategy.bars import Bars
from cryptoorchestrator.platform.strategy.base import Signals, Strategy, run_signals

_FIELDS = (
    "long_entries",
    "long_exits",
    "short_entries",
    "short_exits",
    "stop_loss",
    "take_profit",
    "trailing_stop",
)


@dataclass(frozen=True)
class LookaheadReport:
    """Outcome of :func:`check_lookahead`.

    ``first_bad_bar`` is the earliest bar whose signal changed when later bars were removed
    (``None`` if none), ``signal`` the signal that changed there, ``cut`` the prefix end that
    revealed it, and ``timestamp`` that bar's time in ms.
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

    def __str__(self) -> str:
        if self.ok:
            return (
                f"{self.strategy} {self.params}: no look-ahead found "
                f"({len(self.checked_cuts)} cut points)"
            )
        return (
            f"{self.strategy} {self.params}: LOOK-AHEAD at bar {self.first_bad_bar} "
            f"(timestamp {self.timestamp}): {self.signal} changed when bars after "
            f"{self.cut} were removed"
        )


def _values(sig: Signals, name: str, n: int) -> np.ndarray:
    arr = getattr(sig, name)
    if arr is None:
        return np.zeros(
            n, dtype=np.float64 if name.endswith(("loss", "profit", "stop")) else np.bool_
        )
    return np.asarray(arr)[:n]


def check_lookahead(
    strategy: Strategy,
    bars: Bars,
    params: Mapping[str, Any],
    *,
    n_checks: int = 20,
    min_bars: int = 2,
) -> LookaheadReport:
    """Prove on ``bars`` that the strategy's signals are causal, or name the first bad bar.

    Parameters
    ----------
    strategy, bars, params
        The strategy, validated bars and validated parameters.
    n_checks
        Number of prefix cut points, spread evenly (more: slower, finer).
    min_bars
        Shortest prefix tried.
    """
    n = len(bars)
    name = strategy.name or type(strategy).__name__
    full = run_signals(strategy, bars, params)
    cuts_set = {int(c) for c in np.linspace(min_bars, n - 1, num=max(2, n_checks)).round()}
    cuts_set |= {max(min_bars, n - 2), max(min_bars, n // 2 + 1)}
    cuts = tuple(sorted(c for c in cuts_set if min_bars <= c < n))
    first_bad: tuple[int, str, int] | None = None
    for cut in cuts:
        part = run_signals(strategy, bars.slice(0, cut), params)
        for sig_name in _FIELDS:
            a = _values(full, sig_name, cut)
            b = _values(part, sig_name, cut)
            if a.dtype.kind == "f" or b.dtype.kind == "f":
                diff = ~((a == b) | (np.isnan(a.astype(float)) & np.isnan(b.astype(float))))
            else:
                diff = a != b
            bad = np.flatnonzero(diff)
            if bad.size and (first_bad is None or bad[0] < first_bad[0]):
                first_bad = (int(bad[0]), sig_name, cut)
    if first_bad is None:
        return LookaheadReport(name, dict(params), True, cuts)
    bar, sig_name, cut = first_bad
    return LookaheadReport(
        name, dict(params), False, cuts, bar, sig_name, cut, int(bars.timestamp[bar])
    )
