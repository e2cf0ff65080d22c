"""Bots, trades/orders/positions, markets, exchange accounts, runs: CRUD, validation, isolation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select
from tests.integration.api.conftest import assert_error_shape, register_and_login

from cryptoorchestrator.platform.bots.status import set_bot_status
from cryptoorchestrator.platform.logs import bot_logger
from cryptoorchestrator.platform.model import BotStatus
from cryptoorchestrator.platform.storage.db import session_scope
from cryptoorchestrator.platform.storage.models import (
    Bot,
    BotStatusEvent,
    ExchangeAccount,
    Order,
    Position,
    Trade,
)

BOT = {"name": "grid-1", "tradingPair": "BTC/USDT", "strategy": "sma_cross", "riskPerTrade": 1.5}


def _seed_trades(client: TestClient, bot_id: int, n: int) -> None:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    with client.app.state.context.session_factory() as s:  # type: ignore[attr-defined]
        for i in range(n):
            order = Order(
                bot_id=bot_id,
                client_order_id=f"b{bot_id}-{i}",
                exchange="binance",
                symbol="BTC/USDT",
                side="buy",
                type="market",
                amount=Decimal("0.001"),
                status="filled",
                created_at=start + timedelta(minutes=i),
            )
            s.add(order)
            s.flush()
            s.add(
                Trade(
                    bot_id=bot_id,
                    order_id=order.id,
                    exchange_trade_id=f"t{i}",
                    symbol="BTC/USDT",
                    side="buy",
                    price=Decimal("42000.123456789"),
                    amount=Decimal("0.001"),
                    # two fills share a timestamp so the id tie-break is exercised
                    timestamp=start + timedelta(minutes=i // 2),
                )
            )
        s.add(Position(bot_id=bot_id, symbol="BTC/USDT", amount=Decimal("0.005")))
        s.commit()


def test_bot_crud_and_validation(client: TestClient) -> None:
    h = register_and_login(client, "bots@example.com")
    r = client.post("/api/bots", json=BOT, headers=h)
    assert r.status_code == 201, r.text
    bot = r.json()
    assert bot["riskPerTrade"] == "1.5"
    assert bot["status"] == "Stopped"
    assert bot["tradingPair"] == "BTC/USDT"
    assert client.post("/api/bots", json=BOT, headers=h).status_code == 409
    for body, field in [
        ({**BOT, "riskPerTrade": 7}, "riskPerTrade"),
        ({**BOT, "maxPositionSize": 0}, "maxPositionSize"),
        ({k: v for k, v in BOT.items() if k != "tradingPair"}, "tradingPair"),
        ({**BOT, "name": "x2", "tradingPair": "BTC//USDT"}, "tradingPair"),
        ({**BOT, "name": "x3", "timeframe": "7m"}, "timeframe"),
        ({**BOT, "name": "x4", "mode": "live"}, "exchangeAccountId"),
    ]:
        bad = client.post("/api/bots", json=body, headers=h)
        assert bad.status_code == 422, body
        assert_error_shape(bad.json(), "invalid_input")
        assert bad.json()["details"][0]["field"] == field
    rng = client.post("/api/bots", json={**BOT, "riskPerTrade": 7}, headers=h).json()
    assert rng["details"][0]["allowed"] == "0.1-5.0"
    got = client.get(f"/api/bots/{bot['id']}", headers=h).json()
    assert got == bot
    upd = client.patch(f"/api/bots/{bot['id']}", json={"maxPositionSize": "25"}, headers=h)
    assert upd.json()["maxPositionSize"] == "25"
    listed = client.get("/api/bots", headers=h).json()
    assert [b["id"] for b in listed["items"]] == [bot["id"]]
    status = client.get(f"/api/bots/{bot['id']}/status", headers=h).json()
    assert status["status"] == "Stopped"
    assert status["desiredState"] == "stopped"
    deleted = client.delete(f"/api/bots/{bot['id']}", headers=h)
    assert deleted.json()["outcome"] == "deleted"
    assert client.get(f"/api/bots/{bot['id']}", headers=h).status_code == 404


def test_start_stop_answer_503_and_persist_nothing(client: TestClient) -> None:
    h = register_and_login(client, "start@example.com")
    bot_id = client.post("/api/bots", json=BOT, headers=h).json()["id"]
    for action in ("start", "stop"):
        r = client.post(f"/api/bots/{bot_id}/{action}", headers=h)
        assert r.status_code == 503
        assert_error_shape(r.json(), "not_available")
        assert r.json()["message"].startswith("not available:")
    with client.app.state.context.session_factory() as s:  # type: ignore[attr-defined]
        bot = s.get(Bot, bot_id)
        assert bot is not None
        assert bot.desired_state == "stopped"
        assert list(s.scalars(select(BotStatusEvent))) == []


class AcceptingCluster:
    """A facade that accepts starts and stops and persists them as the Ray cluster's does
    (desired state and the transition, before any actor would read them), without Ray."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self.calls: list[tuple[str, int]] = []

    def _persist(self, bot_id: int, status: BotStatus, reason: str, desired: str) -> None:
        with session_scope(self.settings) as session:
            set_bot_status(session, bot_id, status, reason, desired_state=desired)

    async def start_bot(self, bot_id: int) -> str:
        self.calls.append(("start", bot_id))
        self._persist(bot_id, BotStatus.STARTING, "start requested", "running")
        return "Starting"

    async def stop_bot(self, bot_id: int, reason: str) -> str:
        self.calls.append(("stop", bot_id))
        self._persist(bot_id, BotStatus.STOPPED, reason, "stopped")
        return "Stopped"


