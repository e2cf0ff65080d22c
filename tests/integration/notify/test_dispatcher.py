"""The outbox and its dispatcher against real receivers on loopback, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Awaitable, Callable

import pytest
from sqlalchemy import select
from tests.integration.notify.conftest import FakeClock, NotifyDb
from tests.integration.notify.receivers import Receiver, http_receiver

from cryptoorchestrator.platform.notify import signing
from cryptoorchestrator.platform.notify.config import NotifySettings
from cryptoorchestrator.platform.notify.dispatcher import Claim, Dispatcher, retry_dead
from cryptoorchestrator.platform.storage.models import Notification

Run = Callable[[Callable[[], Awaitable[None]]], None]


def _settings(receiver: Receiver, **overrides: object) -> NotifySettings:
    values: dict[str, object] = {"allowed_hosts": [receiver.host], "backoff_base_s": 10.0}
    values.update(overrides)
    return NotifySettings(**values)  # type: ignore[arg-type]


def _rows(db: NotifyDb) -> list[Notification]:
    with db.factory() as session:
        return list(session.scalars(select(Notification).order_by(Notification.id)))


def _event_ids(receiver: Receiver) -> list[str]:
    return [e["id"] for r in receiver.acknowledged() for e in r.json()["events"]]


def test_fill_is_written_with_its_fact_and_only_once(notify_db: NotifyDb) -> None:
    with http_receiver() as rx:
        user = notify_db.user("a@example.com")
        bot = notify_db.bot(user)
        notify_db.channel(user, _settings(rx), url=rx.url + "/hook", kind="webhook")
        notify_db.fills(bot, 2, commit=False)
        assert _rows(notify_db) == []  # a rolled-back fact notifies nobody
        ids = notify_db.fills(bot, 3)
        rows = _rows(notify_db)
        assert [r.event_key for r in rows] == [f"fill:{i}" for i in ids]
        assert rows[0].payload["data"]["price"] == "42000.5"
        # Enqueueing the same fact again writes nothing: one row per (channel, event key).
        from cryptoorchestrator.platform.notify.outbox import enqueue_many, facts_to_events
        from cryptoorchestrator.platform.storage.models import Trade

        with notify_db.factory() as session:
            trades = list(session.scalars(select(Trade).where(Trade.id.in_(ids))))
            conn = session.connection()
            assert enqueue_many(conn, facts_to_events(conn, trades)) == 0
            session.commit()
        assert len(_rows(notify_db)) == 3


def test_receiver_failing_twice_gets_one_acknowledged_delivery_after_backoff(
    notify_db: NotifyDb, clock: FakeClock, run: Run
) -> None:
    with http_receiver(script=[500, 503]) as rx:
        settings = _settings(rx)
        user = notify_db.user("a@example.com")
        bot = notify_db.bot(user)
        _, secret = notify_db.channel(user, settings, kind="webhook", url=rx.url + "/hook")
        assert secret is not None
        (trade,) = notify_db.fills(bot, 1)
        dispatcher = Dispatcher(
            notify_db.factory, notify_db.box, settings, clock=clock, jitter=lambda: 0.999
        )
        waits: list[float] = []

        async def main() -> None:
            assert await dispatcher.run_once() == 1  # 500
            first = _rows(notify_db)[0]
            assert (first.status, first.attempts) == ("pending", 1)
            waits.append((first.next_attempt_at - clock.now).total_seconds())
            assert await dispatcher.run_once() == 0  # not due yet: nothing sent
            clock.advance(waits[0] + 1)
            assert await dispatcher.run_once() == 1  # 503
            second = _rows(notify_db)[0]
            waits.append((second.next_attempt_at - clock.now).total_seconds())
            clock.advance(waits[1] + 1)
            assert await dispatcher.run_once() == 1  # 200
            assert await dispatcher.run_once() == 0

        run(main)
        assert len(rx.requests) == 3
        assert len(rx.acknowledged()) == 1
        # Exponential: the second wait is about twice the first (same jitter).
        assert waits[0] > 0
        assert waits[1] > 1.9 * waits[0]
        ids = {r.headers["webhook-id"] for r in rx.requests}
        assert len(ids) == 1  # every retry carries the same message id
        assert {r.headers["idempotency-key"] for r in rx.requests} == ids
        (row,) = _rows(notify_db)
        assert (row.status, row.attempts, row.batch_key) == ("sent", 3, ids.pop())
        good = rx.acknowledged()[0]
        assert signing.verify(secret, good.headers, good.body) == row.batch_key
        assert _event_ids(rx) == [f"fill:{trade}"]


def test_crash_between_send_and_mark_resends_with_the_same_key(
    notify_db: NotifyDb, clock: FakeClock, run: Run
) -> None:
    with http_receiver() as rx:
        settings = _settings(rx, lease_s=60.0)
        user = notify_db.user("a@example.com")
        bot = notify_db.bot(user)
        notify_db.channel(user, settings, kind="webhook", url=rx.url + "/hook")
        notify_db.fills(bot, 4)

        async def crash(_claim: Claim) -> None:
            raise asyncio.CancelledError  # the worker dies after the send, before the mark

        first = Dispatcher(notify_db.factory, notify_db.box, settings, clock=clock)
        first.after_send = crash
        second = Dispatcher(notify_db.factory, notify_db.box, settings, clock=clock)

        async def main() -> None:
            task = asyncio.create_task(first.run_once())
            with pytest.raises(asyncio.CancelledError):
                await task
            assert len(rx.requests) == 1
            assert {r.status for r in _rows(notify_db)} == {"sending"}
            # Within the claim's lease nobody sends it again...
            assert await second.run_once() == 0
            # ...after it, the same rows go again as the same message.
            clock.advance(61)
            assert await second.run_once() == 1

        run(main)
        assert len(rx.requests) == 2
        assert rx.requests[0].headers["webhook-id"] == rx.requests[1].headers["webhook-id"]
        assert rx.requests[0].body == rx.requests[1].body
        assert {r.status for r in _rows(notify_db)} == {"sent"}


def test_two_dispatchers_never_send_a_row_twice(notify_db: NotifyDb) -> None:
    with http_receiver() as rx:
        settings = _settings(rx, max_batch=3, poll_s=0.01)
        user = notify_db.user("a@example.com")
        bot = notify_db.bot(user)
        for i in range(4):
            notify_db.channel(user, settings, name=f"hook{i}", kind="webhook", url=rx.url + "/h")
        notify_db.fills(bot, 15)
        expected = 4 * 15
        errors: list[BaseException] = []

        def worker() -> None:
            dispatcher = Dispatcher(notify_db.factory, notify_db.box, settings)

            async def drain() -> None:
                # Until every row is sent (by either worker).
                while any(r.status != "sent" for r in _rows(notify_db)):
                    if await dispatcher.run_once() == 0:
                        await asyncio.sleep(0.01)

            try:
                asyncio.run(drain())
            except BaseException as exc:  # reported to the test below
                errors.append(exc)

        threads = [threading.Thread(target=worker) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        per_message = Counter(r.headers["webhook-id"] for r in rx.requests)
        assert all(n == 1 for n in per_message.values())
        delivered = Counter(
            (r.path, e["id"], r.headers["webhook-id"].split("_")[1])
            for r in rx.requests
            for e in r.json()["events"]
        )
        assert sum(delivered.values()) == expected
        assert all(n == 1 for n in delivered.values())
        assert len(rx.requests) == len(per_message)


def test_burst_of_fifty_fills_is_coalesced_and_none_is_lost(
    notify_db: NotifyDb, clock: FakeClock, run: Run
) -> None:
    with http_receiver() as rx:
        settings = _settings(rx)
        user = notify_db.user("a@example.com")
        bot = notify_db.bot(user)
        notify_db.channel(user, settings, kind="webhook", url=rx.url + "/hook")
        ids = notify_db.fills(bot, 50)
        dispatcher = Dispatcher(notify_db.factory, notify_db.box, settings, clock=clock)

        async def main() -> None:
            while await dispatcher.run_once():
                pass

        run(main)
        assert len(rx.requests) == 1
        assert sorted(_event_ids(rx)) == sorted(f"fill:{i}" for i in ids)
        assert {r.status for r in _rows(notify_db)} == {"sent"}


def test_dead_letter_after_max_attempts_and_retry_by_hand(
    notify_db: NotifyDb, clock: FakeClock, run: Run
) -> None:
    with http_receiver(default=500) as rx:
        settings = _settings(rx, max_attempts=3)
        user = notify_db.user("a@example.com")
        bot = notify_db.bot(user)
        notify_db.channel(user, settings, kind="webhook", url=rx.url + "/hook")
        notify_db.fills(bot, 1)
        dispatcher = Dispatcher(notify_db.factory, notify_db.box, settings, clock=clock)

        async def attempts(n: int) -> None:
            for _ in range(n):
                await dispatcher.run_once()
                clock.advance(settings.backoff_max_s + 1)

        run(lambda: attempts(5))
        assert len(rx.requests) == 3
        (row,) = _rows(notify_db)
        assert (row.status, row.attempts) == ("dead", 3)
        assert row.last_error == "receiver answered HTTP 500"
        rx.default = 200
        with notify_db.factory() as session:
            assert retry_dead(session, user + 1000, row.id) == 0  # not the owner
            assert retry_dead(session, user, row.id) == 1
            session.commit()
        run(lambda: attempts(1))
        (row,) = _rows(notify_db)
        assert row.status == "sent"
        assert len({r.headers["webhook-id"] for r in rx.requests}) == 1


def test_channel_order_is_kept_behind_a_failing_message(
    notify_db: NotifyDb, clock: FakeClock, run: Run
) -> None:
    with http_receiver(script=[500]) as rx:
        settings = _settings(rx, max_batch=1)
        user = notify_db.user("a@example.com")
        bot = notify_db.bot(user)
        notify_db.channel(user, settings, kind="webhook", url=rx.url + "/hook")
        ids = notify_db.fills(bot, 3)
        dispatcher = Dispatcher(notify_db.factory, notify_db.box, settings, clock=clock)

        async def main() -> None:
            await dispatcher.run_once()  # the first fails; the others must wait behind it
            assert len(rx.requests) == 1
            clock.advance(settings.backoff_max_s)
            while await dispatcher.run_once():
                pass

        run(main)
        assert _event_ids(rx) == [f"fill:{i}" for i in ids]
