"""The bot's pure bookkeeping and decisions, without a database or an exchange."""

from __future__ import annotations

import itertools
import math
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cryptoorchestrator.platform.backtest import nb
from cryptoorchestrator.platform.bots.ledger import (
    BotSettings,
    Ledger,
    LiveSignal,
    candle_of,
    client_order_id,
    decide,
    entry_amount,
    pct_fraction,
    risk_distance,
    stop_distances,
)
from cryptoorchestrator.platform.exchange.execution import Fill
from cryptoorchestrator.platform.model import OrderSide
from cryptoorchestrator.platform.storage.models import Bot

NAN3 = (math.nan, math.nan, math.nan)


def config(**over: object) -> BotSettings:
    base: dict[str, object] = {
        "bot_id": 7,
        "symbol": "BTC/USDT",
        "timeframe": "1h",
        "exchange": "binance",
        "starting_balance": Decimal(1000),
        "max_position_pct": Decimal(10),
        "risk_per_trade_pct": Decimal(1),
    }
    return BotSettings(**{**base, **over})  # type: ignore[arg-type]


def fill(side: OrderSide, price: str, amount: str, fee: str, fee_currency: str, ms: int) -> Fill:
    return Fill(
        str(ms), "o", "BTC/USDT", side, Decimal(price), Decimal(amount), Decimal(fee),
        fee_currency, ms,
    )  # fmt: skip


# ----------------------------------------------------------------------------------- decide


def _kernel_action(position: int, code: int, shorts: bool) -> str | None:
    """The engine's decision (``nb._decide_nb``: 0 none, 1 long, -1 short, 2 close) in the
    bot's words; without shorts a reversal is its close alone and no short opens."""
    if code == 0:
        return None
    if code == 2:
        return "sell" if position > 0 else "cover"
    if code == 1:
        if position == 0:
            return "buy"
        return "cover+buy" if shorts else "cover"
    if position == 0:
        return "short" if shorts else None
    return "sell+short" if shorts else "sell"


@pytest.mark.parametrize("shorts", [False, True])
@pytest.mark.parametrize("position", [-1, 0, 1])
def test_decide_is_the_engines_decision_for_every_signal(position: int, shorts: bool) -> None:
    for le, lx, se, sx in itertools.product([False, True], repeat=4):
        code = int(nb._decide_nb(float(position), le, lx, se, sx))
        got = decide(Decimal(position), le, lx, se, sx, shorts=shorts)
        assert got == _kernel_action(position, code, shorts), (le, lx, se, sx)


def test_dust_below_the_lot_step_is_decided_as_flat_by_the_caller() -> None:
    # the sign alone matters: any long position is sold on an exit
    assert decide(Decimal("0.00000001"), False, True, False, False) == "sell"
    assert decide(Decimal(0), False, True, False, False) is None


# ----------------------------------------------------------------------------- the ledger


def test_a_spot_round_trip_is_exact_with_fees_in_base_then_quote() -> None:
    book = Ledger(cash=Decimal(1000))
    assert book.apply(fill(OrderSide.BUY, "100", "2", "0.002", "BTC", 1), "BTC", "USDT") == 0
    assert (book.cash, book.amount, book.cost_basis) == (800, Decimal("1.998"), 200)
    assert book.fees_paid == Decimal("0.2")  # 0.002 BTC at the fill price
    assert book.average_price == Decimal(200) / Decimal("1.998")
    assert (book.entry_open, book.entry_price, book.entry_ms) == (True, 100, 1)
    # half the position: half the basis goes out
    pnl = book.apply(fill(OrderSide.SELL, "110", "0.999", "0.10989", "USDT", 2), "BTC", "USDT")
    assert pnl == Decimal("109.89") - Decimal("0.10989") - 100
    assert (book.amount, book.cost_basis, book.entry_open) == (Decimal("0.999"), 100, False)
    pnl2 = book.apply(fill(OrderSide.SELL, "90", "0.999", "0.08991", "USDT", 3), "BTC", "USDT")
    assert (book.amount, book.cost_basis) == (0, 0)
    assert book.realized_pnl == pnl + pnl2
    assert book.cash == 1000 + book.realized_pnl
    assert book.equity(Decimal(12345)) == book.cash


