"""Built-in strategies against TA-Lib-computed signals; the registry; look-ahead on every one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import talib

from cryptoorchestrator.platform.errors import InvalidInputError, NotFoundError, StrategyError
from cryptoorchestrator.platform.strategy.bars import Bars, as_bars
from cryptoorchestrator.platform.strategy.base import Strategy
from cryptoorchestrator.platform.strategy.lookahead import check_lookahead
from cryptoorchestrator.strategies.registry import get_strategy, list_strategies, load_strategies

BUILTINS = (
    "sma_cross",
    "ema_cross",
    "rsi_reversion",
    "macd_trend",
    "bollinger_breakout",
    "atr_stops",
)


@pytest.fixture(scope="module")
def bars() -> Bars:
    rng = np.random.default_rng(42)
    n = 3000
    c = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    o = np.r_[c[0], c[:-1]]
    return as_bars(
        {
            "timestamp": 1_609_459_200_000 + np.arange(n) * 3_600_000,
            "open": o,
            "high": np.maximum(o, c) * 1.003,
            "low": np.minimum(o, c) * 0.997,
            "close": c,
            "volume": np.ones(n),
        }
    )


def _up(a: np.ndarray, b: np.ndarray | float) -> np.ndarray:
    b = np.broadcast_to(b, a.shape)
    now = a > b
    before = np.r_[False, a[:-1] <= b[:-1]]
    return now & before


def _down(a: np.ndarray, b: np.ndarray | float) -> np.ndarray:
    b = np.broadcast_to(b, a.shape)
    return (a < b) & np.r_[False, a[:-1] >= b[:-1]]


def test_registry_lists_all_builtins_with_docs() -> None:
    names = list_strategies()
    assert set(BUILTINS) <= set(names)
    for name in BUILTINS:
        strat = get_strategy(name)
        assert strat.name == name
        assert "When it works" in (type(strat).__doc__ or "")
        assert strat.validate_params({}) == strat.defaults()


def test_sma_and_ema_cross_match_talib(bars: Bars) -> None:
    s = get_strategy("sma_cross").signals(bars, {"fast": 10, "slow": 50})
    f, sl = talib.SMA(bars.close, 10), talib.SMA(bars.close, 50)
    np.testing.assert_array_equal(s.long_entries, _up(f, sl))
    np.testing.assert_array_equal(s.long_exits, _down(f, sl))
    e = get_strategy("ema_cross").signals(bars, {"fast": 12, "slow": 26, "short": True})
    f, sl = talib.EMA(bars.close, 12), talib.EMA(bars.close, 26)
    np.testing.assert_array_equal(e.long_entries, _up(f, sl))
    np.testing.assert_array_equal(e.short_entries, _down(f, sl))


def test_rsi_macd_bollinger_atr_match_talib(bars: Bars) -> None:
    c = bars.close
    r = talib.RSI(c, 14)
    s = get_strategy("rsi_reversion").signals(bars, {"period": 14, "lower": 30.0, "upper": 70.0})
    np.testing.assert_array_equal(s.long_entries, _up(r, 30.0))
    np.testing.assert_array_equal(s.long_exits, _up(r, 70.0))
    m, sig, _ = talib.MACD(c, 12, 26, 9)
    s = get_strategy("macd_trend").signals(bars, {"fast": 12, "slow": 26, "signal": 9})
    np.testing.assert_array_equal(s.long_entries, _up(m, sig) & (m > 0))
    np.testing.assert_array_equal(s.long_exits, _down(m, sig))
    up, mid, _ = talib.BBANDS(c, 20, 2.0, 2.0)
    s = get_strategy("bollinger_breakout").signals(bars, {"period": 20, "nbdev": 2.0})
    np.testing.assert_array_equal(s.long_entries, _up(c, up))
    np.testing.assert_array_equal(s.long_exits, _down(c, mid))
    strat = get_strategy("atr_stops")
    s = strat.signals(bars, strat.validate_params({}))
    atr = talib.ATR(bars.high, bars.low, c, 14)
    np.testing.assert_allclose(s.trailing_stop, 2.0 * atr / c, rtol=1e-12, equal_nan=True)
    assert s.stop_loss is None


@pytest.mark.parametrize("name", BUILTINS)
def test_builtins_have_no_lookahead(name: str, bars: Bars) -> None:
    strat = get_strategy(name)
    report = check_lookahead(strat, bars, strat.validate_params({}), n_checks=8)
    assert report.ok, str(report)


def test_cross_parameter_rule_and_unknown_names() -> None:
    with pytest.raises(InvalidInputError, match="fast < slow"):
        get_strategy("sma_cross").validate_params({"fast": 50, "slow": 10})
    with pytest.raises(NotFoundError, match="sma_cross"):
        get_strategy("smacross")
    with pytest.raises(InvalidInputError):
        get_strategy(int)  # type: ignore[arg-type]


def test_user_strategies_from_directory_file_and_module(tmp_path: Path) -> None:
    code = (
        "from cryptoorchestrator.platform.strategy.base import Param, Signals, Strategy\n"
        "import numpy as np\n"
        "class Always(Strategy):\n"
        "    name = 'always_in_user'\n"
        "    params = (Param('x', 'int', 1, low=0, high=5),)\n"
        "    def signals(self, bars, params):\n"
        "        n = len(bars.close)\n"
        "        return Signals(np.ones(n, bool), np.zeros(n, bool))\n"
    )
    (tmp_path / "mine.py").write_text(code)
    assert load_strategies(tmp_path) == ["always_in_user"]
    strat = get_strategy("always_in_user")
    assert isinstance(strat, Strategy)
    assert get_strategy(f"{tmp_path / 'mine.py'}:Always").name == "always_in_user"
    assert "always_in_user" in list_strategies()
    assert get_strategy("cryptoorchestrator.strategies.sma_cross:SmaCross").name == "sma_cross"
    (tmp_path / "bad.py").write_text("raise RuntimeError('boom')\n")
    with pytest.raises(StrategyError, match="boom"):
        load_strategies(tmp_path / "bad.py")
