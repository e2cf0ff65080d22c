"""A live bot's window: the strategy's ``required_window(params)``.

On the window ending at bar t the strategy's last-bar decision must equal its signal at t
computed on the whole history (the backtest's), for every built-in strategy; recursive
indicators must have forgotten their seed to the bit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from cryptoorchestrator.cluster.signals import last_bar_signals, required_window
from cryptoorchestrator.indicators import ema, rsi
from cryptoorchestrator.platform.errors import InvalidInputError
from cryptoorchestrator.platform.strategy.bars import as_bars
from cryptoorchestrator.platform.strategy.base import (
    MAX_LIVE_WINDOW,
    MIN_LIVE_WINDOW,
    Param,
    Signals,
    Strategy,
    check_live_window,
    recursive_memory,
    run_signals,
)
from cryptoorchestrator.strategies.registry import get_strategy

BUNDLED = (
    Path(__file__).resolve().parents[3]
    / "src/cryptoorchestrator/platform/data/bundled/binance_BTC-USDT_1h_2021-2022.parquet"
)


@pytest.fixture(scope="module")
def history() -> dict[str, np.ndarray]:
    """17,500 real BTC/USDT hourly candles (2021-2022) as arrays."""
    table = pq.read_table(BUNDLED)
    return {c: table.column(c).to_numpy().astype(np.float64) for c in table.column_names}


CASES = [
    ("sma_cross", {"fast": 50, "slow": 600}),
    ("sma_cross", {}),
    ("ema_cross", {}),
    ("ema_cross", {"fast": 20, "slow": 200}),
    ("macd_trend", {}),
    ("rsi_reversion", {}),
    ("bollinger_breakout", {}),
    ("atr_stops", {}),
    ("atr_stops", {"trail": False, "tp_mult": 3.0}),
]


@pytest.mark.parametrize(("name", "params"), CASES)
def test_window_decisions_equal_full_history(
    name: str, params: dict[str, Any], history: dict[str, np.ndarray]
) -> None:
    strategy = get_strategy(name)
    checked = strategy.validate_params(params)
    window = required_window(name, params)
    assert window == strategy.required_window(checked) >= MIN_LIVE_WINDOW
    full = run_signals(strategy, as_bars(history), checked)
    live = last_bar_signals(name, params)
    n = len(history["close"])
    ends = range(window, n + 1, 23)
    decisions = 0
    for end in ends:
        got = live({k: v[end - window : end] for k, v in history.items()})
        want = [False if a is None else bool(a[end - 1]) for a in full[:4]]
        assert list(got[:4]) == want, (name, params, end)
        decisions += any(want)
        for got_stop, per_bar in zip(got[4:7], full[4:7], strict=True):
            if per_bar is not None:  # per-bar stops of the last bar: bit for bit
                assert got_stop == per_bar[end - 1] or (
                    math.isnan(got_stop) and math.isnan(per_bar[end - 1])
                )
    assert decisions > 0, "the checked bars must hold decisions"


@pytest.mark.parametrize("period", [12, 26, 200, 500])
def test_ema_forgets_its_seed_to_the_bit(period: int, history: dict[str, np.ndarray]) -> None:
    close = history["close"]
    window = period + recursive_memory(2.0 / (period + 1)) + 1
    full = ema(close, period)
    for end in range(window, len(close) + 1, 211):
        assert ema(close[end - window : end], period)[-2:].tolist() == full[end - 2 : end].tolist()


@pytest.mark.parametrize("period", [14, 100])
def test_wilder_forgets_its_seed_to_the_bit(period: int, history: dict[str, np.ndarray]) -> None:
    close = history["close"]
    window = period + 1 + recursive_memory(1.0 / period) + 1
    full = rsi(close, period)
    for end in range(window, len(close) + 1, 211):
        assert rsi(close[end - window : end], period)[-1] == full[end - 1]


def test_a_short_window_differs_from_full_history(history: dict[str, np.ndarray]) -> None:
    """Why the window matters: 500 bars (the old fixed window) do not converge an EMA(200)."""
    close = history["close"]
    full = ema(close, 200)
    assert ema(close[-500:], 200)[-1] != full[-1]


def test_recursive_memory() -> None:
    # (1 - alpha) ** k < 2 ** -80 first at k
    for alpha in (0.5, 2 / 27, 1 / 14, 2 / 2001):
        k = recursive_memory(alpha)
        assert k * math.log1p(-alpha) <= -80 * math.log(2) < (k - 1) * math.log1p(-alpha)
    assert recursive_memory(1.0) == 1
    with pytest.raises(InvalidInputError):
        recursive_memory(0.0)


def test_sma_cross_window_follows_slow() -> None:
    """slow=600 needs 601 bars: the old fixed 500 never saw a slow SMA, so it never traded."""
    assert required_window("sma_cross", {"fast": 50, "slow": 600}) == 601
    assert required_window("sma_cross", {"fast": 10, "slow": 2000}) == 2001


class Declared(Strategy):
    name = "declared"
    params = (Param("period", "int", 20, low=2, high=5000),)
    warmup = 300

    def signals(self, bars: Any, params: Mapping[str, Any]) -> Signals:
        c = np.asarray(bars.close)
        return Signals(c > 0, c < 0)


class Undeclared(Declared):
    name = "undeclared"
    warmup = 0


def test_default_required_window() -> None:
    assert Declared().required_window({"period": 20}) == 301
    # no warmup: 40 periods of the largest integer parameter (an EMA's seed below 2**-80)
    assert Undeclared().required_window({"period": 4}) == MIN_LIVE_WINDOW
    assert Undeclared().required_window({"period": 20}) == 801
    assert Undeclared().required_window({"period": 100}) == 4001


def test_too_much_history_names_the_parameter() -> None:
    with pytest.raises(InvalidInputError) as err:
        Undeclared().validate_live({"period": 5000})
    assert err.value.field == "params.period"
    assert str(MAX_LIVE_WINDOW) in str(err.value)
    with pytest.raises(InvalidInputError) as err:
        get_strategy("ema_cross").validate_live({"fast": 12, "slow": 2000}, max_window=10_000)
    assert err.value.field == "params.slow"
    # within the limit: the validated parameters
    assert get_strategy("ema_cross").validate_live({"slow": 2000}) == {
        "fast": 12,
        "slow": 2000,
        "short": False,
    }
    strategy = get_strategy("sma_cross")
    assert check_live_window(strategy, strategy.validate_params({"slow": 600})) == 601


class HugeWindow(Undeclared):
    name = "huge_window_for_tests"


@pytest.mark.parametrize("where", ["sdk", "api"])
def test_bot_validators_refuse_a_window_too_long(where: str, monkeypatch: Any) -> None:
    """Creating or updating a bot goes through these: a 422 naming ``params.period``."""
    from cryptoorchestrator.strategies import registry

    monkeypatch.setitem(registry._USER, HugeWindow.name, HugeWindow)  # noqa: SLF001
    from cryptoorchestrator.api.deps import registry_validator
    from cryptoorchestrator.cluster.sdk import strategy_validator

    validate = strategy_validator if where == "sdk" else registry_validator()
    assert validate(HugeWindow.name, {"period": 100}) == {"period": 100}
    with pytest.raises(InvalidInputError) as err:
        validate(HugeWindow.name, {"period": 2000})  # 80,001 bars
    assert err.value.field == "params.period"
