"""A study's results: :class:`OptimizationResult`, :class:`WalkForwardResult`, the results
table, their plots (heatmap, parallel coordinates, best-so-far, walk-forward folds) and their
display in notebooks.

Plots are matplotlib figures built without pyplot
(:mod:`~cryptoorchestrator.platform.backtest.plotting`): the user's backend is never changed,
and files are written only when a path is given."""

from __future__ import annotations

import html
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import pyarrow as pa

from cryptoorchestrator.platform.backtest.metrics import METRIC_NAMES
from cryptoorchestrator.platform.errors import InvalidInputError
from cryptoorchestrator.platform.optimize.objective import Objective
from cryptoorchestrator.platform.optimize.space import Params
from cryptoorchestrator.platform.optimize.trials import (
    OK,
    TrialConfig,
    TrialResult,
    best_of,
    strategy_name,
)

PlotKind = Literal["auto", "heatmap", "parallel", "best"]
PLOT_KINDS: tuple[str, ...] = ("auto", "heatmap", "parallel", "best")


@dataclass(repr=False)
class OptimizationResult:
    """The outcome of a study: every trial, the best one, a table and a plot."""

    # The key, or how to compute it: a study that is not stored needs it only if asked, and
    # hashing a large data set takes a core the workers are using.
    _study_key: str | Callable[[], str] = field(repr=False)
    run_id: str | None
    status: str
    strategy: Any
    objective: Objective
    param_names: tuple[str, ...]
    trials: list[TrialResult]
    config: TrialConfig
    n_reused: int = 0
    elapsed_s: float = 0.0
    batch_size: int = 0
    name: str = ""

    @property
    def study_key(self) -> str:
        """The study's identity (strategy, data, space, objective, settings): a re-run resumes."""
        if callable(self._study_key):
            self._study_key = self._study_key()
        return self._study_key

    @property
    def best_trial(self) -> TrialResult | None:
        """The succeeded trial with the best objective value (None if none succeeded)."""
        return best_of(self.trials, self.objective)

    @property
    def best(self) -> Params | None:
        """The best parameters."""
        t = self.best_trial
        return dict(t.params) if t else None

    @property
    def best_value(self) -> float | None:
        """The best objective value."""
        t = self.best_trial
        return t.value if t else None

    @property
    def results(self) -> pa.Table:
        """One row per trial (params, value, status, error, metrics); ``.to_pandas()`` works."""
        return results_table(self.trials, self.param_names)

    def top(self, n: int = 10) -> list[TrialResult]:
        """Return the ``n`` best succeeded trials, best first."""
        return ranked(self.trials, self.objective)[:n]

    def to_pandas(self) -> Any:
        """Return :attr:`results` as a pandas DataFrame (one row per trial)."""
        return self.results.to_pandas()

    def plot(
        self,
        path: str | Path | None = None,
        *,
        kind: PlotKind = "auto",
        x: str | None = None,
        y: str | None = None,
        interactive: bool = False,
    ) -> Any:
        """Draw the study; return the figure, or the file's path when ``path`` is given.

        Parameters
        ----------
        path
            Save the figure there as PNG and return that path; without it nothing is written
            and the figure is returned (a notebook displays it inline).
        kind
            ``"heatmap"`` (objective over parameters ``x`` and ``y``; other parameters are
            reduced to their best value per cell), ``"parallel"`` (parallel coordinates of every
            parameter, coloured by the objective), ``"best"`` (the objective of each trial and
            the best so far, in trial order), or ``"auto"``: a heatmap for two parameters,
            parallel coordinates otherwise.
        x, y
            The heatmap's parameters (default: the first two).
        interactive
            Return a Plotly figure (hover shows each cell's or trial's values; ``path`` gets
            its HTML) instead of a matplotlib one.

        Raises
        ------
        InvalidInputError
            Unknown ``kind`` or parameter names.
        """
        title = f"{self.name or strategy_name(self.strategy)}: {self.objective.name}"
        args = (self.trials, self.param_names, self.objective)
        fig = plot_figure(*args, kind=kind, x=x, y=y, title=title, interactive=interactive)
        return fig if path is None else save_figure(fig, path)

    def __repr__(self) -> str:
        best = self.best
        value = self.best_value
        shown = "none" if value is None else f"{value:.6g}"
        return (
            f"<OptimizationResult {self.name or strategy_name(self.strategy)} {self.status}: "
            f"{len(self.trials)} trials, {self.objective.name} ({self.objective.direction}) "
            f"best {shown} at {best}>"
        )

    def _repr_html_(self, top: int = 10) -> str:
        e = html.escape
        counts: dict[str, int] = {}
        for t in self.trials:
            counts[t.status] = counts.get(t.status, 0) + 1
        head = "".join(f"<th>{e(n)}</th>" for n in (*self.param_names, self.objective.name))
        metric_names = [m for m in ("total_return", "max_drawdown", "trade_count")]
        head += "".join(f"<th>{e(m)}</th>" for m in metric_names)
        rows = "".join(
            "<tr>"
            + "".join(f"<td>{e(str(t.params.get(n)))}</td>" for n in self.param_names)
            + f"<td>{e(_fmt_num(t.value))}</td>"
            + "".join(f"<td>{e(_fmt_num((t.metrics or {}).get(m)))}</td>" for m in metric_names)
            + "</tr>"
            for t in self.top(top)
        )
        status = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        best = json.dumps(self.best, default=str) if self.best is not None else "none"
        return (
            "<div class='co-optimization'>"
            f"<b>OptimizationResult</b> {e(self.name or strategy_name(self.strategy))}: "
            f"<b>{e(self.status)}</b>, {len(self.trials)} trials ({e(status)}), "
            f"{e(self.objective.name)} ({e(self.objective.direction)})<br>"
            f"best <code>{e(best)}</code> = {e(_fmt_num(self.best_value))}"
            f"<table><tr>{head}</tr>{rows}</table><small>top {min(top, len(self.top(top)))}"
            "</small></div>"
        )


