"""Live bots follow the backtest's rules: the strategy's own window, and the kernel's stops.

A paper bot replays real BTC/USDT hourly candles on the exchange simulator (ccxt's real binance
class) and must trade on the bars where ``co.backtest`` over the whole history trades:

- ``sma_cross`` with ``slow=600`` (a window of 601 candles, fetched in pages): with the old fixed
  500-candle window it never traded;
- a stop-loss and trailing-stop scenario: the paper exchange holds the bot's stop-loss order
  and, seeing quotes only (no ``quote_candle``), sells at the quote of the moment the level was
  crossed, in the kernel's bar.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import select

import cryptoorchestrator as co
from cryptoorchestrator.cluster.signals import last_bar_signals, required_window
from cryptoorchestrator.platform.bots.runtime import BotRuntime, BotSettings, Ledger
from cryptoorchestrator.platform.exchange.ccxt_client import CcxtExecutionClient
from cryptoorchestrator.platform.exchange.execution import Candle, Fill
from cryptoorchestrator.platform.exchange.paper import PaperBroker
from cryptoorchestrator.platform.model import OrderSide
from cryptoorchestrator.platform.risk.limits import OrderCheck, RiskDecision
from cryptoorchestrator.platform.storage import db
from cryptoorchestrator.platform.storage.models import ExchangeAccount, Order, Trade

HOUR = 3_600_000
MINUTE = 60_000
BUNDLED = (
    Path(__file__).resolve().parents[3]
    / "src/cryptoorchestrator/platform/data/bundled/binance_BTC-USDT_1h_2021-2022.parquet"
)


@pytest.fixture(scope="module")
def history() -> pa.Table:
    """The bundled real Binance BTC/USDT hourly candles (2021-2022)."""
    return pq.read_table(BUNDLED)


def _replay(
    settings: Any,
    bot_id: int,
    bars: pa.Table,
    start: int,
    end: int,
    params: dict[str, Any],
    *,
    stop_loss_pct: Decimal | None = None,
    trailing_stop_pct: Decimal | None = None,
    ohlcv_page: int = 1000,
    watch_step_ms: int = 0,
) -> BotRuntime:
    """Run a paper bot from candle ``start`` to ``end`` on ``bars``; return its runtime.

    The clock stands just after each candle opens; while the bot holds a position and
    ``watch_step_ms`` is set, it also moves through the candle in steps of that size.
    """
    from cryptoorchestrator.platform.exchange.sim import run_simulator_in_thread

    ts = bars.column("timestamp").to_pylist()
    with db.session_scope(settings) as session:
        account = ExchangeAccount(user_id=1, name="paper", exchange="binance", mode="paper")
        session.add(account)
        session.flush()
        account_id = account.id

    async def run(sim: Any) -> BotRuntime:
        market = CcxtExecutionClient.for_exchange(
            "binance", api_url=sim.base_url, account_id="rules-public", enable_rate_limit=False
        )
        broker = PaperBroker(
            settings,
            account_id,
            market,
            clock=lambda: datetime.fromtimestamp(sim.now() / 1000, UTC),
        )
        await broker.fund({"USDT": Decimal(10_000)})

        async def gate(check: OrderCheck) -> RiskDecision:
            return RiskDecision(True)

        cfg = BotSettings(
            bot_id=bot_id,
            symbol="BTC/USDT",
            timeframe="1h",
            exchange="binance",
            starting_balance=Decimal(10_000),
            max_position_pct=Decimal(50),
            risk_per_trade_pct=Decimal(1),
            stop_loss_pct=stop_loss_pct,
            trailing_stop_pct=trailing_stop_pct,
            window=required_window("sma_cross", params),
            ohlcv_page=ohlcv_page,
        )
        rt = BotRuntime(
            cfg, settings, broker, last_bar_signals("sma_cross", params), gate, poll_interval_s=0
        )
        await rt.prepare()
        await rt.poll_once()  # decides on candle `start`; candle start + 1 is forming
        for i in range(start + 1, end - 1):
            if watch_step_ms:
                at = ts[i] + watch_step_ms
                while at < ts[i] + HOUR and rt.ledger.entry_open:
                    sim.set_time(at)
                    await rt.poll_once()
                    at += watch_step_ms
            sim.set_time(ts[i + 1] + 1)
            await rt.poll_once()
        await broker.close()
        return rt

    with run_simulator_in_thread({"BTC/USDT": bars}, start_ms=ts[start + 1] + 1, speed=0) as sim:
        return asyncio.run(run(sim))


def _live_orders(settings: Any, bot_id: int) -> list[tuple[str, str, int, float]]:
    """(side, client order id, first fill time, average fill price) of the bot's filled orders."""
    with db.session_scope(settings) as session:
        orders = session.scalars(
            select(Order).where(Order.bot_id == bot_id, Order.status == "filled").order_by(Order.id)
        ).all()
        out = []
        for o in orders:
            fills = session.scalars(select(Trade).where(Trade.order_id == o.id)).all()
            first = min(int(f.timestamp.timestamp() * 1000) for f in fills)
            assert o.average_price is not None
            out.append((o.side, o.client_order_id, first, float(o.average_price)))
        return out


