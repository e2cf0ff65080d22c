"""Backtest and optimization runs submitted through the API, executed as Ray tasks.

A run is a database row first (``queued``), so its id exists before any work starts and its
state survives the API process; the task moves it to ``running`` and then ``succeeded`` or
``failed`` with the error.  Cancelling cancels the task and marks the run ``cancelled``; work
already recorded (finished trials of a study) is kept.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import ray

from cryptoorchestrator.cluster.risk_actor import settings_payload
from cryptoorchestrator.cluster.runtime import BATCH_NICENESS, lower_priority
from cryptoorchestrator.platform.errors import NotFoundError
from cryptoorchestrator.platform.model import RunStatus
from cryptoorchestrator.platform.model.fees import DEFAULT_FEE_BPS
from cryptoorchestrator.platform.settings import Settings
from cryptoorchestrator.platform.storage.db import session_scope
from cryptoorchestrator.platform.storage.models import BacktestRun, OptimizationRun
from cryptoorchestrator.platform.storage.runs import json_safe
from cryptoorchestrator.platform.storage.types import utcnow
from cryptoorchestrator.platform.strategy.base import Strategy
from cryptoorchestrator.strategies.registry import load_strategy_paths, registered_strategy

_refs: dict[str, Any] = {}
_refs_lock = threading.Lock()


def _strategy(settings: Settings, name: object) -> Strategy:
    """Return the registered strategy a run names (never code named by the tenant).

    Registration is per process: the operator's ``strategy_paths`` are loaded here first, so
    a job worker knows the strategies the API accepted.
    """
    load_strategy_paths(settings.strategy_paths)
    return registered_strategy(name)


def _wire(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Return a run spec as a Ray task argument: datetimes as ISO text, no NaN."""
    return json_safe({k: v.isoformat() if isinstance(v, datetime) else v for k, v in spec.items()})


@ray.remote(num_cpus=1, max_retries=0)
def run_backtest_task(settings_data: dict[str, Any], run_id: str, spec: dict[str, Any]) -> None:
    """Run one stored backtest and record its outcome (never raises: the row says it)."""
    lower_priority(BATCH_NICENESS)  # batch work yields to live trading on the same node
    settings = Settings(**settings_data)
    with session_scope(settings) as session:
        run = session.get(BacktestRun, run_id)
        if run is None or run.status == RunStatus.CANCELLED.value:
            return
        run.status, run.started_at, run.progress = RunStatus.RUNNING.value, utcnow(), 0.05
    try:
        from cryptoorchestrator.platform.data.store import load_ohlcv
        from cryptoorchestrator.strategies.sdk import backtest

        strategy = _strategy(settings, spec["strategy"])
        bars = load_ohlcv(
            spec.get("exchange", "binance"),
            spec.get("symbol", "BTC/USDT"),
            spec.get("timeframe", "1h"),
            start=spec.get("start"),
            end=spec.get("end"),
            data_dir=settings.data_dir,
        )
        result = backtest(
            strategy,
            bars,
            params=dict(spec.get("params") or {}),
            fee_bps=float(spec.get("fee_bps", DEFAULT_FEE_BPS)),
            timeframe=spec.get("timeframe", "1h"),
        )
        metrics, status, error = json_safe(dict(result.metrics)), RunStatus.SUCCEEDED, None
    except Exception as exc:  # user input or strategy code: recorded on the run
        metrics, status, error = None, RunStatus.FAILED, f"{type(exc).__name__}: {exc}"
    with session_scope(settings) as session:
        run = session.get(BacktestRun, run_id)
        if run is not None and run.status != RunStatus.CANCELLED.value:
            run.status, run.metrics, run.error = status.value, metrics, error
            run.progress, run.finished_at = 1.0, utcnow()