@dataclass(repr=False)
class WalkForwardResult:
    """Per-fold best parameters with in-sample and out-of-sample metrics, stitched OOS equity."""

    folds: list[dict[str, Any]]
    equity: np.ndarray
    timestamps: np.ndarray
    studies: list[OptimizationResult]

    @property
    def table(self) -> pa.Table:
        """One row per fold: windows, best params, ``is_<metric>`` and ``oos_<metric>``."""
        rows = []
        for f in self.folds:
            row = {k: v for k, v in f.items() if k not in ("is_metrics", "oos_metrics", "params")}
            row.update({f"param_{k}": v for k, v in (f["params"] or {}).items()})
            row.update({f"is_{k}": v for k, v in (f["is_metrics"] or {}).items()})
            row.update({f"oos_{k}": v for k, v in (f["oos_metrics"] or {}).items()})
            rows.append(row)
        return pa.Table.from_pylist(rows)

    @property
    def oos_return(self) -> float:
        """Total return of the stitched out-of-sample equity curve."""
        if not self.equity.size or not self.studies:
            return math.nan
        return float(self.equity[-1] / self.studies[0].config.sim.init_cash - 1.0)

    def to_pandas(self) -> Any:
        """Return :attr:`table` as a pandas DataFrame (one row per fold)."""
        return self.table.to_pandas()

    def plot(self, path: str | Path | None = None, *, interactive: bool = False) -> Any:
        """Draw the stitched out-of-sample equity with each fold's test window shaded.

        Parameters
        ----------
        path
            Save the figure there (PNG, or HTML with ``interactive``) and return that path;
            without it nothing is written and the figure is returned.
        interactive
            Return a Plotly figure (hover a fold's window for its parameters and its
            in-sample and out-of-sample values) instead of a matplotlib one.
        """
        from cryptoorchestrator.platform.backtest.plotting import minmax_indices

        n = min(self.equity.size, self.timestamps.size)
        t = self.timestamps[:n].astype("datetime64[ms]")
        keep = minmax_indices(self.equity[:n], 4000)
        title = f"walk-forward: {len(self.folds)} folds, OOS return {self.oos_return:.2%}"
        spans = self.fold_spans()
        if interactive:
            import plotly.graph_objects as go

            fig = go.Figure(
                go.Scattergl(x=t[keep], y=self.equity[:n][keep], mode="lines", name="out-of-sample")
            )
            for span in spans:
                fig.add_vrect(
                    x0=str(span.start),
                    x1=str(span.stop),
                    fillcolor="gray",
                    opacity=span.shade,
                    line_width=0,
                    annotation_text=f"fold {span.fold}",
                    annotation_position="top left",
                )
                # an invisible point per fold carries its hover text
                fig.add_trace(
                    go.Scatter(
                        x=[str(span.start)],
                        y=[float(np.nanmax(self.equity[:n])) if n else 0.0],
                        mode="markers",
                        marker={"opacity": 0},
                        name=f"fold {span.fold}",
                        hovertext=[span.hover],
                        hoverinfo="text",
                        showlegend=False,
                    )
                )
            _axis_titles(fig, None, "equity", title)
        else:
            from cryptoorchestrator.platform.backtest.plotting import new_figure

            fig = new_figure((11, 5))
            ax = fig.subplots()
            ax.plot(t[keep], self.equity[:n][keep], lw=1, color="tab:blue", label="out-of-sample")
            for span in spans:
                # matplotlib converts dates through its units registry; its stubs say float
                ax.axvspan(span.start, span.stop, alpha=span.shade, color="gray")  # type: ignore[arg-type]
                ax.annotate(
                    f"fold {span.fold}\n{span.label}",
                    (span.start, 1.0),
                    xycoords=("data", "axes fraction"),
                    va="top",
                    fontsize=8,
                )
            _axis_titles(ax, None, "equity", title)
        return fig if path is None else save_figure(fig, path)

    def fold_spans(self) -> list[FoldSpan]:
        """Return each fold's out-of-sample window on the stitched equity's time axis."""
        n = min(self.equity.size, self.timestamps.size)
        t = self.timestamps[:n].astype("datetime64[ms]")
        offset = self.folds[0]["test_start"] if self.folds else 0
        spans = []
        for f in self.folds:
            lo, hi = f["test_start"] - offset, min(f["test_stop"] - offset, n) - 1
            if 0 <= lo < n and hi > lo:
                hover = (
                    f"fold {f['fold']}: {_short_params(f['params'])}<br>"
                    f"in-sample {_fmt_num(f.get('is_value'))}, "
                    f"out-of-sample {_fmt_num(f.get('oos_value'))}"
                )
                spans.append(
                    FoldSpan(
                        fold=int(f["fold"]),
                        start=t[lo],
                        stop=t[hi],
                        label=_short_params(f["params"]),
                        hover=hover,
                        shade=0.08 if f["fold"] % 2 else 0.16,
                    )
                )
        return spans

    def __repr__(self) -> str:
        return (
            f"<WalkForwardResult {len(self.folds)} folds, "
            f"out-of-sample return {self.oos_return:.4%}>"
        )

    def _repr_html_(self) -> str:
        from cryptoorchestrator.platform.backtest.plotting import sparkline_svg

        e = html.escape
        cols = ("fold", "params", "is_value", "oos_value", "oos_total_return")
        rows = "".join(
            "<tr>"
            + f"<td>{f['fold']}</td><td><code>{e(json.dumps(f['params'], default=str))}</code></td>"
            + f"<td>{e(_fmt_num(f['is_value']))}</td><td>{e(_fmt_num(f['oos_value']))}</td>"
            + f"<td>{e(_fmt_num((f['oos_metrics'] or {}).get('total_return')))}</td></tr>"
            for f in self.folds
        )
        return (
            "<div class='co-walkforward'><b>WalkForwardResult</b> "
            f"{len(self.folds)} folds, out-of-sample return {e(_fmt_num(self.oos_return))}<br>"
            f"{sparkline_svg(self.equity)}<table><tr>"
            + "".join(f"<th>{c}</th>" for c in cols)
            + f"</tr>{rows}</table></div>"
        )


