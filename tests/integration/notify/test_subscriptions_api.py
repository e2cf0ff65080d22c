"""``/api/notifications`` subscriptions, secret rotation and dead letters in the health report,
end to end on SQLite and PostgreSQL: validation (422 naming the field and what is allowed),
ownership (another user's channel is a 404), and secrets never in answers or logs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select, update
from tests.integration.api.conftest import register_and_login
from tests.integration.notify.conftest import bot_row
from tests.integration.notify.receivers import Receiver, http_receiver

from cryptoorchestrator.platform.notify import signing
from cryptoorchestrator.platform.notify.config import NotifySettings
from cryptoorchestrator.platform.settings import Settings
from cryptoorchestrator.platform.storage.models import Notification, User
from cryptoorchestrator.platform.storage.types import utcnow

CHANNELS = "/api/notifications/channels"
TOKEN = "987654:SECRETtokenSECRETtokenSECRETtoken"


def _app(
    app_factory: Callable[..., TestClient], settings: Settings, db_url: str, rx: Receiver
) -> TestClient:
    # No dispatcher task: these tests look at rows, and send by hand.
    ns = NotifySettings(allowed_hosts=[rx.host], telegram_api_base=rx.url, dispatcher=False)
    return app_factory(db_url, settings=settings.model_copy(update={"notify": ns}))


def _factory(client: TestClient) -> Any:
    return client.app.state.context.session_factory  # type: ignore[attr-defined]


def _bot(client: TestClient, email: str, name: str) -> int:
    with _factory(client)() as session:
        user_id = session.scalar(select(User.id).where(User.email == email))
        bot = bot_row(user_id, name)
        session.add(bot)
        session.commit()
        return int(bot.id)


def _field(response: Any) -> tuple[str, str]:
    """The 422's field, and what it says is allowed (its message too)."""
    assert response.status_code == 422, response.text
    detail = response.json()["details"][0]
    return detail["field"], f"{detail.get('allowed', '')} {detail['message']}"


def test_subscription_fields_are_validated_stored_and_editable(
    app_factory: Callable[..., TestClient], settings: Settings, db_url: str
) -> None:
    with http_receiver() as rx:
        client = _app(app_factory, settings, db_url, rx)
        register_and_login(client, "ops@example.com")  # the first account: the admin
        me = register_and_login(client, "me@example.com")
        other = register_and_login(client, "other@example.com")
        mine = _bot(client, "me@example.com", "alpha")
        theirs = _bot(client, "other@example.com", "beta")
        hook = {"name": "h", "kind": "webhook", "url": rx.url + "/h"}

        bad = [
            ({"timezone": "Mars/Olympus"}, "timezone", "IANA"),
            ({"quietStart": "25:00", "quietEnd": "07:00"}, "quietStart", "HH:MM"),
            ({"quietStart": "22:00"}, "quietEnd", ""),
            ({"botIds": [theirs]}, "botIds", "your own bots"),  # another user's bot
            ({"events": ["order.filled", "nope"]}, "events", "backup.failed"),
        ]
        for extra, field, allowed in bad:
            got_field, got_allowed = _field(client.post(CHANNELS, headers=me, json=hook | extra))
            assert got_field == field
            assert allowed in got_allowed
        field, allowed = _field(client.post(CHANNELS, headers=me, json=hook | {"minSeverity": "x"}))
        assert field == "minSeverity"
        assert "critical" in allowed

        r = client.post(
            CHANNELS,
            headers=me,
            json=hook
            | {
                "botIds": [mine],
                "events": ["order.filled", "order.rejected"],
                "minSeverity": "warning",
                "quietStart": "22:00",
                "quietEnd": "07:00",
                "timezone": "Europe/Berlin",
            },
        )
        assert r.status_code == 201, r.text
        created = r.json()
        assert (created["botIds"], created["timezone"]) == ([mine], "Europe/Berlin")
        assert (created["quietStart"], created["quietEnd"]) == ("22:00", "07:00")
        path = f"{CHANNELS}/{created['id']}"

        r = client.patch(path, headers=me, json={"botIds": None, "quietStart": None})
        assert _field(r)[0] == "quietStart"  # half a window is refused; nothing changed
        assert client.get(CHANNELS, headers=me).json()[0]["botIds"] == [mine]
        r = client.patch(
            path,
            headers=me,
            json={
                "botIds": None,
                "quietStart": None,
                "quietEnd": None,
                "events": None,
                "enabled": False,
            },
        )
        assert r.status_code == 200, r.text
        changed = r.json()
        assert changed["botIds"] is None
        assert changed["events"] is None
        assert changed["quietStart"] is None
        assert changed["enabled"] is False
        assert _field(client.patch(path, headers=me, json={"timezone": "Nowhere"}))[0] == (
            "timezone"
        )
        assert _field(client.patch(path, headers=me, json={"secret": "x"}))[0] == "secret"
        # Another user: the channel does not exist for them.
        assert client.patch(path, headers=other, json={"enabled": True}).status_code == 404
        assert client.get(CHANNELS, headers=other).json() == []


