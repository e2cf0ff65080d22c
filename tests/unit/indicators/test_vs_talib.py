"""Every indicator against TA-Lib, element by element, over parameter grids and edge cases."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import talib

import cryptoorchestrator.indicators as ci
from cryptoorchestrator.indicators.nb import overlap as nb_overlap

# name -> (ours, TA-Lib, input columns, parameter grid)
Case = tuple[Callable[..., Any], Callable[..., Any], tuple[str, ...], list[dict[str, Any]]]

PERIODS_1 = [1, 2, 3, 5, 14, 30, 200]
PERIODS_2 = [2, 3, 5, 14, 30, 200]

CASES: dict[str, Case] = {
    "sma": (ci.sma, talib.SMA, ("close",), [{"timeperiod": p} for p in PERIODS_1]),
    "ema": (ci.ema, talib.EMA, ("close",), [{"timeperiod": p} for p in PERIODS_1]),
    "wma": (ci.wma, talib.WMA, ("close",), [{"timeperiod": p} for p in PERIODS_1]),
    "dema": (ci.dema, talib.DEMA, ("close",), [{"timeperiod": p} for p in PERIODS_1]),
    "tema": (ci.tema, talib.TEMA, ("close",), [{"timeperiod": p} for p in PERIODS_1]),
    "trima": (ci.trima, talib.TRIMA, ("close",), [{"timeperiod": p} for p in PERIODS_1]),
    "kama": (ci.kama, talib.KAMA, ("close",), [{"timeperiod": p} for p in PERIODS_1]),
    "ma": (
        ci.ma,
        talib.MA,
        ("close",),
        [{"timeperiod": p, "matype": t} for p in (1, 2, 9, 30) for t in range(7)],
    ),
    "rsi": (ci.rsi, talib.RSI, ("close",), [{"timeperiod": p} for p in PERIODS_2]),
    "macd": (
        ci.macd,
        talib.MACD,
        ("close",),
        [
            {"fastperiod": 12, "slowperiod": 26, "signalperiod": 9},
            {"fastperiod": 2, "slowperiod": 3, "signalperiod": 1},
            {"fastperiod": 26, "slowperiod": 12, "signalperiod": 9},
            {"fastperiod": 5, "slowperiod": 35, "signalperiod": 5},
            {"fastperiod": 50, "slowperiod": 200, "signalperiod": 30},
        ],
    ),
    "stoch": (
        ci.stoch,
        talib.STOCH,
        ("high", "low", "close"),
        [
            {},
            {
                "fastk_period": 14,
                "slowk_period": 3,
                "slowk_matype": 1,
                "slowd_period": 3,
                "slowd_matype": 1,
            },
            {"fastk_period": 1, "slowk_period": 1, "slowd_period": 1},
            {
                "fastk_period": 10,
                "slowk_period": 4,
                "slowk_matype": 5,
                "slowd_period": 5,
                "slowd_matype": 6,
            },
            {
                "fastk_period": 5,
                "slowk_period": 7,
                "slowk_matype": 3,
                "slowd_period": 4,
                "slowd_matype": 4,
            },
        ],
    ),
    "stochrsi": (
        ci.stochrsi,
        talib.STOCHRSI,
        ("close",),
        [
            {},
            {"timeperiod": 14, "fastk_period": 14, "fastd_period": 3, "fastd_matype": 1},
            {"timeperiod": 5, "fastk_period": 3, "fastd_period": 1},
            {"timeperiod": 10, "fastk_period": 5, "fastd_period": 4, "fastd_matype": 2},
            {"timeperiod": 22, "fastk_period": 7, "fastd_period": 2, "fastd_matype": 6},
        ],
    ),
    "atr": (ci.atr, talib.ATR, ("high", "low", "close"), [{"timeperiod": p} for p in PERIODS_1]),
    "natr": (ci.natr, talib.NATR, ("high", "low", "close"), [{"timeperiod": p} for p in PERIODS_1]),
    "trange": (ci.trange, talib.TRANGE, ("high", "low", "close"), [{}]),
    "adx": (ci.adx, talib.ADX, ("high", "low", "close"), [{"timeperiod": p} for p in PERIODS_2]),
    "plus_di": (
        ci.plus_di,
        talib.PLUS_DI,
        ("high", "low", "close"),
        [{"timeperiod": p} for p in PERIODS_1],
    ),
    "minus_di": (
        ci.minus_di,
        talib.MINUS_DI,
        ("high", "low", "close"),
        [{"timeperiod": p} for p in PERIODS_1],
    ),
    "cci": (ci.cci, talib.CCI, ("high", "low", "close"), [{"timeperiod": p} for p in PERIODS_2]),
    "willr": (
        ci.willr,
        talib.WILLR,
        ("high", "low", "close"),
        [{"timeperiod": p} for p in PERIODS_2],
    ),
    "mfi": (
        ci.mfi,
        talib.MFI,
        ("high", "low", "close", "volume"),
        [{"timeperiod": p} for p in PERIODS_2],
    ),
    "obv": (ci.obv, talib.OBV, ("close", "volume"), [{}]),
    "roc": (ci.roc, talib.ROC, ("close",), [{"timeperiod": p} for p in PERIODS_1]),
    "mom": (ci.mom, talib.MOM, ("close",), [{"timeperiod": p} for p in PERIODS_1]),
    "sar": (
        ci.sar,
        talib.SAR,
        ("high", "low"),
        [{}, {"acceleration": 0.01, "maximum": 0.1}, {"acceleration": 0.3, "maximum": 0.2}],
    ),
    "rolling_max": (ci.rolling_max, talib.MAX, ("close",), [{"timeperiod": p} for p in PERIODS_2]),
    "rolling_min": (ci.rolling_min, talib.MIN, ("close",), [{"timeperiod": p} for p in PERIODS_2]),
}
CASES_BBANDS = [
    {"timeperiod": p, "nbdevup": up, "nbdevdn": dn, "matype": t}
    for p in (2, 5, 20, 100)
    for up, dn in ((2.0, 2.0), (1.0, 1.0), (1.5, 2.5))
    for t in (0, 1, 6)
]


def _params() -> list[Any]:
    return [
        pytest.param(name, kwargs, id=f"{name}-{i}")
        for name, (_, _, _, grid) in CASES.items()
        for i, kwargs in enumerate(grid)
    ]


def _run(name: str, b: dict[str, np.ndarray], kwargs: dict[str, Any]) -> tuple[Any, Any]:
    ours, ref, columns, _ = CASES[name]
    args = [b[c] for c in columns]
    return ours(*args, **kwargs), ref(*args, **kwargs)


@pytest.fixture
def compare(same: Callable[..., None]) -> Callable[..., None]:
    """Compare one output or a tuple of outputs with TA-Lib's."""

    def check(a: Any, b: Any, rtol: float = 1e-12) -> None:
        if isinstance(b, tuple | list):
            assert isinstance(a, tuple)
            assert len(a) == len(b)
            for x, y in zip(a, b, strict=True):
                same(x, y, rtol)
        else:
            same(a, b, rtol)

    return check


