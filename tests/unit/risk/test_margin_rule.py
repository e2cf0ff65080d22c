"""The risk manager applies the backtest's margin rule (platform.risk.margin) to each bot."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from cryptoorchestrator.platform.model import OrderSide
from cryptoorchestrator.platform.model.clock import TestClock
from cryptoorchestrator.platform.risk.limits import OrderCheck, RiskLimits
from cryptoorchestrator.platform.risk.manager import RiskManager

_ids = iter(range(1_000_000))


def _order(side: str, amount: str, symbol: str = "ETH/USDT", *, reduce: bool = False) -> OrderCheck:
    return OrderCheck(
        bot_id=1,
        client_order_id=f"m{next(_ids)}",
        symbol=symbol,
        side=OrderSide(side),
        amount=D(amount),
        price=D(100),
        reduce_only=reduce,
    )


def _manager(**limits: object) -> RiskManager:
    # loss limits and the portfolio cap out of the way: only the margin rule can bite
    wide: dict[str, object] = {
        "max_total_exposure_pct": D(1000),
        "max_daily_loss_pct": D(100),
        "max_drawdown_pct": D(100),
        "portfolio_max_daily_loss_pct": D(100),
        "portfolio_max_drawdown_pct": D(100),
    }
    wide.update(limits)
    rm = RiskManager(RiskLimits(**wide), TestClock())  # type: ignore[arg-type]
    rm.register_bot(
        1,
        equity=D(1000),
        max_position_pct=D(100),
        risk_per_trade_pct=D(5),
        positions={"BTC/USDT": D(-800)},  # a short worth 800: its proceeds are not free
    )
    return rm


def test_short_proceeds_do_not_fund_a_long_past_the_cap() -> None:
    rm = _manager()
    denied = rm.approve(_order("buy", "3"))  # 800 + 300 = 1100 > 1 x 1000
    assert (denied.approved, denied.limit) == (False, "max_gross_leverage")
    assert rm.approve(_order("buy", "2")).approved  # 800 + 200 = 1000
    # covering the short only shrinks exposure: always allowed
    assert rm.approve(_order("buy", "8", symbol="BTC/USDT")).approved


def test_with_its_fee_the_cap_is_the_kernels_entry_room() -> None:
    """Given the order's fee rate, the cap holds on the equity after the fee: an entry of
    exactly ``margin.entry_room(E, G, L, fee)`` passes, a lot more does not."""
    from cryptoorchestrator.platform.risk import margin

    rm = _manager()
    room = margin.entry_room(D(1000), D(800), D(1), D("0.001"))  # 200 / 1.001
    units = room / D(100)

    def order(amount: D) -> OrderCheck:
        return OrderCheck(1, f"f{next(_ids)}", "ETH/USDT", OrderSide.BUY, amount, D(100),
                          fee_rate=D("0.001"))  # fmt: skip

    denied = rm.approve(order(units + D("0.00001")))
    assert (denied.approved, denied.limit) == (False, "max_gross_leverage")
    assert rm.approve(order(units)).approved
    # without the fee rate the cap is on equity before the fee: 2 units (200) fit
    assert rm.approve(_order("buy", "2")).approved


def test_a_levered_bot_may_go_further() -> None:
    # 1.5 x 1000: 800 + 700 fits, 800 + 701 does not
    assert _manager(max_gross_leverage=D("1.5")).approve(_order("buy", "7")).approved
    denied = _manager(max_gross_leverage=D("1.5")).approve(_order("buy", "7.01"))
    assert denied.limit == "max_gross_leverage"


@pytest.mark.parametrize(("equity", "halted"), [(D(5), True), (D("4.01"), True), (D(6), False)])
def test_margin_call_halts_the_bot(equity: D, halted: bool) -> None:
    # the short has run to 1000 of exposure; 0.5 % of it is 5
    rm = _manager()
    breaches = rm.report(1, "BTC/USDT", D(-1000), equity)
    assert [b.limit for b in breaches] == (["maintenance_margin"] if halted else [])
    assert (rm.bots[1].halted is not None) is halted
    if halted:
        assert rm.approve(_order("buy", "0.01")).limit == "bot_halted"
        assert rm.approve(_order("buy", "1", symbol="BTC/USDT", reduce=True)).approved
