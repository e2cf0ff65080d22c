"""Facts become events for the right users, and each kind of channel gets its own format."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from sqlalchemy import select
from tests.integration.notify.conftest import FakeClock, NotifyDb
from tests.integration.notify.receivers import http_receiver, smtp_receiver

from cryptoorchestrator.platform.bots.status import set_bot_status
from cryptoorchestrator.platform.model import BotStatus
from cryptoorchestrator.platform.notify import signing
from cryptoorchestrator.platform.notify.config import NotifySettings
from cryptoorchestrator.platform.notify.dispatcher import Dispatcher
from cryptoorchestrator.platform.risk import store
from cryptoorchestrator.platform.storage.models import Notification

Run = Callable[[Callable[[], Awaitable[None]]], None]
TOKEN = "123456:ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef"


def _rows(db: NotifyDb) -> list[Notification]:
    with db.factory() as session:
        return list(session.scalars(select(Notification).order_by(Notification.id)))


def test_status_risk_and_kill_switch_events_reach_owner_user_and_admins(
    notify_db: NotifyDb,
) -> None:
    with http_receiver() as rx:
        ns = NotifySettings(allowed_hosts=[rx.host])
        owner = notify_db.user("owner@example.com")
        other = notify_db.user("other@example.com")
        admin = notify_db.user("admin@example.com", role="admin")
        bot = notify_db.bot(owner)
        notify_db.channel(owner, ns, kind="webhook", url=rx.url + "/o")
        # Only errors and worse on this one: the Running status must not reach it.
        notify_db.channel(other, ns, kind="webhook", url=rx.url + "/x", min_severity="error")
        notify_db.channel(
            admin, ns, kind="webhook", url=rx.url + "/a", events=["kill_switch.engaged"]
        )
        with notify_db.factory() as session:
            set_bot_status(session, bot, BotStatus.STARTING)
            set_bot_status(session, bot, BotStatus.RUNNING)
            set_bot_status(session, bot, BotStatus.ERROR, "exchange said no")
            store.record_event(session, "denial", "order denied", bot_id=bot, limit_name="exposure")
            store.record_event(
                session, "kill_switch", "kill switch activated", details={"scope": "global"}
            )
            store.record_event(
                session,
                "kill_switch",
                "kill switch activated by its owner",
                details={"scope": f"user:{other}"},
            )
            session.commit()
        by_user: dict[int, list[str]] = {}
        for row in _rows(notify_db):
            by_user.setdefault(row.user_id, []).append(row.event_type)
        assert by_user[owner] == ["bot.starting", "bot.running", "bot.error", "risk.denial"]
        assert by_user[admin] == ["kill_switch.engaged"]
        assert by_user[other] == ["kill_switch.engaged"]
        error = next(r for r in _rows(notify_db) if r.event_type == "bot.error")
        assert error.event_key.startswith("bot_status:")
        assert "exchange said no" in error.payload["text"]
        kill = next(r for r in _rows(notify_db) if r.user_id == admin)
        assert kill.event_key.startswith("kill:")
        assert kill.severity == "critical"


def test_telegram_discord_slack_and_email_formats(
    notify_db: NotifyDb, clock: FakeClock, run: Run
) -> None:
    with http_receiver() as tg, http_receiver() as hooks, smtp_receiver() as mail:
        ns = NotifySettings(
            allowed_hosts=[hooks.host, "127.0.0.1"],
            telegram_api_base=tg.url,
            smtp_host="127.0.0.1",
            smtp_port=mail.port,
            smtp_starttls=False,
        )
        user = notify_db.user("a@example.com")
        bot = notify_db.bot(user, name="alpha")
        notify_db.channel(user, ns, name="tg", kind="telegram", bot_token=TOKEN, chat_id="-100123")
        notify_db.channel(user, ns, name="dc", kind="discord", url=hooks.url + "/api/webhooks/1/x")
        notify_db.channel(user, ns, name="sl", kind="slack", url=hooks.url + "/services/T/B/x")
        notify_db.channel(user, ns, name="em", kind="email", address="me@example.com")
        (trade,) = notify_db.fills(bot, 1)
        dispatcher = Dispatcher(notify_db.factory, notify_db.box, ns, clock=clock)

        async def main() -> None:
            while await dispatcher.run_once():
                pass

        run(main)
        (tg_req,) = tg.requests
        assert tg_req.path == f"/bot{TOKEN}/sendMessage"
        assert tg_req.json()["chat_id"] == "-100123"
        assert "alpha: BUY 0.001 BTC/USDT @ 42000.5" in tg_req.json()["text"]
        by_path = {r.path: r.json() for r in hooks.requests}
        assert "Filled BUY 0.001 BTC/USDT" in by_path["/api/webhooks/1/x"]["content"]
        assert "Filled BUY 0.001 BTC/USDT" in by_path["/services/T/B/x"]["text"]
        (message,) = mail.messages
        assert message["To"] == "me@example.com"
        assert message["Subject"] == "alpha: BUY 0.001 BTC/USDT @ 42000.5"
        keys = {r.batch_key for r in _rows(notify_db) if r.channel_id}
        assert message["Message-ID"].strip("<>").split("@")[0] in keys
        assert {r.status for r in _rows(notify_db)} == {"sent"}
        assert all(r.event_key == f"fill:{trade}" for r in _rows(notify_db))


def test_webhook_digest_text_lists_the_first_and_counts_the_rest(
    notify_db: NotifyDb, clock: FakeClock, run: Run
) -> None:
    with http_receiver() as tg:
        ns = NotifySettings(telegram_api_base=tg.url)
        user = notify_db.user("a@example.com")
        bot = notify_db.bot(user)
        notify_db.channel(user, ns, name="tg", kind="telegram", bot_token=TOKEN, chat_id="42")
        notify_db.fills(bot, 50)
        dispatcher = Dispatcher(notify_db.factory, notify_db.box, ns, clock=clock)

        async def main() -> None:
            while await dispatcher.run_once():
                pass

        run(main)
        (request,) = tg.requests
        text = request.json()["text"]
        assert text.startswith("50 events: 50 order.filled")
        assert "... and 30 more" in text
        assert len(text) <= 4096


def test_signing_secret_and_destinations_are_encrypted_at_rest(notify_db: NotifyDb) -> None:
    with http_receiver() as rx:
        ns = NotifySettings(allowed_hosts=[rx.host])
        user = notify_db.user("a@example.com")
        channel_id, secret = notify_db.channel(user, ns, kind="webhook", url=rx.url + "/hook")
        assert secret is not None
        assert secret.startswith(signing.PREFIX)
        from sqlalchemy import text

        with notify_db.factory() as session:
            raw = session.execute(
                text("SELECT config_enc, target_hint FROM notification_channels WHERE id = :i"),
                {"i": channel_id},
            ).one()
        assert secret.encode() not in bytes(raw[0])
        assert b"/hook" not in bytes(raw[0])
        assert raw[1] == f"{rx.url}/…"
