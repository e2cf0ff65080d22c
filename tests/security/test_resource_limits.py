"""Unrestricted resource consumption (OWASP API4): one tenant must not be able to hold the
cluster, or the thread that validates a study, for everyone else."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from cryptoorchestrator.platform.errors import InvalidInputError
from cryptoorchestrator.platform.optimize.sampling import (
    MAX_GRID_POINTS,
    ParamConstraint,
    TrialSource,
)
from cryptoorchestrator.platform.optimize.space import parse_space
from cryptoorchestrator.platform.storage.models import BacktestRun, OptimizationRun, User
from cryptoorchestrator.platform.storage.types import utcnow

BACKTEST = {"strategy": "sma_cross", "params": {"fast": 10, "slow": 30}}


def _active_runs(client: TestClient, email: str, n: int, status: str = "queued") -> None:
    factory = client.app.state.context.session_factory  # type: ignore[attr-defined]
    with factory() as session:
        user_id = session.scalar(select(User.id).where(User.email == email))
        for i in range(n):
            session.add(
                BacktestRun(
                    id=f"bt-{email[:5]}-{status}-{i}",
                    user_id=user_id,
                    strategy="sma_cross",
                    params={},
                    config={},
                    status=status,
                )
            )
        session.commit()


def test_a_tenant_cannot_queue_runs_without_end(
    client: TestClient, users: dict[str, dict[str, str]]
) -> None:
    _active_runs(client, "trader@example.com", 3)
    factory = client.app.state.context.session_factory  # type: ignore[attr-defined]
    with factory() as session:
        user_id = session.scalar(select(User.id).where(User.email == "trader@example.com"))
        session.add(
            OptimizationRun(
                id="opt-running",
                user_id=user_id,
                study_key="k",
                strategy="sma_cross",
                method="grid",
                objective="sharpe",
                space={},
                config={},
                status="running",
                created_at=utcnow(),
            )
        )
        session.commit()
    for path, body in (
        ("/api/backtests", BACKTEST),
        ("/api/optimizations", {"strategy": "sma_cross", "space": {"fast": [5, 10]}}),
    ):
        r = client.post(path, json=body, headers=users["trader"])
        assert r.status_code == 409, r.text
        assert "at most 4 at once" in r.json()["message"]
    # Another tenant's quota is their own: the request goes on to the cluster (absent: 503).
    r = client.post("/api/backtests", json=BACKTEST, headers=users["other"])
    assert r.status_code == 503, r.text
    # Finished runs free their slots.
    with factory() as session:
        for run in session.scalars(select(BacktestRun)):
            run.status = "succeeded"
        session.commit()
    r = client.post("/api/backtests", json=BACKTEST, headers=users["trader"])
    assert r.status_code == 503, r.text


def test_a_grid_too_large_to_enumerate_is_refused_at_once() -> None:
    space = parse_space({"a": "1:1000000:1", "b": "1:1000000:1"})
    constraint = ParamConstraint(None, space.names)
    with pytest.raises(InvalidInputError) as err:
        TrialSource(space, constraint, "grid")
    assert err.value.field == "space"
    assert f"{MAX_GRID_POINTS:,}" in str(err.value)
    # The same space sampled instead of enumerated is fine.
    source = TrialSource(space, constraint, "random", n_trials=10, seed=1)
    assert len(source.ask(10)) == 10
