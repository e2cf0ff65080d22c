"""The warm-up compiles what the platform calls: every indicator, strategy and the check."""

from __future__ import annotations

import io

import cryptoorchestrator.indicators as indicators
from cryptoorchestrator.strategies import warmup
from cryptoorchestrator.strategies.registry import list_strategies


def test_steps_cover_every_indicator_and_strategy() -> None:
    labels = [label for label, _ in warmup.all_steps()]
    for name in indicators.__all__:
        if name != "IndicatorInputError":
            assert f"indicator {name}" in labels
    for name in list_strategies():
        assert f"backtest {name}" in labels
        assert f"optimizer trial {name}" in labels
    assert "look-ahead check" in labels


def test_warm_up_runs_every_step_and_reports_progress() -> None:
    out = io.StringIO()
    total = warmup.warm_up(jobs=1, stream=out)
    lines = out.getvalue().splitlines()
    assert total == len(warmup.all_steps())
    assert len(lines) == total + 1  # one line per step in a log, then the summary
    assert lines[0].startswith("  compiling kernels [")
    assert f"1/{total}" in lines[0]
    assert lines[-1].startswith(f"  compiled {total} kernel groups in ")
