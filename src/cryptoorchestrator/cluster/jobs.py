"""Backtest and optimization runs submitted through the API, executed as Ray jobs or tasks.

A run is a database row first (``queued``), so its id exists before any work starts and its
state survives the API process; the worker moves it to ``running`` and then ``succeeded`` or
``failed`` with the error.  Cancelling marks the run ``cancelled`` (a study stops between
batches) and stops its work; work already recorded (finished trials of a study) is kept.

Where the work runs is chosen once per cluster (:func:`job_client`):

* **Ray jobs** when the connected cluster runs a dashboard (``cryptoorch serve``, ``ray start
  --head``): each run is a job whose submission id is the run id (a study submitted again
  resumes in job ``<run_id>-r2``, ``-r3``..., see :func:`job_ids`), so it is listed in the
  dashboard's Jobs view with its logs, status and metadata (run kind, run id, strategy,
  user id).  The entrypoint, ``python -m cryptoorchestrator.cluster.job_entry <kind>
  <run_id>``, reads the run's spec from the database (``config["spec"]``; the latest job's
  id is ``config["ray_job"]``) and executes it exactly as the task below does.  The job's
  environment carries only what a worker cannot know (database URL, folders, strategy
  paths, Ray's auth mode): job lists show it to anyone who can reach the dashboard, so
  never a secret.  The worker reads the secret key as the platform does on its
  node (``CRYPTOORCH_SECRET_KEY`` or ``var_dir/secret.key``), and a PostgreSQL password is
  removed from the URL: give the nodes it through libpq (``PGPASSWORD`` in the environment
  ``ray start`` runs in, or ``~/.pgpass``).  The entrypoint runs the API's interpreter
  (``sys.executable``), so nodes must have the platform installed at the same path.
* **Ray tasks** otherwise (no dashboard, as with the tests' in-process Ray; ``ray://``
  clients), and for a run whose job cannot be submitted (the job agent is not up yet).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import sys
import threading
import time
import uuid
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import ray
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session

from cryptoorchestrator.cluster.risk_actor import settings_payload
from cryptoorchestrator.cluster.runtime import BATCH_NICENESS, dashboard_url, lower_priority
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

log = logging.getLogger("cryptoorchestrator.cluster.jobs")

RunKind = Literal["backtest", "optimization"]

#: The module Ray jobs run (``python -m``); see :mod:`cryptoorchestrator.cluster.job_entry`.
JOB_ENTRY_MODULE = "cryptoorchestrator.cluster.job_entry"
#: Key of a run's ``config`` that holds the spec as submitted (what a job worker executes).
SPEC_KEY = "spec"
#: Key of a run's ``config`` that holds the submission id of its latest Ray job.
JOB_KEY = "ray_job"
#: How long a submission waits for the node's job agent (it starts after the dashboard).
AGENT_WAIT_S = 15.0
#: How long cancelling a study waits for its stopped job to end (Ray kills it after 3 s).
STOP_WAIT_S = 10.0

_refs: dict[str, Any] = {}
_refs_lock = threading.Lock()
#: JobSubmissionClient by dashboard URL, or None where the URL answered no job server.
_job_clients: dict[str, Any] = {}
_job_clients_lock = threading.Lock()


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


def _label(kind: str, run_id: str, spec: Mapping[str, Any]) -> str:
    """Return a run's name as Ray shows it: ``backtest sma_cross BTC/USDT 1h [1a2b3c4d]``."""
    parts = [kind, spec.get("strategy"), spec.get("symbol"), spec.get("timeframe")]
    return " ".join(str(p) for p in parts if p) + f" [{run_id[:8]}]"


