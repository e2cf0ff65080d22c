"""The API's fast paths give the same answers as the plain ones.

``/api/trades`` reads PostgreSQL through an async pool and writes rows straight to JSON; tokens
and active users are cached; pooled connections are pinged only after sitting idle.  Each shortcut
is checked against what it replaces, and against the failures it must survive.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text, update
from tests.integration.api.conftest import assert_error_shape, options, register_and_login

from cryptoorchestrator.api import identity as identity_module
from cryptoorchestrator.api.app import create_app
from cryptoorchestrator.api.identity import Identity
from cryptoorchestrator.api.schemas import Page, TradePublic
from cryptoorchestrator.platform.errors import UnauthorizedError
from cryptoorchestrator.platform.services.auth import AuthConfig, create_access_token
from cryptoorchestrator.platform.services.trade_reads import APPLICATION_NAME, PooledTradeReads
from cryptoorchestrator.platform.settings import DatabasePool, Settings
from cryptoorchestrator.platform.storage.db import create_db_engine
from cryptoorchestrator.platform.storage.models import Order, Trade, User

BOT = {"name": "hot", "tradingPair": "BTC/USDT", "strategy": "sma_cross"}
# Values whose text form is easy to get wrong: padding, whole numbers, tiny and negative ones.
PRICES = ["40000", "42000.123456789", "0.00000001", "1000000.5", "12.340"]
PNLS = [None, "-2.125", "0", "3", "0.000000000000000001"]


def _seed(client: TestClient, bot_id: int) -> None:
    start = datetime(2024, 3, 1, 12, tzinfo=UTC)
    with client.app.state.context.session_factory() as s:  # type: ignore[attr-defined]
        for i in range(12):
            order = Order(
                bot_id=bot_id,
                client_order_id=f"hot-{bot_id}-{i}",
                exchange="binance",
                symbol="BTC/USDT",
                side="sell" if i % 2 else "buy",
                type="market",
                amount=Decimal("0.5"),
                status="filled",
            )
            s.add(order)
            s.flush()
            pnl = PNLS[i % len(PNLS)]
            s.add(
                Trade(
                    bot_id=bot_id,
                    order_id=order.id,
                    exchange_trade_id=f"x{i}",
                    symbol="BTC/USDT",
                    side=order.side,
                    price=Decimal(PRICES[i % len(PRICES)]),
                    amount=Decimal("0.5"),
                    fee=Decimal("0.0001") * i,
                    fee_currency=None if i % 3 else "USDT",
                    realized_pnl=None if pnl is None else Decimal(pnl),
                    timestamp=start + timedelta(seconds=i // 2, microseconds=7 * i),
                )
            )
        s.commit()


def _model_pages(client: TestClient, bot_id: int, limit: int) -> list[dict[str, Any]]:
    """What the validated TradePublic models give for the same pages (the reference)."""
    with client.app.state.context.session_factory() as s:  # type: ignore[attr-defined]
        rows = list(
            s.scalars(
                select(Trade)
                .where(Trade.bot_id == bot_id)
                .order_by(Trade.timestamp.desc(), Trade.id.desc())
            )
        )
    return [
        TradePublic.model_validate(r).model_dump(mode="json", by_alias=True)
        for r in rows[: limit * 10]
    ]


def test_trades_fast_path_writes_what_the_models_would(client: TestClient) -> None:
    h = register_and_login(client, "hot@example.com")
    bot_id = client.post("/api/bots", json=BOT, headers=h).json()["id"]
    _seed(client, bot_id)
    is_pg = client.app.state.context.settings.database_url.startswith("postgresql")  # type: ignore[attr-defined]
    reads = client.app.state.context.trades  # type: ignore[attr-defined]
    assert isinstance(reads, PooledTradeReads) == is_pg  # the async pool for PostgreSQL only
    got: list[dict[str, Any]] = []
    for by_bot in (True, False):
        got, cursor = [], None
        while True:
            query = f"limit=5&cursor={cursor}" if cursor else "limit=5"
            if by_bot:
                query += f"&botId={bot_id}"
            r = client.get(f"/api/trades?{query}", headers=h)
            assert r.status_code == 200, r.text
            body = r.json()
            Page[TradePublic].model_validate(body)  # the documented schema holds
            got += body["items"]
            cursor = body["nextCursor"]
            if cursor is None:
                break
        assert got == _model_pages(client, bot_id, 5)
    # Padding stripped, whole numbers without an exponent, as written.
    assert {"40000", "42000.123456789", "1000000.5", "12.34"} <= {t["price"] for t in got}
    assert any(t["realizedPnl"] is None for t in got)
    assert all(t["timestamp"].endswith("Z") for t in got)


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_async_reads_survive_dropped_connections(app_factory: Any, db_url: str) -> None:
    client = app_factory(db_url)
    h = register_and_login(client, "drop@example.com")
    bot_id = client.post("/api/bots", json=BOT, headers=h).json()["id"]
    _seed(client, bot_id)
    assert client.get("/api/trades?limit=3", headers=h).status_code == 200
    admin = db_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as conn:
        killed = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = %s",
            (APPLICATION_NAME,),
        ).fetchone()
    assert killed is not None
    assert killed[0] >= 1
    r = client.get("/api/trades?limit=3", headers=h)
    assert r.status_code == 200, r.text
    assert len(r.json()["items"]) == 3


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_idle_connections_are_pinged_and_replaced(settings: Settings, db_url: str) -> None:
    s = settings.model_copy(
        update={"database_url": db_url, "db": DatabasePool(pool_size=1, pre_ping_idle_s=0.05)}
    )
    engine = create_db_engine(s)
    try:
        with engine.connect() as conn:
            pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
        admin = db_url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        time.sleep(0.1)  # idle longer than pre_ping_idle_s: the checkout pings, fails, reconnects
        with engine.connect() as conn:
            assert conn.execute(text("SELECT pg_backend_pid()")).scalar_one() != pid
    finally:
        engine.dispose()


def test_cached_token_still_expires_on_the_second(monkeypatch: pytest.MonkeyPatch) -> None:
    config = AuthConfig(secret_key="k" * 32, access_ttl=timedelta(minutes=1))
    ident = Identity(config, session_factory=lambda: None)  # type: ignore[arg-type,return-value]
    token = create_access_token(config, 42, session_id="s", epoch=0)
    assert ident.user_id(token) == 42  # verified and cached
    exp = ident._tokens[token][1]
    monkeypatch.setattr(identity_module.time, "time", lambda: exp - 0.001)
    assert ident.user_id(token) == 42
    monkeypatch.setattr(identity_module.time, "time", lambda: float(exp))
    with pytest.raises(UnauthorizedError, match="Token expired"):
        ident.user_id(token)
    with pytest.raises(UnauthorizedError, match="Invalid token"):
        ident.user_id(token[:-2] + "xx")
    assert ident.identify("garbage") is None


def test_deactivated_user_is_refused(settings: Settings) -> None:
    from cryptoorchestrator.platform.storage.db import upgrade

    upgrade(settings)
    with TestClient(create_app(settings, options=options(user_cache_s=0))) as client:
        h = register_and_login(client, "gone@example.com")
        assert client.get("/api/trades", headers=h).status_code == 200
        with client.app.state.context.session_factory() as s:  # type: ignore[attr-defined]
            s.execute(update(User).values(is_active=False))
            s.commit()
        r = client.get("/api/trades", headers=h)
        assert r.status_code == 401
        assert r.json()["message"] == "Invalid token"


def test_database_down_is_503_not_500(settings: Settings) -> None:
    # Nothing listens on port 1: every connection is refused at once.
    down = settings.model_copy(
        update={"database_url": "postgresql+psycopg://postgres@127.0.0.1:1/none"}
    )
    with TestClient(create_app(down, options=options()), raise_server_exceptions=False) as c:
        r = c.post("/api/auth/login", json={"email": "a@example.com", "password": "x" * 10})
        assert r.status_code == 503, r.text
        assert_error_shape(r.json(), "database_unavailable")
        assert r.headers["retry-after"] == "1"
        assert c.get("/api/health").status_code == 200  # liveness does not need the database
