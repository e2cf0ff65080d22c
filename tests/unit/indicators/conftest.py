"""Shared inputs for the indicator tests: OHLCV random walks and a TA-Lib comparison."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

# Our tolerance against TA-Lib: 1e-12 relative. On a given machine the kernels are bit-identical
# (same FMA choices), but TA-Lib picks FMA or plain builds by CPU, so the last bit may differ.
RTOL = 1e-12


def make_ohlcv(n: int, seed: int, scale: float = 100.0) -> dict[str, np.ndarray]:
    """Return a geometric random walk with high >= close >= low and positive volume."""
    rng = np.random.default_rng(seed)
    close = scale * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))
    spread = np.abs(rng.normal(0.0, 0.004, n)) * close
    high = close + spread * rng.random(n)
    low = close - spread * rng.random(n)
    volume = rng.random(n) * 1000.0 + 1.0
    return {"high": high, "low": low, "close": close, "volume": volume}


def assert_same(ours: np.ndarray, ref: np.ndarray, rtol: float = RTOL) -> None:
    """Assert identical NaN positions and values within ``rtol`` of the series' magnitude."""
    ours = np.asarray(ours)
    ref = np.asarray(ref)
    assert ours.shape == ref.shape
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(ref), err_msg="NaN positions differ")
    valid = ~np.isnan(ref)
    if not valid.any():
        return
    scale = float(np.max(np.abs(ref[valid])))
    np.testing.assert_allclose(ours[valid], ref[valid], rtol=rtol, atol=rtol * scale)


@pytest.fixture
def same() -> Callable[..., None]:
    """The comparison helper, as a fixture so that test modules need no imports between them."""
    return assert_same


@pytest.fixture
def ohlcv() -> Callable[..., dict[str, np.ndarray]]:
    """The random-walk factory ``ohlcv(n, seed, scale=100.0)``."""
    return make_ohlcv


@pytest.fixture(scope="module")
def bars() -> dict[str, np.ndarray]:
    """2,000 bars of a random walk around 100 with a flat stretch (zero ranges and moves)."""
    b = make_ohlcv(2000, seed=11)
    for key in ("high", "low", "close"):
        b[key][700:760] = b["close"][700]
    return b
