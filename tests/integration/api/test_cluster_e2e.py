"""The head node end to end on a real local Ray: bots started over HTTP trade on the simulator.

Start a paper bot through the API, watch it reach Running and trade, see its events on
``/ws/bots``, read risk utilisation, edit limits, pull the kill switch, and check health.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from tests.integration.api.conftest import options, register_and_login

from cryptoorchestrator.cluster.handles import find_bot_actor
from cryptoorchestrator.cluster.risk_actor import get_risk_actor
from cryptoorchestrator.platform.settings import Settings

pytestmark = [pytest.mark.ray, pytest.mark.slow]
HOUR = 3_600_000
BUNDLED = (
    Path(__file__).resolve().parents[3]
    / "src/cryptoorchestrator/platform/data/bundled/binance_BTC-USDT_1h_2021-2022.parquet"
)


def wait_for(predicate: Callable[[], Any], timeout: float = 60.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def sim() -> Iterator[Any]:
    from cryptoorchestrator.platform.exchange.sim import run_simulator_in_thread

    candles = pq.read_table(BUNDLED).slice(0, 1200)
    start = int(candles.column("timestamp")[700].as_py()) + 1
    with run_simulator_in_thread({"BTC/USDT": candles}, start_ms=start, speed=0) as simulator:
        yield simulator


def test_bots_over_http_on_ray(
    app_factory: Callable[..., TestClient], ray_session: Any, sim: Any, settings: Settings
) -> None:
    # Accounts may point at the simulator on loopback once the operator allows its host.
    allowed = settings.model_copy(
        update={"allowed_api_hosts": [sim.base_url.split("://", 1)[1].rstrip("/")]}
    )
    client = app_factory(options=options(cluster="ray", supervise_interval_s=1.0), settings=allowed)
    settings = client.app.state.context.settings  # type: ignore[attr-defined]
    h = register_and_login(client, "e2e@example.com")
    token = h["Authorization"].split()[1]
    account = client.post(
        "/api/integrations/exchanges/accounts",
        json={"name": "sim", "exchange": "binance", "mode": "paper", "apiUrl": sim.base_url},
        headers=h,
    ).json()
    bot = client.post(
        "/api/bots",
        json={
            "name": "fast-cross",
            "tradingPair": "BTC/USDT",
            "strategy": "sma_cross",
            "params": {"fast": 2, "slow": 5},
            "exchangeAccountId": account["id"],
            "riskPerTrade": 1,
            "maxPositionSize": 20,
            "startingBalance": 10000,
        },
        headers=h,
    ).json()
    bot_id = bot["id"]
    try:
        with client.websocket_connect(f"/ws/bots?token={token}") as ws:
            assert ws.receive_json()["type"] == "authenticated"
            started = client.post(f"/api/bots/{bot_id}/start", headers=h)
            assert started.status_code == 200
            assert started.json()["status"] == "Starting"

            def status() -> str:
                return client.get(f"/api/bots/{bot_id}/status", headers=h).json()["status"]

            wait_for(lambda: status() == "Running", what="Running")

            def trades() -> list[Any]:
                sim.advance(HOUR)
                time.sleep(1.5)  # API-started bots poll every second
                return client.get(f"/api/trades/?botId={bot_id}", headers=h).json()["items"]

            fills = wait_for(trades, timeout=120, what="a trade")
            assert fills[0]["botId"] == bot_id
            kinds = set()
            deadline = time.monotonic() + 20
            while "fill" not in kinds and time.monotonic() < deadline:
                kinds.add(ws.receive_json()["type"])
            assert "fill" in kinds  # relayed from the bot actor through the event bus

        risk = client.get("/api/analytics/risk", headers=h)
        assert risk.status_code == 200
        assert str(bot_id) in risk.json()["utilisation"]["bots"]
        bad = client.put(
            "/api/risk/limits",
            json={"limits": [{"scope": "portfolio", "name": "max_open_orders", "value": 0}]},
            headers=h,
        )
        assert bad.status_code == 422
        ok = client.put(
            "/api/risk/limits",
            json={"limits": [{"scope": "portfolio", "name": "max_open_orders", "value": 3}]},
            headers=h,
        )
        assert ok.status_code == 200
        assert ok.json()["max_open_orders"] == 3

        # The owner sees their own account's breaker (anonymous callers see statuses only).
        health = client.get("/api/health/detailed", headers=h).json()["components"]
        assert health["ray"]["status"] == "healthy"
        assert health["risk_actor"]["status"] == "healthy"
        assert any(k.startswith("binance:") for k in health["circuit_breaker"]["exchanges"])

        killed = client.post("/api/risk/kill-switch", json={"flatten": True}, headers=h)
        assert killed.status_code == 200
        assert bot_id in killed.json()["bots_stopped"]
        final = client.get(f"/api/bots/{bot_id}/status", headers=h).json()
        assert final["status"] == "Stopped"
        assert "kill switch" in final["reason"]
        positions = client.get(f"/api/positions?botId={bot_id}", headers=h).json()
        assert all(float(p["amount"]) < 0.001 for p in positions.get("items", positions))
    finally:
        handle = find_bot_actor(bot_id)
        if handle is not None:
            ray_session.kill(handle, no_restart=True)
        ray_session.kill(get_risk_actor(settings), no_restart=True)
