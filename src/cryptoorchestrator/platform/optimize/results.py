"""A study's results: :class:`OptimizationResult`, :class:`WalkForwardResult`, the results
table, and the plot (heatmap or parallel coordinates)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from cryptoorchestrator.platform.backtest.metrics import METRIC_NAMES
from cryptoorchestrator.platform.optimize.objective import Objective
from cryptoorchestrator.platform.optimize.space import Params
from cryptoorchestrator.platform.optimize.trials import (
    OK,
    TrialConfig,
    TrialResult,
    best_of,
    strategy_name,
)


@dataclass
class OptimizationResult:
    """The outcome of a study: every trial, the best one, a table and a plot."""

    # The key, or how to compute it: a study that is not stored needs it only if asked, and
    # hashing a large data set takes a core the workers are using.
    _study_key: str | Callable[[], str]
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

    def plot(self, path: str | Path | None = None) -> Path:
        """Save a heatmap (two parameters) or parallel coordinates plot as PNG; return its path."""
        path = Path(path) if path else Path(f"optimize-{self.study_key[:12]}.png")
        return plot_results(
            self.trials,
            self.param_names,
            self.objective,
            path,
            title=f"{self.name or strategy_name(self.strategy)}: {self.objective.name}",
        )


@dataclass
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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ok = ranked(results, objective)
    fig, ax = plt.subplots(figsize=(9, 6))
    try:
        if len(param_names) == 2 and ok:
            x_name, y_name = param_names
            xs = sorted({r.params[x_name] for r in ok})
            ys = sorted({r.params[y_name] for r in ok})
            grid = np.full((len(ys), len(xs)), np.nan)
            xi = {v: i for i, v in enumerate(xs)}
            yi = {v: i for i, v in enumerate(ys)}
            for r in ok:
                grid[yi[r.params[y_name]], xi[r.params[x_name]]] = r.value
            im = ax.imshow(
                np.ma.masked_invalid(grid), origin="lower", aspect="auto", cmap="viridis"
            )
            ax.set_xticks(range(len(xs)), [str(v) for v in xs], rotation=90)
            ax.set_yticks(range(len(ys)), [str(v) for v in ys])
            ax.set_xlabel(x_name)
            ax.set_ylabel(y_name)
            fig.colorbar(im, ax=ax, label=objective.name)
        else:
            names = list(param_names)
            if ok and names:
                data = np.array([[_as_float(r.params[n]) for n in names] for r in ok])
                lo, hi = np.nanmin(data, axis=0), np.nanmax(data, axis=0)
                scaled = (data - lo) / np.where(hi > lo, hi - lo, 1.0)
                values = np.array([float(r.value) for r in ok])  # type: ignore[arg-type]
                vmin, vmax = float(values.min()), float(values.max())
                cmap = plt.get_cmap("viridis")
                # worst first so the best lines are drawn on top
                for row, v in reversed(list(zip(scaled, values, strict=True))):
                    t = (v - vmin) / (vmax - vmin) if vmax > vmin else 1.0
                    ax.plot(range(len(names)), row, color=cmap(t), alpha=0.6, lw=1)
                ax.set_xticks(range(len(names)), names)
                ax.set_ylabel("scaled parameter value")
                sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(vmin=vmin, vmax=vmax))
                fig.colorbar(sm, ax=ax, label=objective.name)
            else:
                ax.text(0.5, 0.5, "no successful trials", ha="center", va="center")
        ax.set_title(title or f"{objective.name} ({objective.direction})")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)
    return path


def _as_float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float(hash(v) % 1000)  # categorical: a stable position on the axis
