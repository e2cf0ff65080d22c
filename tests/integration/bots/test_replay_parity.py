"""Parity: ``co.replay`` (the real bot runtime on the exchange simulator) trades as ``co.backtest``.

Each case replays a few hundred candles through the bot runtime, the risk manager, the paper
broker and ccxt's binance client on the simulator, then backtests the same candles with the
configuration the replay reports (``result.config``: same fees, sizing, stops and the simulated
exchange's price tick, lot step and minimum notional).  The fills must be the same: bar, side,
reason and price exactly (exits on stops and take-profits included: both sides place the
levels on the tick with the kernel's one rounding); size exactly in lots (the exchange's
decimal amount is the backtest's ``units x step``); the fee as the exchange's exact decimal of
``price x amount x rate`` rounded to its commission precision (1e-8), which the backtest's
float fee matches to that rounding.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

import cryptoorchestrator as co
from cryptoorchestrator.platform.backtest import nb
from cryptoorchestrator.platform.bots.replay import price_decimals
from cryptoorchestrator.platform.model.ohlcv import OHLCV_SCHEMA

HOUR = 3_600_000
N_BARS = 300
FEE_BPS = 10.0

#: Built-in strategies with parameters that trade several times in 300 hourly candles.
STRATEGIES: dict[str, dict[str, Any]] = {
    "sma_cross": {"fast": 10, "slow": 30},
    "ema_cross": {"fast": 12, "slow": 26},
    "rsi_reversion": {"period": 14, "lower": 35.0, "upper": 65.0},
    "macd_trend": {"fast": 12, "slow": 26, "signal": 9},
    "bollinger_breakout": {"period": 20, "nbdev": 2.0},
    "atr_stops": {"ema_period": 30, "atr_period": 14, "atr_mult": 2.0},
}


#: A stop-loss, a take-profit and a trailing stop (wider than the stop-loss at entry, it takes
#: over once the price has risen): every exit reason in 300 candles for most strategies.
EVERY_STOP: dict[str, Any] = {
    "sizing": "risk",
    "size": 0.01,
    "stop_loss": 0.015,
    "take_profit": 0.04,
    "trailing_stop": 0.03,
}
#: Built-in strategies that can short (a ``short`` parameter), with it on.
SHORTING: dict[str, dict[str, Any]] = {
    name: {**params, "short": True}
    for name, params in STRATEGIES.items()
    if "short" in co.get_strategy(name).validate_params(params)
}
#: The settings the strategies with shorts are replayed with.
SHORT_CASES: dict[str, dict[str, Any]] = {
    "no_stops": {},
    "stop_loss_take_profit": {
        "sizing": "risk",
        "size": 0.01,
        "stop_loss": 0.02,
        "take_profit": 0.03,
    },
    "trailing_stop": {"trailing_stop": 0.02},
    "every_stop": EVERY_STOP,
}


def generated_candles(n: int = N_BARS, seed: int = 17) -> pa.Table:
    """A random walk of hourly candles with prices on a 0.01 tick (as an exchange quotes them)."""
    rng = np.random.default_rng(seed)
    close = np.round(20_000.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n))), 2)
    open_ = np.round(np.concatenate([[20_000.0], close[:-1]]) * (1 + rng.normal(0, 5e-4, n)), 2)
    wick = np.abs(rng.normal(0.0, 0.004, (2, n))) * close
    high = np.round(np.maximum(open_, close) + wick[0], 2)
    low = np.round(np.minimum(open_, close) - wick[1], 2)
    ts = 1_600_000_000_000 - 1_600_000_000_000 % HOUR + HOUR * np.arange(n, dtype=np.int64)
    volume = np.round(rng.uniform(10.0, 100.0, n), 3)
    return pa.Table.from_arrays(
        [pa.array(ts), *(pa.array(a) for a in (open_, high, low, close, volume))],
        schema=OHLCV_SCHEMA,
    )


@pytest.fixture(scope="module")
def generated() -> pa.Table:
    """300 generated hourly candles."""
    return generated_candles()


@pytest.fixture(scope="module")
def real(candles: pa.Table) -> pa.Table:
    """300 real Binance BTC/USDT hourly candles (2021)."""
    return candles.slice(100, N_BARS)


def _fills(result: Any) -> list[dict[str, Any]]:
    return result.orders.to_pylist()  # type: ignore[no-any-return]


def assert_same_fills(
    replayed: Any, backtested: Any, bars: pa.Table, *, min_orders: int = 2
) -> None:
    """The replay's fills are the backtest's (see the module docstring for "the same").

    Stops and take-profits included: the kernel places their levels on the exchange's tick
    exactly as the bot places its stop-loss order (and watches its take-profit), so both fill
    at the same float.  The one residual is the fee's last digits: the exchange charges the
    exact fee rounded to its commission precision (1e-8, half up), the kernel keeps the float.
    """
    got, expected = _fills(replayed), _fills(backtested)
    assert len(expected) >= min_orders, "the case must trade"
    key = ("bar", "side", "reason", "price")
    assert [tuple(g[k] for k in key) for g in got] == [tuple(e[k] for k in key) for e in expected]
    step = Decimal(repr(replayed.config.qty_step))
    tick = Decimal(1).scaleb(-price_decimals(bars))
    rate = Decimal(repr(replayed.config.fee_bps)) / 10_000
    for g, e in zip(got, expected, strict=True):
        price = Decimal(repr(g["price"]))
        assert price % tick == 0, (g, e)  # on the exchange's tick, as the exchange's decimal
        lots = Decimal(repr(g["qty"])) / step
        assert lots == lots.to_integral_value(), (g, e)  # the exchange's amount: whole lots
        # the backtest's float ``units x step``: the same whole number of lots
        assert e["qty"] == float(int(lots)) * float(step), (g, e)
        fee = (price * lots * step * rate).quantize(Decimal("1e-8"), rounding=ROUND_HALF_UP)
        assert Decimal(repr(g["fee"])) == fee, (g, e)
        assert abs(Decimal(repr(e["fee"])) - fee) <= Decimal("5e-9") + fee * Decimal("1e-14")
    # The books follow from the fills: the same equity at every close, to the fees' rounding.
    atol = 1e-8 * (len(got) + 1)
    np.testing.assert_allclose(replayed.equity, backtested.equity, rtol=1e-14, atol=atol)
    assert replayed.metrics["trade_count"] == backtested.metrics["trade_count"]


def _replay_and_backtest(
    strategy: str, bars: pa.Table, params: dict[str, Any] | None = None, **kwargs: Any
) -> tuple[Any, Any]:
    params = STRATEGIES[strategy] if params is None else params
    replayed = co.replay(strategy, bars, params, fee_bps=FEE_BPS, **kwargs)
    backtested = co.backtest(strategy, bars, params, config=replayed.config)
    return replayed, backtested


# ------------------------------------------------------------------------------ no stops


@pytest.mark.slow
@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_long_only_generated(strategy: str, generated: pa.Table) -> None:
    """Every built-in strategy, long only, on generated candles: the backtest's fills."""
    assert_same_fills(*_replay_and_backtest(strategy, generated), generated)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_long_only_real(strategy: str, real: pa.Table) -> None:
    """Every built-in strategy, long only, on real candles: the backtest's fills."""
    assert_same_fills(*_replay_and_backtest(strategy, real), real)


