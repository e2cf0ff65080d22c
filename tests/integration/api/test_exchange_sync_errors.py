"""``POST /api/integrations/exchanges/sync``: a failed dataset is an error status, not a 200."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from tests.integration.api.conftest import assert_error_shape, register_and_login
from tests.security.conftest import set_role

SYNC = "/api/integrations/exchanges/sync"


def _admin(client: TestClient) -> dict[str, str]:
    headers = register_and_login(client, "sync-admin@example.com")
    set_role(client, "sync-admin@example.com", "admin")
    return headers


def _syncer(result: dict[str, Any]) -> Any:
    return lambda: result


def test_partial_failure_is_502_naming_each_failed_dataset(lite: TestClient) -> None:
    headers = _admin(lite)
    context = lite.app.state.context  # type: ignore[attr-defined]
    context.exchange_syncer = _syncer(
        {
            "synced": {
                "binance:BTC/USDT:1h": {"rowsAdded": 3},
                "binance:ETH/USDT:1h": {"error": "NetworkError: connection refused"},
            }
        }
    )
    r = lite.post(SYNC, headers=headers)
    assert r.status_code == 502, r.text
    body = r.json()
    assert_error_shape(body, "exchange_error")
    assert body["details"] == [
        {"field": "binance:ETH/USDT:1h", "message": "NetworkError: connection refused"}
    ]
    assert "1 of 2" in body["message"]
    assert "binance:BTC/USDT:1h (+3 rows)" in body["message"]


def test_success_is_200_and_nothing_to_sync_is_200(lite: TestClient) -> None:
    headers = _admin(lite)
    context = lite.app.state.context  # type: ignore[attr-defined]
    context.exchange_syncer = _syncer({"synced": {"binance:BTC/USDT:1h": {"rowsAdded": 0}}})
    ok = lite.post(SYNC, headers=headers)
    assert ok.status_code == 200
    assert ok.json() == {"synced": {"binance:BTC/USDT:1h": {"rowsAdded": 0}}}
    context.exchange_syncer = _syncer({"synced": {}})
    assert lite.post(SYNC, headers=headers).status_code == 200