# ------------------------------------------------------------------------- the work itself
def backtest_from_spec(settings: Settings, spec: Mapping[str, Any]) -> tuple[Any, Any]:
    """Run the backtest a stored run's spec describes; return ``(result, bars)``.

    The one path from a run's spec to ``co.backtest``: the run itself (:func:`execute_backtest`)
    and its report (``GET /api/backtests/{id}/report``, which recomputes the records a run does
    not store) both come here, so the report shows the backtest the run measured.
    """
    from cryptoorchestrator.strategies.sdk import backtest

    strategy = _strategy(settings, spec["strategy"])
    bars = _bars_for(settings, spec)
    result = backtest(
        strategy,
        bars,
        params=dict(spec.get("params") or {}),
        fee_bps=float(spec.get("fee_bps", DEFAULT_FEE_BPS)),
        timeframe=spec.get("timeframe", "1h"),
    )
    return result, bars


def execute_backtest(settings: Settings, run_id: str, spec: Mapping[str, Any]) -> None:
    """Run one stored backtest and record its outcome (never raises: the row says it).

    Parameters
    ----------
    settings
        Where the run is stored and the market data lies.
    run_id, spec
        The queued run and its wire spec (:func:`submit_backtest` stores both).
    """
    lower_priority(BATCH_NICENESS)  # batch work yields to live trading on the same node
    with session_scope(settings) as session:
        run = session.get(BacktestRun, run_id)
        if run is None or run.status == RunStatus.CANCELLED.value:
            return
        run.status, run.started_at, run.progress = RunStatus.RUNNING.value, utcnow(), 0.05
    pinned: dict[str, int] = {}
    try:
        result, _ = backtest_from_spec(settings, spec)
        metrics, status, error = json_safe(dict(result.metrics)), RunStatus.SUCCEEDED, None
        pinned = pinned_range(spec, result.timestamp)
    except Exception as exc:  # user input or strategy code: recorded on the run
        metrics, status, error = None, RunStatus.FAILED, f"{type(exc).__name__}: {exc}"
    with session_scope(settings) as session:
        run = session.get(BacktestRun, run_id)
        if run is not None and run.status != RunStatus.CANCELLED.value:
            run.status, run.metrics, run.error = status.value, metrics, error
            run.progress, run.finished_at = 1.0, utcnow()
            if pinned:
                config = dict(run.config or {})
                config[SPEC_KEY] = {**dict(config.get(SPEC_KEY) or spec), **pinned}
                run.config = config


def pinned_range(spec: Mapping[str, Any], timestamps: Any) -> dict[str, int]:
    """Return the ``start``/``end`` (epoch ms, end exclusive) a spec left open, as run.

    A run over "all the data" would mean other candles once the store grows; the report
    (``backtest_from_spec`` again) must see the bars the run measured, so the open ends are
    stored with the run.
    """
    stamps = np.asarray(timestamps)
    if stamps.size == 0:
        return {}
    out: dict[str, int] = {}
    if spec.get("start") is None:
        out["start"] = int(stamps[0])
    if spec.get("end") is None:
        out["end"] = int(stamps[-1]) + 1
    return out


def execute_optimization(settings: Settings, spec: Mapping[str, Any]) -> str:
    """Drive one study to its end from this process (its batches are Ray tasks of their own).

    Failures are recorded on the run by the optimizer itself.

    Returns
    -------
    str
        The study's final status (``succeeded`` or ``cancelled``).
    """
    from cryptoorchestrator.cluster.optimize import optimize

    result = optimize(
        _strategy(settings, spec["strategy"]),
        _bars_for(settings, spec),
        settings=settings,
        progress=False,
        **_study_kwargs(spec),
    )
    return str(result.status)


def run_row(session: Session, kind: RunKind, run_id: str) -> BacktestRun | OptimizationRun | None:
    """Return the row of a run of either kind in ``session``, or None."""
    if kind == "backtest":
        return session.get(BacktestRun, run_id)
    return session.get(OptimizationRun, run_id)