@pytest.mark.slow
def test_partial_size_and_no_fees(generated: pa.Table) -> None:
    """Half the equity per entry, no fees: sizes follow the equity exactly as the backtest's."""
    replayed = co.replay("sma_cross", generated, STRATEGIES["sma_cross"], size=0.5)
    backtested = co.backtest(
        "sma_cross", generated, STRATEGIES["sma_cross"], config=replayed.config
    )
    assert replayed.config.size == 0.5
    assert_same_fills(replayed, backtested, generated)
    assert all(o["fee"] == 0.0 for o in _fills(replayed))


# ------------------------------------------------------------------------------ stops
# The kernel exits inside the bar at the stop's level on the exchange's tick; the bot's
# exchange-held stop-loss order rests at that very price, and the bot sells at market at the
# instant the price path reaches the take-profit's tick level (issue 17, live stops).


@pytest.mark.slow
@pytest.mark.parametrize("strategy", list(STRATEGIES))
@pytest.mark.parametrize("bars_name", ["generated", "real"])
def test_every_stop(strategy: str, bars_name: str, request: pytest.FixtureRequest) -> None:
    """Every built-in strategy with a stop-loss, a take-profit and a trailing stop at once,
    risk-sized on the nearest stop: the backtest's fills, stop exits included."""
    bars = request.getfixturevalue(bars_name)
    replayed, backtested = _replay_and_backtest(strategy, bars, **EVERY_STOP)
    assert_same_fills(replayed, backtested, bars)
    assert any(o["reason"] != "signal" for o in _fills(backtested)), "the case must stop out"