@pytest.mark.slow
def test_sma_cross_slow_600_trades_live_on_the_backtests_bars(
    history: pa.Table, bot_db: Any
) -> None:
    settings, bot_id = bot_db
    params = {"fast": 50, "slow": 600}
    start, end = 1400, 2100
    bars = history.slice(0, end)
    ts = bars.column("timestamp").to_pylist()
    # The backtest on the whole history (from bar 0), flat at `start` as the bot starts.
    result = co.backtest("sma_cross", bars, params=params, fee_bps=10, allow_short=False, size=0.5)
    orders = result.orders.to_pylist()
    assert sum(1 if o["side"] == "buy" else -1 for o in orders if o["bar"] <= start) == 0
    expected = [o for o in orders if start < o["bar"] < end - 1]
    assert len(expected) >= 4, "the stretch must hold several orders"

    # A page of 250 candles: the 601-candle window takes three requests.
    rt = _replay(settings, bot_id, bars, start, end, params, ohlcv_page=250)
    assert rt.config.window == 601
    assert [c.timestamp_ms for c in rt._window] == ts[end - 2 - 600 : end - 1]  # noqa: SLF001

    got = _live_orders(settings, bot_id)
    assert [g[0] for g in got] == [e["side"] for e in expected]
    for (_, _, at, price), exp in zip(got, expected, strict=True):
        assert ts[exp["bar"]] <= at < ts[exp["bar"]] + HOUR, exp
        assert abs(price / exp["price"] - 1) < 2e-3, (price, exp)


@pytest.mark.slow
def test_stops_exit_live_on_the_backtests_bar_and_price(history: pa.Table, bot_db: Any) -> None:
    settings, bot_id = bot_db
    params = {"fast": 5, "slow": 20}
    start, end = 1000, 1200
    bars = history.slice(0, end)
    ts = bars.column("timestamp").to_pylist()
    result = co.backtest(
        "sma_cross",
        bars,
        params=params,
        fee_bps=10,
        allow_short=False,
        size=0.5,
        stop_loss=0.01,
        trailing_stop=0.015,
    )
    trades = result.trades.to_pylist()
    assert not any(t["entry_bar"] <= start < t["exit_bar"] for t in trades), "flat at start"
    trades = [t for t in trades if start < t["entry_bar"] and t["exit_bar"] < end - 1]
    reasons = {t["exit_reason"] for t in trades}
    assert {"stop_loss", "trailing_stop"} <= reasons, reasons

    rt = _replay(
        settings,
        bot_id,
        bars,
        start,
        end,
        params,
        stop_loss_pct=Decimal(1),
        trailing_stop_pct=Decimal("1.5"),
        watch_step_ms=MINUTE,
    )
    got = _live_orders(settings, bot_id)
    assert len(got) == 2 * len(trades)
    tags = {"stop_loss": "S", "trailing_stop": "T", "signal": "X"}
    for (buy, sell), t in zip(zip(got[::2], got[1::2], strict=True), trades, strict=True):
        assert buy[0] == "buy"
        assert ts[t["entry_bar"]] <= buy[2] < ts[t["entry_bar"]] + HOUR, t
        assert abs(buy[3] / t["entry_price"] - 1) < 1e-3, (buy, t)
        side, cid, at, price = sell
        assert side == "sell"
        assert cid.endswith("-" + tags[t["exit_reason"]]), (cid, t)
        # the kernel's bar; the price of the minute the level was crossed, on the bid (the
        # kernel assumes the level itself)
        assert ts[t["exit_bar"]] <= at < ts[t["exit_bar"]] + HOUR, (sell, t)
        assert abs(price / t["exit_price"] - 1) < 1e-3, (price, t)
    assert rt.ledger.entry_open is False


class PagedExchange:
    """Serves ``n`` hourly candles, the last one forming, at most ``page`` per request."""

    market_data_key = None

    def __init__(self, n: int, page: int = 1000) -> None:
        self.n, self.page = n, page
        self.calls: list[tuple[int | None, int | None]] = []

    def candles(self) -> list[Candle]:
        return [Candle(i * HOUR, 1.0 + i, 2.0 + i, 0.5 + i, 1.5 + i, 1.0) for i in range(self.n)]

    async def fetch_ohlcv(
        self, symbol: str, timeframe: str, since_ms: int | None = None, limit: int | None = None
    ) -> list[Candle]:
        self.calls.append((since_ms, limit))
        limit = min(limit or 500, self.page)
        rows = self.candles()
        if since_ms is None:
            return rows[-limit:]
        return [c for c in rows if c.timestamp_ms >= since_ms][:limit]


def _windowed(settings: Any, client: PagedExchange, window: int) -> BotRuntime:
    async def deny(check: OrderCheck) -> RiskDecision:
        return RiskDecision.deny("test", "unused")

    cfg = BotSettings(
        bot_id=1,
        symbol="BTC/USDT",
        timeframe="1h",
        exchange="binance",
        starting_balance=Decimal(1000),
        max_position_pct=Decimal(10),
        risk_per_trade_pct=Decimal(1),
        window=window,
    )
    return BotRuntime(cfg, settings, client, lambda bars: (False,) * 4, deny)  # type: ignore[arg-type]