def test_a_new_entry_starts_after_a_sale() -> None:
    book = Ledger(cash=Decimal(1000))
    book.apply(fill(OrderSide.BUY, "100", "1", "0.1", "USDT", 10), "BTC", "USDT")
    book.apply(fill(OrderSide.BUY, "120", "1", "0.12", "USDT", 20), "BTC", "USDT")
    assert (book.entry_price, book.entry_ms) == (110, 10)  # the open entry's average fill
    book.apply(fill(OrderSide.SELL, "130", "2", "0.26", "USDT", 30), "BTC", "USDT")
    assert book.entry_price == 0  # no open entry
    book.apply(fill(OrderSide.BUY, "90", "1", "0.09", "USDT", 40), "BTC", "USDT")
    assert (book.entry_price, book.entry_ms, book.entry_open) == (90, 40, True)


def test_a_margin_book_reverses_through_flat() -> None:
    """A sale beyond the holding closes it and opens a short with the rest."""
    book = Ledger(cash=Decimal(1000), margin=True)
    book.apply(fill(OrderSide.BUY, "100", "1", "0.1", "USDT", 1), "BTC", "USDT")
    pnl = book.apply(fill(OrderSide.SELL, "110", "3", "0.33", "USDT", 2), "BTC", "USDT")
    # a third of the sale closes the long (its share of the proceeds, fee included)
    assert pnl == (Decimal(330) - Decimal("0.33")) / 3 - Decimal("100.1")
    assert book.amount == -2
    assert book.cost_basis == -(Decimal(330) - Decimal("0.33")) * 2 / 3
    assert (book.entry_open, book.entry_price, book.entry_ms) == (True, 110, 2)


_FILLS = st.lists(
    st.tuples(
        st.sampled_from([OrderSide.BUY, OrderSide.SELL]),
        st.integers(50, 150),  # price
        st.integers(1, 300),  # amount, in hundredths
        st.sampled_from(["BTC", "USDT"]),
    ),
    max_size=12,
)


@settings(max_examples=200, deadline=None)
@given(fills=_FILLS, margin=st.booleans())
def test_the_books_balance_after_any_fills(
    fills: list[tuple[OrderSide, int, int, str]], margin: bool
) -> None:
    """Cash plus the position's basis is the starting cash plus realised P&L, and the fees
    paid are every fill's fee in quote.  Exact but for a partial sale's share of the basis
    (``basis x sold / held``), rounded at Decimal's 28 digits."""
    start = Decimal(10_000)
    book = Ledger(cash=start, margin=margin)
    fees = Decimal(0)
    realized = Decimal(0)
    for i, (side, price, hundredths, fee_ccy) in enumerate(fills):
        amount = Decimal(hundredths) / 100
        cost = Decimal(price) * amount
        fee = amount / 1000 if fee_ccy == "BTC" else cost / 1000
        f = Fill(str(i), "o", "BTC/USDT", side, Decimal(price), amount, fee, fee_ccy, i)
        realized += book.apply(f, "BTC", "USDT")
        fees += fee * price if fee_ccy == "BTC" else fee
        assert abs(book.cash + book.cost_basis - (start + book.realized_pnl)) < Decimal("1e-20")
        if not margin:
            assert book.amount >= 0
        if book.amount == 0:
            assert book.cost_basis == 0
    assert book.realized_pnl == realized
    assert book.fees_paid == fees


# ------------------------------------------------------------------------- entry sizing


def test_a_flat_entry_without_a_stop_takes_the_cap_fee_included() -> None:
    cfg = config()
    amount = entry_amount(cfg, Ledger(cash=Decimal(1000)), Decimal(40_000))
    assert amount * 40_000 * Decimal("1.001") == pytest.approx(Decimal(100), abs=Decimal("1e-20"))


def test_risk_sizing_loses_the_risk_at_the_nearest_stop_capped_at_the_position() -> None:
    cfg = config(stop_loss_pct=Decimal(5), risk_per_trade_pct=Decimal("0.2"))
    stops = stop_distances(cfg)
    book = Ledger(cash=Decimal(1000))
    amount = entry_amount(cfg, book, Decimal(100), 1, stops)
    # 0.2 % of 1,000 lost over a 5 % stop: 40 of notional, under the 100 cap
    assert amount * 100 == pytest.approx(Decimal(40), abs=Decimal("1e-20"))
    wide = config(stop_loss_pct=Decimal("0.5"), risk_per_trade_pct=Decimal(1))
    capped = entry_amount(wide, book, Decimal(100), 1, stop_distances(wide))
    assert capped * 100 == pytest.approx(Decimal(100), abs=Decimal("1e-20"))  # 200 capped


