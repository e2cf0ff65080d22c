"""The kill switch's whole life on a real local Ray (issue 19).

Engage it: the bot is halted, a risk event records why (stored for its owner, pushed on the
event bus) and its actor is removed.  While it is engaged a start is refused with the way to
release it; once released, a start really starts the bot.  A bot whose loop ended without its
actor being removed (a halt) gets a fresh actor when started again.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cryptoorchestrator.cluster.bots import start_bot
from cryptoorchestrator.cluster.events import get_event_bus
from cryptoorchestrator.cluster.facade import (
    RayCluster,
    kill_switch_status_local,
    release_kill_switch_local,
)
from cryptoorchestrator.cluster.handles import find_bot_actor
from cryptoorchestrator.cluster.risk_actor import get_risk_actor, request_approval
from cryptoorchestrator.cluster.runtime import metrics_endpoint
from cryptoorchestrator.platform.errors import ConflictError
from cryptoorchestrator.platform.model import OrderSide
from cryptoorchestrator.platform.risk.limits import OrderCheck
from cryptoorchestrator.platform.services.records import RiskRecords
from cryptoorchestrator.platform.settings import Settings
from cryptoorchestrator.platform.storage import db
from cryptoorchestrator.platform.storage.models import Bot, ExchangeAccount, Trade, User

pytestmark = [pytest.mark.ray, pytest.mark.slow]
BUNDLED = (
    Path(__file__).resolve().parents[3]
    / "src/cryptoorchestrator/platform/data/bundled/binance_BTC-USDT_1h_2021-2022.parquet"
)


def buying_on(buy_ts: int) -> Callable[[str, Any], Any]:
    """A signal factory that buys on one candle only (the same after every restart)."""

    def factory(strategy: str, params: Any) -> Callable[[dict[str, np.ndarray]], Any]:
        def signals(bars: dict[str, np.ndarray]) -> tuple[bool, bool, bool, bool]:
            return int(bars["timestamp"][-1]) == buy_ts, False, False, False

        return signals

    return factory


def _options(buy_ts: int = -1) -> dict[str, Any]:
    return {
        "signal_factory": buying_on(buy_ts),
        "poll_interval_s": 0.05,
        "window": 100,
        "feed": False,
    }


#: A bot id no other test's bot has: its metric series are this test's alone.
BOT_ID = 919_019


def _scrape(url: str, wanted: dict[str, list[str]], deadline_s: float = 120.0) -> None:
    """Wait until each series in ``wanted`` has a sample line holding all of its label texts
    (Ray exports on an interval, so the first scrapes may predate the samples)."""
    end = time.monotonic() + deadline_s
    missing = list(wanted)
    while time.monotonic() < end:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (loopback)
            lines = response.read().decode().splitlines()
        missing = [
            name
            for name, labels in wanted.items()
            if not any(ln.startswith(name + "{") and all(x in ln for x in labels) for ln in lines)
        ]
        if not missing:
            return
        time.sleep(1.0)
    raise AssertionError(f"series never exported: {missing}")


def wait_for(predicate: Callable[[], Any], timeout: float = 90.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except Exception:  # an actor starting or going away answers "unavailable" for a moment
            value = None
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def world(ray_session: Any, tmp_path: Path) -> Iterator[dict[str, Any]]:
    from cryptoorchestrator.platform.exchange.sim import run_simulator_in_thread

    candles: pa.Table = pq.read_table(BUNDLED).slice(0, 700)
    ts = candles.column("timestamp").to_pylist()
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'kill.db'}",
        var_dir=tmp_path / "var",
        log_dir=tmp_path / "logs",
        secret_key="kill-switch-test-secret-key-0123",
    )
    db.upgrade(settings)
    with run_simulator_in_thread({"BTC/USDT": candles}, start_ms=ts[600] + 1, speed=0) as sim:
        host = sim.base_url.split("://", 1)[1].rstrip("/")
        settings = settings.model_copy(update={"allowed_api_hosts": [host]})
        with db.session_scope(settings) as session:
            user = User(email="kill@example.com", password_hash="x")
            session.add(user)
            session.flush()
            account = ExchangeAccount(
                user_id=user.id, name="sim", exchange="binance", mode="paper", api_url=sim.base_url
            )
            session.add(account)
            session.flush()
            bot = Bot(
                id=BOT_ID,
                user_id=user.id,
                name="k",
                trading_pair="BTC/USDT",
                strategy="scripted",
                timeframe="1h",
                risk_per_trade=Decimal(1),
                max_position_size=Decimal(20),
                starting_balance=Decimal(10_000),
                exchange_account_id=account.id,
            )
            session.add(bot)
            session.flush()
            ids = {"bot_id": bot.id, "user_id": user.id}
        yield {"settings": settings, "sim": sim, "ts": ts, **ids}
        handle = find_bot_actor(ids["bot_id"], settings)
        if handle is not None:
            ray_session.kill(handle, no_restart=True)
        ray_session.kill(get_risk_actor(settings), no_restart=True)
    db.dispose_engines()


def _running(bot_id: int, ray: Any, settings: Settings | None = None) -> bool:
    handle = find_bot_actor(bot_id, settings)  # with settings, a grouped bot is found too
    if handle is None:
        return False
    return ray.get(handle.status.remote(bot_id=bot_id), timeout=5)["status"] == "Running"


def test_kill_switch_halts_refuses_releases_and_restarts(
    world: dict[str, Any], ray_session: Any
) -> None:
    settings, bot_id, user_id = world["settings"], world["bot_id"], world["user_id"]
    ray = ray_session
    risk = get_risk_actor(settings)
    assert start_bot(settings, bot_id, _options()) == "Starting"
    wait_for(lambda: _running(bot_id, ray), what="Running")

    # Engage: the bot is halted, its reason recorded and pushed, and its process removed.
    # The bus's current sequence number: a poll past it times out at once and reports it.
    after = ray.get(get_event_bus().poll.remote(2**62, 0.0))["last"]
    killed = ray.get(risk.kill_switch.remote(False, None))
    assert bot_id in killed["bots_stopped"]
    assert bot_id in killed["actors_halted"]
    with db.session_scope(settings) as session:
        row = session.get(Bot, bot_id)
        assert row is not None
        assert (row.status, row.desired_state) == ("Stopped", "stopped")
        assert "kill switch" in (row.status_reason or "")
        events = RiskRecords(session, user_id).events(50)  # what GET /api/risk/events shows
        assert [(e.bot_id, e.kind) for e in events] == [(bot_id, "kill_switch")]

    def pushed() -> bool:
        batch = ray.get(get_event_bus().poll.remote(after, 1.0, 500))
        return any(
            e.get("type") == "risk" and e.get("botId") == bot_id and e.get("kind") == "kill_switch"
            for e in batch["events"]
        )

    wait_for(pushed, what="the risk event on the event bus")
    wait_for(lambda: find_bot_actor(bot_id) is None, what="the halted actor removed")

    # Engaged: shown in health and in `cryptoorch risk status`; a start is refused.
    health = RayCluster(settings, connect=False).risk_status()
    assert health["status"] == "healthy"
    assert health["kill_switch"]["global"] is True
    assert kill_switch_status_local(settings)["global"] is True
    with pytest.raises(ConflictError, match="cryptoorch risk release"):
        start_bot(settings, bot_id, _options())
    with db.session_scope(settings) as session:
        assert session.get(Bot, bot_id).desired_state == "stopped"  # type: ignore[union-attr]

    # Released (as `cryptoorch risk release` does): a start really starts the bot.
    assert release_kill_switch_local(settings)["kill_switch"] is False
    assert kill_switch_status_local(settings)["global"] is False
    assert start_bot(settings, bot_id, _options()) == "Starting"
    wait_for(lambda: _running(bot_id, ray), what="Running after the release")

    # A halt that leaves the actor behind (its loop ended): the next start replaces the actor.
    old = find_bot_actor(bot_id)
    old_pid = ray.get(old.pid.remote())
    ray.get(old.halt.remote("halted by test"))
    wait_for(lambda: ray.get(old.running.remote(bot_id)) is False, what="the loop ended")
    assert start_bot(settings, bot_id, _options(world["ts"][600])) == "Starting"
    wait_for(lambda: _running(bot_id, ray), what="Running in a fresh actor")
    assert ray.get(find_bot_actor(bot_id).pid.remote()) != old_pid

    # Telemetry: the bot's order and fill, and a risk denial, reach Ray's metrics endpoint.
    world["sim"].advance(3_600_000)  # candle 600 closes: the bot buys

    def filled() -> bool:
        with db.session_scope(settings) as session:
            return session.query(Trade).filter(Trade.bot_id == bot_id).count() > 0

    wait_for(filled, what="the bot's fill")
    unknown = OrderCheck(
        bot_id=BOT_ID + 1,
        client_order_id="metrics-denial",
        symbol="BTC/USDT",
        side=OrderSide.BUY,
        amount=Decimal("0.01"),
        price=Decimal(20_000),
    )
    assert asyncio.run(request_approval(risk, unknown, 10.0)).limit == "unknown_bot"
    url = metrics_endpoint()
    assert url is not None
    bot = f'bot="{BOT_ID}"'
    _scrape(
        url,
        {
            "ray_cryptoorch_orders_total": [bot, 'status="submitted"'],
            "ray_cryptoorch_fills_total": [bot, 'side="buy"'],
            "ray_cryptoorch_risk_checks_total": ['outcome="denied"', 'limit="unknown_bot"'],
            "ray_cryptoorch_equity": [bot],
        },
    )


def test_user_kill_switch_refuses_its_owners_start(world: dict[str, Any], ray_session: Any) -> None:
    settings, bot_id, user_id = world["settings"], world["bot_id"], world["user_id"]
    risk = get_risk_actor(settings)
    ray_session.get(risk.user_kill_switch.remote(user_id, False, user_id))
    state = ray_session.get(risk.kill_switch_state.remote(user_id))
    assert (state["global"], state["user"], state["users"]) == (False, True, 1)
    with pytest.raises(ConflictError, match="DELETE /api/risk/kill-switch"):
        start_bot(settings, bot_id, _options())
    release_kill_switch_local(settings, user_id)
    assert ray_session.get(risk.kill_switch_state.remote(user_id))["user"] is False


def test_a_grouped_bot_leaves_its_process_and_the_empty_process_goes(
    world: dict[str, Any], ray_session: Any
) -> None:
    settings, bot_id, user_id = world["settings"], world["bot_id"], world["user_id"]
    with db.session_scope(settings) as session:
        row = session.get(Bot, bot_id)
        assert row is not None
        row.actor_group = "kill-pool"
    assert start_bot(settings, bot_id, _options()) == "Starting"
    wait_for(lambda: _running(bot_id, ray_session, settings), what="Running in its group")
    risk = get_risk_actor(settings)
    killed = ray_session.get(risk.user_kill_switch.remote(user_id, False, user_id))
    assert killed["actors_halted"] == [bot_id]
    wait_for(lambda: find_bot_actor(bot_id, settings) is None, what="the group's process removed")
    release_kill_switch_local(settings, user_id)
    assert start_bot(settings, bot_id, _options()) == "Starting"
    wait_for(lambda: _running(bot_id, ray_session, settings), what="Running after the release")
