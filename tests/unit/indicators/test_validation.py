"""Bad input gives a ValueError naming the argument and the allowed values, never a crash."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import cryptoorchestrator.indicators as ci
from cryptoorchestrator.indicators import IndicatorInputError

X = np.linspace(1.0, 2.0, 50)


@pytest.mark.parametrize("bad", [0, -3, 100_001])
def test_out_of_range_periods_name_the_argument(bad: int) -> None:
    with pytest.raises(ValueError, match=r"timeperiod: .*allowed: integers 1\.\.100000"):
        ci.sma(X, bad)


@pytest.mark.parametrize("bad", [1.5, "14", None, True])
def test_non_integer_periods_are_refused(bad: Any) -> None:
    with pytest.raises(IndicatorInputError) as info:
        ci.rsi(X, bad)
    assert info.value.field == "timeperiod"
    assert info.value.allowed == "integers 2..100000"


def test_rsi_period_one_is_refused_like_talib() -> None:
    with pytest.raises(IndicatorInputError, match="timeperiod"):
        ci.rsi(X, 1)


def test_wrong_shape_is_refused() -> None:
    with pytest.raises(IndicatorInputError, match=r"real: expected a 1-D array.*\(allowed: 1-D"):
        ci.ema(X.reshape(5, 10), 3)


@pytest.mark.parametrize("bad", [np.array(["a", "b"]), np.array([1 + 2j, 3j]), [object()]])
def test_non_numeric_dtypes_are_refused(bad: Any) -> None:
    with pytest.raises(IndicatorInputError, match="real: dtype"):
        ci.sma(bad, 2)


def test_mismatched_lengths_name_the_argument() -> None:
    with pytest.raises(IndicatorInputError, match=r"close: length 49 differs from high's"):
        ci.atr(X, X, X[:-1])
    with pytest.raises(IndicatorInputError, match="volume"):
        ci.mfi(X, X, X, X[:10])
    with pytest.raises(IndicatorInputError, match="low"):
        ci.sar(X, X[:3])


@pytest.mark.parametrize("bad", [7, 8, -1, "sma"])
def test_unsupported_matype_lists_the_allowed_ones(bad: Any) -> None:
    with pytest.raises(IndicatorInputError, match=r"matype: .*allowed: 0=SMA, 1=EMA.*6=KAMA"):
        ci.bbands(X, 5, matype=bad)


def test_bad_numbers_are_refused() -> None:
    with pytest.raises(IndicatorInputError, match="nbdevup"):
        ci.bbands(X, 5, nbdevup=float("nan"))
    with pytest.raises(IndicatorInputError, match="acceleration"):
        ci.sar(X, X, acceleration=-0.1)


def test_integer_and_float32_input_is_converted_once() -> None:
    ints = np.arange(1, 60)
    assert ci.sma(ints, 5).dtype == np.float64
    np.testing.assert_array_equal(ci.sma(ints, 5), ci.sma(ints.astype(np.float64), 5))
    f32 = np.linspace(1, 2, 60, dtype=np.float32)
    np.testing.assert_array_equal(ci.ema(f32, 7), ci.ema(f32.astype(np.float64), 7))
    np.testing.assert_array_equal(
        ci.rsi([1, 2, 3, 2, 1, 2, 3], 2), ci.rsi(np.array([1.0, 2, 3, 2, 1, 2, 3]), 2)
    )


def test_read_only_and_strided_input_work_and_are_not_written() -> None:
    x = np.linspace(1.0, 3.0, 200)
    x.flags.writeable = False
    before = x.copy()
    np.testing.assert_array_equal(ci.kama(x, 10), ci.kama(before, 10))
    np.testing.assert_array_equal(x, before)
    strided = np.linspace(1.0, 3.0, 400)[::2]
    np.testing.assert_array_equal(ci.wma(strided, 5), ci.wma(strided.copy(), 5))


def test_out_buffer_is_filled_and_returned() -> None:
    out = np.empty(X.shape[0])
    result = ci.sma(X, 5, out=out)
    assert result is out
    np.testing.assert_array_equal(out, ci.sma(X, 5))
    bands = (np.empty(50), np.empty(50), np.empty(50))
    upper, _, _ = ci.bbands(X, 5, out=bands)
    assert upper is bands[0]


@pytest.mark.parametrize(
    "bad",
    [np.empty(49), np.empty(50, dtype=np.float32), np.empty((50, 1)), [0.0] * 50],
)
def test_bad_out_buffers_are_refused(bad: Any) -> None:
    with pytest.raises(IndicatorInputError, match="out"):
        ci.ema(X, 5, out=bad)


def test_read_only_out_buffer_is_refused() -> None:
    out = np.empty(50)
    out.flags.writeable = False
    with pytest.raises(IndicatorInputError, match="out: must be C-contiguous and writeable"):
        ci.ema(X, 5, out=out)


def test_batch_periods_are_checked() -> None:
    with pytest.raises(IndicatorInputError, match=r"periods\[1\]"):
        ci.sma_batch(X, [5, 0])
    with pytest.raises(IndicatorInputError, match="periods: no periods given"):
        ci.ema_batch(X, [])
    with pytest.raises(IndicatorInputError, match=r"out: got float64 of shape \(50,\)"):
        ci.sma_batch(X, [2, 3], out=np.empty(50))
