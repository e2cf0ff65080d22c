"""Per-user risk rules: a user's own kill switch and limits apply to that user's bots only."""

from __future__ import annotations

from decimal import Decimal as D
from pathlib import Path

import pytest
from pydantic import ValidationError

from cryptoorchestrator.platform.model import OrderSide
from cryptoorchestrator.platform.model.clock import TestClock
from cryptoorchestrator.platform.risk.limits import OrderCheck, RiskLimits, UserRiskLimits
from cryptoorchestrator.platform.risk.manager import RiskManager
from cryptoorchestrator.platform.risk.store import (
    load_user_limits,
    rebuild,
    save_limits,
    save_user_limits,
)
from cryptoorchestrator.platform.settings import Settings
from cryptoorchestrator.platform.storage import db
from cryptoorchestrator.platform.storage.models import Bot, RiskLimit, User

_ids = iter(range(1_000_000))
ALICE, BOB = 10, 20


def check(bot: int, amount: str = "0.1", price: str = "100", side: str = "buy") -> OrderCheck:
    return OrderCheck(
        bot_id=bot,
        client_order_id=f"u{next(_ids)}",
        symbol="BTC/USDT",
        side=OrderSide(side),
        amount=D(amount),
        price=D(price),
    )


@pytest.fixture
def rm() -> RiskManager:
    """Alice owns bots 1 and 2, Bob owns bot 3; portfolio limits wide open."""
    limits = RiskLimits(portfolio_max_daily_loss_pct=D(90), portfolio_max_drawdown_pct=D(90))
    manager = RiskManager(limits, TestClock())
    for bot, owner in ((1, ALICE), (2, ALICE), (3, BOB)):
        manager.register_bot(
            bot, equity=D(1000), max_position_pct=D(50), risk_per_trade_pct=D(1), user_id=owner
        )
    return manager


def test_user_kill_switch_denies_only_that_users_bots(rm: RiskManager) -> None:
    rm.activate_user_kill_switch(ALICE)
    for bot in (1, 2):
        denied = rm.approve(check(bot))
        assert (denied.approved, denied.limit) == (False, "user_kill_switch")
    assert rm.approve(check(3)).approved  # Bob trades on
    assert not rm.limits.kill_switch  # the global switch is untouched
    assert rm.bots_of(ALICE) == [1, 2]


def test_release_restores_approvals(rm: RiskManager) -> None:
    rm.activate_user_kill_switch(ALICE)
    assert not rm.approve(check(1)).approved
    rm.release_user_kill_switch(ALICE)
    assert rm.approve(check(1)).approved


def test_global_kill_switch_still_stops_everyone(rm: RiskManager) -> None:
    rm.activate_kill_switch()
    assert {rm.approve(check(b)).limit for b in (1, 2, 3)} == {"kill_switch"}


def test_user_limits_tighten_for_their_bots_only(rm: RiskManager) -> None:
    rm.set_user_limits(ALICE, UserRiskLimits(max_open_orders=1))
    assert rm.approve(check(1)).approved
    assert rm.approve(check(1)).limit == "max_open_orders"
    assert rm.approve(check(3)).approved
    assert rm.approve(check(3)).approved


def test_user_limits_cannot_loosen_the_portfolio(rm: RiskManager) -> None:
    rm.set_limits(rm.limits.model_copy(update={"max_open_orders": 1}))
    rm.set_user_limits(ALICE, UserRiskLimits(max_open_orders=100))
    assert rm.approve(check(1)).approved
    assert rm.approve(check(1)).limit == "max_open_orders"
    # A later portfolio change applies to users with limits of their own too.
    rm.set_limits(rm.limits.model_copy(update={"max_open_orders": 3}))
    assert rm.approve(check(1)).approved


def test_user_open_orders_total_spans_their_bots_only(rm: RiskManager) -> None:
    rm.set_user_limits(ALICE, UserRiskLimits(max_open_orders_total=2))
    first = check(1)
    assert rm.approve(first).approved
    assert rm.approve(check(2)).approved
    assert rm.approve(check(1)).limit == "user_max_open_orders_total"
    assert rm.approve(check(3)).approved  # Bob's orders do not count against Alice
    rm.order_closed(1, first.client_order_id)
    assert rm.approve(check(2)).approved


