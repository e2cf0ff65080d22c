"""Subscriptions in the outbox and the dispatcher, and the system alerts' producers, on SQLite
and PostgreSQL: bot filters, quiet hours (held, released as one digest, critical overtaking),
rejected/canceled orders, integrity findings and backups reaching the admins."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update
from tests.integration.bots.test_order_states_db import _answer, _runtime, _store
from tests.integration.notify.conftest import FakeClock, NotifyDb
from tests.integration.notify.receivers import Receiver, http_receiver

from cryptoorchestrator.platform.model import OrderStatus
from cryptoorchestrator.platform.notify import outbox
from cryptoorchestrator.platform.notify.channels import ChannelService
from cryptoorchestrator.platform.notify.config import NotifySettings
from cryptoorchestrator.platform.notify.dispatcher import Dispatcher
from cryptoorchestrator.platform.notify.events import Event, EventType
from cryptoorchestrator.platform.storage import backup, integrity
from cryptoorchestrator.platform.storage.models import ExchangeAccount, Notification, Order, Trade

Run = Callable[[Callable[[], Awaitable[None]]], None]


def _settings(receiver: Receiver) -> NotifySettings:
    return NotifySettings(allowed_hosts=[receiver.host])


def _rows(db: NotifyDb) -> list[Notification]:
    with db.factory() as session:
        return list(session.scalars(select(Notification).order_by(Notification.id)))


def _paper_runtime(db: NotifyDb, user: int, bot: int) -> Any:
    """The bot runtime of ``bot`` on a new paper account of ``user``."""
    with db.factory() as session:
        account = ExchangeAccount(user_id=user, name="paper", exchange="binance", mode="paper")
        session.add(account)
        session.commit()
        account_id = int(account.id)
    return _runtime(db.settings, bot, account_id)


def _window_around_now() -> tuple[str, str]:
    """Quiet hours from an hour ago to an hour from now (UTC), so "now" is inside them."""
    now = datetime.now(UTC)
    return (now - timedelta(hours=1)).strftime("%H:%M"), (now + timedelta(hours=1)).strftime(
        "%H:%M"
    )


def test_bot_filter_decides_which_fills_are_enqueued(notify_db: NotifyDb) -> None:
    with http_receiver() as rx:
        user = notify_db.user("a@example.com")
        mine, other = notify_db.bot(user, "alpha"), notify_db.bot(user, "beta")
        notify_db.channel(user, _settings(rx), kind="webhook", url=rx.url + "/h", bot_ids=[mine])
        kept = notify_db.fills(mine, 2)
        notify_db.fills(other, 3)
        assert [r.event_key for r in _rows(notify_db)] == [f"fill:{i}" for i in kept]


def test_quiet_hours_hold_fills_release_them_as_one_digest_and_let_critical_through(
    notify_db: NotifyDb, clock: FakeClock, run: Run
) -> None:
    with http_receiver() as rx:
        settings = _settings(rx)
        user = notify_db.user("a@example.com")
        bot = notify_db.bot(user)
        start, end = _window_around_now()
        notify_db.channel(
            user,
            settings,
            kind="webhook",
            url=rx.url + "/h",
            quiet_start=start,
            quiet_end=end,
            timezone="UTC",
        )
        fills = notify_db.fills(bot, 3)
        held = _rows(notify_db)
        assert {r.status for r in held} == {"held"}
        assert all(r.next_attempt_at > clock.now + timedelta(minutes=30) for r in held)
        with notify_db.factory() as session:  # the kill switch: critical, never held
            kill = Event(
                EventType.KILL_SWITCH_ENGAGED, "kill:1", "Kill switch", "engaged", clock.now
            )
            outbox.enqueue(session, user, kill)
            session.commit()
        assert [r.status for r in _rows(notify_db)] == ["held"] * 3 + ["pending"]
        dispatcher = Dispatcher(notify_db.factory, notify_db.box, settings, clock=clock)

        async def main() -> None:
            assert await dispatcher.run_once() == 1  # the kill switch alone
            assert await dispatcher.run_once() == 0  # the fills stay held
            clock.advance(2 * 3600 + 60)  # after the window
            assert await dispatcher.run_once() == 1  # the three fills: one digest
            assert await dispatcher.run_once() == 0

        run(main)
        messages = [[e["id"] for e in r.json()["events"]] for r in rx.acknowledged()]
        assert messages == [["kill:1"], [f"fill:{i}" for i in fills]]
        assert {r.status for r in _rows(notify_db)} == {"sent"}


def test_removing_quiet_hours_releases_held_rows(
    notify_db: NotifyDb, clock: FakeClock, run: Run
) -> None:
    with http_receiver() as rx:
        settings = _settings(rx)
        user = notify_db.user("a@example.com")
        bot = notify_db.bot(user)
        start, end = _window_around_now()
        channel, _ = notify_db.channel(
            user, settings, kind="webhook", url=rx.url + "/h", quiet_start=start, quiet_end=end
        )
        notify_db.fills(bot, 2)
        with notify_db.factory() as session:
            service = ChannelService(session, notify_db.box, settings, user)
            service.update(channel, {"quiet_start": None, "quiet_end": None})
            session.commit()
        dispatcher = Dispatcher(notify_db.factory, notify_db.box, settings, clock=clock)

        async def main() -> None:
            assert await dispatcher.run_once() == 1

        run(main)
        assert len(rx.acknowledged()) == 1
        assert {r.status for r in _rows(notify_db)} == {"sent"}


def _order(db: NotifyDb, bot: int, status: str = "open") -> int:
    with db.factory() as session:
        order = Order(
            bot_id=bot,
            client_order_id=f"co{bot}-{status}-{datetime.now(UTC).timestamp()}",
            exchange="paper",
            symbol="BTC/USDT",
            side="buy",
            type="limit",
            amount=Decimal("0.5"),
            price=Decimal(40000),
            status=status,
        )
        session.add(order)
        session.commit()
        return int(order.id)


def test_rejected_and_canceled_orders_are_enqueued_with_their_update(notify_db: NotifyDb) -> None:
    with http_receiver() as rx:
        user = notify_db.user("a@example.com")
        bot = notify_db.bot(user)
        notify_db.channel(user, _settings(rx), kind="webhook", url=rx.url + "/h")
        canceled, rejected, rolled_back = (_order(notify_db, bot) for _ in range(3))
        engine = notify_db.factory.kw["bind"]
        orders = Order.__table__
        with engine.begin() as conn:
            for pk, status in ((canceled, "canceled"), (rejected, "rejected")):
                conn.execute(update(orders).where(orders.c.id == pk).values(status=status))
            updates = {canceled: {"status": "canceled"}, rejected: {"status": "rejected"}}
            outbox.enqueue_order_updates(conn, updates)
            # The same answer again notifies nobody twice (one row per channel and key).
            outbox.enqueue_order_updates(conn, updates)

        def cancel_then_fail() -> None:
            with engine.begin() as conn:
                conn.execute(
                    update(orders).where(orders.c.id == rolled_back).values(status="canceled")
                )
                outbox.enqueue_order_updates(conn, {rolled_back: {"status": "canceled"}})
                raise RuntimeError("the transaction fails")

        with pytest.raises(RuntimeError):  # a rolled-back update notifies nobody
            cancel_then_fail()
        rows = _rows(notify_db)
        assert [(r.event_key, r.event_type) for r in rows] == [
            (f"order:{canceled}:canceled", "order.canceled"),
            (f"order:{rejected}:rejected", "order.rejected"),
        ]
        assert rows[1].payload["data"]["botId"] == bot
        assert rows[1].severity == "warning"


def test_integrity_findings_reach_admins_once(notify_db: NotifyDb) -> None:
    with http_receiver() as rx:
        admin = notify_db.user("ops@example.com", role="admin")
        trader = notify_db.user("t@example.com")
        notify_db.channel(admin, _settings(rx), kind="webhook", url=rx.url + "/ops")
        notify_db.channel(trader, _settings(rx), kind="webhook", url=rx.url + "/t")
        bot = notify_db.bot(trader)
        broken = _order(notify_db, bot, status="rejected")
        with notify_db.factory() as session:  # a rejected order with a fill: a finding
            session.add(
                Trade(
                    bot_id=bot,
                    order_id=broken,
                    exchange_trade_id="x1",
                    symbol="BTC/USDT",
                    side="buy",
                    price=Decimal(40000),
                    amount=Decimal("0.1"),
                    timestamp=datetime(2026, 1, 5, tzinfo=UTC),
                )
            )
            session.commit()
        report = integrity.run_check(notify_db.settings)
        assert report.recorded >= 1
        alerts = [r for r in _rows(notify_db) if r.event_type == "integrity.findings"]
        assert len(alerts) == 1
        (alert,) = alerts
        assert alert.user_id == admin
        assert alert.payload["data"]["counts"]["order_fills_mismatch"] >= 1
        # A second check finds nothing new: no second alert.
        integrity.run_check(notify_db.settings)
        assert len([r for r in _rows(notify_db) if r.event_type == "integrity.findings"]) == 1


def test_backup_done_and_failed_reach_admins(
    notify_db: NotifyDb, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not notify_db.settings.database_url.startswith("sqlite"):
        pytest.skip("the backup's producer is the same on PostgreSQL; pg_dump is not needed here")
    with http_receiver() as rx:
        admin = notify_db.user("ops@example.com", role="admin")
        trader = notify_db.user("t@example.com")
        notify_db.channel(admin, _settings(rx), kind="webhook", url=rx.url + "/ops")
        notify_db.channel(trader, _settings(rx), kind="webhook", url=rx.url + "/t")
        backup.create_backup(notify_db.settings, tmp_path / "b1", market_data=False)

        def broken(*_args: object) -> list[Path]:
            raise OSError("disk full")

        monkeypatch.setattr(backup, "_copy_market_data", broken)
        with pytest.raises(OSError, match="disk full"):
            backup.create_backup(notify_db.settings, tmp_path / "b2", market_data=True)
        rows = _rows(notify_db)
        assert [(r.event_type, r.user_id) for r in rows] == [
            ("backup.done", admin),
            ("backup.failed", admin),
        ]
        assert rows[1].severity == "error"
        assert "disk full" in rows[1].payload["text"]


def test_a_bots_canceled_and_rejected_answers_notify_through_its_recording(
    notify_db: NotifyDb,
) -> None:
    """The bot runtime's own recording step (``records``) enqueues with the order's update."""
    with http_receiver() as rx:
        user = notify_db.user("a@example.com")
        bot = notify_db.bot(user)
        notify_db.channel(user, _settings(rx), kind="webhook", url=rx.url + "/h")
        runtime = _paper_runtime(notify_db, user, bot)
        for suffix, final in (("C", OrderStatus.CANCELED), ("R", OrderStatus.REJECTED)):
            cid = f"co{bot}-1-{suffix}"
            _store(notify_db.settings, bot, cid, OrderStatus.SUBMITTED.value)
            runtime.record_answer(_answer(cid, final), [])
            runtime.record_answer(_answer(cid, OrderStatus.OPEN), [])  # late: no move, no news
            runtime.record_answer(_answer(cid, final), [])  # the same word again: no news
        rows = _rows(notify_db)
        assert [r.event_type for r in rows] == ["order.canceled", "order.rejected"]
        assert [r.payload["data"]["clientOrderId"] for r in rows] == [
            f"co{bot}-1-C",
            f"co{bot}-1-R",
        ]


def test_orders_rejected_or_canceled_at_submission_notify_once(notify_db: NotifyDb) -> None:
    """``_mark`` (the exchange refused the order, or it was never sent) enqueues in its write."""
    from cryptoorchestrator.platform.model import orders as lifecycle

    with http_receiver() as rx:
        user = notify_db.user("m@example.com")
        bot = notify_db.bot(user)
        notify_db.channel(user, _settings(rx), kind="webhook", url=rx.url + "/h")
        runtime = _paper_runtime(notify_db, user, bot)
        rejected, unsent = f"co{bot}-2-R", f"co{bot}-2-C"
        _store(notify_db.settings, bot, rejected, OrderStatus.SUBMITTED.value)
        _store(notify_db.settings, bot, unsent, OrderStatus.SUBMITTED.value)
        assert runtime._mark(lifecycle.OrderRejected(rejected, "insufficient balance"))  # noqa: SLF001
        assert runtime._mark(lifecycle.OrderCanceled(unsent, "not sent: timeout"))  # noqa: SLF001
        # a final order does not move again, and says nothing more
        assert not runtime._mark(lifecycle.OrderCanceled(rejected, "late"))  # noqa: SLF001
        rows = _rows(notify_db)
        assert [(r.event_type, r.payload["data"]["clientOrderId"]) for r in rows] == [
            ("order.rejected", rejected),
            ("order.canceled", unsent),
        ]
