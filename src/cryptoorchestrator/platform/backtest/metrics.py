"""Performance metrics from the kernel's statistics vector (O(1), cheap enough for sweeps).

Annualisation uses the number of bars per year of the timeframe (crypto trades 365 days):
``sharpe = mean(r) / std(r, ddof=1) * sqrt(ppy)`` over per-bar simple returns of equity,
``sortino`` uses the downside deviation ``sqrt(mean(min(r, 0)^2))``, ``cagr`` treats the run as
``n_bars / ppy`` years, ``calmar = cagr / max_drawdown``.  Durations are in bars.

``cagr`` is ``inf`` (and ``calmar`` with it) when the annualised growth exceeds the float range:
a short gain on high-frequency bars, say +1% over 60 one-second bars, compounds to about
``1.01 ** 525600`` a year.  It is ``-1`` once equity is gone.  It never raises.
"""

from __future__ import annotations

import math

import numpy as np

from cryptoorchestrator.platform.backtest import nb

# Just below log(float max) = 709.78: growth beyond it reads as inf instead of overflowing.
_MAX_LOG_GROWTH = 709.0

#: Every key of :func:`metrics_from_stats`, in display order.
METRIC_NAMES: tuple[str, ...] = (
    "total_return",
    "cagr",
    "volatility",
    "sharpe",
    "sortino",
    "calmar",
    "max_drawdown",
    "max_drawdown_duration",
    "win_rate",
    "profit_factor",
    "expectancy",
    "exposure",
    "trade_count",
    "avg_trade_duration",
    "fees_paid",
    "final_equity",
    "order_count",
    "open_trades",
    "skipped_orders",
    "skipped_entries_limit",
    "skipped_entries_margin",
    "liquidated",
    "liquidation_bar",
    "bars",
)


def metrics_from_stats(
    stats: np.ndarray, init_cash: float, periods_per_year: float
) -> dict[str, float]:
    """Return the metrics dict (see :data:`METRIC_NAMES`) of a statistics vector.

    ``periods_per_year`` is the number of bars in 365 days (see
    :func:`~cryptoorchestrator.platform.model.timestamps.annualisation`); ``cagr`` may be
    ``inf``, as the module says, but no value raises.
    """
    n = float(stats[nb.S_BARS])
    final = float(stats[nb.S_FINAL_EQUITY])
    total_return = final / init_cash - 1.0
    mean = stats[nb.S_SUM_RET] / n if n else 0.0
    var = (stats[nb.S_SUM_RET_SQ] - n * mean * mean) / (n - 1.0) if n > 1 else 0.0
    std = math.sqrt(max(var, 0.0))
    down = math.sqrt(stats[nb.S_SUM_DOWN_SQ] / n) if n else 0.0
    ann = math.sqrt(periods_per_year)
    years = n / periods_per_year if periods_per_year > 0 else 0.0
    if final <= 0:
        cagr = -1.0
    elif years > 0:
        # Growth per year in log space first: (final/init) ** (1/years) overflows (and Python
        # raises OverflowError) for short profitable runs; past the float range it is inf.
        ratio = final / init_cash
        cagr = (
            math.inf if math.log(ratio) / years > _MAX_LOG_GROWTH else ratio ** (1.0 / years) - 1.0
        )
    else:
        cagr = 0.0
    max_dd = float(stats[nb.S_MAX_DD])
    trades = float(stats[nb.S_TRADES])
    gross_profit = float(stats[nb.S_GROSS_PROFIT])
    gross_loss = float(stats[nb.S_GROSS_LOSS])
    if gross_loss > 0:
        profit_factor = gross_profit / gross_loss
    else:
        profit_factor = math.inf if gross_profit > 0 else math.nan
    return {
        "total_return": total_return,
        "cagr": cagr,
        "volatility": std * ann,
        "sharpe": mean / std * ann if std > 0 else math.nan,
        "sortino": mean / down * ann if down > 0 else math.nan,
        "calmar": cagr / max_dd if max_dd > 0 else math.nan,
        "max_drawdown": max_dd,
        "max_drawdown_duration": float(stats[nb.S_MAX_DD_DURATION]),
        "win_rate": stats[nb.S_WINS] / trades if trades else math.nan,
        "profit_factor": profit_factor,
        "expectancy": (gross_profit - gross_loss) / trades if trades else math.nan,
        "exposure": stats[nb.S_EXPOSURE_BARS] / n if n else 0.0,
        "trade_count": trades,
        "avg_trade_duration": stats[nb.S_SUM_TRADE_BARS] / trades if trades else math.nan,
        "fees_paid": float(stats[nb.S_FEES]),
        "final_equity": final,
        "order_count": float(stats[nb.S_ORDERS]),
        "open_trades": float(stats[nb.S_OPEN_TRADES]),
        "skipped_orders": float(stats[nb.S_SKIPPED_SMALL]),
        "skipped_entries_limit": float(stats[nb.S_SKIPPED_LIMIT]),
        "skipped_entries_margin": float(stats[nb.S_SKIPPED_MARGIN]),
        # 1.0 if the account was liquidated (see docs/backtest.md), at bar liquidation_bar
        "liquidated": float(stats[nb.S_LIQUIDATED]),
        "liquidation_bar": float(stats[nb.S_LIQUIDATION_BAR])
        if stats[nb.S_LIQUIDATED]
        else math.nan,
        "bars": n,
    }