@pytest.mark.parametrize(("name", "kwargs"), _params())
def test_random_walk_equals_talib(
    name: str, kwargs: dict[str, Any], bars: dict[str, np.ndarray], compare: Any
) -> None:
    ours, ref = _run(name, bars, kwargs)
    compare(ours, ref)


@pytest.mark.parametrize("kwargs", CASES_BBANDS)
def test_bbands_equals_talib(
    kwargs: dict[str, Any], bars: dict[str, np.ndarray], compare: Any
) -> None:
    compare(ci.bbands(bars["close"], **kwargs), talib.BBANDS(bars["close"], **kwargs))


def test_defaults_equal_talib_defaults(bars: dict[str, np.ndarray], compare: Any) -> None:
    c, h, lo, v = bars["close"], bars["high"], bars["low"], bars["volume"]
    compare(ci.sma(c), talib.SMA(c))
    compare(ci.kama(c), talib.KAMA(c))
    compare(ci.rsi(c), talib.RSI(c))
    compare(ci.macd(c), talib.MACD(c))
    compare(ci.bbands(c), talib.BBANDS(c))
    compare(ci.stoch(h, lo, c), talib.STOCH(h, lo, c))
    compare(ci.stochrsi(c), talib.STOCHRSI(c))
    compare(ci.adx(h, lo, c), talib.ADX(h, lo, c))
    compare(ci.mfi(h, lo, c, v), talib.MFI(h, lo, c, v))
    compare(ci.sar(h, lo), talib.SAR(h, lo))
    compare(ci.roc(c), talib.ROC(c))
    compare(ci.rolling_max(c), talib.MAX(c))


