"""The look-ahead checker: sparse leaks, leaks through stops, leaks at the ends, clean built-ins.

Every expected first bad bar is computed here from the prices, independently of the checker: a
leak that reads the next close can only show on the prefix that ends at the leaking bar, where the
strategy falls back to its causal value.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import pytest

from cryptoorchestrator.indicators import crossings, sma
from cryptoorchestrator.platform.errors import InvalidInputError
from cryptoorchestrator.platform.strategy.bars import Bars, as_bars
from cryptoorchestrator.platform.strategy.base import Param, Signals, Strategy, run_signals
from cryptoorchestrator.platform.strategy.lookahead import check_lookahead, lookahead_cuts
from cryptoorchestrator.strategies import registry
from cryptoorchestrator.strategies.registry import get_strategy


def _next_move(close: np.ndarray) -> np.ndarray:
    """Return the next bar's close-to-close return at each bar (NaN at the last bar)."""
    out = np.full(close.shape[0], np.nan)
    out[:-1] = close[1:] / close[:-1] - 1.0
    return out


def _sma_cross(close: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    le, lx = crossings(sma(close, 10), sma(close, 50))
    return np.array(le, dtype=bool), np.array(lx, dtype=bool)


class SparseLeak(Strategy):
    """SMA cross that peeks at the next close before big moves (buys before jumps, sells before
    drops): it knows the next close only when there is one, so a prefix gets the causal signal."""

    name = "sparse_leak"
    params = (Param("move", "float", 0.03, low=0.001, high=0.5),)

    def signals(self, bars: Any, params: Mapping[str, Any]) -> Signals:
        close = np.asarray(bars.close)
        le, lx = _sma_cross(close)
        nxt = _next_move(close)
        big = np.abs(nxt) > params["move"]  # NaN (the last bar) is never big
        le[big] = nxt[big] > 0
        lx[big] = nxt[big] < 0
        return Signals(le, lx)


class DropFilter(Strategy):
    """SMA cross that drops entries before a crash; an unknown next bar keeps the entry, so the
    leak only deletes signals and leaves no trace in the full-history run."""

    name = "drop_filter"

    def signals(self, bars: Any, params: Mapping[str, Any]) -> Signals:
        close = np.asarray(bars.close)
        le, lx = _sma_cross(close)
        crash = _next_move(close) < -0.01  # NaN < x is False: the last bar keeps its entry
        return Signals(le & ~crash, lx)


class StopLeak(Strategy):
    """SMA cross entries whose stop is sized from the next bar's move (a 2 % stop when unknown)."""

    name = "stop_leak"
    field: ClassVar[str] = "stop_loss"

    def signals(self, bars: Any, params: Mapping[str, Any]) -> Signals:
        close = np.asarray(bars.close)
        le, lx = _sma_cross(close)
        stop = np.full(close.shape[0], 0.02)
        nxt = np.abs(_next_move(close))
        peek = le & ~np.isnan(nxt)
        stop[peek] = nxt[peek] + 0.001  # just wide enough to survive the next bar
        return Signals(le, lx, **{self.field: stop})


class WindowLeak(Strategy):
    """No signals, except that bars with open time in ``[start, end]`` buy before an up bar."""

    name = "window_leak"
    start: ClassVar[int] = 0
    end: ClassVar[int] = 0

    def signals(self, bars: Any, params: Mapping[str, Any]) -> Signals:
        close = np.asarray(bars.close)
        ts = np.asarray(bars.timestamp)
        nxt = _next_move(close)
        peek = (ts >= self.start) & (ts <= self.end) & ~np.isnan(nxt)
        return Signals(peek & (nxt > 0), peek & (nxt <= 0))


class ExitAtEnd(Strategy):
    """SMA cross that also exits on the last bar it is given: live, it would exit on every bar."""

    name = "exit_at_end"

    def signals(self, bars: Any, params: Mapping[str, Any]) -> Signals:
        le, lx = _sma_cross(np.asarray(bars.close))
        lx[-1] = True
        return Signals(le, lx)


def _synthetic(n: int, sigma: float, seed: int) -> Bars:
    rng = np.random.default_rng(seed)
    c = 100 * np.exp(np.cumsum(rng.normal(0, sigma, n)))
    o = np.r_[c[0], c[:-1]]
    return as_bars(
        {
            "timestamp": 1_600_000_000_000 + np.arange(n) * 3_600_000,
            "open": o,
            "high": np.maximum(o, c) * 1.002,
            "low": np.minimum(o, c) * 0.998,
            "close": c,
            "volume": np.ones(n),
        }
    )


@pytest.fixture(scope="module")
def bars20k() -> Bars:
    """20,000 hourly bars volatile enough for a few hundred moves above 3 %."""
    return _synthetic(20_000, 0.0136, 17)


@pytest.fixture
def real(candles: Any) -> Bars:
    return as_bars(candles)


def _expected_sparse(bars: Bars, move: float) -> int:
    close = np.asarray(bars.close)
    le, lx = _sma_cross(close)
    nxt = _next_move(close)
    big = np.abs(nxt) > move
    changed = big & (((nxt > 0) != le) | ((nxt < 0) != lx))
    assert changed.any()
    return int(np.flatnonzero(changed)[0])


def test_sparse_next_close_leak_named_at_its_first_bar(bars20k: Bars) -> None:
    strat = SparseLeak()
    big = np.abs(_next_move(np.asarray(bars20k.close))) > 0.03
    assert 300 < int(big.sum()) < 1000  # sparse: a few percent of the bars
    expected = _expected_sparse(bars20k, 0.03)
    report = check_lookahead(strat, bars20k, strat.validate_params({}))
    assert not report.ok
    assert report.first_bad_bar == expected
    assert report.cut == expected  # a next-bar peek shows only on the prefix ending there
    assert report.signal in ("long_entries", "long_exits")
    assert report.timestamp == int(bars20k.timestamp[expected])
    assert f"LOOK-AHEAD at bar {expected}" in str(report)
    assert report.details
    assert f"at bar {expected}" in report.details[0]


@pytest.mark.parametrize("move", [0.01, 0.02])
def test_sparse_leak_on_real_candles(real: Bars, move: float) -> None:
    strat = SparseLeak()
    expected = _expected_sparse(real, move)
    report = check_lookahead(strat, real, strat.validate_params({"move": move}))
    assert report.first_bad_bar == expected
    assert report.timestamp == int(real.timestamp[expected])


@pytest.mark.parametrize("field", ["stop_loss", "take_profit", "trailing_stop"])
def test_leak_through_a_stop_is_named(real: Bars, field: str) -> None:
    strat = type("Leak", (StopLeak,), {"field": field})()
    le, _ = _sma_cross(np.asarray(real.close))
    le[-1] = False  # the last bar has no next bar to peek at
    expected = int(np.flatnonzero(le)[0])
    report = check_lookahead(strat, real, {})
    assert report.first_bad_bar == expected
    assert report.signal == field
    assert report.cut == expected


@pytest.mark.parametrize("where", ["first", "last"])
def test_leak_only_at_the_ends(real: Bars, where: str) -> None:
    n = len(real)
    bad = (0, 1) if where == "first" else (n - 2, n - 2)
    strat = type(
        "Edge",
        (WindowLeak,),
        {"start": int(real.timestamp[bad[0]]), "end": int(real.timestamp[bad[1]])},
    )()
    report = check_lookahead(strat, real, {})
    assert report.first_bad_bar == bad[0]
    assert report.cut == bad[0]


def test_signal_on_the_last_given_bar_is_named_at_bar_zero(real: Bars) -> None:
    report = check_lookahead(ExitAtEnd(), real, {})
    assert report.first_bad_bar == 0
    assert report.signal == "long_exits"


def test_leak_that_only_deletes_signals_needs_every_bar() -> None:
    bars = _synthetic(3000, 0.01, 5)
    close = np.asarray(bars.close)
    le, _ = _sma_cross(close)
    suppressed = le & (_next_move(close) < -0.01)
    assert suppressed.any()
    expected = int(np.flatnonzero(suppressed)[0])
    report = check_lookahead(DropFilter(), bars, {}, every_bar=True)
    assert report.first_bad_bar == expected
    assert report.signal == "long_entries"
    assert report.every_bar


def test_cuts_cover_each_signal_change_and_the_bar_before(real: Bars) -> None:
    strat = get_strategy("sma_cross")
    full = run_signals(strat, real, strat.validate_params({}))
    cuts = set(lookahead_cuts(full, len(real), n_checks=0).tolist())
    n = len(real)
    assert {0, 1, 2, n - 4, n - 3, n - 2} <= cuts
    assert n - 1 not in cuts  # that prefix is the full history
    for arr in (full.long_entries, full.long_exits):
        assert arr is not None
        for p in np.flatnonzero(arr):
            assert {p - 1, p, p + 1} & set(range(n - 1)) <= cuts
    every = lookahead_cuts(full, n, every_bar=True)
    assert every.tolist() == list(range(n - 1))


def _clean_cases() -> list[tuple[str, dict[str, Any]]]:
    cases: list[tuple[str, dict[str, Any]]] = [(name, {}) for name in sorted(registry._BUILTINS)]
    cases.append(("atr_stops", {"trail": False, "tp_mult": 3.0}))  # stop_loss and take_profit
    return cases


@pytest.mark.parametrize(("name", "params"), _clean_cases())
def test_builtins_are_clean_at_every_bar(real: Bars, name: str, params: dict[str, Any]) -> None:
    strat = get_strategy(name)
    checked = strat.validate_params(params)
    report = check_lookahead(strat, real, checked)
    assert report.ok, str(report)
    assert "not tried" in str(report)
    report = check_lookahead(strat, real, checked, every_bar=True)
    assert report.ok, str(report)
    assert len(report.checked_cuts) == len(real) - 1


@pytest.mark.parametrize(
    ("kwargs", "field"), [({"n_checks": -1}, "n_checks"), ({"min_bars": 0}, "min_bars")]
)
def test_bad_arguments_name_the_field(kwargs: dict[str, int], field: str) -> None:
    with pytest.raises(InvalidInputError) as err:
        check_lookahead(ExitAtEnd(), _synthetic(100, 0.01, 1), {}, **kwargs)  # type: ignore[arg-type]
    assert err.value.field == field