def results_table(results: Sequence[TrialResult], param_names: Sequence[str]) -> pa.Table:
    """Return one row per trial: params, ``value``, ``status``, ``error``, every metric.

    Rows keep the trial order; undefined values are null.
    """

    def num(v: Any) -> float | None:
        if v is None:
            return None
        f = float(v)
        return None if math.isnan(f) else f

    cols: dict[str, list[Any]] = {"trial_key": [r.trial_key for r in results]}
    for name in param_names:
        cols[name] = [r.params.get(name) for r in results]
    cols["value"] = [num(r.value) for r in results]
    cols["status"] = [r.status for r in results]
    cols["error"] = [r.error for r in results]
    cols["duration_s"] = [r.duration_s for r in results]
    cols["node"] = [r.node for r in results]
    for m in METRIC_NAMES:
        cols[m] = [num(r.metrics.get(m)) if r.metrics else None for r in results]
    types = {
        "value": pa.float64(),
        "duration_s": pa.float64(),
        "status": pa.string(),
        "error": pa.string(),
        "node": pa.string(),
        "trial_key": pa.string(),
        **{m: pa.float64() for m in METRIC_NAMES},
    }
    return pa.table({k: pa.array(v, type=types.get(k)) for k, v in cols.items()})


def ranked(results: Sequence[TrialResult], objective: Objective) -> list[TrialResult]:
    """Return the succeeded trials with a finite value, best first (ties keep trial order)."""
    ok = [r for r in results if r.status == OK and r.value is not None and not math.isnan(r.value)]
    sign = 1.0 if objective.direction == "minimize" else -1.0
    return sorted(ok, key=lambda r: sign * float(r.value))  # type: ignore[arg-type]