def stored_spec(settings: Settings, kind: RunKind, run_id: str) -> dict[str, Any]:
    """Return the spec a run was submitted with, as :func:`submit_backtest` stored it.

    Raises
    ------
    NotFoundError
        If there is no such run, or it was not submitted through this module.
    """
    with session_scope(settings) as session:
        run = run_row(session, kind, run_id)
        spec = (run.config or {}).get(SPEC_KEY) if run is not None else None
    if not isinstance(spec, dict):
        raise NotFoundError(f"{kind} run {run_id} has no stored spec")
    return spec


def _set_config(settings: Settings, kind: RunKind, run_id: str, values: Mapping[str, Any]) -> None:
    with session_scope(settings) as session:
        run = run_row(session, kind, run_id)
        if run is not None:
            run.config = {**(run.config or {}), **values}  # a new dict: JSON columns see it


def _latest_job(settings: Settings, kind: RunKind, run_id: str) -> str | None:
    with session_scope(settings) as session:
        run = run_row(session, kind, run_id)
        latest = (run.config or {}).get(JOB_KEY) if run is not None else None
    return str(latest) if latest else None


@ray.remote(num_cpus=1, max_retries=0)
def run_backtest_task(settings_data: dict[str, Any], run_id: str, spec: dict[str, Any]) -> None:
    """Run one stored backtest and record its outcome (never raises: the row says it)."""
    execute_backtest(Settings(**settings_data), run_id, spec)


@ray.remote(num_cpus=0, max_retries=0)
def run_optimization_task(settings_data: dict[str, Any], spec: dict[str, Any]) -> None:
    """Drive one study from inside the cluster (its batches are tasks of their own)."""
    execute_optimization(Settings(**settings_data), spec)


# ------------------------------------------------------------------------ jobs or tasks
def job_client() -> Any | None:
    """Return a ``JobSubmissionClient`` for the connected cluster, or None to use tasks.

    The answer is probed once per dashboard URL (a cluster) and kept: a cluster without a
    dashboard, a ``ray://`` client, or a dashboard that does not answer, runs tasks.
    """
    url = dashboard_url()
    if url is None:
        return None
    with _job_clients_lock:
        if url not in _job_clients:
            try:
                from ray.job_submission import JobSubmissionClient

                _job_clients[url] = JobSubmissionClient(url)
            except Exception as exc:  # no job server there: tasks do the work
                log.warning("Ray jobs unavailable at %s (%s); runs go to Ray tasks", url, exc)
                _job_clients[url] = None
        return _job_clients[url]


def job_runtime_env(settings: Settings) -> dict[str, Any]:
    """Return the runtime_env of a run's job: settings as environment variables, no secrets.

    The secret key is left out (the worker resolves it on its node) and so is the database
    password (libpq finds it on the node: ``PGPASSWORD``, ``~/.pgpass``).
    """
    url = make_url(settings.database_url)
    # URL.set(password=None) keeps the password: build the URL again without it.
    bare = URL.create(
        url.drivername, url.username, None, url.host, url.port, url.database, url.query
    )
    database_url = bare.render_as_string(hide_password=False)
    env = {
        "CRYPTOORCH_DATABASE_URL": database_url,
        "CRYPTOORCH_DATA_DIR": str(settings.data_dir.resolve()),
        "CRYPTOORCH_VAR_DIR": str(settings.var_dir.resolve()),
        "CRYPTOORCH_LOG_DIR": str(settings.log_dir.resolve()),
        "CRYPTOORCH_LOG_LEVEL": settings.log_level,
        "CRYPTOORCH_RAY_NAMESPACE": settings.ray_namespace,
        # pydantic-settings reads lists as JSON; directories resolved here, as for actors.
        "CRYPTOORCH_STRATEGY_PATHS": json.dumps(_strategy_paths(settings)),
        "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled"),
        "RAY_USAGE_STATS_ENABLED": os.environ.get("RAY_USAGE_STATS_ENABLED", "0"),
    }
    return {"env_vars": env}


def _strategy_paths(settings: Settings) -> list[str]:
    """Return the operator's strategy paths, directories made absolute (as for actors)."""
    return [str(Path(p).resolve()) if Path(p).exists() else p for p in settings.strategy_paths]