def test_accepted_start_persists_state_event_and_publishes(app_factory: object) -> None:
    probe: TestClient = app_factory()  # type: ignore[operator]
    cluster = AcceptingCluster(probe.app.state.context.settings)  # type: ignore[attr-defined]
    client: TestClient = app_factory(cluster=cluster)  # type: ignore[operator]
    h = register_and_login(client, "accepted@example.com")
    token = h["Authorization"].split()[1]
    bot_id = client.post("/api/bots", json=BOT, headers=h).json()["id"]
    with client.websocket_connect(f"/ws/bots?token={token}") as ws:
        assert ws.receive_json()["type"] == "authenticated"
        r = client.post(f"/api/bots/{bot_id}/start", headers=h)
        assert r.status_code == 200
        assert r.json()["status"] == "Starting"
        assert r.json()["desiredState"] == "running"
        assert r.json()["events"][0]["status"] == "Starting"
        event = ws.receive_json()
        assert event == {
            "botId": bot_id,
            "type": "status",
            "status": "Starting",
            "reason": "started by user",
        }
        # Running bots cannot change trading fields or be deleted.
        assert (
            client.patch(f"/api/bots/{bot_id}", json={"timeframe": "4h"}, headers=h).status_code
            == 409
        )
        assert client.delete(f"/api/bots/{bot_id}", headers=h).status_code == 409
        client.post(f"/api/bots/{bot_id}/stop", headers=h)
        assert ws.receive_json()["status"] == "Stopped"
    assert cluster.calls == [("start", bot_id), ("stop", bot_id)]


def test_bot_logs_tail(lite: TestClient, settings: object) -> None:
    h = register_and_login(lite, "logs2@example.com")
    bot_id = lite.post("/api/bots", json=BOT, headers=h).json()["id"]
    log = bot_logger(bot_id, settings.log_dir)  # type: ignore[attr-defined]
    for i in range(5):
        log.info("decision %d", i)
    for handler in log.handlers:
        handler.flush()
    lines = lite.get(f"/api/bots/{bot_id}/logs?tail=2", headers=h).json()["lines"]
    assert len(lines) == 2
    assert "decision 4" in lines[-1]
    assert lite.get(f"/api/bots/{bot_id}/logs?tail=0", headers=h).status_code == 422


