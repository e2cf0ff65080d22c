"""``/api/notifications`` end to end: channels (write-only secrets), test sends, the delivery
log, ownership, and the running dispatcher delivering a fill, on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select
from tests.integration.api.conftest import register_and_login
from tests.integration.notify.conftest import bot_row
from tests.integration.notify.receivers import Receiver, http_receiver

from cryptoorchestrator.platform.notify import signing
from cryptoorchestrator.platform.notify.config import NotifySettings
from cryptoorchestrator.platform.settings import Settings
from cryptoorchestrator.platform.storage.models import Bot, Order, Trade, User
from cryptoorchestrator.platform.storage.types import utcnow

CHANNELS = "/api/notifications/channels"
TOKEN = "987654:SECRETtokenSECRETtokenSECRETtoken"


def _app(
    app_factory: Callable[..., TestClient],
    settings: Settings,
    db_url: str,
    rx: Receiver,
    **notify: Any,
) -> TestClient:
    ns = NotifySettings(allowed_hosts=[rx.host], telegram_api_base=rx.url, poll_s=0.05, **notify)
    return app_factory(db_url, settings=settings.model_copy(update={"notify": ns}))


def _fill(client: TestClient, email: str) -> int:
    factory: Any = client.app.state.context.session_factory  # type: ignore[attr-defined]
    with factory() as session:
        user_id = session.scalar(select(User.id).where(User.email == email))
        bot = bot_row(user_id)
        session.add(bot)
        session.flush()
        order = Order(
            bot_id=bot.id,
            client_order_id="co-1",
            exchange="paper",
            symbol="BTC/USDT",
            side="sell",
            type="market",
            amount=Decimal("0.5"),
            status="filled",
        )
        session.add(order)
        session.flush()
        trade = Trade(
            bot_id=bot.id,
            order_id=order.id,
            exchange_trade_id="t1",
            symbol="BTC/USDT",
            side="sell",
            price=Decimal("43000"),
            amount=Decimal("0.5"),
            timestamp=utcnow(),
        )
        session.add(trade)
        session.commit()
        return int(trade.id)


def _wait_for(predicate: Callable[[], bool]) -> None:
    # A generous bound on a condition, never a timing assertion: the dispatcher polls.
    deadline = time.monotonic() + 60
    while not predicate():
        assert time.monotonic() < deadline, "the dispatcher did not deliver in time"
        time.sleep(0.05)


def test_channel_lifecycle_and_dispatcher_delivery(
    app_factory: Callable[..., TestClient],
    settings: Settings,
    db_url: str,
) -> None:
    with http_receiver() as rx:
        client = _app(app_factory, settings, db_url, rx)
        me = register_and_login(client, "me@example.com")
        r = client.post(
            CHANNELS,
            headers=me,
            json={"name": "ops hook", "kind": "webhook", "url": rx.url + "/hook/abc"},
        )
        assert r.status_code == 201, r.text
        created = r.json()
        secret = created["signingSecret"]
        assert secret.startswith("whsec_")
        assert created["target"] == f"{rx.url}/…"
        assert "/hook/abc" not in r.text
        tg = client.post(
            CHANNELS,
            headers=me,
            json={"name": "phone", "kind": "telegram", "botToken": TOKEN, "chatId": "77"},
        )
        assert tg.status_code == 201, tg.text
        assert TOKEN not in tg.text
        assert tg.json()["signingSecret"] is None
        listed = client.get(CHANNELS, headers=me)
        assert [c["name"] for c in listed.json()] == ["ops hook", "phone"]
        assert secret not in listed.text
        assert TOKEN not in listed.text
        assert "/hook/abc" not in listed.text

        # A test send, signed.
        test = client.post(f"{CHANNELS}/{created['id']}/test", headers=me)
        assert test.json() == {"ok": True, "error": None}
        sent = rx.requests[-1]
        assert sent.path == "/hook/abc"
        assert signing.verify(secret, sent.headers, sent.body).startswith("test_")

        # A fill, delivered by the app's own dispatcher to both channels.
        trade = _fill(client, "me@example.com")
        _wait_for(
            lambda: (
                sum(1 for q in rx.requests if "events" in q.body.decode()) >= 1
                and any(q.path.startswith(f"/bot{TOKEN}") for q in rx.requests)
            )
        )
        hook = next(q for q in rx.requests if q.path == "/hook/abc" and "fill:" in q.body.decode())
        assert signing.verify(secret, hook.headers, hook.body) == hook.json()["id"]
        assert hook.json()["events"][0]["id"] == f"fill:{trade}"
        _wait_for(
            lambda: (
                {n["status"] for n in client.get("/api/notifications", headers=me).json()}
                == {"sent"}
            )
        )
        log = client.get("/api/notifications", headers=me).json()
        assert {n["eventKey"] for n in log} == {f"fill:{trade}"}
        assert len(log) == 2
        assert all(n["messageId"] for n in log)

        # Another user sees none of it and cannot touch it; an admin neither.
        other = register_and_login(client, "other@example.com")
        assert client.get(CHANNELS, headers=other).json() == []
        assert client.get("/api/notifications", headers=other).json() == []
        assert client.post(f"{CHANNELS}/{created['id']}/test", headers=other).status_code == 404
        assert client.delete(f"{CHANNELS}/{created['id']}", headers=other).status_code == 404

        assert client.delete(f"{CHANNELS}/{created['id']}", headers=me).status_code == 200
        assert [c["name"] for c in client.get(CHANNELS, headers=me).json()] == ["phone"]
        assert client.get(CHANNELS).status_code == 401

        # No secret ever reached a log file.
        logs = "".join(
            p.read_text(errors="replace") for p in Path(settings.log_dir).rglob("*") if p.is_file()
        )
        for value in (secret, TOKEN, "/hook/abc", secret.removeprefix("whsec_")):
            assert value not in logs


def test_two_app_replicas_on_one_database_send_each_fill_once(
    app_factory: Callable[..., TestClient],
    settings: Settings,
    db_url: str,
) -> None:
    with http_receiver() as rx:
        first = _app(app_factory, settings, db_url, rx, max_batch=1)
        second = _app(app_factory, settings, db_url, rx, max_batch=1)
        me = register_and_login(first, "me@example.com")
        for i in range(3):
            r = second.post(
                CHANNELS,
                headers=me,
                json={"name": f"h{i}", "kind": "webhook", "url": rx.url + f"/h{i}"},
            )
            assert r.status_code == 201, r.text
        factory: Any = first.app.state.context.session_factory  # type: ignore[attr-defined]
        _fill(first, "me@example.com")
        with factory() as session:  # more fills of the same bot, in one transaction
            bot_id = session.scalar(select(Bot.id))
            order_id = session.scalar(select(Order.id))
            session.add_all(
                [
                    Trade(
                        bot_id=bot_id,
                        order_id=order_id,
                        exchange_trade_id=f"x{i}",
                        symbol="BTC/USDT",
                        side="sell",
                        price=Decimal(1),
                        amount=Decimal(1),
                        timestamp=utcnow(),
                    )
                    for i in range(9)
                ]
            )
            session.commit()
        _wait_for(lambda: len(rx.acknowledged()) >= 30)
        _wait_for(
            lambda: (
                {n["status"] for n in first.get("/api/notifications?limit=500", headers=me).json()}
                == {"sent"}
            )
        )
        delivered = [(q.path, e["id"]) for q in rx.acknowledged() for e in q.json()["events"]]
        assert len(delivered) == 30
        assert len(set(delivered)) == 30
