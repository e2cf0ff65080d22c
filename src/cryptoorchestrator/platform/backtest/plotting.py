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
"""

from __future__ import annotations

import io
from typing import Any

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
    keep = [0, n - 1]
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        if hi <= lo:
            continue
        chunk = values[lo:hi]
        keep.append(lo + int(np.nanargmin(chunk)) if np.isfinite(chunk).any() else lo)
        keep.append(lo + int(np.nanargmax(chunk)) if np.isfinite(chunk).any() else hi - 1)
    return np.unique(np.asarray(keep, dtype=np.int64))


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