@pytest.mark.slow
@pytest.mark.parametrize("bars_name", ["generated", "real"])
def test_stop_loss_risk_sized(bars_name: str, request: pytest.FixtureRequest) -> None:
    """sma_cross with a 2 % stop-loss, risking 1 % of equity per trade."""
    bars = request.getfixturevalue(bars_name)
    replayed, backtested = _replay_and_backtest(
        "sma_cross", bars, sizing="risk", size=0.01, stop_loss=0.02
    )
    assert_same_fills(replayed, backtested, bars)


@pytest.mark.slow
@pytest.mark.parametrize("bars_name", ["generated", "real"])
def test_stop_loss_and_take_profit(bars_name: str, request: pytest.FixtureRequest) -> None:
    """ema_cross with a 2 % stop-loss and a 3 % take-profit, risking 1 % per trade."""
    bars = request.getfixturevalue(bars_name)
    replayed, backtested = _replay_and_backtest(
        "ema_cross", bars, sizing="risk", size=0.01, stop_loss=0.02, take_profit=0.03
    )
    assert_same_fills(replayed, backtested, bars)


@pytest.mark.slow
@pytest.mark.parametrize("bars_name", ["generated", "real"])
def test_trailing_stop(bars_name: str, request: pytest.FixtureRequest) -> None:
    """macd_trend with a 2 % trailing stop, all-in."""
    bars = request.getfixturevalue(bars_name)
    replayed, backtested = _replay_and_backtest("macd_trend", bars, trailing_stop=0.02)
    assert_same_fills(replayed, backtested, bars)


# ------------------------------------------------------------------------------ shorts
# A strategy that shorts replays on a paper margin account (the backtest's margin rule, no
# leverage): short entries sell what the account does not hold, reversals close and then open,
# a short's stop-loss is a buy stop held by the exchange on the tick above its level.


@pytest.mark.slow
@pytest.mark.parametrize("case", list(SHORT_CASES))
@pytest.mark.parametrize("strategy", list(SHORTING))
@pytest.mark.parametrize("bars_name", ["generated", "real"])
def test_with_shorts(
    strategy: str, case: str, bars_name: str, request: pytest.FixtureRequest
) -> None:
    """Every built-in strategy that can short, with shorts, without and with stops."""
    bars = request.getfixturevalue(bars_name)
    replayed, backtested = _replay_and_backtest(
        strategy, bars, SHORTING[strategy], **SHORT_CASES[case]
    )
    assert replayed.config.allow_short is True
    assert_same_fills(replayed, backtested, bars)
    shorts = backtested.trade_records[:, nb.T_DIR] < 0
    assert shorts.sum() >= 2, "the case must short"
    if SHORT_CASES[case]:
        stopped = backtested.trade_records[shorts, nb.T_EXIT_REASON] != nb.REASON_SIGNAL
        assert stopped.any(), "a short must stop out"


def test_shorting_strategies_are_covered() -> None:
    """The shorts cases cover at least one built-in strategy (ema_cross has ``short``)."""
    assert "ema_cross" in SHORTING


# ------------------------------------------------------------------------------ the SDK


