"""``/api/analytics/performance`` through HTTP, on SQLite and PostgreSQL, against hand-worked rows.

Alice's bot A starts with 1,000 USDT and has five fills (one fee paid in BTC) and four daily
equity snapshots; bot B has no starting balance (the runtime's 10,000), no fills and two
snapshots.  Mallory's bot must never show up in Alice's figures.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from fastapi.testclient import TestClient
from tests.integration.api.conftest import assert_error_shape, register_and_login

from cryptoorchestrator.platform.storage.models import EquitySnapshot, Order, Trade

URL = "/api/analytics/performance"
DAY0 = datetime(2024, 1, 1, tzinfo=UTC)
TINY = "0.000000000000000001"  # 1e-18: lost by any float on the way

# (side, amount, price, fee, fee currency, realized pnl)
FILLS_A = [
    ("buy", "0.01", "50000", "0.5", "USDT", None),
    ("sell", "0.005", "52000", "0.26", "USDT", "9.49"),
    ("buy", "0.002", "51000", "0.000002", "BTC", None),  # 0.102 USDT
    ("sell", "0.005", "49000", "0.245", "USDT", "-5.755"),
    ("sell", "0.001", "50500", "0.0505", "USDT", "0"),  # not a win
]
EQUITY_A = ["1000", "1100", "990", f"1089{TINY[1:]}"]  # days 0..3
EQUITY_B = {1: "10100", 3: "9999"}  # day -> equity


def _bot(client: TestClient, h: dict[str, str], name: str, **extra: Any) -> int:
    body = {"name": name, "tradingPair": "BTC/USDT", "strategy": "sma_cross", **extra}
    r = client.post("/api/bots", json=body, headers=h)
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def _seed(client: TestClient, bot_id: int, fills: list[Any], equity: dict[int, str]) -> None:
    with client.app.state.context.session_factory() as s:  # type: ignore[attr-defined]
        for i, (side, amount, price, fee, ccy, pnl) in enumerate(fills):
            order = Order(
                bot_id=bot_id,
                client_order_id=f"b{bot_id}-{i}",
                exchange="binance",
                symbol="BTC/USDT",
                side=side,
                type="market",
                amount=Decimal(amount),
                status="filled",
            )
            s.add(order)
            s.flush()
            s.add(
                Trade(
                    bot_id=bot_id,
                    order_id=order.id,
                    exchange_trade_id=f"t{i}",
                    symbol="BTC/USDT",
                    side=side,
                    price=Decimal(price),
                    amount=Decimal(amount),
                    fee=Decimal(fee),
                    fee_currency=ccy,
                    realized_pnl=None if pnl is None else Decimal(pnl),
                    timestamp=DAY0 + timedelta(hours=i),
                )
            )
        for day, value in equity.items():
            s.add(
                EquitySnapshot(
                    bot_id=bot_id,
                    timestamp=DAY0 + timedelta(days=day),
                    equity=Decimal(value),
                    cash=Decimal(value),
                    position_value=Decimal(0),
                )
            )
        s.commit()


def _sharpe_daily(equity: Sequence[float]) -> float:
    returns = [b / a - 1 for a, b in zip(equity, equity[1:], strict=False)]
    return statistics.mean(returns) / statistics.stdev(returns) * math.sqrt(365)


def _setup(client: TestClient) -> tuple[dict[str, str], dict[str, str], int, int, int]:
    alice = register_and_login(client, "alice@example.com")
    mallory = register_and_login(client, "mallory@example.com")
    a = _bot(client, alice, "A", startingBalance="1000")
    b = _bot(client, alice, "B", tradingPair="ETH/USDT")
    m = _bot(client, mallory, "M", startingBalance="5")
    _seed(client, a, FILLS_A, dict(enumerate(EQUITY_A)))
    _seed(client, b, [], EQUITY_B)
    _seed(client, m, [("sell", "1", "100", "1", "USDT", "1000")], {0: "7", 1: "1"})
    return alice, mallory, a, b, m


def test_performance_per_bot_and_portfolio(client: TestClient) -> None:
    alice, _, a, b, _ = _setup(client)
    r = client.get(URL, headers=alice)
    assert r.status_code == 200, r.text
    body = r.json()
    bots = {x["botId"]: x for x in body["bots"]}
    assert list(bots) == [a, b]

    pa = bots[a]
    assert pa["name"] == "A"
    assert pa["archived"] is False
    assert pa["startingBalance"] == "1000"
    assert pa["equity"] == EQUITY_A[-1]
    assert pa["realizedPnl"] == "3.735"  # 9.49 - 5.755 + 0
    assert pa["unrealizedPnl"] == f"85.265{TINY[5:]}"  # 1089.0..01 - 1000 - 3.735
    assert pa["totalPnl"] == f"89{TINY[1:]}"
    assert pa["fees"] == "1.1575"  # 0.5 + 0.26 + 0.000002 * 51000 + 0.245 + 0.0505
    assert pa["tradeCount"] == 5
    assert pa["closingTradeCount"] == 3
    assert pa["winRate"] == 1 / 3
    assert pa["totalReturn"] == 0.089
    assert pa["maxDrawdown"] == 1 - 990 / 1100
    # returns +10 %, -10 %, +10 % a day: sqrt(75 * 365) / 30
    assert math.isclose(pa["sharpe"], math.sqrt(75 * 365) / 30, rel_tol=1e-12)
    assert pa["snapshotCount"] == 4
    assert datetime.fromisoformat(pa["asOf"]) == DAY0 + timedelta(days=3)

    pb = bots[b]
    assert pb["startingBalance"] == "10000"  # unset: what the runtime trades with
    assert pb["realizedPnl"] == "0"
    assert pb["unrealizedPnl"] == "-1"
    assert pb["totalPnl"] == "-1"
    assert pb["fees"] == "0"
    assert pb["tradeCount"] == 0
    assert pb["winRate"] is None  # no closing fill
    assert pb["sharpe"] is None  # one return only
    assert pb["totalReturn"] == -0.0001
    assert math.isclose(pb["maxDrawdown"], 1 - 9999 / 10100, rel_tol=1e-12)

    pf = body["portfolio"]
    assert pf["startingBalance"] == "11000"
    assert pf["realizedPnl"] == "3.735"
    assert pf["unrealizedPnl"] == f"84.265{TINY[5:]}"
    assert pf["totalPnl"] == f"88{TINY[1:]}"
    assert pf["equity"] == f"11088{TINY[1:]}"
    assert pf["fees"] == "1.1575"
    assert pf["tradeCount"] == 5
    assert pf["winRate"] == 1 / 3
    # B counts at its start until its first snapshot: 11000, 11200, 11090, 11088
    curve = [1000 + 10000, 1100 + 10100, 990 + 10100, 1089 + 9999]
    assert pf["snapshotCount"] == 4
    assert math.isclose(pf["sharpe"], _sharpe_daily(curve), rel_tol=1e-9)
    assert math.isclose(pf["maxDrawdown"], 1 - 11088 / 11200, rel_tol=1e-12)
    assert math.isclose(pf["totalReturn"], 88 / 11000, rel_tol=1e-12)


def test_one_bot_and_isolation(client: TestClient) -> None:
    alice, mallory, a, b, m = _setup(client)
    one = client.get(f"{URL}?botId={a}", headers=alice).json()
    assert [x["botId"] for x in one["bots"]] == [a]
    pf = one["portfolio"]
    assert pf["totalPnl"] == f"89{TINY[1:]}"
    assert pf["equity"] == EQUITY_A[-1]
    assert math.isclose(pf["sharpe"], math.sqrt(75 * 365) / 30, rel_tol=1e-12)

    for who, bot in [(mallory, a), (mallory, b), (alice, m), (alice, 2_000_000)]:
        r = client.get(f"{URL}?botId={bot}", headers=who)
        assert r.status_code == 404, r.text
        assert_error_shape(r.json(), "not_found")
    theirs = client.get(URL, headers=mallory).json()
    assert [x["botId"] for x in theirs["bots"]] == [m]
    assert theirs["portfolio"]["realizedPnl"] == "1000"
    assert theirs["portfolio"]["winRate"] == 1.0

    bad = client.get(f"{URL}?botId=0", headers=alice)
    assert bad.status_code == 422
    assert bad.json()["details"][0]["field"] == "query.botId"


def test_empty_portfolio_auth_and_head(client: TestClient) -> None:
    r = client.get(URL)
    assert r.status_code == 401
    assert_error_shape(r.json(), "unauthorized")
    h = register_and_login(client, "new@example.com")
    body = client.get(URL, headers=h).json()
    assert body["bots"] == []
    pf = body["portfolio"]
    assert pf["startingBalance"] == "0"
    assert pf["totalPnl"] == "0"
    for key in ("equity", "unrealizedPnl", "totalReturn", "sharpe", "maxDrawdown", "winRate"):
        assert pf[key] is None, key
    head = client.head(URL, headers=h)
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-type"] == "application/json"


def test_route_does_not_shadow_risk_analytics(lite: TestClient) -> None:
    h = register_and_login(lite, "risk@example.com")
    # /api/analytics/risk is the cluster's (503 without a cluster), not a performance lookup.
    r = lite.get("/api/analytics/risk", headers=h)
    assert r.status_code == 503
    paths = lite.get("/openapi.json").json()["paths"]
    assert "/api/analytics/performance" in paths
    assert "/api/analytics/risk" in paths