def test_macd_alignment_differs_from_naive_ema_difference(bars: dict[str, np.ndarray]) -> None:
    c = bars["close"]
    macd, _, _ = ci.macd(c)
    naive = talib.EMA(c, 12) - talib.EMA(c, 26)
    assert np.isnan(macd[32])
    assert not np.isnan(macd[33])
    # The fast EMA is seeded at bar 25 from bars 14..25, not at bar 11 from bars 0..11.
    assert abs(macd[33] - naive[33]) > 1e-6


EDGE_SERIES = ["constant", "leading_nan", "embedded_nan", "huge", "tiny", "steps"]


def _edge(kind: str, make: Callable[..., dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    b = make(600, seed=3)
    if kind == "constant":
        return {k: np.full(600, 50.0 if k != "volume" else 10.0) for k in b}
    if kind == "leading_nan":
        for k in b:
            b[k][:25] = np.nan
        return b
    if kind == "embedded_nan":
        b["close"][300] = np.nan
        b["high"][420] = np.nan
        return b
    if kind == "huge":
        return {k: val * 1e9 for k, val in b.items()}
    if kind == "tiny":
        return {k: val * 1e-9 for k, val in b.items()}
    # Integer-valued steps: many exact ties for the max/min and zero moves for RSI and MFI.
    rng = np.random.default_rng(5)
    close = 100.0 + np.cumsum(rng.integers(-1, 2, 600)).astype(float)
    return {"high": close + 1.0, "low": close - 1.0, "close": close, "volume": b["volume"]}


@pytest.mark.parametrize("kind", EDGE_SERIES)
@pytest.mark.parametrize(("name", "kwargs"), _params())
def test_edge_series_equal_talib(
    name: str, kwargs: dict[str, Any], kind: str, compare: Any, ohlcv: Any
) -> None:
    ours, ref = _run(name, _edge(kind, ohlcv), kwargs)
    compare(ours, ref)


@pytest.mark.parametrize("kind", EDGE_SERIES)
def test_bbands_edge_series(kind: str, compare: Any, ohlcv: Any) -> None:
    c = _edge(kind, ohlcv)["close"]
    for p in (2, 20):
        compare(ci.bbands(c, p), talib.BBANDS(c, p))


@pytest.mark.parametrize("n", [0, 1, 2, 5, 13])
@pytest.mark.parametrize(("name", "kwargs"), _params())
def test_series_shorter_than_lookback(
    name: str, kwargs: dict[str, Any], n: int, compare: Any, ohlcv: Any
) -> None:
    b = ohlcv(max(n, 1), seed=1)
    b = {k: v[:n] for k, v in b.items()}
    ours, ref = _run(name, b, kwargs)
    compare(ours, ref)


def test_all_nan_input_gives_all_nan(compare: Any) -> None:
    x = np.full(50, np.nan)
    compare(ci.sma(x, 5), talib.SMA(x, 5))
    compare(ci.rsi(x), talib.RSI(x))
    assert np.isnan(ci.ema(x, 3)).all()


def test_very_long_periods(compare: Any, ohlcv: Any) -> None:
    b = ohlcv(5000, seed=8)
    c = b["close"]
    for p in (1000, 4999, 5000, 100_000):
        compare(ci.sma(c, p), talib.SMA(c, p))
        compare(ci.ema(c, p), talib.EMA(c, p))
        compare(ci.rsi(c, p), talib.RSI(c, p))
    compare(ci.wma(c, 1000), talib.WMA(c, 1000))
    compare(ci.kama(c, 1000), talib.KAMA(c, 1000))


def test_long_series_keeps_exactness_after_reanchoring(compare: Any, ohlcv: Any) -> None:
    # WMA and BBANDS rebuild their running sums every 8 / 32 periods: cover many rebuilds.
    c = ohlcv(40_000, seed=21)["close"]
    for p in (2, 5, 30):
        compare(ci.wma(c, p), talib.WMA(c, p))
        compare(ci.bbands(c, p), talib.BBANDS(c, p))
        compare(ci.kama(c, p), talib.KAMA(c, p))


def _variance_series(make: Callable[..., dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Series that drive each rebuild trigger of TA-Lib's running variance."""
    rng = np.random.default_rng(31)
    walk = make(20_000, seed=31)["close"]
    outlier = walk.copy()
    # A spike whose squared deviation dwarfs the running sum when it leaves the window.
    outlier[7_000] *= 50.0
    flat = walk.copy()
    # Flat windows cancel the variance to (rounding around) zero; the NaN poisons the running
    # sums until the next scheduled rebuild.
    flat[5_000:5_100] = flat[5_000]
    flat[9_000] = np.nan
    return {
        "walk": walk,
        "outlier": outlier,
        "flat_and_nan": flat,
        # A level far from zero with a small spread: the sums cancel most without the shift.
        "level": 30_000.0 + np.cumsum(rng.normal(0.0, 5.0, 20_000)),
        # Prices in 1e-8 ticks around 100: variances near 1e-16 must not collapse to zero.
        "ticks": np.round(100.0 + np.cumsum(rng.normal(0.0, 1e-4, 20_000)), 8),
    }


VARIANCE_SERIES = ["walk", "outlier", "flat_and_nan", "level", "ticks"]


@pytest.mark.parametrize("kind", VARIANCE_SERIES)
def test_bbands_rebuilds_its_running_variance_as_talib(kind: str, compare: Any, ohlcv: Any) -> None:
    # Periods whose 32-period rebuild schedule fires hundreds of times on 20,000 bars, and
    # matypes for both of TA-Lib's paths (SMA fused with the deviation; MA then VAR).
    c = _variance_series(ohlcv)[kind]
    for p in (2, 3, 20, 250):
        for t in (0, 1, 2):
            for up, dn in ((2.0, 2.0), (1.5, 2.5)):
                compare(ci.bbands(c, p, up, dn, t), talib.BBANDS(c, p, up, dn, t))


@pytest.mark.parametrize("kind", VARIANCE_SERIES)
def test_running_variance_is_bit_identical_to_talib_var(kind: str, ohlcv: Any) -> None:
    # TA-Lib's VAR uses no FMA in either of its builds, so this holds on every machine.
    c = _variance_series(ohlcv)[kind]
    for p in (2, 3, 20, 250):
        ours = np.full(c.shape[0], np.nan)
        nb_overlap.variance_nb(c, p - 1, p, ours)
        np.testing.assert_array_equal(ours, talib.VAR(c, p))


def test_mfi_windows_without_money_flow(compare: Any, ohlcv: Any) -> None:
    # Stretches of no volume, of no move and of both: the window empties, its sums are reset,
    # and the index restarts from exact zeros as TA-Lib's does.
    b = ohlcv(3000, seed=17)
    h, lo, c, v = b["high"], b["low"], b["close"], b["volume"]
    v[300:600] = 0.0
    v[1500::3] = 0.0
    for col in (h, lo, c):
        col[900:1200] = 5.0
    for p in (2, 3, 14, 250):
        compare(ci.mfi(h, lo, c, v, p), talib.MFI(h, lo, c, v, p))


def test_directional_sums_decaying_into_subnormals_equal_talib() -> None:
    # On a steady climb the -DM sum only loses a period-th per bar and passes through the
    # subnormal range to zero (about 10,000 bars for period 14), where the kernel divides
    # instead of multiplying with fma corrections (next test): still bit for bit.
    rng = np.random.default_rng(5)
    n = 24_000
    c = np.arange(n, dtype=np.float64) + 100.0 + rng.random(n) * 0.1
    for h, lo, cl in ((c + 0.5, c - 0.5, c), (c[::-1] + 0.5, c[::-1] - 0.5, c[::-1].copy())):
        for p in (2, 6, 14, 30):
            np.testing.assert_array_equal(ci.plus_di(h, lo, cl, p), talib.PLUS_DI(h, lo, cl, p))
            np.testing.assert_array_equal(ci.minus_di(h, lo, cl, p), talib.MINUS_DI(h, lo, cl, p))
            np.testing.assert_array_equal(ci.adx(h, lo, cl, p), talib.ADX(h, lo, cl, p))


def test_division_by_the_period_is_exact_for_subnormal_quotients() -> None:
    from cryptoorchestrator.indicators.nb.momentum import _by_period_nb

    tiny = np.arange(1, 200_001, dtype=np.float64) * 5e-324
    for p in (3, 6, 14, 100):
        ours = np.array([_by_period_nb(v, float(p), 1.0 / p) for v in tiny[::7]])
        np.testing.assert_array_equal(ours, tiny[::7] / p)


def test_natr_with_zero_closes_across_tiles(ohlcv: Any) -> None:
    # NATR normalizes 512-bar tiles in a second pass; a zero close gives 0 there, as TA-Lib.
    b = ohlcv(3000, seed=23)
    h, lo, c = b["high"], b["low"], b["close"]
    c[700:710] = 0.0
    c[1023:1026] = 0.0
    c[2999] = 0.0
    for p in (1, 2, 14, 600):
        np.testing.assert_array_equal(ci.natr(h, lo, c, p), talib.NATR(h, lo, c, p))


def test_willr_over_several_tiles_and_late_nans(ohlcv: Any) -> None:
    # WILLR takes the rolling highs 32768 bars at a time (whole blocks of the period, with the
    # period - 1 bars before each tile); NaN bars in later tiles must meet the same block layout
    # as in TA-Lib's single pass, whatever the period.
    b = ohlcv(70_000, seed=29)
    h, lo, c = b["high"], b["low"], b["close"]
    for p in (2, 14, 5000):
        np.testing.assert_array_equal(ci.willr(h, lo, c, p), talib.WILLR(h, lo, c, p))
    for col in (h, lo):
        x = col.copy()
        x[[33_001, 50_000, 65_537]] = np.nan
        args = (x, lo, c) if col is h else (h, x, c)
        for p in (3, 14, 30, 777, 5000):
            np.testing.assert_array_equal(ci.willr(*args, p), talib.WILLR(*args, p))


@pytest.mark.parametrize("seed", range(6))
def test_rolling_extremes_and_willr_with_scattered_nan(seed: int) -> None:
    # Where a NaN falls within TA-Lib's blocks decides whether a window skips it or returns NaN
    # (a NaN that starts a prefix or suffix scan is kept); every position and period is met here.
    rng = np.random.default_rng(seed)
    for _ in range(150):
        n = int(rng.integers(3, 120))
        period = int(rng.integers(2, 15))
        c = 100 + np.cumsum(rng.normal(size=n))
        h = c + rng.random(n) - 0.2
        lo = c - rng.random(n) + 0.2
        for col in (h, lo, c):
            col[rng.integers(0, n, int(rng.integers(0, 3)))] = np.nan
            col[: int(rng.integers(0, 3))] = np.nan
        np.testing.assert_array_equal(ci.rolling_max(h, period), talib.MAX(h, period))
        np.testing.assert_array_equal(ci.rolling_min(lo, period), talib.MIN(lo, period))
        np.testing.assert_array_equal(ci.willr(h, lo, c, period), talib.WILLR(h, lo, c, period))


def test_willr_is_held_in_range_when_close_leaves_the_bar(ohlcv: Any) -> None:
    # TA-Lib 0.8 clamps %R into [-100, 0]; a close above the high or below the low (bad data)
    # would otherwise leave it.
    b = ohlcv(2_000, seed=31)
    h, lo, c = b["high"], b["low"], b["close"].copy()
    c[::7] = h[::7] + 1.0
    c[3::7] = lo[3::7] - 1.0
    ours = ci.willr(h, lo, c, 14)
    np.testing.assert_array_equal(ours, talib.WILLR(h, lo, c, 14))
    valid = ours[13:]
    assert valid.max() == 0.0
    assert valid.min() == -100.0