def submit_backtest(settings: Settings, user_id: int | None, spec: Mapping[str, Any]) -> str:
    """Store a queued backtest run, start its task, and return the run id at once.

    Raises
    ------
    InvalidInputError
        If the spec names no registered strategy (nothing is stored or started).
    """
    _strategy(settings, spec["strategy"])
    run_id = str(uuid.uuid4())
    payload = _wire(spec)
    with session_scope(settings) as session:
        session.add(
            BacktestRun(
                id=run_id,
                user_id=user_id,
                strategy=str(spec["strategy"]),
                params=json_safe(dict(spec.get("params") or {})),
                exchange=spec.get("exchange"),
                symbol=spec.get("symbol"),
                timeframe=spec.get("timeframe"),
                config={"fee_bps": spec.get("fee_bps", DEFAULT_FEE_BPS)},
                status=RunStatus.QUEUED.value,
            )
        )
    ref = run_backtest_task.options(name=f"backtest:{run_id[:8]}").remote(  # type: ignore[attr-defined]
        settings_payload(settings), run_id, payload
    )
    with _refs_lock:
        _refs[run_id] = ref
    return run_id


def _bars_for(settings: Settings, spec: Mapping[str, Any]) -> Any:
    from cryptoorchestrator.platform.data.store import load_ohlcv

    return load_ohlcv(
        spec.get("exchange", "binance"),
        spec.get("symbol", "BTC/USDT"),
        spec.get("timeframe", "1h"),
        start=spec.get("start"),
        end=spec.get("end"),
        data_dir=settings.data_dir,
    )


def _study_kwargs(spec: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "space": dict(spec["space"]),
        "constraint": spec.get("constraint"),
        "objective": spec.get("objective", "sharpe"),
        "method": spec.get("method", "grid"),
        "n_trials": spec.get("n_trials"),
        "seed": spec.get("seed"),
        "fee_bps": float(spec.get("fee_bps", DEFAULT_FEE_BPS)),
        "timeframe": spec.get("timeframe", "1h"),
    }


@ray.remote(num_cpus=0, max_retries=0)
def run_optimization_task(settings_data: dict[str, Any], spec: dict[str, Any]) -> None:
    """Drive one study from inside the cluster (its batches are tasks of their own)."""
    from cryptoorchestrator.cluster.optimize import optimize

    settings = Settings(**settings_data)
    # Failures are recorded on the run by optimize itself; nothing to return.
    optimize(
        _strategy(settings, spec["strategy"]),
        _bars_for(settings, spec),
        settings=settings,
        progress=False,
        **_study_kwargs(spec),
    )


def submit_optimization(settings: Settings, user_id: int | None, spec: Mapping[str, Any]) -> str:
    """Validate and record a study, start its driver task, and return the run id at once.

    Bad input (empty space, unknown objective, values outside the strategy's ranges) raises
    here, before any task starts.
    """
    from cryptoorchestrator.cluster.optimize import open_study

    payload = _wire(spec)
    run_id = open_study(
        _strategy(settings, spec["strategy"]),
        _bars_for(settings, payload),
        settings=settings,
        **_study_kwargs(payload),
    )
    with session_scope(settings) as session:
        run = session.get(OptimizationRun, run_id)
        if run is not None and run.user_id is None:
            run.user_id = user_id
    ref = run_optimization_task.options(name=f"optimize:{run_id[:8]}").remote(  # type: ignore[attr-defined]
        settings_payload(settings), payload
    )
    with _refs_lock:
        _refs[run_id] = ref
    return run_id


def cancel_run(settings: Settings, kind: str, run_id: str) -> None:
    """Cancel a queued or running run; finished runs are left as they are."""
    if kind == "optimization":
        _cancel_optimization(settings, run_id)
        return
    with session_scope(settings) as session:
        run = session.get(BacktestRun, run_id)
        if run is None:
            raise NotFoundError(f"backtest run {run_id} not found")
        if run.status in (RunStatus.SUCCEEDED.value, RunStatus.FAILED.value):
            return
        run.status = RunStatus.CANCELLED.value
        run.finished_at = utcnow()
    with _refs_lock:
        ref = _refs.pop(run_id, None)
    if ref is not None:
        ray.cancel(ref, force=True)


def _cancel_optimization(settings: Settings, run_id: str) -> None:
    from cryptoorchestrator.platform.optimize.store import request_cancel

    with session_scope(settings) as session:
        if session.get(OptimizationRun, run_id) is None:
            raise NotFoundError(f"optimization run {run_id} not found")
    # The study's driver checks this flag between batches and cancels its tasks cleanly.
    request_cancel(settings, run_id)
