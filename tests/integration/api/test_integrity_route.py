"""``GET /api/health/integrity``: the books' integrity, for admins only."""

from __future__ import annotations

from decimal import Decimal

from fastapi.testclient import TestClient
from sqlalchemy import select
from tests.integration.api.conftest import assert_error_shape, register_and_login

from cryptoorchestrator.platform.storage import db
from cryptoorchestrator.platform.storage.models import Bot, IntegrityFinding, Position, User


def test_only_admins_read_the_books_integrity(client: TestClient) -> None:
    admin = register_and_login(client, "ops@example.com")  # the first account is admin
    trader = register_and_login(client, "t@example.com")
    assert client.get("/api/health/integrity").status_code == 401
    refused = client.get("/api/health/integrity", headers=trader)
    assert refused.status_code == 403
    assert_error_shape(refused.json())
    clean = client.get("/api/health/integrity?run=true", headers=admin)
    assert clean.status_code == 200, clean.text
    assert clean.json()["status"] == "ok"
    assert clean.json()["open_findings"] == 0

    # A position no fill explains: the check finds it, quarantines it, changes nothing.
    settings = client.app.state.context.settings  # type: ignore[attr-defined]
    with db.session_scope(settings) as s:
        owner = s.scalar(select(User.id).where(User.email == "t@example.com"))
        bot = Bot(
            user_id=owner,
            name="orphan-position",
            trading_pair="BTC/USDT",
            strategy="sma_cross",
            timeframe="1h",
            risk_per_trade=Decimal("1"),
            max_position_size=Decimal("10"),
        )
        s.add(bot)
        s.flush()
        s.add(Position(bot_id=bot.id, symbol="BTC/USDT", amount=Decimal("0.5")))
    cached = client.get("/api/health/integrity", headers=admin).json()
    assert cached["status"] == "ok"  # as of the last check: a probe never runs the check
    found = client.get("/api/health/integrity?run=true", headers=admin)
    assert found.status_code == 200
    body = found.json()
    assert body["status"] == "findings"
    assert body["open_findings"] >= 1
    assert body["checked_at"] is not None
    with db.session_scope(settings) as s:
        assert s.scalar(select(Position.amount)) == Decimal("0.5")  # quarantined, not fixed
        assert s.scalars(select(IntegrityFinding.table_name)).all()
