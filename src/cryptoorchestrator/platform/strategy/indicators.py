"""The indicators a strategy calls, each reused across the trials of an optimizer batch.

The same functions as :mod:`cryptoorchestrator.indicators` (same signatures and results),
wrapped by :func:`~cryptoorchestrator.platform.strategy.memo.memoised`: inside an optimizer
batch a call with the same bars and arguments as an earlier trial returns that trial's array
instead of computing it again; everywhere else (backtests, live bots) they are the plain
indicators.  Strategies, built-in and user-written, import their indicators from here::

    from cryptoorchestrator.platform.strategy.indicators import crossed_above, ema

Inside a batch a reused result is read-only: treat indicator outputs as values (write into a
copy).  A strategy that writes into one still gets its own result, more slowly: the trial is
evaluated again without reuse.  The crossing helpers are per-trial signal logic and cheap, so
they are not cached and their outputs stay writable.
"""

from __future__ import annotations

from cryptoorchestrator import indicators as _ci
from cryptoorchestrator.indicators import crossed_above, crossed_below, crossings
from cryptoorchestrator.platform.strategy.memo import memoised

__all__ = [
    "adx",
    "atr",
    "bbands",
    "cci",
    "crossed_above",
    "crossed_below",
    "crossings",
    "dema",
    "ema",
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
    "sar",
    "session_vwap",
    "sma",
    "stoch",
    "stochrsi",
    "tema",
    "trange",
    "trima",
    "vwap",
    "willr",
    "wma",
]

adx = memoised(_ci.adx)
atr = memoised(_ci.atr)
bbands = memoised(_ci.bbands)
cci = memoised(_ci.cci)
dema = memoised(_ci.dema)
ema = memoised(_ci.ema)
kama = memoised(_ci.kama)
ma = memoised(_ci.ma)
macd = memoised(_ci.macd)
mfi = memoised(_ci.mfi)
minus_di = memoised(_ci.minus_di)
mom = memoised(_ci.mom)
natr = memoised(_ci.natr)
obv = memoised(_ci.obv)
plus_di = memoised(_ci.plus_di)
roc = memoised(_ci.roc)
rolling_max = memoised(_ci.rolling_max)
rolling_min = memoised(_ci.rolling_min)
rsi = memoised(_ci.rsi)
sar = memoised(_ci.sar)
session_vwap = memoised(_ci.session_vwap)
sma = memoised(_ci.sma)
stoch = memoised(_ci.stoch)
stochrsi = memoised(_ci.stochrsi)
tema = memoised(_ci.tema)
trange = memoised(_ci.trange)
trima = memoised(_ci.trima)
vwap = memoised(_ci.vwap)
willr = memoised(_ci.willr)
wma = memoised(_ci.wma)