def test_trades_orders_positions_keyset_pages(client: TestClient) -> None:
    h = register_and_login(client, "trader@example.com")
    bot_id = client.post("/api/bots", json=BOT, headers=h).json()["id"]
    other = client.post("/api/bots", json={**BOT, "name": "other"}, headers=h).json()["id"]
    _seed_trades(client, bot_id, 7)
    seen: list[int] = []
    cursor = None
    while True:
        url = f"/api/trades/?botId={bot_id}&limit=3" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(url, headers=h).json()
        seen += [t["id"] for t in page["items"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    with client.app.state.context.session_factory() as s:  # type: ignore[attr-defined]
        expected = [
            t.id for t in s.scalars(select(Trade).order_by(Trade.timestamp.desc(), Trade.id.desc()))
        ]
    assert seen == expected
    first = client.get("/api/trades?limit=1", headers=h).json()["items"][0]
    assert first["price"] == "42000.123456789"
    assert client.get(f"/api/trades/?botId={other}", headers=h).json()["items"] == []
    orders = client.get(f"/api/orders/?botId={bot_id}&limit=50", headers=h).json()["items"]
    assert [o["clientOrderId"] for o in orders] == [f"b{bot_id}-{i}" for i in range(6, -1, -1)]
    positions = client.get("/api/positions", headers=h).json()["items"]
    assert positions[0]["amount"] == "0.005"
    bad = client.get("/api/trades/?cursor=!!!", headers=h)
    assert bad.status_code == 422
    assert bad.json()["details"][0]["field"] == "cursor"


def test_other_users_ids_are_404(client: TestClient) -> None:
    alice = register_and_login(client, "alice2@example.com")
    mallory = register_and_login(client, "mallory@example.com")
    bot_id = client.post("/api/bots", json=BOT, headers=alice).json()["id"]
    acc = client.post(
        "/api/integrations/exchanges/accounts",
        json={"name": "a", "exchange": "binance", "apiKey": "k" * 16},
        headers=alice,
    ).json()["id"]
    _seed_trades(client, bot_id, 2)
    for method, url in [
        ("GET", f"/api/bots/{bot_id}"),
        ("PATCH", f"/api/bots/{bot_id}"),
        ("DELETE", f"/api/bots/{bot_id}"),
        ("GET", f"/api/bots/{bot_id}/status"),
        ("GET", f"/api/bots/{bot_id}/logs"),
        ("POST", f"/api/bots/{bot_id}/start"),
        ("GET", f"/api/trades/?botId={bot_id}"),
        ("GET", f"/api/orders/?botId={bot_id}"),
        ("GET", f"/api/positions/?botId={bot_id}"),
        ("GET", f"/api/integrations/exchanges/accounts/{acc}"),
        ("DELETE", f"/api/integrations/exchanges/accounts/{acc}"),
    ]:
        kwargs = {"json": {}} if method == "PATCH" else {}
        r = client.request(method, url, headers=mallory, **kwargs)
        assert r.status_code == 404, (method, url, r.text)
        assert_error_shape(r.json(), "not_found")
    assert client.get("/api/trades/", headers=mallory).json()["items"] == []
    assert client.get("/api/bots", headers=mallory).json()["items"] == []
    # A bot cannot use someone else's exchange account either.
    r = client.post("/api/bots", json={**BOT, "exchangeAccountId": acc}, headers=mallory)
    assert r.status_code == 422


def test_bot_with_history_is_archived(lite: TestClient) -> None:
    h = register_and_login(lite, "arch@example.com")
    bot_id = lite.post("/api/bots", json=BOT, headers=h).json()["id"]
    _seed_trades(lite, bot_id, 1)
    assert lite.delete(f"/api/bots/{bot_id}", headers=h).json()["outcome"] == "archived"
    assert lite.get(f"/api/bots/{bot_id}", headers=h).status_code == 404
    assert lite.post("/api/bots", json=BOT, headers=h).status_code == 201


def test_exchange_accounts_credentials_write_only(client: TestClient) -> None:
    h = register_and_login(client, "keys@example.com")
    r = client.post(
        "/api/integrations/exchanges/accounts",
        json={
            "name": "main",
            "exchange": "binance",
            "apiKey": "AKEY-1234567890",
            "apiSecret": "ASECRET-0987654321",
        },
        headers=h,
    )
    assert r.status_code == 201
    body = r.json()
    assert body["hasApiKey"] is True
    assert body["hasPassphrase"] is False
    assert "AKEY-1234567890" not in r.text
    assert "ASECRET-0987654321" not in r.text
    listed = client.get("/api/integrations/exchanges/accounts", headers=h)
    assert "ASECRET" not in listed.text
    app = client.app
    with app.state.context.session_factory() as s:  # type: ignore[attr-defined]
        row = s.get(ExchangeAccount, body["id"])
        assert row is not None
        assert b"ASECRET-0987654321" not in (row.api_secret_enc or b"")
        box = app.state.context.secret_box  # type: ignore[attr-defined]
        plain = box.decrypt(row.api_secret_enc, f"exchange_account:{row.id}:api_secret")
        assert plain == "ASECRET-0987654321"
    upd = client.patch(
        f"/api/integrations/exchanges/accounts/{body['id']}", json={"apiKey": ""}, headers=h
    )
    assert upd.json()["hasApiKey"] is False


def test_markets_and_ohlcv(lite: TestClient) -> None:
    markets = lite.get("/api/markets").json()
    assert {"exchange": "binance", "symbol": "BTC/USDT", "timeframe": "1h"}.items() <= markets[
        0
    ].items()
    latest = lite.get("/api/markets/BTC-USDT/ohlcv?timeframe=1h&limit=3").json()
    ts = [c["timestamp"] for c in latest["candles"]]
    assert len(ts) == 3
    assert ts == sorted(ts)
    assert ts[-1] == markets[0]["last"]
    since = lite.get(f"/api/markets/BTC-USDT/ohlcv?since={markets[0]['first']}&limit=2").json()
    assert since["candles"][0]["timestamp"] == markets[0]["first"]
    assert lite.get("/api/markets/BTC-USDT/ohlcv?timeframe=7m").status_code == 422
    assert lite.get("/api/markets/DOGE-XYZ/ohlcv").status_code == 422  # lists the valid ones
    assert lite.get("/api/markets/not a symbol/ohlcv").status_code == 422


def test_runs_and_risk_routes(lite: TestClient) -> None:
    h = register_and_login(lite, "runs@example.com")
    assert lite.get("/api/backtests", headers=h).json() == []
    assert lite.get("/api/backtests/nope", headers=h).status_code == 404
    for url, body in [
        ("/api/backtests", {"strategy": "sma_cross"}),
        ("/api/optimizations", {"strategy": "sma_cross", "space": {"fast": [5, 10]}}),
        ("/api/risk/kill-switch", {}),
    ]:
        r = lite.post(url, json=body, headers=h)
        assert r.status_code == 503, url
        assert r.json()["message"].startswith("not available:")
    assert (
        lite.put("/api/risk/limits", json={"limits": [{"name": "x"}]}, headers=h).status_code == 503
    )
    assert lite.get("/api/risk/limits", headers=h).json() == []
    assert lite.get("/api/analytics/risk", headers=h).status_code == 503


def test_bot_actor_group_is_validated_and_returned(lite: TestClient) -> None:
    h = register_and_login(lite, "groups@example.com")
    bad = lite.post("/api/bots", json={**BOT, "actorGroup": "Not Valid!"}, headers=h)
    assert bad.status_code == 422
    assert_error_shape(bad.json())
    assert any("actorGroup" in str(d.get("field")) for d in bad.json()["details"])
    ok = lite.post("/api/bots", json={**BOT, "name": "pooled", "actorGroup": "pool-1"}, headers=h)
    assert ok.status_code == 201
    assert ok.json()["actorGroup"] == "pool-1"
