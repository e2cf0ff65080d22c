"""The rest of the catalogue on SQLite and PostgreSQL: partial fills, circuit breakers opening
and closing, refused exchange credentials, reconciliation discrepancies on restart, risk actor
restarts and the daily summary, each reaching the right users once."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from tests.integration.api.conftest import register_and_login
from tests.integration.bots.test_order_states_db import HOUR, NEWEST, _answer, _runtime, _store
from tests.integration.notify.conftest import FakeClock, NotifyDb
from tests.integration.notify.receivers import Receiver, http_receiver
from tests.integration.notify.test_subscriptions_api import _app, _field

from cryptoorchestrator.platform.errors import AuthenticationError, RetryableExchangeError
from cryptoorchestrator.platform.exchange.circuit import registry
from cryptoorchestrator.platform.exchange.execution import Fill
from cryptoorchestrator.platform.model import OrderSide, OrderStatus
from cryptoorchestrator.platform.notify.config import NotifySettings
from cryptoorchestrator.platform.notify.dispatcher import Dispatcher
from cryptoorchestrator.platform.notify.system import (
    install_exchange_alerts,
    notify_risk_actor_restarted,
    uninstall_exchange_alerts,
)
from cryptoorchestrator.platform.settings import Settings
from cryptoorchestrator.platform.storage.models import (
    Bot,
    ExchangeAccount,
    Notification,
    Position,
)

Run = Callable[[Callable[[], Awaitable[None]]], None]


def _settings(receiver: Receiver) -> NotifySettings:
    return NotifySettings(allowed_hosts=[receiver.host])


def _rows(db: NotifyDb) -> list[Notification]:
    with db.factory() as session:
        return list(session.scalars(select(Notification).order_by(Notification.id)))


def _account(db: NotifyDb, user: int, name: str = "main") -> int:
    with db.factory() as session:
        account = ExchangeAccount(user_id=user, name=name, exchange="binance", mode="paper")
        session.add(account)
        session.commit()
        return int(account.id)


def _trade_on(db: NotifyDb, bot: int, account: int) -> None:
    with db.factory() as session:
        session.execute(update(Bot).where(Bot.id == bot).values(exchange_account_id=account))
        session.commit()


def _fill(trade_id: str, amount: str) -> Fill:
    return Fill(trade_id, "late-1", "BTC/USDT", OrderSide.BUY, Decimal("60001"),
                Decimal(amount), Decimal("0.00001"), "BTC", NEWEST + HOUR)  # fmt: skip


# --------------------------------------------------------------------- partial fills


def test_a_fill_of_an_open_order_is_a_partial_fill_and_the_completing_one_a_fill(
    notify_db: NotifyDb,
) -> None:
    with http_receiver() as rx:
        user = notify_db.user("a@example.com")
        bot = notify_db.bot(user)
        everything, _ = notify_db.channel(user, _settings(rx), url=rx.url + "/a", kind="webhook")
        only_filled, _ = notify_db.channel(
            user, _settings(rx), "f", kind="webhook", url=rx.url + "/f", events=["order.filled"]
        )
        account = _account(notify_db, user)
        runtime = _runtime(notify_db.settings, bot, account)
        cid = f"co{bot}-{NEWEST}-P"
        _store(notify_db.settings, bot, cid, OrderStatus.SUBMITTED.value)
        first, second = _fill("p-1", "0.004"), _fill("p-2", "0.006")
        partial = _answer(cid, OrderStatus.PARTIALLY_FILLED, "0.004")
        runtime.record_answer(partial, [first])
        runtime.record_answer(partial, [first])  # the same answer again: no news
        runtime.record_answer(_answer(cid, OrderStatus.FILLED, "0.01"), [first, second])
        rows = _rows(notify_db)
        got = [(r.channel_id, r.event_type, r.payload["data"]["amount"]) for r in rows]
        assert got == [
            (everything, "order.partially_filled", "0.004"),
            (everything, "order.filled", "0.006"),
            (only_filled, "order.filled", "0.006"),
        ]
        assert rows[0].payload["data"]["orderStatus"] == "partially_filled"
        assert len({r.event_key for r in rows}) == 2  # one key per fill


# ------------------------------------------------------- circuit breaker, credentials


@pytest.fixture
def alerts() -> Any:
    """Breaker listeners installed for the test only, on breakers of its own.

    The registry is the process's: a breaker an earlier test of this worker made for the same
    key (``binance:1``) would be handed back with its own state and clocks.
    """
    uninstall_exchange_alerts()
    registry.clear()
    yield
    uninstall_exchange_alerts()
    registry.clear()


def test_breaker_open_and_close_reach_admins_and_the_accounts_bot_owners_once(
    notify_db: NotifyDb, alerts: None
) -> None:
    with http_receiver() as rx:
        ns = _settings(rx)
        admin = notify_db.user("ops@example.com", role="admin")
        owner = notify_db.user("owner@example.com")
        bystander = notify_db.user("other@example.com")
        channels = {
            u: notify_db.channel(u, ns, kind="webhook", url=rx.url + f"/{u}")[0]
            for u in (admin, owner, bystander)
        }
        account, elsewhere = _account(notify_db, owner), _account(notify_db, bystander)
        _trade_on(notify_db, notify_db.bot(owner, "alpha"), account)
        _trade_on(notify_db, notify_db.bot(bystander, "beta"), elsewhere)
        listener = install_exchange_alerts(notify_db.settings)
        now = [1000.0]
        breaker = registry.get(
            f"binance:{account}",
            failure_threshold=2,
            cooldown_s=10,
            clock=lambda: now[0],
            wall_clock=lambda: 1_767_225_600 + now[0],
        )
        down = RetryableExchangeError("exchange unreachable")
        for _ in range(2):
            breaker.record_failure(down)  # the second opens it
        now[0] += 11
        breaker.record_failure(down)  # a failed probe: still the same episode
        now[0] += 11
        breaker.record_success()  # closes it
        breaker.record_success()  # closed already: nothing to tell
        assert listener.flush() == 4
        rows = _rows(notify_db)
        got = sorted((r.channel_id, r.event_type) for r in rows)
        assert got == sorted(
            (channels[u], kind)
            for u in (admin, owner)
            for kind in ("circuit_breaker.opened", "circuit_breaker.closed")
        )
        assert {r.payload["data"]["accountId"] for r in rows} == {account}
        episode = (1_767_225_600 + 1000) * 1000
        assert {r.event_key for r in rows} == {
            f"breaker:binance:{account}:{episode}:opened",
            f"breaker:binance:{account}:{episode}:closed",
        }
        assert rows[0].payload["data"]["failures"] == 2


def test_refused_credentials_reach_the_accounts_owner_once(
    notify_db: NotifyDb, alerts: None
) -> None:
    with http_receiver() as rx:
        ns = _settings(rx)
        admin = notify_db.user("ops@example.com", role="admin")
        owner = notify_db.user("owner@example.com")
        notify_db.channel(admin, ns, kind="webhook", url=rx.url + "/admin")
        mine, _ = notify_db.channel(owner, ns, kind="webhook", url=rx.url + "/owner")
        account = _account(notify_db, owner)
        listener = install_exchange_alerts(notify_db.settings)
        wall = datetime(2026, 3, 1, 10, 15, tzinfo=UTC).timestamp()
        breaker = registry.get(f"binance:{account}", wall_clock=lambda: wall)
        refused = AuthenticationError("binance: invalid API key")
        breaker.record_failure(refused)
        breaker.record_failure(refused)  # still refused: told already
        assert listener.flush() == 1
        rows = _rows(notify_db)
        assert [(r.channel_id, r.event_type) for r in rows] == [(mine, "exchange.auth_failed")]
        assert "invalid API key" in rows[0].payload["data"]["error"]
        assert str(breaker.state) == "closed"  # an answer, not an outage
        assert rows[0].event_key == f"auth_failed:binance:{account}:2026030110"
        # Another process of the same account within the hour: the same key, no new row.
        registry.clear()
        later = registry.get(f"binance:{account}", wall_clock=lambda: wall + 1800)
        later.record_failure(refused)
        assert listener.flush() == 0
        assert len(_rows(notify_db)) == 1


# ------------------------------------------------------------------- reconciliation


def test_reconciliation_on_restart_tells_the_owner_what_differed_once(
    notify_db: NotifyDb, monkeypatch: pytest.MonkeyPatch
) -> None:
    with http_receiver() as rx:
        owner = notify_db.user("owner@example.com")
        other = notify_db.user("other@example.com")
        bot = notify_db.bot(owner)
        notify_db.bot(other, "beta")
        mine, _ = notify_db.channel(owner, _settings(rx), kind="webhook", url=rx.url + "/o")
        notify_db.channel(other, _settings(rx), kind="webhook", url=rx.url + "/x")
        runtime = _runtime(notify_db.settings, bot, _account(notify_db, owner))
        filled = f"co{bot}-{NEWEST - 3 * HOUR}-F"  # filled while the bot was down
        stale = f"co{bot}-{NEWEST - 3 * HOUR}-S"  # never reached the exchange
        long_ago = datetime(2024, 1, 1, tzinfo=UTC)
        for cid in (filled, stale):
            _store(notify_db.settings, bot, cid, "submitted", submitted_at=long_ago)
        broker = runtime.client
        fetch_order = broker.fetch_order

        async def fetch(symbol: str, **kw: Any) -> Any:
            if kw.get("client_order_id") == filled:
                return _answer(filled, OrderStatus.FILLED, "0.01")
            return await fetch_order(symbol, **kw)

        async def trades(symbol: str, **kw: Any) -> list[Fill]:
            return [_fill("r-1", "0.01")]

        monkeypatch.setattr(broker, "fetch_order", fetch)
        monkeypatch.setattr(broker, "fetch_my_trades", trades)

        async def restart_twice() -> None:
            await broker.fund({"USDT": Decimal(10_000)})
            await runtime.prepare()
            await runtime.prepare()  # a second restart: nothing differs any more
            await runtime.close()

        asyncio.run(restart_twice())
        found = [r for r in _rows(notify_db) if r.event_type == "reconciliation.discrepancy"]
        assert [r.channel_id for r in found] == [mine]
        data = found[0].payload["data"]
        assert (data["orders"], data["statusChanged"], data["missedFills"]) == (2, 1, 1)
        assert data["unknownToExchange"] == 1
        assert {d["clientOrderId"] for d in data["details"]} == {filled, stale}


# ------------------------------------------------------------------ risk actor restart


def test_risk_actor_restart_reaches_admins_once_per_incarnation(notify_db: NotifyDb) -> None:
    with http_receiver() as rx:
        ns = _settings(rx)
        admins = [notify_db.user(f"ops{i}@example.com", role="admin") for i in range(2)]
        trader = notify_db.user("t@example.com")
        for u in [*admins, trader]:
            notify_db.channel(u, ns, kind="webhook", url=rx.url + f"/{u}")
        assert notify_risk_actor_restarted(notify_db.settings, "actor1:1000") == 2
        assert notify_risk_actor_restarted(notify_db.settings, "actor1:1000") == 0
        assert notify_risk_actor_restarted(notify_db.settings, "actor1:2000") == 2
        rows = _rows(notify_db)
        assert {r.user_id for r in rows} == set(admins)
        assert {r.event_type for r in rows} == {"risk_actor.restarted"}


# -------------------------------------------------------------------- daily summary


def test_daily_summary_is_enqueued_once_a_day_after_the_chosen_local_time(
    notify_db: NotifyDb, run: Run
) -> None:
    berlin = ZoneInfo("Europe/Berlin")
    # Days ahead of the wall clock: every row written now is due by then.
    day = datetime.now(UTC).astimezone(berlin).date() + timedelta(days=3)
    nine = datetime.combine(day, time(9, 0), tzinfo=berlin).astimezone(UTC)
    with http_receiver() as rx:
        ns = _settings(rx)
        user, other = notify_db.user("a@example.com"), notify_db.user("b@example.com")
        bot, theirs = notify_db.bot(user), notify_db.bot(other, "theirs")
        channel, _ = notify_db.channel(
            user,
            ns,
            kind="webhook",
            url=rx.url + "/s",
            timezone="Europe/Berlin",
            daily_summary_at="09:00",
        )
        notify_db.channel(other, ns, kind="webhook", url=rx.url + "/o")  # no summary chosen
        with notify_db.factory() as session:
            session.add_all(
                [
                    Position(bot_id=bot, symbol="BTC/USDT", amount=Decimal("0.002"),
                             average_price=Decimal("42000")),
                    Position(bot_id=bot, symbol="ETH/USDT", amount=Decimal(0)),
                ]
            )  # fmt: skip
            session.commit()
        notify_db.fills(bot, 3, at=nine - timedelta(hours=5))
        notify_db.fills(bot, 2, at=nine - timedelta(hours=30))  # before the 24 hours
        notify_db.fills(theirs, 4, at=nine - timedelta(hours=5))  # another user's
        clock = FakeClock()
        clock.now = nine - timedelta(minutes=30)
        dispatcher = Dispatcher(notify_db.factory, notify_db.box, ns, clock=clock)

        def summaries() -> list[Notification]:
            return [r for r in _rows(notify_db) if r.event_type == "summary.daily"]

        async def main() -> None:
            assert await dispatcher.run_once() == 2  # the fills of each user, no summary
            assert summaries() == []
            clock.advance(35 * 60)  # 09:05 local
            assert await dispatcher.run_once() == 1
            clock.advance(61)
            assert await dispatcher.run_once() == 0  # once a day
            clock.advance(24 * 3600)
            assert await dispatcher.run_once() == 1  # the next day's

        run(main)
        rows = summaries()
        assert [r.event_key for r in rows] == [
            f"summary:{channel}:{day.isoformat()}",
            f"summary:{channel}:{(day + timedelta(days=1)).isoformat()}",
        ]
        assert {r.channel_id for r in rows} == {channel}
        assert {r.status for r in rows} == {"sent"}
        first, second = (r.payload["data"] for r in rows)
        assert (first["trades"], first["fees"], first["bots"]) == (3, "0.03", 1)
        assert [p["symbol"] for p in first["openPositions"]] == ["BTC/USDT"]
        assert first["openPositions"][0]["amount"] == "0.002"
        assert (first["from"], first["to"]) == (
            (nine - timedelta(hours=24)).isoformat(),
            nine.isoformat(),
        )
        assert second["trades"] == 0  # the fills were the day before
        sent = [e["id"] for r in rx.acknowledged() for e in r.json()["events"]]
        assert sent.count(f"summary:{channel}:{day.isoformat()}") == 1


def test_daily_summary_time_is_validated_and_editable(
    app_factory: Callable[..., TestClient], settings: Settings, db_url: str
) -> None:
    with http_receiver() as rx:
        client = _app(app_factory, settings, db_url, rx)
        me = register_and_login(client, "me@example.com")
        hook = {"name": "h", "kind": "webhook", "url": rx.url + "/h"}
        for bad in ("25:00", "9:00", "noon"):
            field, allowed = _field(
                client.post(
                    "/api/notifications/channels", headers=me, json=hook | {"dailySummaryAt": bad}
                )  # fmt: skip
            )
            assert field == "dailySummaryAt"
            assert "HH:MM" in allowed
        r = client.post(
            "/api/notifications/channels", headers=me, json=hook | {"dailySummaryAt": "18:30"}
        )
        assert r.status_code == 201, r.text
        path = f"/api/notifications/channels/{r.json()['id']}"
        assert r.json()["dailySummaryAt"] == "18:30"
        assert _field(client.patch(path, headers=me, json={"dailySummaryAt": "7"}))[0] == (
            "dailySummaryAt"
        )
        r = client.patch(path, headers=me, json={"dailySummaryAt": None})
        assert r.status_code == 200, r.text
        assert r.json()["dailySummaryAt"] is None