def test_rotating_the_secret_shows_it_once_and_signs_with_both_for_the_grace_period(
    app_factory: Callable[..., TestClient], settings: Settings, db_url: str
) -> None:
    with http_receiver() as rx:
        client = _app(app_factory, settings, db_url, rx)
        register_and_login(client, "ops@example.com")
        me = register_and_login(client, "me@example.com")
        other = register_and_login(client, "other@example.com")
        r = client.post(CHANNELS, headers=me, json={"name": "h", "kind": "webhook", "url": rx.url})
        old = r.json()["signingSecret"]
        path = f"{CHANNELS}/{r.json()['id']}"

        assert client.post(f"{path}/rotate-secret", headers=other).status_code == 404
        rotated = client.post(f"{path}/rotate-secret", headers=me)
        assert rotated.status_code == 200, rotated.text
        new = rotated.json()["signingSecret"]
        assert new.startswith("whsec_")
        assert new != old
        assert rotated.json()["previousValidUntil"] is not None

        assert client.post(f"{path}/test", headers=me).json() == {"ok": True, "error": None}
        sent = rx.requests[-1]
        assert len(sent.headers["webhook-signature"].split()) == 2
        for secret in (old, new):  # receivers with either secret accept it
            assert signing.verify(secret, sent.headers, sent.body).startswith("test_")

        # Rotating again: the first secret no longer signs.
        newest = client.post(f"{path}/rotate-secret", headers=me).json()["signingSecret"]
        client.post(f"{path}/test", headers=me)
        last = rx.requests[-1]
        assert signing.verify(newest, last.headers, last.body)
        assert signing.verify(new, last.headers, last.body)
        try:
            signing.verify(old, last.headers, last.body)
        except signing.WebhookVerificationError:
            pass
        else:
            raise AssertionError("a secret two rotations old still signs")

        tg = client.post(
            CHANNELS,
            headers=me,
            json={"name": "tg", "kind": "telegram", "botToken": TOKEN, "chatId": "1"},
        )
        field, allowed = _field(
            client.post(f"{CHANNELS}/{tg.json()['id']}/rotate-secret", headers=me)
        )
        assert field == "kind"
        assert "webhook" in allowed

        listed = client.get(CHANNELS, headers=me).text
        log = client.get("/api/notifications", headers=me).text
        logs = "".join(
            p.read_text(errors="replace") for p in Path(settings.log_dir).rglob("*") if p.is_file()
        )
        for secret in (old, new, newest, TOKEN):
            for text in (listed, log, logs):
                assert secret not in text
                assert secret.removeprefix("whsec_") not in text


def test_dead_letters_in_the_detailed_health_report(
    app_factory: Callable[..., TestClient], settings: Settings, db_url: str
) -> None:
    with http_receiver() as rx:
        client = _app(app_factory, settings, db_url, rx)
        admin = register_and_login(client, "ops@example.com")
        me = register_and_login(client, "me@example.com")
        other = register_and_login(client, "other@example.com")
        r = client.post(CHANNELS, headers=me, json={"name": "h", "kind": "webhook", "url": rx.url})
        channel = r.json()["id"]
        with _factory(client)() as session:
            user_id = session.scalar(select(User.id).where(User.email == "me@example.com"))
            for i in range(3):
                session.add(
                    Notification(
                        channel_id=channel,
                        user_id=user_id,
                        event_key=f"k{i}",
                        event_type="order.filled",
                        severity="info",
                        payload={"title": f"fill {i}"},
                        status="pending",
                        attempts=0,
                        next_attempt_at=utcnow(),
                    )
                )
            session.commit()
            session.execute(
                update(Notification)
                .where(Notification.event_key.in_(["k0", "k1"]))
                .values(status="dead", last_error="receiver answered HTTP 410")
            )
            session.commit()

        def dead_letters(headers: dict[str, str] | None) -> Any:
            body = client.get("/api/health/detailed", headers=headers or {}).json()
            return body.get("notifications")

        assert dead_letters(admin) == {"status": "dead_letters", "dead_letters": 2}
        assert dead_letters(me) == {"status": "dead_letters", "dead_letters": 2}
        assert dead_letters(other) == {"status": "ok", "dead_letters": 0}
        assert dead_letters(None) is None  # anonymous monitors do not see it
        listed = client.get("/api/notifications?status=dead", headers=me).json()
        assert sorted(n["eventKey"] for n in listed) == ["k0", "k1"]
        assert (
            client.post(f"/api/notifications/{listed[0]['id']}/retry", headers=other).status_code
            == 404
        )
        assert client.post(f"/api/notifications/{listed[0]['id']}/retry", headers=me).json() == {
            "requeued": 1
        }
        assert dead_letters(admin)["dead_letters"] == 1