def test_a_long_window_is_fetched_in_pages_then_rolled(settings: Any) -> None:
    client = PagedExchange(5000)
    rt = _windowed(settings, client, 2500)
    window = asyncio.run(rt._closed_candles())  # noqa: SLF001
    # the last 2,500 closed candles (the 5,000th is forming): the newest page, then two more
    assert [c.timestamp_ms for c in window] == [i * HOUR for i in range(2499, 4999)]
    assert client.calls == [(None, 1000), (2499 * HOUR, 1000), (3499 * HOUR, 501)]
    client.n += 1  # a candle closes: one request for two candles, the window rolls
    window = asyncio.run(rt._closed_candles())  # noqa: SLF001
    assert (len(window), window[-1].timestamp_ms, client.calls[-1]) == (
        2500,
        4999 * HOUR,
        (None, 2),
    )


def test_a_market_younger_than_the_window_is_used_whole_and_grows(settings: Any) -> None:
    client = PagedExchange(301)
    rt = _windowed(settings, client, 600)
    assert len(asyncio.run(rt._closed_candles())) == 300  # noqa: SLF001
    calls = len(client.calls)
    for n in range(302, 702):
        client.n = n
        window = asyncio.run(rt._closed_candles())  # noqa: SLF001
    # from the market's first candle until the window is full, then rolling; never refetched
    assert (len(window), window[0].timestamp_ms, window[-1].timestamp_ms) == (
        600,
        100 * HOUR,
        699 * HOUR,
    )
    assert client.calls[calls:] == [(None, 2)] * 400


def test_the_entry_price_is_the_fill_price_of_the_open_entry() -> None:
    """Stops are measured from the entry's fills; dust left by a sale does not blend in."""

    def fill(side: OrderSide, price: str, amount: str, at: int) -> Fill:
        return Fill(
            f"t{at}", "o", "BTC/USDT", side, Decimal(price), Decimal(amount), Decimal(0), None, at
        )

    book = Ledger(cash=Decimal(100_000))
    book.apply(fill(OrderSide.BUY, "100", "1", 10), "BTC", "USDT")
    book.apply(fill(OrderSide.BUY, "110", "1", 11), "BTC", "USDT")
    assert (book.entry_price, book.entry_ms, book.entry_open) == (Decimal(105), 10, True)
    assert book.average_price == Decimal(105)  # no fee here: both agree
    book.apply(fill(OrderSide.SELL, "120", "1.99999", 20), "BTC", "USDT")
    assert book.amount == Decimal("0.00001")  # dust below the lot step
    assert (book.entry_price, book.entry_open) == (0, False)
    book.apply(fill(OrderSide.BUY, "200", "1", 30), "BTC", "USDT")
    assert (book.entry_price, book.entry_ms) == (Decimal(200), 30)


@pytest.mark.slow
def test_a_gap_through_the_stop_exits_at_the_open(history: pa.Table, bot_db: Any) -> None:
    """A candle opening below the stop: the kernel exits at that open, and so does the bot."""
    settings, bot_id = bot_db
    params = {"fast": 5, "slow": 20}
    start, end = 1000, 1040
    bars = history.slice(0, end)
    config: dict[str, Any] = {"fee_bps": 10, "allow_short": False, "size": 0.5, "stop_loss": 0.01}
    first = co.backtest("sma_cross", bars, params=params, **config).trades.to_pylist()
    entry = next(t for t in first if start + 1 < t["entry_bar"] < t["exit_bar"] - 1)
    # The bar after the entry opens 3 % below the entry price: through the 1 % stop.
    gap = entry["entry_bar"] + 1
    columns = {c: bars.column(c).to_numpy().copy() for c in bars.column_names}
    columns["open"][gap] = entry["entry_price"] * 0.97
    columns["low"][gap] = min(columns["low"][gap], columns["open"][gap])
    columns["high"][gap] = max(columns["high"][gap], columns["open"][gap])
    bars = pa.table(columns, schema=bars.schema)
    trades = co.backtest("sma_cross", bars, params=params, **config).trades.to_pylist()
    hit = next(t for t in trades if t["entry_bar"] == entry["entry_bar"])
    assert (hit["exit_bar"], hit["exit_reason"]) == (gap, "stop_loss")
    assert hit["exit_price"] == columns["open"][gap]

    _replay(
        settings,
        bot_id,
        bars,
        start,
        end,
        params,
        stop_loss_pct=Decimal(1),
        watch_step_ms=MINUTE,
    )
    ts = bars.column("timestamp").to_pylist()
    sells = [g for g in _live_orders(settings, bot_id) if g[0] == "sell"]
    side, cid, at, price = next(g for g in sells if ts[gap] <= g[2] < ts[gap] + HOUR)
    # the stop-loss order the bot placed once its entry (decided a candle earlier) filled
    assert cid == f"co{bot_id}-{ts[gap - 2]}-S"
    # sold right at the open (the clock stands 1 ms after it), on the bid
    assert abs(price / hit["exit_price"] - 1) < 1e-3, (price, hit)
