"""Exchange connection tests and market sync through the API, against the exchange simulator.

The simulator listens on loopback, which accounts may use only because the operator allows its
host (``allowed_api_hosts``); the shared store is synced by an admin from the operator's
endpoint (``exchange_endpoints``), never from an account's URL.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from tests.integration.api.conftest import assert_error_shape, register_and_login

from cryptoorchestrator.platform.settings import Settings
from cryptoorchestrator.platform.storage.models import User


@pytest.fixture
def sim(shared_data: Path) -> Iterator[Any]:
    from cryptoorchestrator.platform.exchange.sim import run_simulator_in_thread

    candles = shared_data / "candles" / "binance_BTC_USDT-1h.feather"
    with run_simulator_in_thread({"BTC/USDT": candles}) as simulator:
        yield simulator


def _operator_app(
    app_factory: Callable[..., TestClient], settings: Settings, sim: Any
) -> TestClient:
    """An app whose operator allows the simulator's host and syncs binance from it."""
    host = sim.base_url.split("://", 1)[1].rstrip("/")
    allowed = settings.model_copy(
        update={"allowed_api_hosts": [host], "exchange_endpoints": {"binance": sim.base_url}}
    )
    return app_factory(settings=allowed)


def _make_admin(client: TestClient, email: str) -> None:
    factory: Any = client.app.state.context.session_factory  # type: ignore[attr-defined]
    with factory() as session:
        session.execute(update(User).where(User.email == email).values(role="admin"))
        session.commit()


def test_connection_test_and_sync(
    app_factory: Callable[..., TestClient], settings: Settings, sim: Any
) -> None:
    client = _operator_app(app_factory, settings, sim)
    h = register_and_login(client, "sync@example.com")
    _make_admin(client, "sync@example.com")
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
    trader = register_and_login(client, "trader@example.com")
    refused = client.post("/api/integrations/exchanges/sync", headers=trader)
    assert refused.status_code == 403, refused.text
    assert_error_shape(refused.json(), "forbidden")
    synced = client.post("/api/integrations/exchanges/sync", headers=h)
    assert synced.status_code == 200
    added = synced.json()["synced"]["binance:BTC/USDT:1h"]["rowsAdded"]
    assert added > 1000  # the bundled slice ends in 2022; the simulator replays up to 2024
    after = client.get("/api/markets/BTC-USDT/ohlcv?timeframe=1h&limit=1", headers=h).json()
    assert after["candles"][-1]["timestamp"] > before["candles"][-1]["timestamp"]


def test_paper_account_on_the_simulator_tests_ok_without_keys(
    app_factory: Callable[..., TestClient], settings: Settings, sim: Any
) -> None:
    # What `cryptoorch serve --demo` creates: a paper account on the simulator, no keys.
    client = _operator_app(app_factory, settings, sim)
    h = register_and_login(client, "demo@example.com")
    account = client.post(
        "/api/integrations/exchanges/accounts",
        json={"name": "demo", "exchange": "binance", "mode": "paper", "apiUrl": sim.base_url},
        headers=h,
    ).json()
    tested = client.get(f"/api/integrations/exchanges/test?accountId={account['id']}", headers=h)
    assert tested.status_code == 200, tested.text
    report = tested.json()["accounts"][str(account["id"])]
    assert report["ok"] is True, report
    assert report["permissions"] == {"read": True, "trade": True, "withdraw": False}
    assert not sim.orders()
