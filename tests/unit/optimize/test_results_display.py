"""Study and walk-forward results in a notebook: plain reprs without private fields, HTML
tables, DataFrames, and figures (heatmap, parallel, best-so-far, folds) that write no file
unless given a path."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

import cryptoorchestrator as co
from cryptoorchestrator.platform.backtest.plotting import ReportFigure
from cryptoorchestrator.platform.errors import InvalidInputError
from cryptoorchestrator.platform.optimize.results import (
    OptimizationResult,
    WalkForwardResult,
    _fmt_num,
)

SPACE = {"fast": [5, 10, 20], "slow": [30, 60]}


@pytest.fixture(scope="module")
def bars(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return co.load_ohlcv(
        "binance",
        "BTC/USDT",
        "1h",
        start="2021-01-01",
        end="2021-03-01",
        data_dir=tmp_path_factory.mktemp("store"),
    )


@pytest.fixture(scope="module")
def opt(bars: Any) -> OptimizationResult:
    return co.optimize(
        "sma_cross",
        bars,
        space=SPACE,
        objective="sharpe",
        executor="serial",
        store=False,
        progress=False,
    )


@pytest.fixture(scope="module")
def wf(bars: Any) -> WalkForwardResult:
    return co.walk_forward(
        "sma_cross",
        bars,
        space=SPACE,
        n_folds=2,
        executor="serial",
        store=False,
        progress=False,
    )


def test_repr_is_plain_and_hides_private_fields(opt: OptimizationResult) -> None:
    text = repr(opt)
    assert "_study_key" not in text
    assert "TrialResult" not in text
    assert "sharpe (maximize)" in text
    assert f"{len(opt.trials)} trials" in text
    assert str(opt.best) in text


def test_repr_html_shows_status_best_and_the_top_trials(opt: OptimizationResult) -> None:
    page = opt._repr_html_()
    assert opt.status in page
    assert f"{len(opt.trials)} trials" in page
    top = opt.top(10)
    assert len(top) == 6
    assert page.count("<tr>") == 1 + len(top)
    for t in top:
        assert f"<td>{_fmt_num(t.value)}</td>" in page
    assert "&quot;fast&quot;" in page  # the best parameters, escaped JSON


def test_to_pandas_has_one_row_per_trial(opt: OptimizationResult) -> None:
    df = opt.to_pandas()
    assert len(df) == len(opt.trials) == 6
    assert {"fast", "slow", "value", "sharpe"} <= set(df.columns)
    assert math.isclose(df["value"].max(), opt.best_value)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["auto", "heatmap", "parallel", "best"])
def test_every_plot_kind_returns_a_figure_and_writes_nothing(
    opt: OptimizationResult, kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    fig = opt.plot(kind=kind)  # type: ignore[arg-type]
    assert isinstance(fig, ReportFigure)
    assert fig._repr_png_().startswith(b"\x89PNG")
    assert list(tmp_path.iterdir()) == []


def test_heatmap_axes_follow_x_and_y_and_cells_hold_the_values(opt: OptimizationResult) -> None:
    fig = opt.plot(kind="heatmap", x="slow", y="fast")
    ax = fig.axes[0]
    assert ax.get_xlabel() == "slow"
    assert ax.get_ylabel() == "fast"
    grid = ax.images[0].get_array()
    assert grid.shape == (3, 2)  # fast values by slow values
    assert math.isclose(float(grid.max()), opt.best_value)  # type: ignore[arg-type]


def test_best_so_far_curve_is_monotone_and_ends_at_the_best(opt: OptimizationResult) -> None:
    fig = opt.plot(kind="best")
    line = fig.axes[0].lines[0]
    y = list(line.get_ydata())
    assert y == sorted(y)
    assert math.isclose(y[-1], opt.best_value)  # type: ignore[arg-type]


def test_bad_plot_arguments_name_the_field(opt: OptimizationResult) -> None:
    with pytest.raises(InvalidInputError, match="kind"):
        opt.plot(kind="pie")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="x"):
        opt.plot(kind="heatmap", x="nope")


def test_plot_with_a_path_writes_the_png_and_returns_its_path(
    opt: OptimizationResult, tmp_path: Path
) -> None:
    out = opt.plot(tmp_path / "heat.png")
    assert out == tmp_path / "heat.png"
    assert out.read_bytes().startswith(b"\x89PNG")


def test_walk_forward_display_table_and_folds_plot(
    wf: WalkForwardResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert repr(wf).startswith("<WalkForwardResult 2 folds")
    page = wf._repr_html_()
    assert page.count("<tr>") == 1 + len(wf.folds)
    assert "<svg" in page
    df = wf.to_pandas()
    assert df["fold"].tolist() == [0, 1]
    monkeypatch.chdir(tmp_path)
    fig = wf.plot()
    assert isinstance(fig, ReportFigure)
    assert len(fig.axes[0].patches) == 2  # one shaded test window per fold
    assert list(tmp_path.iterdir()) == []


def test_interactive_views_are_plotly_figures_of_the_same_data(
    opt: OptimizationResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    heat = opt.plot(kind="heatmap", x="fast", y="slow", interactive=True)
    trace = heat.data[0]
    assert trace.type == "heatmap"
    assert list(trace.x) == ["5", "10", "20"]
    assert list(trace.y) == ["30", "60"]
    assert math.isclose(max(max(row) for row in trace.z), opt.best_value)  # type: ignore[arg-type]
    parallel = opt.plot(kind="parallel", interactive=True).data[0]
    assert parallel.type == "parcoords"
    assert [d.label for d in parallel.dimensions] == ["fast", "slow", "sharpe"]
    best = opt.plot(kind="best", interactive=True)
    assert math.isclose(best.data[1].y[-1], opt.best_value)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []
    out = opt.plot(tmp_path / "heat.html", interactive=True)
    assert "plotly" in out.read_text()


def test_interactive_walk_forward_shades_each_fold_and_hovers_its_parameters(
    wf: WalkForwardResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    fig = wf.plot(interactive=True)
    assert fig.data[0].name == "out-of-sample"
    spans = wf.fold_spans()
    assert [s.fold for s in spans] == [0, 1]
    rects = [s for s in fig.layout.shapes if s.type == "rect"]
    assert [(r.x0, r.x1) for r in rects] == [(str(s.start), str(s.stop)) for s in spans]
    hovers = [t.hovertext[0] for t in fig.data[1:]]
    for fold, text in zip(wf.folds, hovers, strict=True):
        assert f"fold {fold['fold']}: " in text
        assert "fast=" in text
        assert _fmt_num(fold["oos_value"]) in text
    assert list(tmp_path.iterdir()) == []
    out = wf.plot(tmp_path / "folds.html", interactive=True)
    assert out == tmp_path / "folds.html"
    assert "plotly" in out.read_text()
