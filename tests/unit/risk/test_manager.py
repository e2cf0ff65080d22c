"""The risk manager: every limit, breaches, kill switch, reduce-only orders."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from cryptoorchestrator.platform.model import OrderSide
from cryptoorchestrator.platform.model.clock import TestClock
from cryptoorchestrator.platform.risk.limits import OrderCheck, RiskLimits
from cryptoorchestrator.platform.risk.manager import RiskManager

_ids = iter(range(1_000_000))


def check(
    bot: int = 1, side: str = "buy", amount: str = "0.1", price: str = "100", **kw
) -> OrderCheck:  # noqa: ANN003
    return OrderCheck(
        bot_id=bot,
        client_order_id=f"c{next(_ids)}",
        symbol=kw.pop("symbol", "BTC/USDT"),
        side=OrderSide(side),
        amount=D(amount),
        price=D(price),
        **kw,
    )


@pytest.fixture
def clock() -> TestClock:
    return TestClock()


@pytest.fixture
def rm(clock: TestClock) -> RiskManager:
    # Portfolio limits wide open, so single-bot tests see the bot's own limits only.
    limits = RiskLimits(portfolio_max_daily_loss_pct=D(90), portfolio_max_drawdown_pct=D(90))
    manager = RiskManager(limits, clock)
    manager.register_bot(1, equity=D(1000), max_position_pct=D(50), risk_per_trade_pct=D(1))
    return manager


def test_small_order_is_approved_and_reserves_a_slot(rm: RiskManager) -> None:
    c = check()
    assert rm.approve(c).approved
    assert c.client_order_id in rm.bots[1].open_orders
    rm.order_closed(1, c.client_order_id)
    assert not rm.bots[1].open_orders


def test_unknown_bot_and_invalid_amount_denied(rm: RiskManager) -> None:
    assert rm.approve(check(bot=9)).limit == "unknown_bot"
    assert rm.approve(check(amount="0")).limit == "invalid_order"


def test_max_position_size_uses_the_bots_percentage(rm: RiskManager) -> None:
    assert rm.approve(check(amount="5", price="100")).approved  # 500 = 50% of 1000
    decision = rm.approve(check(amount="5.01", price="100"))
    assert not decision.approved
    assert decision.limit == "max_position_size"
    assert "50" in decision.reason


def test_global_position_cap_is_tighter_than_the_bots(clock: TestClock) -> None:
    manager = RiskManager(RiskLimits(max_position_pct=D(10)), clock)
    manager.register_bot(1, equity=D(1000), max_position_pct=D(50), risk_per_trade_pct=D(1))
    assert manager.approve(check(amount="1.1", price="100")).limit == "max_position_size"


def test_risk_per_trade_with_a_stop(rm: RiskManager) -> None:
    # 1% of 1000 = 10: 1 unit with the stop 10 below the price loses exactly 10.
    assert rm.approve(check(amount="1", price="100", stop_price=D(90))).approved
    denied = rm.approve(check(amount="1", price="100", stop_price=D(80)))
    assert denied.limit == "risk_per_trade"


def test_rate_limit_resets_after_a_minute(clock: TestClock) -> None:
    manager = RiskManager(RiskLimits(max_orders_per_minute=2, max_open_orders=100), clock)
    manager.register_bot(1, equity=D(1000), max_position_pct=D(100), risk_per_trade_pct=D(1))
    for _ in range(2):
        c = check(amount="0.01")
        assert manager.approve(c).approved
        manager.order_closed(1, c.client_order_id)
    assert manager.approve(check(amount="0.01")).limit == "max_orders_per_minute"
    clock.advance(60_000)
    assert manager.approve(check(amount="0.01")).approved


def test_open_order_limits_per_bot_and_total(clock: TestClock) -> None:
    manager = RiskManager(RiskLimits(max_open_orders=2, max_open_orders_total=3), clock)
    for bot in (1, 2):
        manager.register_bot(bot, equity=D(1000), max_position_pct=D(100), risk_per_trade_pct=D(1))
    assert manager.approve(check(1, amount="0.01")).approved
    assert manager.approve(check(1, amount="0.01")).approved
    assert manager.approve(check(1, amount="0.01")).limit == "max_open_orders"
    assert manager.approve(check(2, amount="0.01")).approved
    assert manager.approve(check(2, amount="0.01")).limit == "max_open_orders_total"


def test_total_exposure_across_bots(clock: TestClock) -> None:
    manager = RiskManager(RiskLimits(max_total_exposure_pct=D(50)), clock)
    for bot in (1, 2):
        manager.register_bot(bot, equity=D(1000), max_position_pct=D(100), risk_per_trade_pct=D(1))
    manager.update_position(1, "BTC/USDT", D(900))
    assert manager.approve(check(2, amount="1", price="100")).approved  # 1000 = 50% of 2000
    manager.update_position(2, "BTC/USDT", D(100))
    denied = manager.approve(check(2, amount="0.01", price="100", symbol="ETH/USDT"))
    assert denied.limit == "max_total_exposure"


def test_reducing_orders_pass_size_limits_and_halts(rm: RiskManager) -> None:
    rm.update_position(1, "BTC/USDT", D(500))
    rm.bots[1].halted = "max_drawdown"
    assert rm.approve(check(side="buy", amount="0.01")).limit == "bot_halted"
    assert rm.approve(check(side="sell", amount="5", reduce_only=True)).approved


def test_daily_loss_breach_halts_the_bot(rm: RiskManager) -> None:
    assert rm.update_equity(1, D(960)) == []
    breaches = rm.update_equity(1, D(950))  # 5% below the day's start
    assert [b.limit for b in breaches][0] == "max_daily_loss"
    assert breaches[0].bot_id == 1
    assert rm.approve(check(amount="0.01")).limit == "bot_halted"
    # re-registering (a user restarting the bot) re-arms it
    rm.register_bot(1, equity=D(950), max_position_pct=D(50), risk_per_trade_pct=D(1))
    assert rm.approve(check(amount="0.01")).approved


def test_drawdown_breach_counts_from_the_peak(clock: TestClock) -> None:
    limits = RiskLimits(
        max_daily_loss_pct=D(100),
        max_drawdown_pct=D(10),
        portfolio_max_daily_loss_pct=D(100),
        portfolio_max_drawdown_pct=D(50),
    )
    manager = RiskManager(limits, clock)
    manager.register_bot(1, equity=D(1000), max_position_pct=D(100), risk_per_trade_pct=D(1))
    manager.register_bot(2, equity=D(1000), max_position_pct=D(100), risk_per_trade_pct=D(1))
    assert manager.update_equity(1, D(2000)) == []
    breaches = manager.update_equity(1, D(1800))
    assert [b.limit for b in breaches] == ["max_drawdown"]
    assert manager.approve(check(2, amount="0.01")).approved


def test_portfolio_breach_halts_every_bot(clock: TestClock) -> None:
    limits = RiskLimits(max_daily_loss_pct=D(50), portfolio_max_daily_loss_pct=D(5))
    manager = RiskManager(limits, clock)
    for bot in (1, 2):
        manager.register_bot(bot, equity=D(1000), max_position_pct=D(100), risk_per_trade_pct=D(1))
    breaches = manager.update_equity(1, D(890))  # portfolio: 1890/2000 = -5.5%
    assert [b.limit for b in breaches] == ["portfolio_max_daily_loss"]
    assert breaches[0].bot_id is None
    assert manager.approve(check(2, amount="0.01")).limit == "portfolio_halted"


def test_new_day_resets_the_daily_loss_baseline(rm: RiskManager, clock: TestClock) -> None:
    rm.update_equity(1, D(960))
    clock.advance(86_400_000)
    assert rm.update_equity(1, D(960)) == []  # baseline is now 960
    assert rm.update_equity(1, D(920)) == []  # -4.2% today
    assert rm.update_equity(1, D(910))[0].limit == "max_daily_loss"


def test_adding_and_removing_bots_is_not_a_portfolio_loss(clock: TestClock) -> None:
    manager = RiskManager(RiskLimits(), clock)
    manager.register_bot(1, equity=D(1000), max_position_pct=D(100), risk_per_trade_pct=D(1))
    manager.register_bot(2, equity=D(5000), max_position_pct=D(100), risk_per_trade_pct=D(1))
    manager.unregister_bot(2)
    assert manager.update_equity(1, D(1000)) == []
    assert manager.portfolio_halted is None


def test_kill_switch_denies_everything_even_reducing(rm: RiskManager) -> None:
    rm.activate_kill_switch()
    assert rm.approve(check()).limit == "kill_switch"
    assert rm.approve(check(side="sell", reduce_only=True)).limit == "kill_switch"
    rm.set_limits(rm.limits.model_copy(update={"kill_switch": False}))
    assert rm.approve(check()).approved


def test_limits_validate_ranges() -> None:
    with pytest.raises(ValueError, match="max_risk_per_trade_pct"):
        RiskLimits(max_risk_per_trade_pct=D(6))
    with pytest.raises(ValueError, match="extra"):
        RiskLimits(unknown=1)  # type: ignore[call-arg]


def test_utilisation_reports_every_bot(rm: RiskManager) -> None:
    rm.update_position(1, "BTC/USDT", D(250))
    report = rm.utilisation()
    assert report["total_exposure"] == "250"
    assert report["exposure_pct_of_limit"] == pytest.approx(25.0)
    assert report["bots"]["1"]["exposure"] == "250"


def test_order_check_carries_current_equity_and_position(rm: RiskManager) -> None:
    # At the last candle equity was 1000 (cap 500); now, at the order's price, it is 1200.
    assert not rm.approve(check(amount="5.5", price="100")).approved
    ok = rm.approve(check(amount="5.5", price="100", equity=D(1200)))
    assert ok.approved
    assert rm.bots[1].equity == D(1200)
    rm.approve(check(side="sell", amount="1", reduce_only=True, position_notional=D(550)))
    assert rm.bots[1].positions["BTC/USDT"] == D(550)


def test_report_releases_closed_orders_and_records_position_and_equity(
    rm: RiskManager,
) -> None:
    placed = [check(amount="0.01") for _ in range(rm.limits.max_open_orders)]
    assert all(rm.approve(c).approved for c in placed)
    assert rm.approve(check(amount="0.01")).limit == "max_open_orders"
    breaches = rm.report(1, "BTC/USDT", D(5), D(990), [c.client_order_id for c in placed])
    assert breaches == []
    assert not rm.bots[1].open_orders
    assert rm.bots[1].positions == {"BTC/USDT": D(5)}
    assert rm.bots[1].equity == D(990)
    assert rm.approve(check(amount="0.01")).approved
    assert rm.report(1, "BTC/USDT", D(0), D(900), [])[0].limit == "max_daily_loss"


def test_portfolio_totals_always_equal_fresh_sums(clock: TestClock) -> None:
    """The totals kept up to date per change equal sums over every bot after any sequence."""
    import random

    rng = random.Random(7)
    manager = RiskManager(
        RiskLimits(
            max_open_orders=1_000,
            max_open_orders_total=10_000,
            max_orders_per_minute=10_000,
            max_total_exposure_pct=D(1000),
            max_daily_loss_pct=D(99),
            max_drawdown_pct=D(99),
            portfolio_max_daily_loss_pct=D(99),
            portfolio_max_drawdown_pct=D(99),
        ),
        clock,
    )
    approved: list[tuple[int, str]] = []

    def money() -> D:
        return D(rng.randrange(1, 10**9)) / D(10 ** rng.randrange(0, 9))

    def fresh_sums() -> tuple[D, D, int, D]:
        bots = manager.bots.values()
        return (
            sum((b.equity for b in bots), D(0)),
            sum((b.exposure for b in bots), D(0)),
            sum(len(b.open_orders) for b in bots),
            sum((b.day_start_equity for b in bots), D(0)),
        )

    for step in range(3_000):
        op = rng.randrange(8)
        bot = rng.randrange(1, 8)
        if op == 0 or bot not in manager.bots:
            manager.register_bot(
                bot,
                equity=money(),
                max_position_pct=D(100),
                risk_per_trade_pct=D(5),
                positions={"BTC/USDT": money() - money()},
                open_orders={f"o{step}-{i}" for i in range(rng.randrange(3))},
            )
        elif op == 1:
            c = check(bot, rng.choice(["buy", "sell"]), "0.01", str(money()), equity=money())
            if manager.approve(c).approved:
                approved.append((bot, c.client_order_id))
        elif op == 2 and approved:
            manager.order_closed(*approved.pop(rng.randrange(len(approved))))
        elif op == 3:
            manager.update_position(bot, rng.choice(["BTC/USDT", "ETH/USDT"]), money() - money())
        elif op == 4:
            manager.update_position(bot, "BTC/USDT", D(0))
        elif op == 5:
            manager.report(bot, "ETH/USDT", money() - money(), money(), [])
        elif op == 6:
            manager.unregister_bot(bot)
        else:
            clock.advance(rng.choice([1_000, 3_600_000, 86_400_000]))
            manager.update_equity(bot, money())
        equity, exposure, open_orders, day_start = fresh_sums()
        assert manager.portfolio_equity == equity, step
        assert manager._exposure_total == exposure, step  # noqa: SLF001
        assert manager._open_total == open_orders, step  # noqa: SLF001
        assert manager._day_start_total == day_start, step  # noqa: SLF001
