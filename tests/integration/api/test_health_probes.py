"""Health for monitors: its own rate-limit budget, and "starting" until start-up is over."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient
from tests.integration.api.conftest import assert_error_shape, options, register_and_login

from cryptoorchestrator.api.app import create_app, probe_readiness
from cryptoorchestrator.api.facade import UnavailableCluster
from cryptoorchestrator.api.ratelimit import HEALTH_FACTOR
from cryptoorchestrator.platform.settings import Settings


def test_health_is_not_refused_when_the_api_budget_is_spent(
    app_factory: Callable[..., TestClient],
) -> None:
    client = app_factory(options=options(rate_limit=2, rate_limit_window_s=86_400))
    for _ in range(2):
        assert client.get("/api/markets").status_code == 200
    spent = client.get("/api/markets")
    assert spent.status_code == 429
    assert_error_shape(spent.json(), "rate_limited")
    # Monitors on the same address still get answers, counted in a budget of their own.
    for path in ("/api/health", "/api/health/detailed", "/api/health/database"):
        r = client.get(path)
        assert r.status_code == 200, (path, r.text)
        assert r.headers["x-ratelimit-limit"] == str(2 * HEALTH_FACTOR)
    assert client.head("/api/health").status_code == 200
    # Health polling does not spend the API budget either (its window is spent, not more).
    assert client.get("/api/markets").headers["x-ratelimit-remaining"] == "0"


def test_health_budget_is_bounded_and_detailed_stays_role_aware(
    app_factory: Callable[..., TestClient],
) -> None:
    client = app_factory(options=options(rate_limit=1, rate_limit_window_s=86_400))
    headers = register_and_login(client, "probe@example.com")  # the auth budget
    codes = [client.get("/api/health").status_code for _ in range(HEALTH_FACTOR)]
    assert codes == [200] * HEALTH_FACTOR
    over = client.get("/api/health/detailed", headers=headers)
    assert over.status_code == 429
    assert_error_shape(over.json(), "rate_limited")
    assert int(over.headers["retry-after"]) >= 1


def test_anonymous_detailed_health_shows_statuses_only(lite: TestClient) -> None:
    body = lite.get("/api/health/detailed").json()
    assert body["status"] != "starting"
    for component in body["components"].values():
        assert set(component) == {"status"}


def test_health_says_starting_until_the_app_is_ready(lite: TestClient) -> None:
    readiness = lite.app.state.context.readiness  # type: ignore[attr-defined]
    assert readiness.ready
    readiness.wait_for("cluster", "waiting for the cluster and its risk actor")
    try:
        r = lite.get("/api/health/detailed")
        assert r.status_code == 503
        assert r.json() == {
            "status": "starting",
            "reasons": ["cluster: waiting for the cluster and its risk actor"],
            "components": {},
        }
        assert int(r.headers["retry-after"]) >= 1
        # Liveness: the process is alive (an orchestrator must not restart it for waiting).
        assert lite.get("/api/health").json() == {"status": "ok"}
        assert lite.head("/api/health").status_code == 200
        # Only the overall health waits; the database check answers as usual.
        assert lite.get("/api/health/database").status_code == 200
    finally:
        readiness.done("cluster")
    assert lite.get("/api/health").json() == {"status": "ok"}
    detailed = lite.get("/api/health/detailed")
    assert detailed.status_code == 200
    assert detailed.json()["status"] in ("healthy", "degraded")


def test_before_its_lifespan_the_app_is_starting(
    app_factory: Callable[..., TestClient], settings: Settings
) -> None:
    app_factory()  # migrates the database
    app = create_app(settings, options=options())
    body = TestClient(app).get("/api/health/detailed").json()  # no lifespan: not started
    assert body["status"] == "starting"
    assert [reason.split(":")[0] for reason in body["reasons"]] == ["cluster", "database"]


class LateCluster(UnavailableCluster):
    """No cluster configured, but its status reads "not connected" until ``up`` is set."""

    up = False

    def ray_status(self) -> dict[str, Any]:
        """Report not connected until ``up``."""
        return super().ray_status() if self.up else {"status": "not_connected"}


def test_a_cluster_that_comes_up_late_ends_the_start(
    app_factory: Callable[..., TestClient],
) -> None:
    cluster = LateCluster()
    client = app_factory(cluster=cluster)
    context = client.app.state.context  # type: ignore[attr-defined]
    starting = client.get("/api/health/detailed")
    assert starting.status_code == 503
    assert starting.json()["reasons"] == ["cluster: waiting for the cluster and its risk actor"]
    assert client.get("/api/health").status_code == 200  # alive all along
    cluster.up = True
    # The background probe would notice within a second; probing here keeps the test exact.
    assert client.portal.call(probe_readiness, context)  # type: ignore[union-attr]
    assert client.get("/api/health/detailed").status_code == 200
