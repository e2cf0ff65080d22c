"""Figures for notebooks and reports, without pyplot and without touching matplotlib's backend.

Figures are built with the object-oriented API (:class:`matplotlib.figure.Figure` and its own
Agg canvas), so they render headless, in a script or in Jupyter, whatever backend the user chose;
pyplot's global state (the current figure, the backend) is never used.  :class:`ReportFigure`
adds ``_repr_png_`` so that a notebook shows the figure inline even when pyplot was never
imported (the inline backend only registers its formatter once pyplot is).

Display downsampling: :func:`minmax_indices` keeps, for each of ``max_points // 2`` equal
buckets of the series, the positions of its minimum and maximum (in time order, first and last
point always kept), so peaks and drawdowns stay visible at any zoom-out while the figure holds
at most ``max_points`` points.  :func:`ohlc_buckets` turns candles into OHLC of ``bucket`` bars.

Full detail on zoom: :func:`price_chart` draws candles, fills, equity and drawdown with Plotly.
In a Jupyter kernel it returns a ``FigureWidget`` whose visible x range is watched
(:class:`WindowResampler`): after every zoom or pan the candles and lines are drawn again for
the visible window only (:func:`ohlc_window`, :func:`line_window`), exact candles once the
window holds no more than ``max_candles`` of them, so 58,000 candles pan as lightly as 5,000
and zooming in shows every bar.  No server and no extra package: the kernel answers the
widget's relayout events.  Plotly (and, for the widget, anywidget) belong to the dev install and
are imported only when a chart is asked for.
"""

from __future__ import annotations

import functools
import io
import sys
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


class ReportFigure(Figure):
    """A matplotlib figure that renders itself as PNG in notebooks (``_repr_png_``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        FigureCanvasAgg(self)  # its own canvas: savefig works without any pyplot backend

    def to_png(self, dpi: int = 100) -> bytes:
        """Return the figure as PNG bytes."""
        buf = io.BytesIO()
        self.savefig(buf, format="png", dpi=dpi)
        return buf.getvalue()

    def _repr_png_(self) -> bytes:
        return self.to_png()


def new_figure(figsize: tuple[float, float] = (11, 8)) -> ReportFigure:
    """Return an empty :class:`ReportFigure` with constrained layout."""
    return ReportFigure(figsize=figsize, layout="constrained")


def minmax_indices(values: np.ndarray, max_points: int) -> np.ndarray:
    """Return sorted positions of ``values`` to draw: min and max of each of ``max_points // 2``
    buckets, plus the first and last point; every position if there are no more than
    ``max_points``.
    """
    n = int(values.shape[0])
    if n <= max_points or max_points < 4:
        return np.arange(n)
    n_buckets = max_points // 2
    edges = np.linspace(0, n, n_buckets + 1).astype(np.int64)
    edges = np.unique(edges)  # no empty bucket
    seg = np.repeat(np.arange(edges.size - 1), np.diff(edges))
    v = np.asarray(values, dtype=np.float64)
    # sorted by bucket, then by value (NaN last, ties in time order): each bucket's first
    # position in that order is its minimum; by the negated value, its maximum
    imin = np.lexsort((v, seg))[edges[:-1]]
    imax = np.lexsort((-v, seg))[edges[:-1]]
    return np.unique(np.concatenate(([0, n - 1], imin, imax)).astype(np.int64))


def ohlc_buckets(
    timestamp: np.ndarray,
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    bucket: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Aggregate candles into candles of ``bucket`` bars: first open, max high, min low, last
    close, stamped with the first bar's time (the last bucket may be shorter)."""
    n = int(close.shape[0])
    if bucket <= 1 or n == 0:
        return timestamp, open_, high, low, close
    starts = np.arange(0, n, bucket)
    ends = np.minimum(starts + bucket, n) - 1
    return (
        timestamp[starts],
        open_[starts],
        np.maximum.reduceat(high, starts),
        np.minimum.reduceat(low, starts),
        close[ends],
    )


