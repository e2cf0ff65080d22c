"""``GET /api/trades``'s period (``from`` inclusive, ``to`` exclusive) on SQLite and PostgreSQL.

PostgreSQL reads trades over the async pool and SQLite through ORM sessions: the period rides
on the same keyset in both, so both must page through exactly the fills of the period.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from fastapi.testclient import TestClient
from tests.integration.api.conftest import assert_error_shape, register_and_login

from cryptoorchestrator.platform.storage.models import Order, Trade

START = datetime(2023, 3, 1, tzinfo=UTC)


def _seed(client: TestClient, bot_id: int, hours: int) -> list[int]:
    """One fill of ``bot_id`` per hour from START; returns the trade ids, oldest first."""
    ids = []
    with client.app.state.context.session_factory() as s:  # type: ignore[attr-defined]
        for i in range(hours):
            at = START + timedelta(hours=i)
            order = Order(
                bot_id=bot_id,
                client_order_id=f"period-{bot_id}-{i}",
                exchange="binance",
                symbol="BTC/USDT",
                side="buy",
                type="market",
                amount=Decimal("0.01"),
                filled=Decimal("0.01"),
                average_price=Decimal(25_000),
                status="closed",
                submitted_at=at,
                closed_at=at,
            )
            s.add(order)
            s.flush()
            trade = Trade(
                bot_id=bot_id,
                order_id=order.id,
                exchange_trade_id=f"period-{bot_id}-{i}",
                symbol="BTC/USDT",
                side="buy",
                price=Decimal(25_000),
                amount=Decimal("0.01"),
                fee=Decimal("0.01"),
                fee_currency="USDT",
                timestamp=at,
            )
            s.add(trade)
            s.flush()
            ids.append(trade.id)
        s.commit()
    return ids


def _all(client: TestClient, auth: dict[str, str], **query: Any) -> list[int]:
    """Every page of the listing, 7 at a time; the trade ids, as listed."""
    got: list[int] = []
    cursor = None
    for _ in range(50):
        params = {**query, "limit": 7, **({"cursor": cursor} if cursor else {})}
        r = client.get("/api/trades", params=params, headers=auth)
        assert r.status_code == 200, r.text
        got += [t["id"] for t in r.json()["items"]]
        cursor = r.json()["nextCursor"]
        if cursor is None:
            return got
    raise AssertionError("the listing did not end")


def test_period_pages_exactly_its_fills(client: TestClient) -> None:
    auth = register_and_login(client, "period@example.com")
    body = {"name": "p", "tradingPair": "BTC/USDT", "strategy": "sma_cross"}
    bot_id = client.post("/api/bots", json=body, headers=auth).json()["id"]
    ids = _seed(client, bot_id, 48)
    newest_first = list(reversed(ids))
    # March 1st 10:00 (inclusive) to March 2nd 03:00 (exclusive): fills 10..26.
    period = {"from": "2023-03-01T10:00:00Z", "to": "2023-03-02T03:00:00Z"}
    assert _all(client, auth, **period) == list(reversed(ids[10:27]))
    assert _all(client, auth, botId=bot_id, **period) == list(reversed(ids[10:27]))
    # Epoch milliseconds, a zone offset, a date without a time: the same instants.
    ms = int(START.timestamp() * 1000)
    assert _all(client, auth, **{"from": str(ms + 5 * 3_600_000)}) == newest_first[:43]
    assert _all(client, auth, to="2023-03-01T03:00:00+01:00") == list(reversed(ids[:2]))
    assert _all(client, auth, to="2023-03-02") == list(reversed(ids[:24]))
    # A cursor of an unfiltered page newer than "to" starts at "to"; an older one is kept.
    first = client.get("/api/trades", params={"limit": 3}, headers=auth).json()["nextCursor"]
    r = client.get("/api/trades", params={"limit": 3, "cursor": first, **period}, headers=auth)
    assert [t["id"] for t in r.json()["items"]] == list(reversed(ids[24:27]))
    deep = client.get("/api/trades", params={"limit": 30}, headers=auth).json()["nextCursor"]
    r = client.get("/api/trades", params={"limit": 100, "cursor": deep, **period}, headers=auth)
    assert [t["id"] for t in r.json()["items"]] == list(reversed(ids[10:18]))
    # An empty period is an empty page, not an error.
    empty = {"from": "2024-01-01", "to": "2024-01-02"}
    assert _all(client, auth, **empty) == []


def test_bad_period_names_the_field(client: TestClient) -> None:
    auth = register_and_login(client, "period-bad@example.com")
    for query, name in (
        ({"from": "soon"}, "from"),
        ({"to": "2023-02-30"}, "to"),
        ({"from": "0"}, "from"),
        ({"to": "99999999999999999999"}, "to"),
        ({"from": "2023-03-02", "to": "2023-03-01"}, "to"),
        ({"from": "2023-03-01", "to": "2023-03-01"}, "to"),
    ):
        r = client.get("/api/trades", params=query, headers=auth)
        assert r.status_code == 422, (query, r.text)
        body = r.json()
        assert_error_shape(body)
        assert body["details"][0]["field"] == name, body
        assert body["details"][0]["allowed"], body
