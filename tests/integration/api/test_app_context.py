"""The app's wiring: one typed context, one router per resource, crashes inside our layers."""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient

from cryptoorchestrator.api.context import AppContext, context_of
from cryptoorchestrator.api.routers import backtests, optimizations, risk, strategies
from cryptoorchestrator.platform.logs import flush_logs
from cryptoorchestrator.platform.services.trade_reads import SessionTradeReads


def _app(client: TestClient) -> FastAPI:
    app: Any = client.app
    assert isinstance(app, FastAPI)
    return app


def test_context_is_typed_and_sqlite_reads_through_sessions(lite: TestClient) -> None:
    context = context_of(_app(lite))
    assert isinstance(context, AppContext)
    assert isinstance(context.trades, SessionTradeReads)
    assert context.trades.open in context.on_start
    assert context.trades.close in context.on_stop


def test_each_run_resource_has_its_router_on_the_same_paths(lite: TestClient) -> None:
    def paths(module: Any) -> set[tuple[str, str]]:
        return {(r.path, m) for r in module.router.routes for m in r.methods}

    assert paths(backtests) == {
        ("/api/backtests", "GET"),
        ("/api/backtests", "POST"),
        ("/api/backtests/{run_id}", "GET"),
        ("/api/backtests/{run_id}/results", "GET"),
        ("/api/backtests/{run_id}/report", "GET"),
        ("/api/backtests/{run_id}/cancel", "POST"),
    }
    assert paths(optimizations) == {
        ("/api/optimizations", "GET"),
        ("/api/optimizations", "POST"),
        ("/api/optimizations/{run_id}", "GET"),
        ("/api/optimizations/{run_id}/trials", "GET"),
        ("/api/optimizations/{run_id}/cancel", "POST"),
    }
    assert paths(strategies) == {("/api/strategies", "GET")}
    assert paths(risk) == {
        ("/api/risk/limits", "GET"),
        ("/api/risk/limits", "PUT"),
        ("/api/risk/kill-switch", "POST"),
        ("/api/risk/kill-switch", "DELETE"),
        ("/api/risk/events", "GET"),
    }
    # Served by the app: asking without a token is 401, not 404.
    for path in ("/api/backtests", "/api/strategies", "/api/risk/events", "/api/analytics/risk"):
        assert lite.get(path).status_code == 401, path


def test_a_crash_answers_through_the_platform_layers(lite: TestClient) -> None:
    def boom() -> None:
        raise RuntimeError("kaput")

    app = _app(lite)
    app.add_api_route("/api/boom-context", boom)
    r = TestClient(app, raise_server_exceptions=False).get("/api/boom-context")
    assert r.status_code == 500
    assert r.json()["code"] == "internal_error"
    # The 500 crossed the rate limiter and the security headers, as any other answer does...
    assert r.headers["x-ratelimit-limit"]
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["cache-control"] == "no-store"
    # ...and the access log recorded the status that was sent.
    flush_logs()
    lines = (context_of(app).settings.log_dir / "fastapi.log").read_text().splitlines()
    crashes = [json.loads(line) for line in lines if "/api/boom-context" in line]
    assert crashes
    assert crashes[-1]["status"] == 500
