"""Poisoning the shared market-data store through ``POST /api/integrations/exchanges/sync``.

The Parquet store is served to every user (charts, backtests, the market WebSocket).  A tenant
pointing an account at their own server and asking for a sync used to write that server's
candles into it.  Each test runs the attack against a counting server on loopback and compares
the store's files before and after; every test runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

from fastapi.testclient import TestClient
from tests.security.conftest import assert_error_shape
from tests.security.http_servers import (
    CountingServer,
    counting_server,
    login_as,
)

SYNC = "/api/integrations/exchanges/sync"
ACCOUNTS = "/api/integrations/exchanges/accounts"


def _store_files(client: TestClient) -> dict[str, str]:
    """Every file under the store's folder with its content hash."""
    root = Path(client.app.state.context.settings.data_dir)  # type: ignore[attr-defined]
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _seed_store(client: TestClient, headers: dict[str, str]) -> dict[str, str]:
    """Read the bundled BTC/USDT candles once (materialising the dataset); return the files."""
    read = client.get("/api/markets/BTC-USDT/ohlcv?timeframe=1h&limit=1", headers=headers)
    assert read.status_code == 200, read.text
    files = _store_files(client)
    assert files  # there is a dataset a sync would extend
    return files


def test_tenant_sync_is_refused_and_writes_nothing(
    make_client: Callable[..., TestClient], server: CountingServer
) -> None:
    # Even at a host the operator allows for accounts, a tenant's server is no market source.
    client = make_client(allowed_api_hosts=[server.host])
    trader = login_as(client, "trader@example.com")
    viewer = login_as(client, "viewer@example.com", "viewer")
    evil = {"name": "mine", "exchange": "binance", "apiUrl": server.url}
    assert client.post(ACCOUNTS, json=evil, headers=trader).status_code == 201
    before = _seed_store(client, trader)

    for headers in (trader, viewer):
        refused = client.post(SYNC, headers=headers)
        assert refused.status_code == 403, refused.text
        body = refused.json()
        assert_error_shape(body, "forbidden")
        assert "shared market-data store" in body["message"]
    assert server.hits == []  # the tenant's server was never asked for candles
    assert _store_files(client) == before  # nothing was written


def test_admin_sync_reads_only_operator_sources(
    make_client: Callable[..., TestClient], server: CountingServer
) -> None:
    with counting_server() as operator:  # answers {} to everything: no market, no candle
        client = make_client(
            allowed_api_hosts=[server.host], exchange_endpoints={"binance": operator.url}
        )
        admin = login_as(client, "admin@example.com", "admin")
        evil = {"name": "mine", "exchange": "binance", "apiUrl": server.url}
        assert client.post(ACCOUNTS, json=evil, headers=admin).status_code == 201
        before = _seed_store(client, admin)

        failed = client.post(SYNC, headers=admin)
        assert operator.hits  # the operator's configured endpoint was the source
    assert server.hits == []  # the admin's own account URL was not
    # Every dataset failed: a proper error status, not errors inside a 200.
    assert failed.status_code == 502, failed.text
    assert_error_shape(failed.json(), "exchange_error")
    assert _store_files(client) == before
