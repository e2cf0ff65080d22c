"""The WebSocket protocols: market-data subscriptions and authenticated bot events."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect
from tests.integration.api.conftest import register_and_login


def test_market_data_subscribe_ping_malformed_unsubscribe(lite: TestClient) -> None:
    with lite.websocket_connect("/ws/market-data") as ws:
        ws.send_text("not json")
        assert ws.receive_json()["type"] == "error"
        ws.send_json({"type": "subscribe", "symbols": "BTC/USDT"})
        assert ws.receive_json()["code"] == "malformed"
        ws.send_json({"type": "dance"})
        assert ws.receive_json()["code"] == "unknown_type"
        ws.send_json({"type": "ping"})
        assert ws.receive_json() == {"type": "pong"}  # still open after the errors
        ws.send_json({"type": "subscribe", "symbols": ["BTC/USDT", "NOPE/USDT"]})
        messages = [ws.receive_json() for _ in range(4)]
        kinds = [m["type"] for m in messages]
        assert kinds.count("error") == 1
        assert {"type": "subscribed", "symbols": ["BTC/USDT"]} in messages
        candle = next(m for m in messages if m["type"] == "candle")
        ticker = next(m for m in messages if m["type"] == "ticker")
        assert candle["symbol"] == "BTC/USDT"
        assert candle["timeframe"] == "1h"
        assert {"open", "high", "low", "close", "volume", "timestamp"} <= set(candle)
        assert ticker["price"] == candle["close"]
        ws.send_json({"type": "unsubscribe", "symbols": ["BTC/USDT"]})
        assert ws.receive_json() == {"type": "unsubscribed", "symbols": ["BTC/USDT"]}
        ws.send_json({"type": "ping"})
        assert ws.receive_json() == {"type": "pong"}


def test_bot_events_only_reach_the_owner(lite: TestClient) -> None:
    alice = register_and_login(lite, "ws-a@example.com")
    bob = register_and_login(lite, "ws-b@example.com")
    bot_a = lite.post(
        "/api/bots",
        json={"name": "a", "tradingPair": "BTC/USDT", "strategy": "sma_cross"},
        headers=alice,
    ).json()["id"]
    bot_b = lite.post(
        "/api/bots",
        json={"name": "b", "tradingPair": "BTC/USDT", "strategy": "sma_cross"},
        headers=bob,
    ).json()["id"]
    hub = lite.app.state.context.event_hub  # type: ignore[attr-defined]
    with lite.websocket_connect("/ws/bots") as ws:
        ws.send_json({"type": "auth", "token": alice["Authorization"].split()[1]})
        assert ws.receive_json()["type"] == "authenticated"
        hub.publish(bot_b, {"type": "fill", "price": "1"})
        hub.publish(bot_a, {"type": "order", "side": "buy", "amount": "0.1"})
        assert ws.receive_json() == {
            "botId": bot_a,
            "type": "order",
            "side": "buy",
            "amount": "0.1",
        }
        ws.send_json({"type": "ping"})
        assert ws.receive_json() == {"type": "pong"}


def test_bot_events_reject_bad_token(lite: TestClient) -> None:
    with lite.websocket_connect("/ws/bots?token=garbage") as ws:
        msg = ws.receive_json()
        assert msg["type"] == "error"
        assert msg["message"] == "Invalid token"
        with pytest.raises(WebSocketDisconnect) as info:
            ws.receive_json()
        assert info.value.code == 4401
