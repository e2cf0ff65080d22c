"""Every indicator against TA-Lib on real Binance BTC/USDT 1h candles (58,419 bars)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.feather as feather
import pytest
import talib

import cryptoorchestrator.indicators as ci


@pytest.fixture(scope="module")
def candles(shared_data: Path) -> dict[str, np.ndarray]:
    table = feather.read_table(shared_data / "candles" / "binance_BTC_USDT-1h.feather")
    return {
        k: table.column(k).to_numpy().astype(np.float64)
        for k in ("open", "high", "low", "close", "volume")
    }


def test_all_indicators_equal_talib_on_real_candles(candles: dict[str, np.ndarray], same) -> None:  # noqa: ANN001
    h, lo, c, v = candles["high"], candles["low"], candles["close"], candles["volume"]
    assert c.shape[0] == 58_419
    for p in (2, 14, 50):
        same(ci.sma(c, p), talib.SMA(c, p))
        same(ci.ema(c, p), talib.EMA(c, p))
        same(ci.wma(c, p), talib.WMA(c, p))
        same(ci.dema(c, p), talib.DEMA(c, p))
        same(ci.tema(c, p), talib.TEMA(c, p))
        same(ci.trima(c, p), talib.TRIMA(c, p))
        same(ci.kama(c, p), talib.KAMA(c, p))
        same(ci.rsi(c, p), talib.RSI(c, p))
        same(ci.atr(h, lo, c, p), talib.ATR(h, lo, c, p))
        same(ci.natr(h, lo, c, p), talib.NATR(h, lo, c, p))
        same(ci.adx(h, lo, c, p), talib.ADX(h, lo, c, p))
        same(ci.plus_di(h, lo, c, p), talib.PLUS_DI(h, lo, c, p))
        same(ci.minus_di(h, lo, c, p), talib.MINUS_DI(h, lo, c, p))
        same(ci.cci(h, lo, c, p), talib.CCI(h, lo, c, p))
        same(ci.willr(h, lo, c, p), talib.WILLR(h, lo, c, p))
        same(ci.mfi(h, lo, c, v, p), talib.MFI(h, lo, c, v, p))
        same(ci.roc(c, p), talib.ROC(c, p))
        same(ci.mom(c, p), talib.MOM(c, p))
        same(ci.rolling_max(c, p), talib.MAX(c, p))
        same(ci.rolling_min(c, p), talib.MIN(c, p))
        for ours, ref in zip(ci.bbands(c, p), talib.BBANDS(c, p), strict=True):
            same(ours, ref)
    for ours, ref in zip(ci.macd(c), talib.MACD(c), strict=True):
        same(ours, ref)
    for ours, ref in zip(ci.stoch(h, lo, c), talib.STOCH(h, lo, c), strict=True):
        same(ours, ref)
    for ours, ref in zip(ci.stochrsi(c), talib.STOCHRSI(c), strict=True):
        same(ours, ref)
    same(ci.trange(h, lo, c), talib.TRANGE(h, lo, c))
    same(ci.obv(c, v), talib.OBV(c, v))
    same(ci.sar(h, lo), talib.SAR(h, lo))
