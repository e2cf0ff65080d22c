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
    bad = jobs.submit_backtest(job_settings, None, {**SPEC, "strategy": "no_such_strategy"})
    failed = _wait(job_settings, BacktestRun, bad)
    assert failed.status == "failed"
    assert "no_such_strategy" in failed.error


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
