"""Backtest and optimization runs submitted as the API submits them, executed on a real Ray."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from cryptoorchestrator.cluster import jobs
from cryptoorchestrator.platform.errors import InvalidInputError
from cryptoorchestrator.platform.settings import Settings
from cryptoorchestrator.platform.storage import db
from cryptoorchestrator.platform.storage.models import BacktestRun, OptimizationRun

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture
def job_settings(ray_session: Any, tmp_path: Path) -> Any:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'jobs.db'}",
        var_dir=tmp_path / "var",
        data_dir=tmp_path / "var" / "data",
        log_dir=tmp_path / "logs",
        secret_key="jobs-secret-key-0123456789",
    )
    db.upgrade(settings)
    yield settings
    db.dispose_engines()


def _wait(settings: Settings, model: Any, run_id: str, timeout: float = 180.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with db.session_scope(settings) as session:
            run = session.get(model, run_id)
            if run is not None and run.status in ("succeeded", "failed", "cancelled"):
                return run
        time.sleep(0.5)
    raise AssertionError(f"run {run_id} did not finish")


SPEC = {
    "exchange": "binance",
    "symbol": "BTC/USDT",
    "timeframe": "1h",
    "start": "2021-01-01",
    "end": "2021-07-01",
}


def test_backtest_run_records_metrics(job_settings: Settings) -> None:
    run_id = jobs.submit_backtest(
        job_settings, None, {**SPEC, "strategy": "sma_cross", "params": {"fast": 10, "slow": 50}}
    )
    run = _wait(job_settings, BacktestRun, run_id)
    assert run.status == "succeeded", run.error
    assert run.metrics["trade_count"] > 0
    # A name that is not registered is refused at submission: nothing is stored or started.
    with pytest.raises(InvalidInputError, match="unknown strategy"):
        jobs.submit_backtest(job_settings, None, {**SPEC, "strategy": "no_such_strategy"})
    with db.session_scope(job_settings) as session:
        assert session.query(BacktestRun).count() == 1
    # An error inside the worker (parameters out of range) is recorded on the run.
    bad = jobs.submit_backtest(
        job_settings, None, {**SPEC, "strategy": "sma_cross", "params": {"fast": 900}}
    )
    failed = _wait(job_settings, BacktestRun, bad)
    assert failed.status == "failed"
    assert "params.fast" in failed.error


def test_optimization_run_gets_an_id_at_once_and_finishes(job_settings: Settings) -> None:
    spec = {
        **SPEC,
        "strategy": "sma_cross",
        "space": {"fast": [5, 10], "slow": [30, 60]},
        "objective": "sharpe",
        "method": "grid",
    }
    run_id = jobs.submit_optimization(job_settings, None, spec)
    run = _wait(job_settings, OptimizationRun, run_id)
    assert run.status == "succeeded", run.error
    assert run.n_trials == 4
    assert set(run.best_params) == {"fast", "slow"}
    # The same study submitted again is the same run (resumed, nothing recomputed).
    assert jobs.submit_optimization(job_settings, None, spec) == run_id
    with pytest.raises(InvalidInputError):
        jobs.submit_optimization(job_settings, None, {**spec, "space": {"fast": [1000]}})


OPERATOR_STRATEGY = '''
import numpy as np
from cryptoorchestrator.platform.strategy.base import Param, Signals, Strategy


class Momentum(Strategy):
    """Long while the close is above the close ``lag`` bars before."""

    name = "operator_momentum"
    params = (Param("lag", "int", 10, low=1, high=100),)

    def signals(self, bars, params):
        close = np.asarray(bars.close, dtype=float)
        lag = int(params["lag"])
        up = np.zeros(len(close), bool)
        up[lag:] = close[lag:] > close[:-lag]
        return Signals(up, ~up)
'''


def test_operator_strategies_run_in_job_workers(job_settings: Settings, tmp_path: Path) -> None:
    # Workers are other processes: each registers the operator's strategy_paths itself, and
    # batches of a study carry the user class by value.
    folder = tmp_path / "operator_strategies"
    folder.mkdir()
    (folder / "momentum_jobs.py").write_text(OPERATOR_STRATEGY)
    settings = job_settings.model_copy(update={"strategy_paths": [str(folder)]})
    run_id = jobs.submit_backtest(
        settings, None, {**SPEC, "strategy": "operator_momentum", "params": {"lag": 12}}
    )
    run = _wait(settings, BacktestRun, run_id)
    assert run.status == "succeeded", run.error
    spec = {**SPEC, "strategy": "operator_momentum", "space": {"lag": [5, 10, 20]}}
    study = _wait(settings, OptimizationRun, jobs.submit_optimization(settings, None, spec))
    assert study.status == "succeeded", study.error
    assert study.n_trials == 3
    with pytest.raises(InvalidInputError, match="unknown strategy"):
        jobs.submit_backtest(settings, None, {**SPEC, "strategy": str(folder / "momentum_jobs.py")})


def test_a_run_over_all_the_data_pins_its_range(job_settings: Settings) -> None:
    """The report re-runs the stored spec: open ends are pinned to the bars the run saw."""
    spec = {"exchange": "binance", "symbol": "BTC/USDT", "timeframe": "1h", "start": "2021-01-01"}
    run_id = jobs.submit_backtest(
        job_settings, None, {**spec, "strategy": "sma_cross", "params": {"fast": 10, "slow": 50}}
    )
    run = _wait(job_settings, BacktestRun, run_id)
    assert run.status == "succeeded", run.error
    stored = run.config[jobs.SPEC_KEY]
    assert stored["start"] == "2021-01-01"  # given: kept as given
    result, _ = jobs.backtest_from_spec(job_settings, stored)
    assert stored["end"] == int(result.timestamp[-1]) + 1  # open: the last bar seen, exclusive
    assert result.metrics["trade_count"] == run.metrics["trade_count"]
    assert jobs.pinned_range(stored, result.timestamp) == {}