def test_replay_rejects_what_a_bot_cannot_do(generated: pa.Table) -> None:
    """Sizing a bot cannot do is refused before anything runs, naming the field."""
    from cryptoorchestrator.platform.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="sizing"):
        co.replay("sma_cross", generated, sizing="quote", size=100.0)
    with pytest.raises(InvalidInputError, match="sizing"):
        co.replay("sma_cross", generated, stop_loss=0.02)
    with pytest.raises(InvalidInputError, match="stop_loss"):
        co.replay("sma_cross", generated, sizing="risk", size=0.01)
    with pytest.raises(InvalidInputError, match="size"):
        co.replay("sma_cross", generated, sizing="risk", size=0.1, stop_loss=0.02)
    with pytest.raises(InvalidInputError, match="bars"):
        co.replay("sma_cross", generated.slice(0, 1))


@pytest.mark.slow
def test_replay_records_into_a_given_database(generated: pa.Table, tmp_path: Any) -> None:
    """With a database given, the bot's rows stay there; two replays keep two bots."""
    from sqlalchemy import func, select

    from cryptoorchestrator.platform.settings import Settings
    from cryptoorchestrator.platform.storage import db
    from cryptoorchestrator.platform.storage.models import Bot, Trade

    url = f"sqlite:///{tmp_path / 'kept.db'}"
    bars = generated.slice(0, 120)
    params = {"fast": 5, "slow": 15}
    first = co.replay("sma_cross", bars, params, fee_bps=FEE_BPS, database_url=url)
    second = co.replay("sma_cross", bars, params, fee_bps=FEE_BPS, database_url=url)
    assert first.database_url == url
    assert first.orders.equals(second.orders)
    try:
        with db.session_scope(Settings(database_url=url)) as session:
            assert session.scalar(select(func.count()).select_from(Bot)) == 2
            fills = session.scalar(
                select(func.count()).select_from(Trade).where(Trade.bot_id.is_not(None))
            )
        assert fills == 2 * first.orders.num_rows > 0
    finally:
        db.dispose_engine(Settings(database_url=url))


@pytest.mark.slow
@pytest.mark.ray
def test_ray_mode_gives_the_same_result(generated: pa.Table, ray_session: Any) -> None:
    """``ray=True`` runs the replay in a Ray worker: the same fills, equity and metrics."""
    bars = generated.slice(0, 150)
    params = {"fast": 5, "slow": 20}
    local = co.replay("sma_cross", bars, params, fee_bps=FEE_BPS)
    remote = co.replay("sma_cross", bars, params, fee_bps=FEE_BPS, ray=True)
    assert (local.mode, remote.mode) == ("in-process", "ray")
    assert remote.orders.num_rows >= 2
    assert remote.orders.equals(local.orders)
    np.testing.assert_array_equal(remote.equity, local.equity)
    np.testing.assert_equal(remote.metrics, local.metrics)


@pytest.mark.slow
def test_cli_replay_compares_with_the_backtest(
    real: pa.Table, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """``cryptoorch replay --compare`` replays a file, backtests it and reports the same fills."""
    import json

    import pyarrow.parquet as pq

    from cryptoorchestrator.cli.main import main

    path = tmp_path / "bars.parquet"
    pq.write_table(real.slice(0, 150), path)
    out = tmp_path / "out"
    args = ["replay", "--strategy", "sma_cross", "--data", str(path), "-p", "fast=5"]
    main([*args, "-p", "slow=15", "--fee-bps", "10", "--compare", "--json", "--out", str(out)])
    summary = json.loads(capsys.readouterr().out)
    assert summary["mode"] == "in-process"
    assert summary["comparison"]["same"] is True
    assert summary["fills"] == summary["comparison"]["backtest_fills"] >= 2
    assert (out / "orders.csv").read_text().count("\n") == summary["fills"] + 1


@pytest.mark.slow
def test_replay_from_inside_a_running_event_loop(generated: pa.Table) -> None:
    """Called where a loop already runs (a notebook), the replay runs on a thread of its own."""
    import asyncio

    bars = generated.slice(0, 120)
    params = {"fast": 5, "slow": 15}

    async def notebook_cell() -> Any:
        return co.replay("sma_cross", bars, params, fee_bps=FEE_BPS)

    inside = asyncio.run(notebook_cell())
    outside = co.replay("sma_cross", bars, params, fee_bps=FEE_BPS)
    assert inside.orders.num_rows >= 2
    assert inside.orders.equals(outside.orders)
