"""The study driver against an executor: order, failed batches, cancel, resume bookkeeping."""

from __future__ import annotations

import threading
from collections import deque

from _strategy import sma_study

from cryptoorchestrator.platform.optimize.executor import (
    FinishedBatch,
    SerialExecutor,
    run_study,
)
from cryptoorchestrator.platform.optimize.space import Params, trial_key
from cryptoorchestrator.platform.optimize.study import StudySpec
from cryptoorchestrator.platform.optimize.trials import FAILED, OK, TrialResult

SPACE = {"fast": [5, 10, 20], "slow": [30, 60, 90]}


def _spec(**kw: object) -> StudySpec:
    return sma_study(300, 4, space=SPACE, batch_size=2, **kw)


class FakeExecutor:
    """Two batches in flight; values from the params; batches holding ``fail`` are lost."""

    probe_on_workers = True

    def __init__(
        self, fail: Params | None = None, on_submit: threading.Event | None = None
    ) -> None:
        self.fail = fail
        self.on_submit = on_submit
        self.pending: deque[list[Params]] = deque()
        self.submitted: list[list[Params]] = []
        self.cancelled = self.finished = False

    def start(self, spec: StudySpec) -> int:
        return 2

    def has_room(self) -> bool:
        return len(self.pending) < 2

    def idle(self) -> bool:
        return not self.pending

    def submit(self, batch: list[Params]) -> None:
        self.pending.append(batch)
        self.submitted.append(batch)
        if self.on_submit is not None:
            self.on_submit.set()

    def wait(self, timeout: float) -> list[FinishedBatch]:
        batch = self.pending.popleft()
        if self.fail in batch:
            return [FinishedBatch(batch, None, RuntimeError("worker died"))]
        results = [
            TrialResult(trial_key(p), dict(p), {}, float(p["slow"] - p["fast"]), OK) for p in batch
        ]
        return [FinishedBatch(batch, results)]

    def cancel(self) -> None:
        self.cancelled = True

    def finish(self) -> None:
        self.finished = True


def test_results_keep_proposal_order_and_a_lost_batch_fails_its_trials() -> None:
    spec = _spec()
    ex = FakeExecutor(fail={"fast": 10, "slow": 30})
    res = run_study(spec, ex, progress=False)
    assert res.status == "succeeded"
    assert ex.finished
    assert not ex.cancelled
    assert [r.params for r in res.trials] == spec.trial_source().ask(100)
    failed = [r for r in res.trials if r.status == FAILED]
    assert {"fast": 10, "slow": 30} in [r.params for r in failed]
    assert all(r.error == "RuntimeError: worker died" for r in failed)
    assert len(failed) == len(next(b for b in ex.submitted if {"fast": 10, "slow": 30} in b))
    assert res.best == {"fast": 5, "slow": 90}
    assert res.batch_size == 2
    assert res.study_key == spec.key()  # computed when asked (nothing stored)


def test_a_cancel_stops_submitting_and_cancels_what_runs() -> None:
    event = threading.Event()
    ex = FakeExecutor(on_submit=event)
    res = run_study(_spec(), ex, progress=False, cancel_event=event)
    assert res.status == "cancelled"
    assert ex.cancelled
    assert len(ex.submitted) == 2  # the first round only
    assert len(res.trials) == 2  # one batch came back before the cancel was seen


def test_serial_executor_runs_the_batches_in_this_process() -> None:
    spec = _spec(method="tpe", n_trials=5, seed=3)
    serial = run_study(spec, SerialExecutor(), progress=False)
    again = run_study(spec, SerialExecutor(), progress=False)
    assert len(serial.trials) == 5
    assert all(r.status == OK for r in serial.trials)
    assert all(a.same_outcome(b) for a, b in zip(serial.trials, again.trials, strict=True))
