"""Technical indicators as numba kernels, equal to TA-Lib's element by element.

Functions carry TA-Lib's lower-cased names, parameter names, defaults and output order
(``macd(close) -> (macd, signal, hist)``), accept any 1-D numeric array (converted once to
contiguous float64; read-only arrays are fine) and an optional ``out=`` buffer. Leading NaN bars
are skipped and the output starts ``lookback`` bars after the first valid one, as TA-Lib does.
Bad arguments raise :class:`IndicatorInputError` (a ``ValueError``) naming the argument; so does
an ``out=`` buffer that shares memory with an input or with another output buffer (kernels read
inputs bars behind or ahead of the bar they write, so in-place would silently corrupt results).

``sma_batch``, ``ema_batch`` and ``rsi_batch`` compute many periods in one pass for sweeps;
their rows are bit-identical to the single-period functions on finite input, and equal to them
(NaN where they are NaN) after NaN or infinite input.

Agreement with TA-Lib 0.8 (the installed ``ta-lib`` 0.8.2): bit-identical on this machine for
every function, including its FMA roundings, periodic and triggered rebuilding of running sums
(``bbands``' shifted variance included), relative zero tests and NaN propagation. That includes
embedded NaN in ``rolling_max``, ``rolling_min`` and ``willr``, where TA-Lib's van Herk block
layout decides whether a window skips the NaN or returns it, and ``willr``'s clamp to [-100, 0].

Defaults follow the installed TA-Lib's Python signatures (``bbands`` period 20, not the C
library's 5).
"""

from cryptoorchestrator.indicators._validate import IndicatorInputError
from cryptoorchestrator.indicators.misc import (
    crossed_above,
    crossed_below,
    crossings,
    rolling_max,
    rolling_min,
    sar,
)
from cryptoorchestrator.indicators.momentum import (
    adx,
    cci,
    mfi,
    minus_di,
    mom,
    plus_di,
    roc,
    rsi,
    rsi_batch,
    stoch,
    stochrsi,
    willr,
)
from cryptoorchestrator.indicators.overlap import (
    bbands,
    dema,
    ema,
    ema_batch,
    kama,
    ma,
    macd,
    sma,
    sma_batch,
    tema,
    trima,
    wma,
)
from cryptoorchestrator.indicators.volatility import atr, natr, trange
from cryptoorchestrator.indicators.volume import obv, session_vwap, vwap

__all__ = [
    "IndicatorInputError",
    "adx",
    "atr",
    "bbands",
    "cci",
    "crossed_above",
    "crossed_below",
    "crossings",
    "dema",
    "ema",
    "ema_batch",
    "kama",
    "ma",
    "macd",
    "mfi",
    "minus_di",
    "mom",
    "natr",
    "obv",
    "plus_di",
    "roc",
    "rolling_max",
    "rolling_min",
    "rsi",
    "rsi_batch",
    "sar",
    "session_vwap",
    "sma",
    "sma_batch",
    "stoch",
    "stochrsi",
    "tema",
    "trange",
    "trima",
    "vwap",
    "willr",
    "wma",
]
