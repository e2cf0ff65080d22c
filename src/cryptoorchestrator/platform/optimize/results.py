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
from typing import Any, Literal

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
        if interactive:
            ifig = plotly_figure(*args, kind=kind, x=x, y=y, title=title)
            if path is None:
                return ifig
            out = Path(path)
            out.parent.mkdir(parents=True, exist_ok=True)
            ifig.write_html(out, include_plotlyjs="cdn")
            return out
        fig = plot_figure(*args, kind=kind, x=x, y=y, title=title)
        if path is None:
            return fig
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=100)
        return out

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

    def plot(self, path: str | Path | None = None) -> Any:
        """Draw the stitched out-of-sample equity with each fold's test window shaded.

        Returns the figure; with ``path`` it is also saved there as PNG (and the path returned).
        """
        from cryptoorchestrator.platform.backtest.plotting import minmax_indices, new_figure

        fig = new_figure((11, 5))
        ax = fig.subplots()
        n = min(self.equity.size, self.timestamps.size)
        t = self.timestamps[:n].astype("datetime64[ms]")
        keep = minmax_indices(self.equity[:n], 4000)
        ax.plot(t[keep], self.equity[:n][keep], lw=1, color="tab:blue", label="out-of-sample")
        offset = self.folds[0]["test_start"] if self.folds else 0
        for f in self.folds:
            lo, hi = f["test_start"] - offset, min(f["test_stop"] - offset, n) - 1
            if 0 <= lo < n and hi > lo:
                ax.axvspan(t[lo], t[hi], alpha=0.08 if f["fold"] % 2 else 0.16, color="gray")
                ax.annotate(
                    f"fold {f['fold']}\n{_short_params(f['params'])}",
                    (t[lo], 1.0),
                    xycoords=("data", "axes fraction"),
                    va="top",
                    fontsize=8,
                )
        ax.set_ylabel("equity")
        ax.set_title(f"walk-forward: {len(self.folds)} folds, OOS return {self.oos_return:.2%}")
        if path is None:
            return fig
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=100)
        return out

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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    plot_figure(results, param_names, objective, title=title).savefig(path, dpi=100)
    return path


def plot_figure(
    results: Sequence[TrialResult],
    param_names: Sequence[str],
    objective: Objective,
    *,
    kind: PlotKind = "auto",
    x: str | None = None,
    y: str | None = None,
    title: str | None = None,
) -> Any:
    """Return a figure of the trials (see :meth:`OptimizationResult.plot` for ``kind``).

    Raises
    ------
    InvalidInputError
        Unknown ``kind``, or ``x``/``y`` not among ``param_names``.
    """
    import matplotlib as mpl

    from cryptoorchestrator.platform.backtest.plotting import new_figure

    names = list(param_names)
    shape = _check_kind(kind, names, x, y)
    ok = ranked(results, objective)
    fig = new_figure((9, 6))
    ax = fig.subplots()
    cmap = mpl.colormaps["viridis"]
    if shape == "best":
        idx, vals, best = _best_so_far(results, objective)
        if idx.size:
            ax.scatter(idx, vals, s=8, alpha=0.5, color="tab:gray", label="trial")
            ax.step(idx, best, where="post", color="tab:blue", label="best so far")
            ax.legend(loc="best")
        else:
            ax.text(0.5, 0.5, "no successful trials", ha="center", va="center")
        ax.set_xlabel("trial")
        ax.set_ylabel(objective.name)
    elif shape == "heatmap" and ok and len(names) >= 2:
        x_name, y_name, xs, ys, grid = _heat_grid(ok, names, x, y)
        im = ax.imshow(np.ma.masked_invalid(grid), origin="lower", aspect="auto", cmap=cmap)
        ax.set_xticks(range(len(xs)), [str(v) for v in xs], rotation=90)
        ax.set_yticks(range(len(ys)), [str(v) for v in ys])
        ax.set_xlabel(x_name)
        ax.set_ylabel(y_name)
        fig.colorbar(im, ax=ax, label=objective.name)
    elif ok and names:
        data = np.array([[_as_float(r.params[n]) for n in names] for r in ok])
        lo, hi = np.nanmin(data, axis=0), np.nanmax(data, axis=0)
        scaled = (data - lo) / np.where(hi > lo, hi - lo, 1.0)
        values = np.array([float(r.value) for r in ok])  # type: ignore[arg-type]
        vmin, vmax = float(values.min()), float(values.max())
        # worst first so the best lines are drawn on top
        for row, v in reversed(list(zip(scaled, values, strict=True))):
            t = (v - vmin) / (vmax - vmin) if vmax > vmin else 1.0
            ax.plot(range(len(names)), row, color=cmap(t), alpha=0.6, lw=1)
        ax.set_xticks(range(len(names)), names)
        ax.set_ylabel("scaled parameter value")
        sm = mpl.cm.ScalarMappable(cmap=cmap, norm=mpl.colors.Normalize(vmin=vmin, vmax=vmax))
        fig.colorbar(sm, ax=ax, label=objective.name)
    else:
        ax.text(0.5, 0.5, "no successful trials", ha="center", va="center")
    ax.set_title(title or f"{objective.name} ({objective.direction})")
    return fig


def plotly_figure(
    results: Sequence[TrialResult],
    param_names: Sequence[str],
    objective: Objective,
    *,
    kind: PlotKind = "auto",
    x: str | None = None,
    y: str | None = None,
    title: str | None = None,
) -> Any:
    """Return an interactive Plotly figure of the trials (same ``kind`` as :func:`plot_figure`).

    Raises
    ------
    InvalidInputError
        Unknown ``kind``, or ``x``/``y`` not among ``param_names``.
    """
    import plotly.graph_objects as go

    names = list(param_names)
    shape = _check_kind(kind, names, x, y)
    ok = ranked(results, objective)
    fig = go.Figure()
    if shape == "best":
        idx, vals, best = _best_so_far(results, objective)
        fig.add_trace(go.Scatter(x=idx, y=vals, mode="markers", name="trial", opacity=0.5))
        fig.add_trace(go.Scatter(x=idx, y=best, mode="lines", name="best so far", line_shape="hv"))
        fig.update_xaxes(title="trial")
        fig.update_yaxes(title=objective.name)
    elif shape == "heatmap" and ok and len(names) >= 2:
        x_name, y_name, xs, ys, grid = _heat_grid(ok, names, x, y)
        fig.add_trace(
            go.Heatmap(
                z=grid,
                x=[str(v) for v in xs],
                y=[str(v) for v in ys],
                colorscale="Viridis",
                colorbar={"title": objective.name},
                hovertemplate=f"{x_name}=%{{x}}<br>{y_name}=%{{y}}<br>"
                f"{objective.name}=%{{z}}<extra></extra>",
            )
        )
        fig.update_xaxes(title=x_name, type="category")
        fig.update_yaxes(title=y_name, type="category")
    elif ok and names:
        values = [float(r.value) for r in ok]  # type: ignore[arg-type]
        dims = [{"label": n, "values": [_as_float(r.params[n]) for r in ok]} for n in names]
        dims.append({"label": objective.name, "values": values})
        fig.add_trace(
            go.Parcoords(
                line={"color": values, "colorscale": "Viridis", "showscale": True},
                dimensions=dims,
            )
        )
    fig.update_layout(title=title or f"{objective.name} ({objective.direction})")
    return fig


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
