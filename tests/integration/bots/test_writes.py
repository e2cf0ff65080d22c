"""Batched hot-path writes of a process's bots, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from cryptoorchestrator.platform.bots.writes import EXISTS, OrderWrites, Snapshot
from cryptoorchestrator.platform.settings import Settings
from cryptoorchestrator.platform.storage import db
from cryptoorchestrator.platform.storage.models import Bot, EquitySnapshot, Order, User


@pytest.fixture
def world(db_url: str, tmp_path: Path) -> Any:
    settings = Settings(database_url=db_url, var_dir=tmp_path / "var", log_dir=tmp_path / "logs")
    db.upgrade(settings)
    with db.session_scope(settings) as session:
        user = User(email="w@example.com", password_hash="x")
        session.add(user)
        session.flush()
        bots = []
        for i in range(3):
            bot = Bot(
                user_id=user.id,
                name=f"b{i}",
                trading_pair="BTC/USDT",
                strategy="sma_cross",
                timeframe="1h",
                risk_per_trade=Decimal(1),
                max_position_size=Decimal(10),
            )
            session.add(bot)
            session.flush()
            bots.append(bot.id)
    yield settings, bots
    db.dispose_engines()


def _intent(bot_id: int, cid: str) -> dict[str, Any]:
    return {
        "bot_id": bot_id,
        "client_order_id": cid,
        "exchange": "binance",
        "symbol": "BTC/USDT",
        "side": "buy",
        "type": "market",
        "price": Decimal("101.5"),
        "amount": Decimal("0.123456789012345678"),
        "filled": Decimal(0),
        "status": "intent",
    }


def test_intents_of_bots_acting_together_are_one_transaction(world: Any) -> None:
    settings, bots = world
    writes = OrderWrites(settings)

    async def act() -> list[str | None]:
        return list(await asyncio.gather(*(writes.intent(_intent(b, f"co{b}-1-L")) for b in bots)))

    assert asyncio.run(act()) == [None, None, None]
    assert writes.intent.batches == 1
    with db.session_scope(settings) as session:
        rows = session.scalars(select(Order).order_by(Order.bot_id)).all()
        assert [(r.bot_id, r.client_order_id, r.status) for r in rows] == [
            (b, f"co{b}-1-L", "intent") for b in bots
        ]
        assert rows[0].amount == Decimal("0.123456789012345678")  # exact, not a float


def test_an_existing_intent_is_reported_not_inserted_again(world: Any) -> None:
    settings, bots = world
    writes = OrderWrites(settings)
    assert writes.store_intents([_intent(bots[0], "co-a")]) == [None]
    with db.session_scope(settings) as session:
        order = session.scalars(select(Order)).one()
        order.status = "filled"
    # Same id again (a restarted bot), a new one, and a duplicate within the batch.
    out = writes.store_intents(
        [_intent(bots[0], "co-a"), _intent(bots[1], "co-b"), _intent(bots[1], "co-b")]
    )
    assert out == ["filled", None, EXISTS]
    with db.session_scope(settings) as session:
        assert sorted(session.scalars(select(Order.client_order_id))) == ["co-a", "co-b"]


def test_submitted_marks_and_a_missing_order(world: Any) -> None:
    settings, bots = world
    writes = OrderWrites(settings)
    writes.store_intents([_intent(bots[0], "co-a"), _intent(bots[1], "co-b")])

    async def mark() -> list[None | BaseException]:
        calls = [
            writes.submitted(("co-a", "signal")),
            writes.submitted(("co-b", "stop_loss")),
            writes.submitted(("co-missing", "signal")),
        ]
        return list(await asyncio.gather(*calls, return_exceptions=True))

    out = asyncio.run(mark())
    assert out[:2] == [None, None]
    assert isinstance(out[2], LookupError)
    assert writes.submitted.batches == 1
    with db.session_scope(settings) as session:
        rows = {r.client_order_id: r for r in session.scalars(select(Order))}
        assert (rows["co-a"].status, rows["co-a"].status_reason) == ("submitted", "signal")
        assert (rows["co-b"].status, rows["co-b"].status_reason) == ("submitted", "stop_loss")
        assert rows["co-a"].submitted_at is not None


def test_snapshots_of_a_candle_in_one_batch(world: Any) -> None:
    settings, bots = world
    writes = OrderWrites(settings)
    at = datetime(2022, 1, 1, tzinfo=UTC)

    async def snap() -> None:
        await asyncio.gather(
            *(
                writes.snapshot(Snapshot(b, at, Decimal(1000 + b), Decimal(b), Decimal(1000)))
                for b in bots
            )
        )

    asyncio.run(snap())
    assert writes.snapshot.batches == 1
    with db.session_scope(settings) as session:
        rows = session.scalars(select(EquitySnapshot).order_by(EquitySnapshot.bot_id)).all()
        assert [(r.bot_id, r.equity) for r in rows] == [(b, Decimal(1000 + b)) for b in bots]
