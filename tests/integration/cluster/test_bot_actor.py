"""Bot actors on a real local Ray, trading on paper against the exchange simulator.

The actor's process is killed with SIGKILL in the middle of its life; Ray restarts it, the
constructor restarts the loop, the bot reconciles and carries on: no duplicate orders, no lost
fills.  The supervisor re-creates a bot whose actor vanished (as after a cluster restart).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import select

from cryptoorchestrator.cluster.bots import bot_status, start_bot, stop_bot, supervise_once
from cryptoorchestrator.cluster.handles import find_bot_actor
from cryptoorchestrator.cluster.risk_actor import get_risk_actor
from cryptoorchestrator.cluster.runtime import BOT_NICENESS
from cryptoorchestrator.platform.settings import Settings
from cryptoorchestrator.platform.storage import db
from cryptoorchestrator.platform.storage.models import (
    Bot,
    BotStatusEvent,
    ExchangeAccount,
    Order,
    Trade,
    User,
)

pytestmark = [pytest.mark.ray, pytest.mark.slow]
HOUR = 3_600_000
BUNDLED = (
    Path(__file__).resolve().parents[3]
    / "src/cryptoorchestrator/platform/data/bundled/binance_BTC-USDT_1h_2021-2022.parquet"
)


def timed_signals(buy_ts: int, sell_ts: int) -> Callable[[str, Any], Any]:
    """A signal factory that buys on one candle and sells on another (same after restarts)."""

    def factory(strategy: str, params: Any) -> Callable[[dict[str, np.ndarray]], Any]:
        def signals(bars: dict[str, np.ndarray]) -> tuple[bool, bool, bool, bool]:
            ts = int(bars["timestamp"][-1])
            return ts == buy_ts, ts == sell_ts, False, False

        return signals

    return factory


def wait_for(predicate: Callable[[], Any], timeout: float = 60.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except Exception:  # an actor restarting answers "unavailable" for a moment
            value = None
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def world(ray_session: Any, tmp_path: Path) -> Iterator[dict[str, Any]]:
    from cryptoorchestrator.platform.exchange.sim import run_simulator_in_thread

    candles: pa.Table = pq.read_table(BUNDLED).slice(0, 800)
    ts = candles.column("timestamp").to_pylist()
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'actors.db'}",
        var_dir=tmp_path / "var",
        log_dir=tmp_path / "logs",
        secret_key="actor-test-secret-key-0123456789",
    )
    db.upgrade(settings)
    with run_simulator_in_thread({"BTC/USDT": candles}, start_ms=ts[600] + 1, speed=0) as sim:
        # The account points at the simulator on loopback: the operator allows its host.
        host = sim.base_url.split("://", 1)[1].rstrip("/")
        settings = settings.model_copy(update={"allowed_api_hosts": [host]})
        with db.session_scope(settings) as session:
            user = User(email="actor@example.com", password_hash="x")
            session.add(user)
            session.flush()
            account = ExchangeAccount(
                user_id=user.id, name="sim", exchange="binance", mode="paper", api_url=sim.base_url
            )
            session.add(account)
            session.flush()
            bot = Bot(
                user_id=user.id,
                name="b",
                trading_pair="BTC/USDT",
                strategy="scripted",
                timeframe="1h",
                risk_per_trade=Decimal(1),
                max_position_size=Decimal(50),
                starting_balance=Decimal(10_000),
                exchange_account_id=account.id,
            )
            session.add(bot)
            session.flush()
            bot_id = bot.id
            grouped = []
            for name in ("g1", "g2"):
                member = Bot(
                    user_id=user.id,
                    name=name,
                    trading_pair="BTC/USDT",
                    strategy="scripted",
                    timeframe="1h",
                    risk_per_trade=Decimal(1),
                    max_position_size=Decimal(10),
                    starting_balance=Decimal(1_000),
                    exchange_account_id=account.id,
                    actor_group="pool",
                )
                session.add(member)
                session.flush()
                grouped.append(member.id)
        risk = get_risk_actor(settings)
        ray_session.get(risk.set_limits.remote({"max_orders_per_minute": 1000}))
        yield {"settings": settings, "sim": sim, "bot_id": bot_id, "ts": ts, "grouped": grouped}
        for some in (bot_id, *grouped):
            handle = find_bot_actor(some, settings)
            if handle is not None:
                ray_session.kill(handle, no_restart=True)
        ray_session.kill(risk, no_restart=True)
    db.dispose_engines()


def _status(settings: Settings, bot_id: int) -> dict[str, Any]:
    return asyncio.run(bot_status(settings, bot_id))


def _pid(settings: Settings, bot_id: int, ray: Any) -> int:
    return int(ray.get(find_bot_actor(bot_id, settings).pid.remote()))


def _processed(settings: Settings, bot_id: int, candle_ms: int) -> bool:
    actor = _status(settings, bot_id).get("actor") or {}
    return actor.get("last_candle_ms") == candle_ms and actor.get("status") == "Running"


def test_bot_actor_survives_sigkill_without_duplicates(
    world: dict[str, Any], ray_session: Any
) -> None:
    settings, sim, bot_id, ts = world["settings"], world["sim"], world["bot_id"], world["ts"]
    options = {
        "signal_factory": timed_signals(ts[601], ts[603]),
        "poll_interval_s": 0.05,
        "window": 100,
        "retry_initial_s": 0.2,
    }
    assert start_bot(settings, bot_id, options) == "Starting"
    wait_for(lambda: _processed(settings, bot_id, ts[599]), what="first candle")

    sim.advance(HOUR)  # candle 600 closes: nothing to do
    wait_for(lambda: _processed(settings, bot_id, ts[600]), what="candle 600")
    sim.advance(HOUR)  # candle 601 closes: buy
    wait_for(lambda: _processed(settings, bot_id, ts[601]), what="the buy")

    # Kill the actor's process outright; Ray restarts it and the constructor restarts the loop.
    handle = find_bot_actor(bot_id)
    pid = ray_session.get(handle.pid.remote())
    # Bots run a step below the risk actor (Ray's workers started at 0, see conftest).
    assert psutil.Process(pid).nice() == BOT_NICENESS
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: ray_session.get(find_bot_actor(bot_id).pid.remote()) != pid, what="restart")
    sim.advance(HOUR)  # candle 602: nothing
    wait_for(lambda: _processed(settings, bot_id, ts[602]), what="candle 602 after restart")
    sim.advance(HOUR)  # candle 603: sell
    wait_for(lambda: _processed(settings, bot_id, ts[603]), what="the sell")

    with db.session_scope(settings) as session:
        bot_orders = session.scalars(
            select(Order).where(Order.bot_id == bot_id).order_by(Order.id)
        ).all()
        assert [(o.side, o.status) for o in bot_orders] == [("buy", "filled"), ("sell", "filled")]
        # the paper exchange's own books: exactly two orders reached it
        book = session.scalars(select(Order).where(Order.bot_id.is_(None))).all()
        assert sorted(o.client_order_id for o in book) == sorted(
            f"paper:{o.exchange.split(':')[1]}:{b.client_order_id}"
            for o, b in zip(book, bot_orders, strict=True)
        )
        assert all(o.exchange == "binance" for o in bot_orders)
        fills = session.scalars(select(Trade).where(Trade.bot_id == bot_id)).all()
        assert len(fills) == 2
        statuses = [
            e.status
            for e in session.scalars(
                select(BotStatusEvent)
                .where(BotStatusEvent.bot_id == bot_id)
                .order_by(BotStatusEvent.id)
            ).all()
        ]
        assert statuses.count("Running") >= 2  # running, killed, running again
    status = _status(settings, bot_id)
    # all sold but the dust below the exchange's lot step (0.00001 BTC)
    assert Decimal(0) <= Decimal(status["actor"]["position"]) < Decimal("0.00001")

    assert asyncio.run(stop_bot(settings, bot_id)) == "Stopped"
    assert find_bot_actor(bot_id) is None
    assert _status(settings, bot_id)["status"] == "Stopped"
    assert (Path(settings.log_dir) / f"bot_{bot_id}.log").exists()


def test_supervisor_recreates_lost_bots(world: dict[str, Any], ray_session: Any) -> None:
    settings, bot_id, ts = world["settings"], world["bot_id"], world["ts"]
    options = {"signal_factory": timed_signals(-1, -1), "poll_interval_s": 0.05, "window": 100}
    start_bot(settings, bot_id, options)
    wait_for(lambda: _processed(settings, bot_id, ts[599]), what="running")
    # The cluster loses the actor for good (as when Ray's head restarts); the DB still wants it.
    ray_session.kill(find_bot_actor(bot_id), no_restart=True)
    wait_for(lambda: find_bot_actor(bot_id) is None, what="actor gone")
    assert supervise_once(settings, options) == [bot_id]
    wait_for(lambda: _processed(settings, bot_id, ts[599]), what="running again")
    assert supervise_once(settings, options) == []  # nothing more to do


def test_grouped_bots_share_one_process_and_survive_together(
    world: dict[str, Any], ray_session: Any
) -> None:
    settings, sim, ts = world["settings"], world["sim"], world["ts"]
    a, b = world["grouped"]
    options = {
        "signal_factory": timed_signals(ts[600], ts[601]),
        "poll_interval_s": 0.05,
        "window": 100,
        "retry_initial_s": 0.2,
    }
    start_bot(settings, a, options)
    start_bot(settings, b, options)
    for bot in (a, b):
        wait_for(lambda bot=bot: _processed(settings, bot, ts[599]), what=f"bot {bot} running")
    shared = _pid(settings, a, ray_session)
    assert _pid(settings, b, ray_session) == shared  # one process for the group
    assert find_bot_actor(a) is None  # no process of its own

    # Killing the shared process brings both members back (the group reloads its members).
    os.kill(shared, signal.SIGKILL)
    wait_for(lambda: _pid(settings, a, ray_session) != shared, what="group restart")
    sim.advance(HOUR)  # candle 600: both buy
    for bot in (a, b):
        wait_for(lambda bot=bot: _processed(settings, bot, ts[600]), what=f"bot {bot} after kill")
    with db.session_scope(settings) as session:
        for bot in (a, b):
            orders = session.scalars(select(Order).where(Order.bot_id == bot)).all()
            assert [(o.side, o.status) for o in orders] == [("buy", "filled")]

    # Stopping one member leaves the other trading in the same process.
    assert asyncio.run(stop_bot(settings, a)) == "Stopped"
    assert ray_session.get(find_bot_actor(b, settings).hosted.remote()) == [b]
    sim.advance(HOUR)  # candle 601: b sells
    wait_for(lambda: _processed(settings, b, ts[601]), what="the remaining member")
    assert asyncio.run(stop_bot(settings, b)) == "Stopped"
    assert find_bot_actor(b, settings) is None  # the empty group's process is gone