def sparkline_svg(values: np.ndarray, width: int = 240, height: int = 48) -> str:
    """Return a small inline SVG line of ``values`` (at most ``width`` points, min/max kept)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size < 2 or not np.isfinite(v).any():
        return ""
    idx = minmax_indices(v, width)
    y = v[idx]
    lo, hi = float(np.nanmin(y)), float(np.nanmax(y))
    span = hi - lo if hi > lo else 1.0
    xs = idx / max(v.size - 1, 1) * (width - 2) + 1
    ys = (1.0 - (np.nan_to_num(y, nan=lo) - lo) / span) * (height - 2) + 1
    pts = " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(xs, ys, strict=True))
    color = "#2ca02c" if v[-1] >= v[0] else "#d62728"
    return (
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
        f"viewBox='0 0 {width} {height}' role='img' aria-label='equity'>"
        f"<polyline fill='none' stroke='{color}' stroke-width='1.2' points='{pts}'/></svg>"
    )


class CandleWindow(NamedTuple):
    """Candles to draw for a window: open times (ms), OHLC, and bars per drawn candle."""

    timestamp: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    bucket: int


def window_bounds(timestamp: np.ndarray, start_ms: float | None, end_ms: float | None) -> slice:
    """Return the positions of the bars opening in ``[start_ms, end_ms]``, widened by one bar
    on each side (so the window's edges are drawn); all bars where a bound is None."""
    n = int(timestamp.shape[0])
    lo = 0 if start_ms is None else max(int(np.searchsorted(timestamp, start_ms, "left")) - 1, 0)
    hi = n if end_ms is None else min(int(np.searchsorted(timestamp, end_ms, "right")) + 1, n)
    return slice(lo, max(hi, lo))


def ohlc_window(
    timestamp: np.ndarray,
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    *,
    start_ms: float | None = None,
    end_ms: float | None = None,
    max_candles: int = 5000,
) -> CandleWindow:
    """Return the candles to draw for the window ``[start_ms, end_ms]`` (ms; None: open end).

    With no more than ``max_candles`` bars in the window (see :func:`window_bounds`) they are
    returned as they are; otherwise as candles of ``bucket = ceil(count / max_candles)`` bars
    (:func:`ohlc_buckets`: first open, highest high, lowest low, last close).  Buckets are
    aligned to multiples of ``bucket`` from the first bar, so panning at one zoom level keeps
    the same candles; the alignment may add one bucket (at most ``max_candles + 1``).

    Raises
    ------
    ValueError
        ``max_candles`` below 1.
    """
    if max_candles < 1:
        raise ValueError(f"max_candles must be at least 1, not {max_candles}")
    window = window_bounds(timestamp, start_ms, end_ms)
    lo, hi = window.start, window.stop
    count = hi - lo
    bucket = -(-count // max_candles) if count > max_candles else 1
    lo = lo // bucket * bucket
    hi = min(-(-hi // bucket) * bucket, int(timestamp.shape[0]))
    part = slice(lo, hi)
    t, o, h, low_, c = ohlc_buckets(
        timestamp[part], open_[part], high[part], low[part], close[part], bucket
    )
    return CandleWindow(t, o, h, low_, c, bucket)


def line_window(
    timestamp: np.ndarray,
    values: np.ndarray,
    *,
    start_ms: float | None = None,
    end_ms: float | None = None,
    max_points: int = 4000,
) -> np.ndarray:
    """Return the positions of ``values`` to draw for a window: every point in it when there
    are no more than ``max_points``, else the min and max of each bucket
    (:func:`minmax_indices`)."""
    window = window_bounds(timestamp, start_ms, end_ms)
    return window.start + minmax_indices(values[window], max_points)


def _to_ms(value: Any) -> float | None:
    """Return a Plotly date-axis bound (a date string, datetime or ms number) in ms."""
    if value is None:
        return None
    if isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool):
        return float(value)  # Plotly's numeric dates are ms since the epoch
    import pandas as pd

    stamp = pd.Timestamp(value)
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC").tz_localize(None)
    return float(stamp.value) / 1e6


class WindowResampler:
    """Draw a Plotly figure's candles and lines again for its visible x range.

    Register the traces to keep at full detail (:meth:`add_candles`, :meth:`add_line`, by
    their index in ``fig.data``), then :meth:`attach` a ``FigureWidget``: every zoom, pan or
    reset of any of its x axes calls :meth:`show_window`, which replaces those traces' data
    with the window's (at most ``max_candles`` candles and ``max_points`` line points).

    Parameters
    ----------
    timestamp
        Bar open times in ms (int64, increasing), shared by every registered trace.
    max_points, max_candles
        Display limits per trace.
    """

    def __init__(self, timestamp: np.ndarray, *, max_points: int = 4000, max_candles: int = 5000):
        self.timestamp = np.asarray(timestamp, dtype=np.int64)
        self.max_points = max_points
        self.max_candles = max_candles
        self._candles: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}
        self._lines: dict[int, np.ndarray] = {}
        self._last: dict[str, Any] = {}
        self.window: tuple[float | None, float | None] = (None, None)

    def add_candles(
        self, trace: int, open_: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray
    ) -> None:
        """Keep trace ``trace`` (a ``Candlestick``) drawn from these candles."""
        self._candles[trace] = (open_, high, low, close)

    def add_line(self, trace: int, values: np.ndarray) -> None:
        """Keep trace ``trace`` (a scatter line) drawn from ``values``."""
        self._lines[trace] = values

    def traces(
        self, start_ms: float | None = None, end_ms: float | None = None
    ) -> dict[int, dict[str, Any]]:
        """Return, per registered trace, the data to draw for ``[start_ms, end_ms]``."""
        out: dict[int, dict[str, Any]] = {}
        for trace, (o, h, lo, c) in self._candles.items():
            w = ohlc_window(
                self.timestamp,
                o,
                h,
                lo,
                c,
                start_ms=start_ms,
                end_ms=end_ms,
                max_candles=self.max_candles,
            )
            out[trace] = {
                "x": w.timestamp.astype("datetime64[ms]"),
                "open": w.open,
                "high": w.high,
                "low": w.low,
                "close": w.close,
                "name": candle_label(w.bucket),
            }
        for trace, values in self._lines.items():
            idx = line_window(
                self.timestamp, values, start_ms=start_ms, end_ms=end_ms, max_points=self.max_points
            )
            out[trace] = {"x": self.timestamp[idx].astype("datetime64[ms]"), "y": values[idx]}
        return out

    def show_window(self, fig: Any, start_ms: float | None, end_ms: float | None) -> None:
        """Replace the registered traces' data in ``fig`` with the window's, in one update."""
        self.window = (start_ms, end_ms)
        with fig.batch_update():
            for trace, props in self.traces(start_ms, end_ms).items():
                fig.data[trace].update(props)

    def attach(self, fig: Any) -> Any:
        """Watch every x axis of the ``FigureWidget`` ``fig``; return ``fig``."""
        for name in [p for p in fig.layout if p.startswith("xaxis")]:
            axis = fig.layout[name]
            self._last[name] = (_range_of(axis), axis.autorange)
            axis.on_change(self._relayout_handler(fig, name), "range", "autorange")
        return fig

    def _relayout_handler(self, fig: Any, name: str) -> Any:
        def handle(axis: Any, *_: Any) -> None:
            rng, auto = _range_of(axis), axis.autorange
            before_rng, _before_auto = self._last.get(name, (None, None))
            self._last[name] = (rng, auto)
            # a zoom or pan sets the range; a double click sets autorange and leaves it
            if rng is not None and rng != before_rng:
                self.show_window(fig, _to_ms(rng[0]), _to_ms(rng[1]))
            elif auto is True or rng is None:
                self.show_window(fig, None, None)

        return handle


def _range_of(axis: Any) -> tuple[Any, Any] | None:
    rng = axis.range
    return None if rng is None else (rng[0], rng[1])


def candle_label(bucket: int) -> str:
    """Return the legend name of candles of ``bucket`` bars."""
    return "candles" if bucket == 1 else f"candles ({bucket} bars each)"


def widgets_available() -> bool:
    """Return whether this process is a Jupyter kernel that can show Plotly's FigureWidget."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None  # type: ignore[attr-defined]
    if shell is None or getattr(shell, "kernel", None) is None:
        return False
    try:
        import anywidget  # noqa: F401
    except ImportError:
        return False
    return True


def price_chart(
    timestamp: np.ndarray,
    *,
    close: np.ndarray,
    equity: np.ndarray,
    drawdown: np.ndarray,
    ohlc: Sequence[np.ndarray] | None = None,
    fills: Sequence[tuple[str, np.ndarray, np.ndarray]] = (),
    symbol: str = "",
    title: str = "",
    max_points: int = 4000,
    max_candles: int = 5000,
    widget: bool | None = None,
) -> Any:
    """Return an interactive Plotly chart: candles (or a close line) with fills, equity, drawdown.

    Parameters
    ----------
    timestamp
        Bar open times in ms (int64, increasing).
    close, equity, drawdown
        One value per bar.
    ohlc
        Open, high, low and close per bar; without them the price pane is a close line.
    fills
        ``(side, bar positions, prices)`` per side (``"buy"``, ``"sell"``): all are drawn.
    symbol, title
        The price pane's and the chart's titles.
    max_points, max_candles
        Display limits: lines keep the min and max of ``max_points // 2`` buckets, more than
        ``max_candles`` candles are drawn as candles of several bars (:func:`ohlc_window`).
    widget
        Return a ``FigureWidget`` that draws every zoomed or panned window again at full
        detail (:class:`WindowResampler`); None: when running in a Jupyter kernel with
        anywidget installed (:func:`widgets_available`), else a static ``Figure`` (the
        overview; :meth:`WindowResampler.show_window` works on it too).
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    ts = np.asarray(timestamp, dtype=np.int64)
    x = ts.astype("datetime64[ms]")
    resampler = WindowResampler(ts, max_points=max_points, max_candles=max_candles)
    fig = make_subplots(
        rows=3,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.03,
        row_heights=[0.55, 0.3, 0.15],
        subplot_titles=(symbol, "equity", "drawdown"),
    )
    if ohlc is not None:
        o, h, lo, c = ohlc
        fig.add_trace(go.Candlestick(name="candles"), row=1, col=1)
        resampler.add_candles(len(fig.data) - 1, o, h, lo, c)
    else:
        fig.add_trace(go.Scattergl(mode="lines", name="close"), row=1, col=1)
        resampler.add_line(len(fig.data) - 1, close)
    markers = {"buy": ("triangle-up", "green"), "sell": ("triangle-down", "red")}
    for side, bars, prices in fills:
        symbol_, color = markers.get(side, ("circle", "gray"))
        fig.add_trace(
            go.Scattergl(
                x=x[np.asarray(bars, dtype=np.int64)],
                y=prices,
                mode="markers",
                name=side,
                marker={"symbol": symbol_, "color": color, "size": 9},
            ),
            row=1,
            col=1,
        )
    fig.add_trace(go.Scattergl(mode="lines", name="equity"), row=2, col=1)
    resampler.add_line(len(fig.data) - 1, equity)
    fig.add_trace(go.Scatter(mode="lines", fill="tozeroy", name="drawdown"), row=3, col=1)
    resampler.add_line(len(fig.data) - 1, drawdown)
    fig.update_layout(
        title=title, height=750, xaxis_rangeslider_visible=False, hovermode="x unified"
    )
    fig.update_yaxes(tickformat=".1%", row=3, col=1)
    if widget is None:
        widget = widgets_available()
    if widget:
        fig = _chart_widget_class()(fig)
        resampler.attach(fig)
    resampler.show_window(fig, None, None)
    return fig


@functools.cache
def _chart_widget_class() -> type:
    """Return the ``FigureWidget`` subclass of :func:`price_chart` (Plotly loads on first use)."""
    import plotly.graph_objects as go

    class PriceChartWidget(go.FigureWidget):  # type: ignore[misc]
        """A ``FigureWidget`` whose text form is one line, not a dump of the overview's data
        (what a front end without widgets, or a notebook's text export, shows)."""

        def __repr__(self) -> str:
            return (
                f"<PriceChartWidget {self.layout.title.text or ''!r}: "
                f"{self.data[0].name}; zoom or pan to draw the window at full detail>"
            )

    return PriceChartWidget