def test_user_exposure_is_of_their_own_equity(rm: RiskManager) -> None:
    # Alice: 2000 equity over two bots; 10% of it is 200 of exposure.
    rm.set_user_limits(ALICE, UserRiskLimits(max_total_exposure_pct=D(10)))
    assert rm.approve(check(1, amount="1", price="150")).approved
    rm.update_position(1, "BTC/USDT", D(150))
    denied = rm.approve(check(2, amount="1", price="100"))
    assert denied.limit == "user_max_total_exposure"
    assert rm.approve(check(3, amount="1", price="400")).approved  # Bob is not capped by it


def test_user_drawdown_breach_halts_their_bot_only(rm: RiskManager) -> None:
    rm.set_user_limits(ALICE, UserRiskLimits(max_daily_loss_pct=D(2)))
    breaches = rm.update_equity(1, D(975))
    assert [(b.limit, b.bot_id) for b in breaches] == [("max_daily_loss", 1)]
    assert rm.update_equity(3, D(975)) == []  # Bob's 2.5% is within the portfolio's 5%


def test_user_totals_follow_registration(rm: RiskManager) -> None:
    rm.set_user_limits(ALICE, UserRiskLimits(max_open_orders_total=1))
    assert rm.approve(check(1)).approved
    rm.unregister_bot(1)  # its reservation leaves with it
    assert rm.approve(check(2)).approved
    rm.unregister_bot(2)
    rm.register_bot(
        1, equity=D(500), max_position_pct=D(50), risk_per_trade_pct=D(1), user_id=ALICE
    )
    assert rm.approve(check(1)).approved


def test_user_utilisation_sums_only_their_bots(rm: RiskManager) -> None:
    rm.update_equity(3, D(5000))
    mine = rm.user_utilisation(ALICE)
    assert mine["equity"] == "2000"
    assert set(mine["bots"]) == {"1", "2"}
    assert "portfolio_equity" not in mine
    assert rm.utilisation()["portfolio_equity"] == "7000"


def test_user_limits_validate_ranges() -> None:
    with pytest.raises(ValidationError):
        UserRiskLimits(max_open_orders=0)
    with pytest.raises(ValidationError):
        UserRiskLimits(unknown=1)  # type: ignore[call-arg]


def test_user_limits_persist_and_rebuild_with_owners(db_url: str, tmp_path: Path) -> None:
    settings = Settings(database_url=db_url, var_dir=tmp_path)
    db.upgrade(settings)
    try:
        with db.session_scope(settings) as session:
            alice = User(email="alice@example.com", password_hash="x")
            bob = User(email="bob@example.com", password_hash="x")
            session.add_all([alice, bob])
            session.flush()
            bots = {}
            for owner in (alice, bob):
                bot = Bot(
                    user_id=owner.id,
                    name="b",
                    trading_pair="BTC/USDT",
                    strategy="sma_cross",
                    timeframe="1h",
                    risk_per_trade=D(1),
                    max_position_size=D(50),
                    desired_state="running",
                    status="Running",
                    starting_balance=D(1000),
                )
                session.add(bot)
                session.flush()
                bots[owner.email] = bot.id
            alice_id, bob_id = alice.id, bob.id
            save_limits(session, RiskLimits())
            own = UserRiskLimits(max_open_orders=2, max_drawdown_pct=D("7.5"), kill_switch=True)
            save_user_limits(session, alice_id, own, user_id=alice_id)
        with db.session_scope(settings) as session:
            assert load_user_limits(session) == {alice_id: own}
            scopes = {r.scope for r in session.query(RiskLimit).all()}
            assert scopes == {"portfolio", f"user:{alice_id}"}
            manager = RiskManager()
            rebuild(session, manager)
        assert manager.bots[bots["alice@example.com"]].user_id == alice_id
        assert manager.approve(check(bots["alice@example.com"])).limit == "user_kill_switch"
        assert manager.approve(check(bots["bob@example.com"])).approved
        # Unsetting a limit removes its row; the kill switch row stays (off).
        with db.session_scope(settings) as session:
            save_user_limits(session, alice_id, UserRiskLimits(max_open_orders=2))
        with db.session_scope(settings) as session:
            assert load_user_limits(session) == {alice_id: UserRiskLimits(max_open_orders=2)}
            assert bob_id not in load_user_limits(session)
    finally:
        db.dispose_engines()
