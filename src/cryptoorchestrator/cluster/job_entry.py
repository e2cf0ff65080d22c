"""Entrypoint of the Ray jobs that run API-submitted backtests and optimizations.

``python -m cryptoorchestrator.cluster.job_entry backtest|optimization <run_id>``: the job
reads the run's spec from the database and executes it exactly as the Ray task of
:mod:`cryptoorchestrator.cluster.jobs` does; the run row stays the record of the outcome.
Settings come from the environment (the job's ``runtime_env`` over the node's own), so the
secret key and any database password are resolved on the node, never passed in the job.

The exit status tells Ray's Jobs view what the row says: 0 succeeded (or nothing left to do),
1 failed, 2 the run cannot be read, 130 cancelled.  ``ray job stop`` (what cancelling a run
does) sends SIGTERM, which cancels the work cleanly and records it before Ray's grace period
ends.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from types import FrameType

from cryptoorchestrator.cluster.jobs import (
    RunKind,
    execute_backtest,
    execute_optimization,
    run_row,
    stored_spec,
)
from cryptoorchestrator.cluster.runtime import configure_ray_environment
from cryptoorchestrator.platform.errors import CryptoOrchError
from cryptoorchestrator.platform.model import RunStatus
from cryptoorchestrator.platform.optimize import store as study_store
from cryptoorchestrator.platform.settings import Settings, get_settings
from cryptoorchestrator.platform.storage.db import session_scope
from cryptoorchestrator.platform.storage.types import utcnow

EXIT_SUCCEEDED, EXIT_FAILED, EXIT_UNREADABLE, EXIT_CANCELLED = 0, 1, 2, 130
_UNFINISHED = (
    RunStatus.QUEUED.value,
    RunStatus.RUNNING.value,
    study_store.CANCEL_REQUESTED,
)


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    # The optimizer turns KeyboardInterrupt into a recorded cancel and cancels its batches.
    raise KeyboardInterrupt


def _status(settings: Settings, kind: RunKind, run_id: str) -> str | None:
    with session_scope(settings) as session:
        run = run_row(session, kind, run_id)
        return None if run is None else run.status


def _record_cancelled(settings: Settings, kind: RunKind, run_id: str) -> None:
    """Mark an unfinished run cancelled (the work was stopped before it could record it)."""
    with session_scope(settings) as session:
        run = run_row(session, kind, run_id)
        if run is not None and run.status in _UNFINISHED:
            run.status, run.finished_at = RunStatus.CANCELLED.value, utcnow()


def execute(settings: Settings, kind: RunKind, run_id: str) -> int:
    """Execute one stored run in this process and return the job's exit status.

    Parameters
    ----------
    settings
        Where the run is stored (the job's environment says).
    kind, run_id
        Which run.
    """
    try:
        spec = stored_spec(settings, kind, run_id)
    except CryptoOrchError as exc:
        print(f"cannot run {kind} {run_id}: {exc}", file=sys.stderr)
        return EXIT_UNREADABLE
    status = _status(settings, kind, run_id)
    if status in (RunStatus.CANCELLED.value, study_store.CANCEL_REQUESTED):
        # Cancelled while the job waited to start: opening the study would resume it.
        _record_cancelled(settings, kind, run_id)
        return EXIT_CANCELLED
    try:
        if kind == "backtest":
            execute_backtest(settings, run_id, spec)
        else:
            execute_optimization(settings, spec)
    except KeyboardInterrupt:
        _record_cancelled(settings, kind, run_id)
        return EXIT_CANCELLED
    except Exception as exc:  # the optimizer recorded it on the run; the job log shows it
        print(f"{kind} {run_id} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    final = _status(settings, kind, run_id)
    print(f"{kind} {run_id}: {final}")
    if final == RunStatus.FAILED.value:
        return EXIT_FAILED
    if final == RunStatus.CANCELLED.value:
        return EXIT_CANCELLED
    return EXIT_SUCCEEDED


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``<kind> <run_id>``, run it, and return the exit status."""
    parser = argparse.ArgumentParser(prog=f"python -m {__spec__.name if __spec__ else __name__}")
    parser.add_argument("kind", choices=("backtest", "optimization"))
    parser.add_argument("run_id")
    args = parser.parse_args(argv)
    configure_ray_environment()
    signal.signal(signal.SIGTERM, _interrupt)
    kind: RunKind = "backtest" if args.kind == "backtest" else "optimization"
    return execute(get_settings(), kind, args.run_id)


if __name__ == "__main__":
    sys.exit(main())
