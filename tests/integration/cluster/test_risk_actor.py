"""The risk actor on a real local Ray: approvals, persistence, breaches, fail-closed clients."""

from __future__ import annotations

import asyncio
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest

from cryptoorchestrator.cluster.risk_actor import (
    LINE_RETRY_S,
    RiskActor,
    RiskClient,
    get_risk_actor,
    request_approval,
    risk_client,
    settings_payload,
)
from cryptoorchestrator.cluster.runtime import NAMESPACE
from cryptoorchestrator.platform.model import OrderSide
from cryptoorchestrator.platform.risk.limits import OrderCheck
from cryptoorchestrator.platform.settings import Settings
from cryptoorchestrator.platform.storage import db
from cryptoorchestrator.platform.storage.models import Bot, RiskEvent, RiskLimit, User

pytestmark = pytest.mark.ray


#: Approvals the tests expect to be answered get a generous deadline: what they test is the
#: answer and where it travels, never how fast (the production 2 s includes opening the line,
#: which a busy machine can delay). The fail-closed tests below set their own short ones.
PATIENT = 120.0


@pytest.fixture
def risk_env(ray_session: Any, tmp_path: Path):  # noqa: ANN201
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'risk.db'}",
        var_dir=tmp_path / "var",
        log_dir=tmp_path / "logs",
        secret_key="test-secret-key-0123456789",
    )
    db.upgrade(settings)
    with db.session_scope(settings) as session:
        user = User(email="u@example.com", password_hash="x")
        session.add(user)
        session.flush()
        bot = Bot(
            user_id=user.id,
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
        bot_id = bot.id
    # A private actor name per test keeps tests independent of each other.
    actor = RiskActor.options(namespace=NAMESPACE).remote(settings_payload(settings))  # type: ignore[attr-defined]
    yield settings, actor, bot_id
    ray_session.kill(actor)
    db.dispose_engines()


def _check(bot_id: int, amount: str = "1", price: str = "100") -> OrderCheck:
    return OrderCheck(
        bot_id=bot_id,
        client_order_id=f"c-{amount}-{price}",
        symbol="BTC/USDT",
        side=OrderSide.BUY,
        amount=D(amount),
        price=D(price),
    )


def test_rebuilds_from_db_and_approves(risk_env: Any, ray_session: Any) -> None:
    _, actor, bot_id = risk_env
    assert ray_session.get(actor.ping.remote())["ready"] is True
    ok = asyncio.run(request_approval(actor, _check(bot_id, "1", "100"), PATIENT))
    assert ok.approved
    too_big = asyncio.run(request_approval(actor, _check(bot_id, "6", "100"), PATIENT))
    assert (too_big.approved, too_big.limit) == (False, "max_position_size")


def test_limits_persist_and_breach_stops_the_bot(risk_env: Any, ray_session: Any) -> None:
    settings, actor, bot_id = risk_env
    limits = ray_session.get(actor.set_limits.remote({"max_daily_loss_pct": "3"}))
    assert limits["max_daily_loss_pct"] == "3"
    breaches = ray_session.get(actor.update_equity.remote(bot_id, "960"))
    assert breaches[0]["limit"] == "max_daily_loss"
    with db.session_scope(settings) as session:
        bot = session.get(Bot, bot_id)
        assert bot is not None
        assert bot.status == "Stopped"
        assert "max_daily_loss" in (bot.status_reason or "")
        assert session.query(RiskEvent).filter_by(limit_name="max_daily_loss").count() == 1
        stored = {r.name: r.value for r in session.query(RiskLimit).all()}
        assert stored["max_daily_loss_pct"] == D(3)


def test_kill_switch_persists_and_denies(risk_env: Any, ray_session: Any) -> None:
    settings, actor, bot_id = risk_env
    result = ray_session.get(actor.kill_switch.remote(False))
    assert bot_id in result["bots_stopped"]
    denied = asyncio.run(request_approval(actor, _check(bot_id, "0.1"), PATIENT))
    assert denied.limit == "kill_switch"
    # A fresh actor (a restart) reloads the kill switch from the database.
    fresh = RiskActor.options(namespace=NAMESPACE).remote(settings_payload(settings))  # type: ignore[attr-defined]
    assert ray_session.get(fresh.ping.remote(), timeout=120)["ready"]  # started and loaded
    again = asyncio.run(request_approval(fresh, _check(bot_id, "0.1"), PATIENT))
    assert again.limit == "kill_switch"
    ray_session.kill(fresh)


def test_approvals_of_bots_acting_together_are_one_call_in_order(
    risk_env: Any, ray_session: Any
) -> None:
    _, actor, bot_id = risk_env
    ray_session.get(actor.set_limits.remote({"max_open_orders": 2}))
    client = RiskClient(actor)
    checks = [_check(bot_id, f"0.{i + 1}") for i in range(3)]

    async def together() -> list[Any]:
        return list(await asyncio.gather(*(client.approve(c, timeout_s=PATIENT) for c in checks)))

    decisions = asyncio.run(together())
    # One message for the three; each saw the ones approved before it in the batch.
    assert client._approve.batches == 1  # noqa: SLF001
    assert [d.approved for d in decisions] == [True, True, False]
    assert decisions[2].limit == "max_open_orders"
    # End-of-candle reports of several bots: one call, each its own breaches.
    reports = [
        (bot_id, "BTC/USDT", "0", "1000", [checks[0].client_order_id]),
        (bot_id, "BTC/USDT", "0", "1000", []),
    ]

    async def report() -> list[Any]:
        return list(await asyncio.gather(*(client.report(*r) for r in reports)))

    assert asyncio.run(report()) == [[], []]
    assert client._report.batches == 1  # noqa: SLF001
    # The released slot is free again.
    assert asyncio.run(client.approve(_check(bot_id, "0.4"), timeout_s=PATIENT)).approved
    assert risk_client(actor) is risk_client(actor)  # one client per process and actor


def test_approvals_go_over_the_line_and_find_a_restarted_actor(
    risk_env: Any, ray_session: Any
) -> None:
    _, actor, bot_id = risk_env
    client = RiskClient(actor)

    async def line_open() -> None:
        # Opening waits LINE_RETRY_S * 2 for the actor's address; under load that can pass
        # (approvals then go through Ray), so wait until the line is open, the retry included.
        for _ in range(120):
            if await client.open_line():
                return
            await asyncio.sleep(LINE_RETRY_S)
        raise AssertionError("the risk line never opened")

    async def trade() -> list[Any]:
        await line_open()
        first = await client.approve(_check(bot_id, "0.1"), timeout_s=PATIENT)
        line = next(iter(client._lines.values())).client  # noqa: SLF001
        # A restart: a new process with a new line and token; the old line breaks.
        ray_session.kill(actor, no_restart=False)
        for _ in range(200):  # the broken line is noticed by its reader
            if line is not None and line.closed:
                break
            await asyncio.sleep(0.05)
        for _ in range(600):  # the new incarnation is up (calls fail while it restarts)
            try:
                await asyncio.wait_for(actor.ping.remote(), 120)
                break
            except ray_session.exceptions.ActorUnavailableError:
                await asyncio.sleep(0.1)
        await line_open()
        second = await client.approve(_check(bot_id, "0.2"), timeout_s=PATIENT)
        fresh = next(iter(client._lines.values())).client  # noqa: SLF001
        return [first, line, second, fresh, fresh is not None and not fresh.closed]

    first, line, second, fresh, fresh_open = asyncio.run(trade())
    assert first.approved
    assert second.approved
    assert line is not None
    assert line.closed
    assert fresh is not None
    assert fresh is not line
    assert fresh_open
    # Both answers came over a line (a Ray fallback would not count).
    assert client.line_batches == 2
    # The line refuses a caller without the incarnation's token.
    address = ray_session.get(actor.line.remote())

    async def intrude() -> None:
        from cryptoorchestrator.platform.risk.line import LineClient, LineError

        with pytest.raises(LineError, match="refused"):
            await LineClient.connect(address["host"], address["port"], "guess")

    asyncio.run(intrude())


def test_batching_client_fails_closed(ray_session: Any) -> None:
    @ray_session.remote(num_cpus=0)
    class Slow:
        async def approve_many(self, checks: list[dict[str, Any]]) -> list[dict[str, Any]]:
            await asyncio.sleep(5)
            return [{"approved": True, "reason": "late", "limit": None} for _ in checks]

    slow = Slow.remote()
    client = RiskClient(slow)
    late = asyncio.run(client.approve(_check(1), timeout_s=0.2))
    assert (late.approved, late.limit) == (False, "risk_timeout")
    assert client.line_batches == 0  # an actor without a line is asked through Ray
    ray_session.kill(slow)
    dead = asyncio.run(RiskClient(slow).approve(_check(1), timeout_s=5))
    assert (dead.approved, dead.limit) == (False, "risk_unavailable")


def test_slow_or_dead_risk_actor_means_deny(ray_session: Any) -> None:
    @ray_session.remote(num_cpus=0)
    class Slow:
        async def approve(self, check: dict[str, Any]) -> dict[str, Any]:
            await asyncio.sleep(5)
            return {"approved": True, "reason": "late", "limit": None}

    slow = Slow.remote()
    decision = asyncio.run(request_approval(slow, _check(1), timeout_s=0.2))
    assert (decision.approved, decision.limit) == (False, "risk_timeout")
    ray_session.kill(slow)
    dead = asyncio.run(request_approval(slow, _check(1), timeout_s=5))
    assert (dead.approved, dead.limit) == (False, "risk_unavailable")


def test_get_risk_actor_is_a_named_singleton(risk_env: Any, ray_session: Any) -> None:
    settings, _, _ = risk_env
    first = get_risk_actor(settings)
    second = get_risk_actor(settings)
    assert first._actor_id == second._actor_id  # noqa: SLF001
    ray_session.kill(first)


def test_an_order_check_survives_the_wire() -> None:
    from cryptoorchestrator.cluster.risk_actor import check_from_dict, check_to_dict

    full = OrderCheck(
        bot_id=3,
        client_order_id="co3-1-L",
        symbol="ETH/USDT",
        side=OrderSide.SELL,
        amount=D("0.00123"),
        price=D("2500.5"),
        reduce_only=True,
        stop_price=D("2400"),
        equity=D("1000.123456789012345678901234567"),
        position_notional=D("-12.5"),
        fee_rate=D("0.001"),
    )
    bare = OrderCheck(3, "co3-2-L", "ETH/USDT", OrderSide.BUY, D("1"), D("2"))
    for check in (full, bare):
        assert check_from_dict(check_to_dict(check)) == check
