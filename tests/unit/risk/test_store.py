"""Risk state survives restarts: limits and events persisted, manager rebuilt from the DB."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal as D
from pathlib import Path

from cryptoorchestrator.platform.risk.limits import Breach, RiskLimits
from cryptoorchestrator.platform.risk.manager import RiskManager
from cryptoorchestrator.platform.risk.store import (
    load_limits,
    rebuild,
    record_breach,
    save_limits,
)
from cryptoorchestrator.platform.settings import Settings
from cryptoorchestrator.platform.storage import db
from cryptoorchestrator.platform.storage.models import (
    Bot,
    EquitySnapshot,
    Order,
    Position,
    RiskEvent,
    User,
)


def test_limits_round_trip_and_rebuild(db_url: str, tmp_path: Path) -> None:
    settings = Settings(database_url=db_url, var_dir=tmp_path)
    db.upgrade(settings)
    try:
        limits = RiskLimits(max_open_orders=7, max_drawdown_pct=D("12.5"), kill_switch=True)
        with db.session_scope(settings) as session:
            save_limits(session, limits)
        with db.session_scope(settings) as session:
            assert load_limits(session) == limits
        with db.session_scope(settings) as session:
            save_limits(session, limits.model_copy(update={"kill_switch": False}))
        with db.session_scope(settings) as session:
            user = User(email="r@example.com", password_hash="x")
            session.add(user)
            session.flush()
            bot = Bot(
                user_id=user.id,
                name="b",
                trading_pair="BTC/USDT",
                strategy="sma_cross",
                timeframe="1h",
                risk_per_trade=D(1),
                max_position_size=D(40),
                desired_state="running",
                status="Running",
                starting_balance=D(1000),
            )
            session.add(bot)
            session.flush()
            now = datetime.now(UTC)
            for i, equity in enumerate(["1000", "1200", "1100"]):
                session.add(
                    EquitySnapshot(
                        bot_id=bot.id,
                        timestamp=now.replace(microsecond=i),
                        equity=D(equity),
                        cash=D(equity),
                        position_value=D(0),
                    )
                )
            session.add(
                Position(bot_id=bot.id, symbol="BTC/USDT", amount=D("0.5"), average_price=D(200))
            )
            session.add(
                Order(
                    bot_id=bot.id,
                    client_order_id="open-1",
                    exchange="binance",
                    symbol="BTC/USDT",
                    side="buy",
                    type="limit",
                    amount=D(1),
                    price=D(1),
                    status="open",
                )
            )
            session.add(
                Order(
                    bot_id=bot.id,
                    client_order_id="done-1",
                    exchange="binance",
                    symbol="BTC/USDT",
                    side="buy",
                    type="market",
                    amount=D(1),
                    status="filled",
                )
            )
            record_breach(session, Breach("max_drawdown", "too deep", bot.id, {"x": "1"}))
            bot_id = bot.id
        manager = RiskManager()
        with db.session_scope(settings) as session:
            assert rebuild(session, manager) == 1
            assert session.query(RiskEvent).one().limit_name == "max_drawdown"
        state = manager.bots[bot_id]
        assert state.equity == D(1100)
        assert state.peak_equity == D(1200)
        assert state.positions == {"BTC/USDT": D(100)}
        assert state.open_orders == {"open-1"}
        assert state.max_position_pct == D(40)
        assert manager.limits.max_open_orders == 7
        assert manager.limits.kill_switch is False
    finally:
        db.dispose_engines()
