"""Edge cases: near-flat windows against TA-Lib's scaled zero test, batch rows after inf, out=.

TA-Lib 0.8 treats ``highest - lowest`` (STOCH, STOCHRSI, WILLR), a typical-price move (MFI) and
CCI's deviations as zero within ``1e-14`` of the magnitude of the values they came from
(``TA_IS_ZERO_SCALED``). The inputs here put those differences a few ulps either side of that
boundary and compare bit for bit, including the sign of zero.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import talib

import cryptoorchestrator.indicators as ci
from cryptoorchestrator.indicators import IndicatorInputError


def _bits(a: Any) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float64).view(np.int64)


def _assert_bits(ours: Any, ref: Any) -> None:
    if isinstance(ref, tuple | list):
        assert len(ours) == len(ref)
        for o, r in zip(ours, ref, strict=True):
            np.testing.assert_array_equal(_bits(o), _bits(r))
    else:
        np.testing.assert_array_equal(_bits(ours), _bits(ref))


def _near_flat(base: float, rel: float, seed: int, n: int = 60) -> tuple[np.ndarray, ...]:
    # Moves and ranges of whole multiples of ``rel * base``: ranges straddle 1e-14 * 2 * base.
    rng = np.random.default_rng(seed)
    step = rel * base
    close = base + np.cumsum(rng.integers(-1, 2, n) * step)
    high = close + rng.integers(0, 2, n) * step
    low = close - rng.integers(0, 2, n) * step
    volume = rng.integers(1, 4, n).astype(np.float64)
    return high, low, close, volume


NEAR_FLAT = {
    "stoch": (lambda h, lo, c, v: ci.stoch(h, lo, c), lambda h, lo, c, v: talib.STOCH(h, lo, c)),
    "stoch_fast": (
        lambda h, lo, c, v: ci.stoch(h, lo, c, 5, 1, 0, 1, 0),
        lambda h, lo, c, v: talib.STOCH(h, lo, c, fastk_period=5, slowk_period=1, slowd_period=1),
    ),
    "stochrsi": (lambda h, lo, c, v: ci.stochrsi(c), lambda h, lo, c, v: talib.STOCHRSI(c)),
    "willr": (lambda h, lo, c, v: ci.willr(h, lo, c), lambda h, lo, c, v: talib.WILLR(h, lo, c)),
    "cci": (lambda h, lo, c, v: ci.cci(h, lo, c), lambda h, lo, c, v: talib.CCI(h, lo, c)),
    "mfi": (lambda h, lo, c, v: ci.mfi(h, lo, c, v), lambda h, lo, c, v: talib.MFI(h, lo, c, v)),
}


@pytest.mark.parametrize("name", sorted(NEAR_FLAT))
@pytest.mark.parametrize("base", [30_000.0, 123.456, 1.0, 0.1, 3e-7])
def test_near_flat_windows_equal_talib_bit_for_bit(name: str, base: float) -> None:
    ours, ref = NEAR_FLAT[name]
    for rel in np.geomspace(2e-15, 5e-14, 25):
        for seed in range(3):
            bars = _near_flat(base, float(rel), seed)
            _assert_bits(ours(*bars), ref(*bars))


def test_tiny_range_at_a_high_price_is_a_range_not_zero() -> None:
    # Close ~30000 with a 1e-9 range: 1.7e-14 of |high| + |low|, outside TA-Lib's dead zone.
    # The former 1e-12 relative tolerance read it as flat (0); TA-Lib gives 100 and 166.67.
    n = 40
    base = 30_000.0
    high = np.full(n, base)
    low = np.full(n, base)
    close = np.full(n, base)
    high[20:] = close[20:] = base + 1e-9
    k, _ = ci.stoch(high, low, close, 5, 1, 0, 1, 0)
    assert k[20] == 100.0
    _assert_bits(
        k, talib.STOCH(high, low, close, fastk_period=5, slowk_period=1, slowd_period=1)[0]
    )
    assert ci.willr(high, low, close)[20] == -0.0
    _assert_bits(ci.willr(high, low, close), talib.WILLR(high, low, close))
    volume = np.ones(n)
    mfi = ci.mfi(high, low, close, volume)
    assert mfi[20] == 100.0
    _assert_bits(mfi, talib.MFI(high, low, close, volume))


def test_small_cci_deviation_at_a_high_price_is_not_zero() -> None:
    # A 1e-8 step at 30000: the mean deviation (~9e-10) is 3e-14 of the average, outside
    # TA-Lib's dead zone; the former test (1e-12 of the average, against the deviations' sum)
    # returned 0 where TA-Lib gives about (13/14) / (0.015 * 26/196) = 466.67.
    n = 40
    base = 30_000.0
    high = np.full(n, base)
    low = np.full(n, base)
    close = np.full(n, base)
    high[20:] = close[20:] = base + 1e-8
    cci = ci.cci(high, low, close)
    assert cci[20] == pytest.approx(466.67, rel=0.01)  # rounding of the 1e-8 step at 30000
    _assert_bits(cci, talib.CCI(high, low, close))


def test_a_range_inside_the_dead_zone_reads_zero_as_talib() -> None:
    n = 40
    base = 30_000.0
    high = np.full(n, base)
    low = np.full(n, base)
    close = np.full(n, base)
    high[20:] = close[20:] = np.nextafter(np.nextafter(base, np.inf), np.inf)  # 2 ulp
    k, _ = ci.stoch(high, low, close, 5, 1, 0, 1, 0)
    assert k[20] == 0.0
    assert not np.signbit(ci.willr(high, low, close)[20])
    _assert_bits(ci.willr(high, low, close), talib.WILLR(high, low, close))
    _assert_bits(ci.cci(high, low, close), talib.CCI(high, low, close))


# ----------------------------------------------------------------------- batch rows after inf

SPECIALS = [
    [(0, np.inf)],
    [(2, np.inf)],
    [(5, -np.inf), (40, np.nan)],
    [(45, np.inf), (46, -np.inf)],
    [(100, np.nan), (150, np.inf)],
    [(299, np.inf)],
    [(3, np.nan), (60, np.inf), (61, np.inf), (250, -np.inf)],
]


@pytest.mark.parametrize("specials", SPECIALS)
def test_batch_rows_equal_single_kernels_after_inf_and_nan(
    specials: list[tuple[int, float]],
) -> None:
    rng = np.random.default_rng(len(specials))
    x = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, 300)))
    for i, value in specials:
        x[i] = value
    # 13 rows: a group of 8, one of 4 and a single row, each a path of its own.
    periods = [1, 2, 3, 5, 7, 10, 14, 20, 30, 50, 4, 6, 9]
    for batch, single, ps in (
        (ci.sma_batch, ci.sma, periods),
        (ci.ema_batch, ci.ema, periods),
        (ci.rsi_batch, ci.rsi, [p for p in periods if p > 1]),
    ):
        out = batch(x, ps)
        for row, p in zip(out, ps, strict=True):
            np.testing.assert_array_equal(row, single(x, p))
    # While an inf is inside the window the average is that inf, as TA-Lib's.
    np.testing.assert_array_equal(ci.sma_batch(x, periods)[5], talib.SMA(x, 10))


# ------------------------------------------------------------------------------- out= aliasing

RNG = np.random.default_rng(8)
_C = 100.0 * np.exp(np.cumsum(RNG.normal(0.0, 0.01, 200)))
_H = _C * 1.002
_L = _C * 0.998
_V = RNG.random(200) * 10 + 1
_TS = 1_700_000_000_000 + np.arange(200, dtype=np.int64) * 3_600_000


def _fresh() -> dict[str, np.ndarray]:
    return {"h": _H.copy(), "l": _L.copy(), "c": _C.copy(), "v": _V.copy()}


# name -> (call(inputs, out), names of the inputs it reads, number of outputs)
Call = Callable[[dict[str, np.ndarray], Any], Any]
OUT_FUNCTIONS: dict[str, tuple[Call, tuple[str, ...], int]] = {
    "sma": (lambda a, out: ci.sma(a["c"], 10, out=out), ("c",), 1),
    "ema": (lambda a, out: ci.ema(a["c"], 10, out=out), ("c",), 1),
    "wma": (lambda a, out: ci.wma(a["c"], 10, out=out), ("c",), 1),
    "dema": (lambda a, out: ci.dema(a["c"], 10, out=out), ("c",), 1),
    "tema": (lambda a, out: ci.tema(a["c"], 10, out=out), ("c",), 1),
    "trima": (lambda a, out: ci.trima(a["c"], 10, out=out), ("c",), 1),
    "kama": (lambda a, out: ci.kama(a["c"], 10, out=out), ("c",), 1),
    "ma": (lambda a, out: ci.ma(a["c"], 10, 2, out=out), ("c",), 1),
    "rsi": (lambda a, out: ci.rsi(a["c"], 14, out=out), ("c",), 1),
    "roc": (lambda a, out: ci.roc(a["c"], 10, out=out), ("c",), 1),
    "mom": (lambda a, out: ci.mom(a["c"], 10, out=out), ("c",), 1),
    "rolling_max": (lambda a, out: ci.rolling_max(a["c"], 10, out=out), ("c",), 1),
    "rolling_min": (lambda a, out: ci.rolling_min(a["c"], 10, out=out), ("c",), 1),
    "bbands": (lambda a, out: ci.bbands(a["c"], 20, out=out), ("c",), 3),
    "macd": (lambda a, out: ci.macd(a["c"], out=out), ("c",), 3),
    "stochrsi": (lambda a, out: ci.stochrsi(a["c"], out=out), ("c",), 2),
    "stoch": (lambda a, out: ci.stoch(a["h"], a["l"], a["c"], out=out), ("h", "l", "c"), 2),
    "willr": (lambda a, out: ci.willr(a["h"], a["l"], a["c"], out=out), ("h", "l", "c"), 1),
    "cci": (lambda a, out: ci.cci(a["h"], a["l"], a["c"], out=out), ("h", "l", "c"), 1),
    "mfi": (
        lambda a, out: ci.mfi(a["h"], a["l"], a["c"], a["v"], out=out),
        ("h", "l", "c", "v"),
        1,
    ),
    "adx": (lambda a, out: ci.adx(a["h"], a["l"], a["c"], out=out), ("h", "l", "c"), 1),
    "plus_di": (lambda a, out: ci.plus_di(a["h"], a["l"], a["c"], out=out), ("h", "l", "c"), 1),
    "minus_di": (lambda a, out: ci.minus_di(a["h"], a["l"], a["c"], out=out), ("h", "l", "c"), 1),
    "trange": (lambda a, out: ci.trange(a["h"], a["l"], a["c"], out=out), ("h", "l", "c"), 1),
    "atr": (lambda a, out: ci.atr(a["h"], a["l"], a["c"], out=out), ("h", "l", "c"), 1),
    "natr": (lambda a, out: ci.natr(a["h"], a["l"], a["c"], out=out), ("h", "l", "c"), 1),
    "sar": (lambda a, out: ci.sar(a["h"], a["l"], out=out), ("h", "l"), 1),
    "obv": (lambda a, out: ci.obv(a["c"], a["v"], out=out), ("c", "v"), 1),
    "vwap": (
        lambda a, out: ci.vwap(a["h"], a["l"], a["c"], a["v"], out=out),
        ("h", "l", "c", "v"),
        1,
    ),
    "session_vwap": (
        lambda a, out: ci.session_vwap(a["h"], a["l"], a["c"], a["v"], _TS, out=out),
        ("h", "l", "c", "v"),
        1,
    ),
}


def _expected(name: str) -> Any:
    call, _, _ = OUT_FUNCTIONS[name]
    return call(_fresh(), None)


@pytest.mark.parametrize("name", sorted(OUT_FUNCTIONS))
def test_out_aliasing_an_input_is_refused(name: str) -> None:
    call, reads, count = OUT_FUNCTIONS[name]
    for key in reads:
        arrays = _fresh()
        before = arrays[key].copy()
        if count == 1:
            out: Any = arrays[key]
            field = "out"
        else:
            out = tuple([arrays[key]] + [np.empty(200) for _ in range(count - 1)])
            field = "out[0]"
        with pytest.raises(IndicatorInputError, match=r"shares memory") as info:
            call(arrays, out)
        assert info.value.field == field
        np.testing.assert_array_equal(arrays[key], before)  # nothing was written


@pytest.mark.parametrize("name", sorted(OUT_FUNCTIONS))
def test_out_overlapping_an_input_partly_is_refused(name: str) -> None:
    call, reads, count = OUT_FUNCTIONS[name]
    arrays = _fresh()
    key = reads[-1]
    backing = np.concatenate([arrays[key], np.zeros(10)])
    arrays[key] = backing[:200]
    shifted = backing[10:210]  # overlaps the input's last 190 bars
    out: Any = shifted
    if count > 1:
        out = (shifted, *(np.empty(200) for _ in range(count - 1)))
    with pytest.raises(IndicatorInputError, match="shares memory"):
        call(arrays, out)


@pytest.mark.parametrize("name", sorted(OUT_FUNCTIONS))
def test_separate_out_buffers_are_filled_and_returned(name: str) -> None:
    call, _, count = OUT_FUNCTIONS[name]
    expected = _expected(name)
    if count == 1:
        buf = np.full(200, 7.0)
        result = call(_fresh(), buf)
        assert result is buf
        np.testing.assert_array_equal(_bits(buf), _bits(expected))
    else:
        bufs = tuple(np.full(200, 7.0) for _ in range(count))
        result = call(_fresh(), bufs)
        for got, buf, exp in zip(result, bufs, expected, strict=True):
            assert got is buf
            np.testing.assert_array_equal(_bits(buf), _bits(exp))


@pytest.mark.parametrize("name", sorted(n for n, (_, _, k) in OUT_FUNCTIONS.items() if k > 1))
def test_multi_output_buffers_must_not_overlap_each_other(name: str) -> None:
    call, _, count = OUT_FUNCTIONS[name]
    shared = np.empty(200)
    out = (shared,) * count
    with pytest.raises(IndicatorInputError, match=r"shares memory with 'out\[0\]'") as info:
        call(_fresh(), out)
    assert info.value.field == "out[1]"


def test_batch_out_aliasing_the_input_is_refused() -> None:
    x = _C.copy()
    for batch in (ci.sma_batch, ci.ema_batch, ci.rsi_batch):
        with pytest.raises(IndicatorInputError, match="out: shares memory with 'close'"):
            batch(x, [5], out=x.reshape(1, -1))
        buf = np.empty((2, 200))
        assert batch(x, [5, 9], out=buf) is buf
        np.testing.assert_array_equal(buf, batch(x, [5, 9]))


def test_signal_out_aliasing_an_input_is_refused() -> None:
    a = np.zeros(16)
    view = a.view(np.bool_)[:16]  # bool view over the input's own bytes
    with pytest.raises(IndicatorInputError, match="out: shares memory with 'a'"):
        ci.crossed_above(a, 0.5, out=view)
    with pytest.raises(IndicatorInputError, match=r"out\[0\]: shares memory with 'a'"):
        ci.crossings(a, 0.5, out=(view, np.empty(16, dtype=np.bool_)))
