"""Exchange connection tests and market sync through the API, against the exchange simulator."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.integration.api.conftest import register_and_login


@pytest.fixture
def sim(shared_data: Path) -> Iterator[Any]:
    from cryptoorchestrator.platform.exchange.simulator import run_simulator_in_thread

    candles = shared_data / "candles" / "binance_BTC_USDT-1h.feather"
    with run_simulator_in_thread({"BTC/USDT": candles}) as simulator:
        yield simulator


def test_connection_test_and_sync(app_factory: Callable[..., TestClient], sim: Any) -> None:
    client = app_factory()
    h = register_and_login(client, "sync@example.com")
    good = client.post(
        "/api/integrations/exchanges/accounts",
        json={
            "name": "sim",
            "exchange": "binance",
            "apiUrl": sim.base_url,
            "apiKey": sim.api_key,
            "apiSecret": sim.api_secret,
        },
        headers=h,
    ).json()
    bad = client.post(
        "/api/integrations/exchanges/accounts",
        json={
            "name": "wrong",
            "exchange": "binance",
            "apiUrl": sim.base_url,
            "apiKey": sim.api_key,
            "apiSecret": "not-the-secret",
        },
        headers=h,
    ).json()
    tested = client.get("/api/integrations/exchanges/test", headers=h)
    assert tested.status_code == 200
    report = tested.json()["accounts"]
    assert report[str(good["id"])]["ok"] is True
    assert report[str(good["id"])]["permissions"]["trade"] is True
    assert report[str(bad["id"])]["ok"] is False
    assert report[str(bad["id"])]["errorCode"] == "exchange_auth_failed"
    assert sim.api_secret not in tested.text
    assert not [o for o in sim.orders()]  # testing a key never places an order

    before = client.get("/api/markets/BTC-USDT/ohlcv?timeframe=1h&limit=1", headers=h).json()
    synced = client.post("/api/integrations/exchanges/sync", headers=h)
    assert synced.status_code == 200
    added = synced.json()["synced"]["binance:BTC/USDT:1h"]["rowsAdded"]
    assert added > 1000  # the bundled slice ends in 2022; the simulator replays up to 2024
    after = client.get("/api/markets/BTC-USDT/ohlcv?timeframe=1h&limit=1", headers=h).json()
    assert after["candles"][-1]["timestamp"] > before["candles"][-1]["timestamp"]