def _job_metadata(
    kind: RunKind, run_id: str, user_id: int | None, spec: Mapping[str, Any]
) -> dict[str, str]:
    meta = {
        "run_kind": kind,
        "run_id": run_id,
        "strategy": str(spec.get("strategy", "")),
        "user_id": "" if user_id is None else str(user_id),
        "name": _label(kind, run_id, spec),
    }
    for key in ("exchange", "symbol", "timeframe"):
        if spec.get(key):
            meta[key] = str(spec[key])
    return meta


def job_ids(run_id: str, latest: str | None) -> list[str]:
    """Return the submission ids of a run's Ray jobs so far, oldest first.

    A run's first job has the run id as its submission id; a study submitted again (it
    resumes under the same run id) gets a new job, ``<run_id>-r2``, ``-r3``...: Ray cannot
    reuse a submission id safely (a job submitted under the id of one that just ended can be
    declared dead with its predecessor's supervisor).  The latest is kept on the run row.
    """
    if latest is None:
        return []
    if latest == run_id:
        return [run_id]
    try:
        n = int(latest.removeprefix(f"{run_id}-r"))
    except ValueError:
        return [latest]
    return [run_id, *(f"{run_id}-r{k}" for k in range(2, n + 1))]


def _next_job_id(run_id: str, latest: str | None) -> str:
    ids = job_ids(run_id, latest)
    return run_id if not ids else f"{run_id}-r{len(ids) + 1}"


def _submit_job(
    client: Any,
    kind: RunKind,
    run_id: str,
    submission_id: str,
    user_id: int | None,
    settings: Settings,
    spec: Mapping[str, Any],
) -> bool:
    """Submit a run's job; return False when the cluster refused it (a task runs it then)."""
    entrypoint = shlex.join([sys.executable, "-m", JOB_ENTRY_MODULE, kind, run_id])
    # A backtest needs a core, as its task did; a study's driver only waits on its batches.
    cpus = 1.0 if kind == "backtest" else 0.0
    deadline = time.monotonic() + AGENT_WAIT_S
    while True:
        try:
            client.submit_job(
                entrypoint=entrypoint,
                submission_id=submission_id,
                runtime_env=job_runtime_env(settings),
                metadata=_job_metadata(kind, run_id, user_id, spec),
                entrypoint_num_cpus=cpus,
            )
            return True
        except Exception as exc:  # Ray's job server answers errors as text only
            problem = f"{type(exc).__name__}: {exc}"
        if "No available agent" in problem and time.monotonic() < deadline:
            time.sleep(0.5)  # the job agent registers a little after the dashboard starts
            continue
        log.warning("submitting %s run %s as a Ray job failed (%s); it runs as a task instead",
                    kind, run_id, problem)  # fmt: skip
        return False


def executor_kind() -> Literal["job", "task"]:
    """Return how runs submitted now are executed on the connected cluster."""
    return "job" if job_client() is not None else "task"


