"""``BacktestResult``: metrics, orders and trades as Arrow tables, equity curve, plots, report,
and its rich display in notebooks."""

from __future__ import annotations

import base64
import html
import io
import json
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from cryptoorchestrator.platform.backtest import nb
from cryptoorchestrator.platform.backtest.engine import SimConfig
from cryptoorchestrator.platform.backtest.metrics import METRIC_NAMES

_REASONS = np.array(["signal", "stop_loss", "take_profit", "trailing_stop", "end", "liquidation"])


@dataclass(eq=False)
class BacktestResult:
    """The outcome of one backtest.

    Attributes
    ----------
    metrics
        Every metric of :data:`~cryptoorchestrator.platform.backtest.metrics.METRIC_NAMES`.
    equity
        Equity at each bar's close (float64, quote currency).
    timestamp
        Bar open times in ms (int64).
    close
        Closing prices, ``(n_bars, n_symbols)``, for the price panel of the plot.
    ohlc
        Open, high, low and close of the first symbol (views of the bars, no copy), for the
        candles of :meth:`iplot`; None when not known.
    """

    strategy: str
    params: dict[str, Any]
    config: SimConfig
    symbols: tuple[str, ...]
    timeframe: str | None
    metrics: dict[str, float]
    equity: np.ndarray
    timestamp: np.ndarray
    close: np.ndarray
    order_records: np.ndarray = field(repr=False)
    trade_records: np.ndarray = field(repr=False)
    ohlc: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = field(
        default=None, repr=False
    )

    def __post_init__(self) -> None:
        # plain floats: numpy scalars print as np.float64(...) in reprs and JSON
        self.metrics = {k: float(v) for k, v in self.metrics.items()}

    @cached_property
    def orders(self) -> pa.Table:
        """Return the fills: timestamp, bar, symbol, side, qty, price, fee, reason."""
        r = self.order_records
        bar = r[:, nb.O_BAR].astype(np.int64)
        col = r[:, nb.O_COL].astype(np.int64)
        return pa.table(
            {
                "timestamp": pa.array(self.timestamp[bar], pa.int64()),
                "bar": pa.array(bar),
                "symbol": pa.array(np.asarray(self.symbols, dtype=object)[col], pa.string()),
                "side": pa.array(np.where(r[:, nb.O_SIDE] > 0, "buy", "sell"), pa.string()),
                "qty": pa.array(r[:, nb.O_QTY]),
                "price": pa.array(r[:, nb.O_PRICE]),
                "fee": pa.array(r[:, nb.O_FEE]),
                "reason": pa.array(_REASONS[r[:, nb.O_REASON].astype(np.int64)], pa.string()),
            }
        )

    @cached_property
    def trades(self) -> pa.Table:
        """Return round trips: entry/exit time and price, qty, pnl, return, fees, exit reason."""
        r = self.trade_records
        eb = r[:, nb.T_ENTRY_BAR].astype(np.int64)
        xb = r[:, nb.T_EXIT_BAR].astype(np.int64)
        col = r[:, nb.T_COL].astype(np.int64)
        return pa.table(
            {
                "symbol": pa.array(np.asarray(self.symbols, dtype=object)[col], pa.string()),
                "direction": pa.array(np.where(r[:, nb.T_DIR] > 0, "long", "short"), pa.string()),
                "entry_time": pa.array(self.timestamp[eb], pa.int64()),
                "exit_time": pa.array(self.timestamp[xb], pa.int64()),
                "entry_bar": pa.array(eb),
                "exit_bar": pa.array(xb),
                "duration_bars": pa.array(xb - eb),
                "entry_price": pa.array(r[:, nb.T_ENTRY_PRICE]),
                "exit_price": pa.array(r[:, nb.T_EXIT_PRICE]),
                "qty": pa.array(r[:, nb.T_QTY]),
                "pnl": pa.array(r[:, nb.T_PNL]),
                "return": pa.array(r[:, nb.T_RETURN]),
                "fees": pa.array(r[:, nb.T_FEES]),
                "exit_reason": pa.array(
                    _REASONS[r[:, nb.T_EXIT_REASON].astype(np.int64)], pa.string()
                ),
                "is_open": pa.array(r[:, nb.T_OPEN] != 0),
            }
        )

    @cached_property
    def drawdown(self) -> np.ndarray:
        """Return the drawdown at each bar as a fraction of the running peak (<= 0)."""
        peak = np.maximum.accumulate(np.maximum(self.equity, self.config.init_cash))
        return self.equity / peak - 1.0

    @property
    def equity_curve(self) -> pa.Table:
        """Return ``timestamp, equity, drawdown`` as an Arrow table."""
        return pa.table(
            {"timestamp": self.timestamp, "equity": self.equity, "drawdown": self.drawdown}
        )

    def summary(self) -> dict[str, Any]:
        """Return a JSON-safe dict of the run: strategy, params, symbols and metrics."""
        return {
            "strategy": self.strategy,
            "params": self.params,
            "symbols": list(self.symbols),
            "timeframe": self.timeframe,
            "metrics": {k: _json_float(self.metrics[k]) for k in METRIC_NAMES},
        }

    def figure(self) -> Any:
        """Return a matplotlib figure: equity, drawdown, and price with trade markers.

        The figure is built without pyplot (its own Agg canvas), so the matplotlib backend in
        use is never changed; in a notebook it displays inline.
        """
        from cryptoorchestrator.platform.backtest.plotting import minmax_indices, new_figure

        fig = new_figure((11, 8))
        ax_eq, ax_dd, ax_px = fig.subplots(
            3, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1, 3]}
        )
        x = self.timestamp.astype("datetime64[ms]")
        # min/max per bucket: a static image never needs more points than it has pixels
        ie = minmax_indices(self.equity, 4000)
        ax_eq.plot(x[ie], self.equity[ie], lw=1, color="tab:blue")
        ax_eq.set_ylabel("equity")
        ax_eq.set_title(
            f"{self.strategy} {self.params} on {self.label}  "
            f"return {self.metrics['total_return']:.2%}  "
            f"sharpe {self.metrics['sharpe']:.2f}"
        )
        dd = self.drawdown
        idd = minmax_indices(dd, 4000)
        ax_dd.fill_between(x[idd], dd[idd], 0, color="tab:red", alpha=0.4)
        ax_dd.set_ylabel("drawdown")
        ip = minmax_indices(self.close[:, 0], 4000)
        ax_px.plot(x[ip], self.close[ip, 0], lw=0.8, color="black")
        ax_px.set_ylabel(f"{self.symbols[0]} close")
        r = self.order_records
        first = r[:, nb.O_COL] == 0
        bars = r[first, nb.O_BAR].astype(np.int64)
        buys = r[first, nb.O_SIDE] > 0
        ax_px.scatter(
            x[bars[buys]],
            r[first][buys, nb.O_PRICE],
            marker="^",
            color="tab:green",
            s=18,
            label="buy",
            zorder=3,
        )
        ax_px.scatter(
            x[bars[~buys]],
            r[first][~buys, nb.O_PRICE],
            marker="v",
            color="tab:red",
            s=18,
            label="sell",
            zorder=3,
        )
        ax_px.legend(loc="upper left")
        return fig

    def plot(
        self,
        path: str | Path | None = None,
        *,
        html_path: str | Path | None = None,
        interactive: bool = False,
        max_points: int = 4000,
        max_candles: int = 5000,
    ) -> Any:
        """Return the report figure; write files only when given paths.

        Parameters
        ----------
        path
            Save the figure as PNG there, and the HTML report next to it (``.html``) unless
            ``html_path`` says where.  Without ``path`` and ``html_path`` nothing is written:
            in a notebook the returned figure displays inline.
        html_path
            Write the self-contained HTML report (metrics, chart, trades) there.
        interactive
            Return a Plotly figure instead (see :meth:`iplot`; ``path``, if given, gets
            its HTML).
        max_points, max_candles
            Display limits of the interactive chart (see :meth:`iplot`).

        Returns
        -------
        A matplotlib :class:`~matplotlib.figure.Figure` (``interactive=False``) or a
        ``plotly.graph_objects.Figure``.
        """
        if interactive:
            ifig = self.iplot(max_points=max_points, max_candles=max_candles)
            if path is not None or html_path is not None:
                out = Path(html_path if html_path is not None else Path(path).with_suffix(".html"))  # type: ignore[arg-type]
                out.parent.mkdir(parents=True, exist_ok=True)
                ifig.write_html(out, include_plotlyjs="cdn")
            return ifig
        fig = self.figure()
        if path is not None:
            png = Path(path)
            png.parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(png, dpi=100)
            html_path = html_path if html_path is not None else png.with_suffix(".html")
        if html_path is not None:
            self.write_html(html_path, fig)
        return fig

    def iplot(
        self, *, max_points: int = 4000, max_candles: int = 5000, widget: bool | None = None
    ) -> Any:
        """Return an interactive Plotly chart: candles with fills, equity, drawdown.

        To stay responsive over long histories the chart is thinned for display only:
        equity and drawdown keep the minimum and maximum of each of ``max_points // 2``
        equal buckets (:func:`~cryptoorchestrator.platform.backtest.plotting.minmax_indices`),
        and more than ``max_candles`` candles are drawn as candles of ``ceil(n / max_candles)``
        bars each (first open, highest high, lowest low, last close).  Fills are all drawn.
        In a Jupyter kernel the chart is a widget that draws every zoomed window again at full
        detail (see :func:`~cryptoorchestrator.platform.backtest.plotting.price_chart` for
        ``widget``).  Without stored candles (results built by hand) the price pane is a close
        line.
        """
        from cryptoorchestrator.platform.backtest.plotting import price_chart

        r = self.order_records[self.order_records[:, nb.O_COL] == 0]
        bars = r[:, nb.O_BAR].astype(np.int64)
        buys = r[:, nb.O_SIDE] > 0
        return price_chart(
            self.timestamp,
            close=self.close[:, 0],
            equity=self.equity,
            drawdown=self.drawdown,
            ohlc=self.ohlc,
            fills=[
                ("buy", bars[buys], r[buys, nb.O_PRICE]),
                ("sell", bars[~buys], r[~buys, nb.O_PRICE]),
            ],
            symbol=self.symbols[0],
            title=f"{self.strategy} {self.params} on {self.label}",
            max_points=max_points,
            max_candles=max_candles,
            widget=widget,
        )

    def write_html(self, path: str | Path, fig: Any | None = None) -> Path:
        """Write a self-contained HTML report (metrics, embedded chart, trades) to ``path``."""
        fig = fig if fig is not None else self.figure()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
        img = base64.b64encode(buf.getvalue()).decode("ascii")
        rows = "".join(
            f"<tr><th>{html.escape(k)}</th><td>{_fmt(self.metrics[k])}</td></tr>"
            for k in METRIC_NAMES
        )
        trades = self.trades.slice(0, 500).to_pylist()
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.trades.column_names)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in t.values()) + "</tr>"
            for t in trades
        )
        title = html.escape(f"{self.strategy} on {', '.join(self.symbols)}")
        doc = (
            "<!doctype html><html><head><meta charset='utf-8'>"
            f"<title>{title}</title><style>body{{font-family:sans-serif;margin:2em}}"
            "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px;"
            "text-align:right}</style></head><body>"
            f"<h1>{title}</h1><p>params: {html.escape(json.dumps(self.params))}; "
            f"timeframe: {html.escape(str(self.timeframe))}</p>"
            f"<table>{rows}</table><img alt='equity' src='data:image/png;base64,{img}'>"
            f"<h2>trades ({self.trades.num_rows}, first 500)</h2>"
            f"<table><tr>{head}</tr>{body}</table></body></html>"
        )
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(doc, encoding="utf-8")
        return out

    @property
    def label(self) -> str:
        """The symbols and timeframe, e.g. ``BTC/USDT 1h``."""
        return ",".join(self.symbols) + (f" {self.timeframe}" if self.timeframe else "")

    def stats(self) -> Any:
        """Return the metrics as a pandas Series (plain floats), in :data:`METRIC_NAMES` order."""
        import pandas as pd

        return pd.Series({k: self.metrics[k] for k in METRIC_NAMES}, name=self.strategy)

    def to_pandas(self) -> Any:
        """Return the equity curve as a DataFrame indexed by UTC time: equity, drawdown."""
        import pandas as pd

        index = pd.to_datetime(self.timestamp, unit="ms", utc=True)
        return pd.DataFrame({"equity": self.equity, "drawdown": self.drawdown}, index=index)

    def __repr__(self) -> str:
        m = self.metrics
        return (
            f"<BacktestResult {self.strategy} {self.params} on {self.label}: "
            f"return {m['total_return']:.4%}, sharpe {m['sharpe']:.3f}, "
            f"trades {int(m['trade_count'])}>"
        )

    def _repr_html_(self) -> str:
        from cryptoorchestrator.platform.backtest.plotting import sparkline_svg

        e = html.escape
        period = ""
        if self.timestamp.size:
            t = self.timestamp[[0, -1]].astype("datetime64[ms]").astype("datetime64[m]").astype(str)
            period = f"{t[0].replace('T', ' ')} to {t[1].replace('T', ' ')} UTC"
        rows = "".join(
            f"<tr><th style='text-align:left'>{e(k)}</th><td>{e(_fmt(self.metrics[k]))}</td></tr>"
            for k in METRIC_NAMES
        )
        return (
            "<div class='co-backtest'>"
            f"<b>BacktestResult</b> {e(self.strategy)} <code>{e(json.dumps(self.params))}</code>"
            f" on <b>{e(self.label)}</b><br><small>{e(period)}; {self.equity.size} bars, "
            f"{self.trades.num_rows} trades</small><br>{sparkline_svg(self.equity)}"
            f"<table>{rows}</table></div>"
        )


def _json_float(v: float) -> float | None:
    return None if isinstance(v, float) and not math.isfinite(v) else v


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)