def plot_results(
    results: Sequence[TrialResult],
    param_names: Sequence[str],
    objective: Objective,
    path: str | Path,
    *,
    title: str | None = None,
) -> Path:
    """Save a heatmap (two parameters) or parallel-coordinates plot (otherwise) as a PNG.

    Returns the path written.
    """
    return save_figure(plot_figure(results, param_names, objective, title=title), path)


class FoldSpan(NamedTuple):
    """A walk-forward fold's out-of-sample window, as the folds plot shades it."""

    fold: int
    start: np.datetime64
    stop: np.datetime64
    label: str
    hover: str
    shade: float


@dataclass(frozen=True)
class TrialView:
    """What a plot of the trials draws, whichever library draws it.

    ``kind`` is ``"best"`` (``trial``, ``values``, ``best``), ``"heatmap"`` (``x_name``,
    ``y_name``, ``xs``, ``ys``, ``grid``: rows are ``y`` values, each cell the best value of its
    pair), ``"parallel"`` (``names``, ``params``: one row per succeeded trial, best first, and
    its ``values``) or ``"empty"`` (no succeeded trial).
    """

    kind: str
    objective: str
    direction: str
    trial: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    values: np.ndarray = field(default_factory=lambda: np.empty(0))
    best: np.ndarray = field(default_factory=lambda: np.empty(0))
    x_name: str = ""
    y_name: str = ""
    xs: list[Any] = field(default_factory=list)
    ys: list[Any] = field(default_factory=list)
    grid: np.ndarray = field(default_factory=lambda: np.empty((0, 0)))
    names: list[str] = field(default_factory=list)
    params: np.ndarray = field(default_factory=lambda: np.empty((0, 0)))


def trial_view(
    results: Sequence[TrialResult],
    param_names: Sequence[str],
    objective: Objective,
    *,
    kind: PlotKind = "auto",
    x: str | None = None,
    y: str | None = None,
) -> TrialView:
    """Return the data of a plot of the trials (see :meth:`OptimizationResult.plot`).

    Raises
    ------
    InvalidInputError
        Unknown ``kind``, or ``x``/``y`` not among ``param_names``.
    """
    names = list(param_names)
    shape = _check_kind(kind, names, x, y)
    obj, direction = objective.name, objective.direction
    if shape == "best":
        idx, vals, best = _best_so_far(results, objective)
        return TrialView(
            "best" if idx.size else "empty",
            trial=idx,
            values=vals,
            best=best,
            objective=obj,
            direction=direction,
        )
    ok = ranked(results, objective)
    if not ok or not names:
        return TrialView("empty", obj, direction)
    if shape == "heatmap" and len(names) >= 2:
        x_name, y_name, xs, ys, grid = _heat_grid(ok, names, x, y)
        return TrialView(
            "heatmap",
            x_name=x_name,
            y_name=y_name,
            xs=xs,
            ys=ys,
            grid=grid,
            objective=obj,
            direction=direction,
        )
    return TrialView(
        "parallel",
        names=names,
        params=np.array([[_as_float(r.params[n]) for n in names] for r in ok]),
        values=np.array([float(r.value) for r in ok]),  # type: ignore[arg-type]
        objective=obj,
        direction=direction,
    )