# ----------------------------------------------------------------------------- submitting
def submit_backtest(settings: Settings, user_id: int | None, spec: Mapping[str, Any]) -> str:
    """Store a queued backtest run, start its job (or task), and return the run id at once.

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
                config={"fee_bps": spec.get("fee_bps", DEFAULT_FEE_BPS), SPEC_KEY: payload},
                status=RunStatus.QUEUED.value,
            )
        )
    client = job_client()
    if client is not None and _submit_job(
        client, "backtest", run_id, run_id, user_id, settings, payload
    ):
        _set_config(settings, "backtest", run_id, {JOB_KEY: run_id})
        return run_id
    ref = run_backtest_task.options(name=_label("backtest", run_id, payload)).remote(  # type: ignore[attr-defined]
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


def submit_optimization(settings: Settings, user_id: int | None, spec: Mapping[str, Any]) -> str:
    """Validate and record a study, start its driver job (or task), and return the run id.

    Bad input (empty space, unknown objective, values outside the strategy's ranges) raises
    here, before anything starts.  The same study submitted again is the same run: it
    resumes in a new job (or task), reusing the trials already recorded.
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
        latest = (run.config or {}).get(JOB_KEY) if run is not None else None
        if run is not None and run.user_id is None:
            run.user_id = user_id
    _set_config(settings, "optimization", run_id, {SPEC_KEY: payload})
    client = job_client()
    # Submitted again, a study resumes in a new job (as it would in a new task).
    job_id = _next_job_id(run_id, latest)
    if client is not None and _submit_job(
        client, "optimization", run_id, job_id, user_id, settings, payload
    ):
        _set_config(settings, "optimization", run_id, {JOB_KEY: job_id})
        return run_id
    ref = run_optimization_task.options(name=_label("optimize", run_id, payload)).remote(  # type: ignore[attr-defined]
        settings_payload(settings), payload
    )
    with _refs_lock:
        _refs[run_id] = ref
    return run_id


# ----------------------------------------------------------------------------- cancelling
def cancel_run(settings: Settings, kind: str, run_id: str) -> None:
    """Cancel a queued or running run and stop its job or task; finished runs stay as they are.

    Raises
    ------
    NotFoundError
        If there is no such run.
    """
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
        return
    _stop_jobs(job_ids(run_id, _latest_job(settings, "backtest", run_id)))


def _cancel_optimization(settings: Settings, run_id: str) -> None:
    from cryptoorchestrator.platform.optimize.store import request_cancel

    with session_scope(settings) as session:
        if session.get(OptimizationRun, run_id) is None:
            raise NotFoundError(f"optimization run {run_id} not found")
    with _refs_lock:
        as_task = _refs.pop(run_id, None) is not None
    # The driver (task or job) checks this flag between batches and cancels its tasks cleanly;
    # set first, so that nothing the driver records afterwards can be overwritten by it.
    request_cancel(settings, run_id)
    # A job's driver also gets the stop signal, which it turns into the same clean cancel.
    latest = _latest_job(settings, "optimization", run_id)
    if not as_task and latest is not None and _stop_jobs(job_ids(run_id, latest), STOP_WAIT_S):
        # The job is over, or stopped before it started: what its driver did not record, the
        # row records now (a driver killed before it handled the signal leaves no study
        # "cancelling" for ever).
        _mark_study_cancelled(settings, run_id)


def _stop_jobs(submission_ids: list[str], wait_s: float = 0.0) -> bool:
    """Stop a run's jobs; return whether they are certainly over (waiting up to ``wait_s``).

    A job still waiting for resources is over once stopped: Ray never starts it.
    """
    client = job_client()
    if client is None or not submission_ids:
        return False  # no job server here: a task runs it and reads the cancel flag
    running: list[str] = []
    for submission_id in submission_ids:
        try:
            status = client.get_job_status(submission_id)
            if status.is_terminal():
                continue
            client.stop_job(submission_id)
        except Exception as exc:  # the row says cancelled already; the work reads it
            log.warning("stopping Ray job %s failed: %s", submission_id, exc)
            return False
        if status != "PENDING":
            running.append(submission_id)
    deadline = time.monotonic() + wait_s
    while running and time.monotonic() < deadline:
        time.sleep(0.2)
        with contextlib.suppress(Exception):  # asked again on the next round
            running = [j for j in running if not client.get_job_status(j).is_terminal()]
    return not running


def _mark_study_cancelled(settings: Settings, run_id: str) -> None:
    from cryptoorchestrator.platform.optimize import store as study_store

    with session_scope(settings) as session:
        run = session.get(OptimizationRun, run_id)
        unfinished = (RunStatus.QUEUED.value, study_store.RUNNING, study_store.CANCEL_REQUESTED)
        if run is not None and run.status in unfinished:
            run.status, run.finished_at = study_store.CANCELLED, utcnow()