def test_a_spot_entry_commits_at_most_its_cash() -> None:
    cfg = config(max_position_pct=Decimal(100))
    book = Ledger(cash=Decimal(300), amount=Decimal(7), cost_basis=Decimal(700))
    amount = entry_amount(cfg, book, Decimal(100))
    assert amount * 100 * Decimal("1.001") == pytest.approx(Decimal(300), abs=Decimal("1e-20"))


def test_a_short_on_a_spot_book_has_no_room_but_a_margin_book_does() -> None:
    cfg = config(max_position_pct=Decimal(100))
    spot = Ledger(cash=Decimal(1000))
    assert entry_amount(cfg, spot, Decimal(100), -1) > 0  # sizing alone: cash caps it
    margin_book = Ledger(cash=Decimal(1000), amount=Decimal(-5), margin=True)
    margin_book.cash += 500  # the short's proceeds never fund an entry
    short_more = entry_amount(cfg, margin_book, Decimal(100), -1)
    # equity 1,000, 500 of it already short: 500 of room left, fees included
    assert short_more * 100 < Decimal(500)
    assert short_more > 0


def test_stop_distances_take_the_settings_then_the_bar_then_none() -> None:
    cfg = config(stop_loss_pct=Decimal(2))
    sl, tp, tsl = stop_distances(cfg, (0.05, 0.1, None))
    assert (sl, tp) == (0.02, 0.1)
    assert math.isnan(tsl)
    assert all(math.isnan(v) for v in stop_distances(config()))
    assert pct_fraction(Decimal("2.5")) == 0.025
    assert pct_fraction(None) is None


@pytest.mark.parametrize(
    ("stops", "setting", "expected"),
    [
        ((0.02, math.nan, math.nan), None, "0.02"),
        ((0.02, math.nan, 0.01), None, "0.01"),  # the trailing stop is nearer
        ((0.02, math.nan, 0.03), None, "0.02"),  # the stop-loss is nearer
        ((math.nan, math.nan, math.nan), Decimal(4), "0.04"),  # the setting stands in
        ((math.nan, math.nan, 0.03), None, "0.03"),
    ],
)
def test_risk_distance_is_the_nearest_stop(
    stops: tuple[float, float, float], setting: Decimal | None, expected: str
) -> None:
    assert risk_distance(stops, setting) == Decimal(expected)


# ----------------------------------------------------------------------- client order ids


@pytest.mark.parametrize("tag", ["L", "H", "X", "S", "T", "SM", "TM", "P", "K"])
def test_client_order_ids_carry_their_candle(tag: str) -> None:
    cid = client_order_id(12, 1_704_067_200_000, tag)
    assert cid == f"co12-1704067200000-{tag}"
    assert candle_of(cid) == 1_704_067_200_000
    assert client_order_id(12, 1_704_067_200_000, tag) == cid  # same decision, same id


@pytest.mark.parametrize(
    "foreign",
    ["", "x", "co12-abc-L", "xx12-5-L", "co12-5", "co12-5-L-2", "paper:1:co12-5-L", "co12--5-L"],
)
def test_candle_of_a_foreign_id_is_none(foreign: str) -> None:
    assert candle_of(foreign) is None


# ------------------------------------------------------------------------------- settings


def test_settings_from_a_bot_row() -> None:
    bot = Bot(
        id=3,
        trading_pair="ETH/USDT",
        timeframe="4h",
        max_position_size=Decimal(20),
        risk_per_trade=Decimal(2),
        stop_loss=Decimal(3),
        take_profit=None,
        trailing_stop=Decimal(1),
        starting_balance=None,
        params={"short": True},
    )
    cfg = BotSettings.from_row(bot, "binance", window=321)
    assert cfg == config(
        bot_id=3,
        symbol="ETH/USDT",
        timeframe="4h",
        starting_balance=Decimal(10_000),
        max_position_pct=Decimal(20),
        risk_per_trade_pct=Decimal(2),
        stop_loss_pct=Decimal(3),
        trailing_stop_pct=Decimal(1),
        window=321,
        allow_short=True,
    )
    assert not BotSettings.from_row(Bot(id=4, params=None), "paper").allow_short


def test_a_live_signal_is_four_flags_then_its_stops() -> None:
    sig = LiveSignal(True, False, False, False, stop_loss=0.02)
    assert tuple(sig[:4]) == (True, False, False, False)
    assert sig.stop_loss == 0.02
    assert math.isnan(sig.take_profit)
    assert math.isnan(sig.trailing_stop)