def plot_figure(
    results: Sequence[TrialResult],
    param_names: Sequence[str],
    objective: Objective,
    *,
    kind: PlotKind = "auto",
    x: str | None = None,
    y: str | None = None,
    title: str | None = None,
    interactive: bool = False,
) -> Any:
    """Return a figure of the trials (see :meth:`OptimizationResult.plot` for ``kind``):
    matplotlib, or Plotly with ``interactive``.

    Raises
    ------
    InvalidInputError
        Unknown ``kind``, or ``x``/``y`` not among ``param_names``.
    """
    view = trial_view(results, param_names, objective, kind=kind, x=x, y=y)
    return plotly_view(view, title) if interactive else matplotlib_view(view, title)


def matplotlib_view(view: TrialView, title: str | None = None) -> Any:
    """Draw a :class:`TrialView` as a matplotlib figure (built without pyplot)."""
    import matplotlib as mpl

    from cryptoorchestrator.platform.backtest.plotting import new_figure

    fig = new_figure((9, 6))
    ax = fig.subplots()
    cmap = mpl.colormaps["viridis"]
    if view.kind == "best":
        ax.scatter(view.trial, view.values, s=8, alpha=0.5, color="tab:gray", label="trial")
        ax.step(view.trial, view.best, where="post", color="tab:blue", label="best so far")
        ax.legend(loc="best")
        _axis_titles(ax, "trial", view.objective)
    elif view.kind == "heatmap":
        im = ax.imshow(np.ma.masked_invalid(view.grid), origin="lower", aspect="auto", cmap=cmap)
        ax.set_xticks(range(len(view.xs)), [str(v) for v in view.xs], rotation=90)
        ax.set_yticks(range(len(view.ys)), [str(v) for v in view.ys])
        _axis_titles(ax, view.x_name, view.y_name)
        fig.colorbar(im, ax=ax, label=view.objective)
    elif view.kind == "parallel":
        lo, hi = np.nanmin(view.params, axis=0), np.nanmax(view.params, axis=0)
        scaled = (view.params - lo) / np.where(hi > lo, hi - lo, 1.0)
        vmin, vmax = float(view.values.min()), float(view.values.max())
        # worst first so the best lines are drawn on top
        for row, v in reversed(list(zip(scaled, view.values, strict=True))):
            t = (v - vmin) / (vmax - vmin) if vmax > vmin else 1.0
            ax.plot(range(len(view.names)), row, color=cmap(t), alpha=0.6, lw=1)
        ax.set_xticks(range(len(view.names)), view.names)
        _axis_titles(ax, None, "scaled parameter value")
        sm = mpl.cm.ScalarMappable(cmap=cmap, norm=mpl.colors.Normalize(vmin=vmin, vmax=vmax))
        fig.colorbar(sm, ax=ax, label=view.objective)
    else:
        ax.text(0.5, 0.5, "no successful trials", ha="center", va="center")
    _axis_titles(ax, None, None, title or f"{view.objective} ({view.direction})")
    return fig


def plotly_view(view: TrialView, title: str | None = None) -> Any:
    """Draw a :class:`TrialView` as an interactive Plotly figure."""
    import plotly.graph_objects as go

    fig = go.Figure()
    if view.kind == "best":
        fig.add_trace(
            go.Scatter(x=view.trial, y=view.values, mode="markers", name="trial", opacity=0.5)
        )
        fig.add_trace(
            go.Scatter(x=view.trial, y=view.best, mode="lines", name="best so far", line_shape="hv")
        )
        _axis_titles(fig, "trial", view.objective)
    elif view.kind == "heatmap":
        fig.add_trace(
            go.Heatmap(
                z=view.grid,
                x=[str(v) for v in view.xs],
                y=[str(v) for v in view.ys],
                colorscale="Viridis",
                colorbar={"title": view.objective},
                hovertemplate=f"{view.x_name}=%{{x}}<br>{view.y_name}=%{{y}}<br>"
                f"{view.objective}=%{{z}}<extra></extra>",
            )
        )
        _axis_titles(fig, view.x_name, view.y_name)
        fig.update_xaxes(type="category")
        fig.update_yaxes(type="category")
    elif view.kind == "parallel":
        values = view.values.tolist()
        dims = [
            {"label": n, "values": view.params[:, i].tolist()} for i, n in enumerate(view.names)
        ]
        dims.append({"label": view.objective, "values": values})
        fig.add_trace(
            go.Parcoords(
                line={"color": values, "colorscale": "Viridis", "showscale": True},
                dimensions=dims,
            )
        )
    _axis_titles(fig, None, None, title or f"{view.objective} ({view.direction})")
    return fig


