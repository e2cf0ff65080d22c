"""Symbols in paths and subscriptions: every spelling of a pair, and 422 naming the valid ones."""

from __future__ import annotations

from fastapi.testclient import TestClient
from tests.integration.api.conftest import assert_error_shape


def test_every_path_spelling_of_a_pair_is_accepted(lite: TestClient) -> None:
    for spelling in ("BTC%2FUSDT", "BTC-USDT", "BTC_USDT", "btc-usdt", "btc%2fusdt"):
        r = lite.get(f"/api/markets/{spelling}/ohlcv?limit=2")
        assert r.status_code == 200, (spelling, r.text)
        assert r.json()["symbol"] == "BTC/USDT"
        assert len(r.json()["candles"]) == 2


def test_unknown_symbols_answer_422_with_the_valid_ones(lite: TestClient) -> None:
    listed = {m["symbol"] for m in lite.get("/api/markets").json()}
    assert "BTC/USDT" in listed
    for spelling in ("BTCUSDT", "DOGE-USDT", "DOGE%2FUSDT", "not a symbol"):
        r = lite.get(f"/api/markets/{spelling}/ohlcv")
        assert r.status_code == 422, (spelling, r.text)
        body = r.json()
        assert_error_shape(body, "invalid_input")
        (detail,) = body["details"]
        assert detail["field"] == "symbol"
        assert set(detail["allowed"].split(", ")) == listed
        assert "GET /api/markets" in detail["message"]
    hint = lite.get("/api/markets/BTCUSDT/ohlcv").json()["details"][0]["message"]
    assert "did you mean BTC/USDT?" in hint
    # An exchange without any market data names the exchanges that have some.
    r = lite.get("/api/markets/BTC-USDT/ohlcv?exchange=kraken")
    assert r.status_code == 422
    assert r.json()["details"][0]["field"] == "exchange"
    assert "binance" in r.json()["details"][0]["allowed"]


def test_market_data_subscription_names_the_valid_symbols(lite: TestClient) -> None:
    with lite.websocket_connect("/ws/market-data") as ws:
        ws.send_json({"type": "subscribe", "symbols": ["DOGE/USDT"]})
        unknown = ws.receive_json()
        assert unknown["code"] == "unknown_symbol"
        assert "BTC/USDT" in unknown["validSymbols"]
        assert "BTC/USDT" in unknown["message"]
        ws.send_json({"type": "subscribe", "symbols": ["BTCUSDT"]})
        malformed = ws.receive_json()
        assert malformed["code"] == "invalid_symbol"
        assert "did you mean BTC/USDT?" in malformed["message"]
        assert "BTC/USDT" in malformed["validSymbols"]
        ws.send_json({"type": "subscribe", "symbols": ["btc_usdt"]})
        assert ws.receive_json() == {"type": "subscribed", "symbols": ["BTC/USDT"]}