def save_figure(fig: Any, path: str | Path) -> Path:
    """Write ``fig`` to ``path`` (a Plotly figure as HTML, a matplotlib one as PNG at 100 dpi),
    creating its folder; return the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    if hasattr(fig, "write_html"):
        fig.write_html(out, include_plotlyjs="cdn")
    else:
        fig.savefig(out, dpi=100)
    return out


def _axis_titles(target: Any, x: str | None, y: str | None, title: str | None = None) -> None:
    """Set the axis labels and the title of a matplotlib ``Axes`` or a Plotly figure."""
    if hasattr(target, "update_layout"):
        if x is not None:
            target.update_xaxes(title=x)
        if y is not None:
            target.update_yaxes(title=y)
        if title is not None:
            target.update_layout(title=title)
        return
    if x is not None:
        target.set_xlabel(x)
    if y is not None:
        target.set_ylabel(y)
    if title is not None:
        target.set_title(title)


def _check_kind(kind: str, names: list[str], x: str | None, y: str | None) -> str:
    if kind not in PLOT_KINDS:
        raise InvalidInputError("kind", f"unknown plot kind {kind!r}", allowed=PLOT_KINDS)
    for arg, value in (("x", x), ("y", y)):
        if value is not None and value not in names:
            raise InvalidInputError(arg, f"unknown parameter {value!r}", allowed=tuple(names))
    if x is not None and x == y:
        raise InvalidInputError("y", "must differ from x", allowed=tuple(names))
    if kind == "auto":
        return "heatmap" if len(names) == 2 else "parallel"
    return kind


def _heat_grid(
    ok: Sequence[TrialResult], names: list[str], x: str | None, y: str | None
) -> tuple[str, str, list[Any], list[Any], np.ndarray]:
    """Return the heatmap's axes and grid: rows ``y`` values, columns ``x`` values."""
    x_name = x or (names[0] if names[0] != y else names[1])
    y_name = y or next(n for n in names if n != x_name)
    xs = sorted({r.params[x_name] for r in ok}, key=_sort_key)
    ys = sorted({r.params[y_name] for r in ok}, key=_sort_key)
    grid = np.full((len(ys), len(xs)), np.nan)
    xi = {v: i for i, v in enumerate(xs)}
    yi = {v: i for i, v in enumerate(ys)}
    # ranked is best first: walking it backwards leaves each cell holding its best value
    for r in reversed(ok):
        grid[yi[r.params[y_name]], xi[r.params[x_name]]] = r.value
    return x_name, y_name, xs, ys, grid


def _best_so_far(
    results: Sequence[TrialResult], objective: Objective
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return trial positions, their values and the best value so far (succeeded trials)."""
    order = [
        (i, float(r.value))
        for i, r in enumerate(results)
        if r.status == OK and r.value is not None and not math.isnan(r.value)
    ]
    idx = np.array([i for i, _ in order], dtype=np.int64)
    vals = np.array([v for _, v in order], dtype=np.float64)
    acc = np.minimum if objective.direction == "minimize" else np.maximum
    return idx, vals, acc.accumulate(vals) if vals.size else vals


def _sort_key(v: Any) -> tuple[int, Any]:
    return (0, v) if isinstance(v, int | float) else (1, str(v))


def _fmt_num(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float | np.floating):
        return f"{float(v):.6g}"
    return str(v)


def _short_params(p: Any) -> str:
    if not p:
        return "cash"
    return ", ".join(f"{k}={v}" for k, v in p.items())


def _as_float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float(hash(v) % 1000)  # categorical: a stable position on the axis
