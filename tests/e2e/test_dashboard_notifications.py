"""The dashboard's notifications page end to end, in Debian's headless Chromium.

A trader adds a webhook channel that points at a real receiver on loopback (the operator allows
its host), sees its signing secret exactly once (copied, then gone from the page and from every
storage), has a 422 for an ``ftp://`` URL shown next to the URL field, sends a test that the
receiver acknowledges with a valid Standard Webhooks signature, retries a dead letter from the
delivery log, edits the subscription (events, severity, quiet hours, time zone, daily summary),
pauses and resumes the channel, rotates the secret (the next request verifies with the new
secret and, in the grace period, the old one) and removes the channel through its confirmation.
Another user's channels and deliveries never appear on the trader's page, also on a phone-sized
screen.  Screenshots at 1440x900 (dark and light) and 390x844 go to
``test-artifacts/dashboard/``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from tests.e2e.conftest import (
    DESKTOP,
    PHONE,
    WAIT_MS,
    Head,
    _assert_clean,
    _auth,
    _shot,
    _trader_page,
)
from tests.integration.notify.receivers import Receiver, Request, http_receiver

from cryptoorchestrator.platform.notify import signing
from cryptoorchestrator.platform.notify.events import EventType
from cryptoorchestrator.platform.notify.transports import Sender
from cryptoorchestrator.platform.storage.models import Notification, User

pytestmark = [
    pytest.mark.ray,
    pytest.mark.slow,
]

CHANNELS = "/api/notifications/channels"


@pytest.fixture(scope="module")
def receiver(head: Head) -> Iterator[Receiver]:
    """A webhook receiver on loopback whose host the operator allows.

    The module's head node was built without it: its notification settings (read by the
    channel checks of the API and by the dispatcher's sender) are switched to allow the
    receiver's ``127.0.0.1:<port>``, as ``CRYPTOORCH_NOTIFY__ALLOWED_HOSTS`` would.
    """
    with http_receiver() as rx, pytest.MonkeyPatch.context() as mp:
        context = head.app.state.context
        notify = context.settings.notify.model_copy(update={"allowed_hosts": [rx.host]})
        mp.setattr(context, "settings", context.settings.model_copy(update={"notify": notify}))
        dispatcher = head.app.state.notify_dispatcher
        mp.setattr(dispatcher, "settings", notify)
        mp.setattr(dispatcher, "sender", Sender(notify))
        yield rx


def _until(check: Callable[[], bool], what: str) -> None:
    """Wait for ``check`` to hold (a condition, with a deadline far beyond a slow run)."""
    deadline = time.monotonic() + WAIT_MS / 1000
    while not check():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.1)


def _tests_received(rx: Receiver) -> list[Request]:
    with rx.lock:
        requests = list(rx.requests)
    return [r for r in requests if r.json()["events"][0]["type"] == "test"]


def _channels(head: Head, token: str) -> list[dict[str, Any]]:
    with httpx.Client(base_url=head.url, timeout=60) as http:
        r = http.get(CHANNELS, headers=_auth(token))
    assert r.status_code == 200, r.text
    channels: list[dict[str, Any]] = r.json()
    return channels


def _row(page: Any, name: str) -> Any:
    return page.locator(f"table.channels tbody tr:has(td.name strong:text-is('{name}'))")


def _user_id(head: Head, email: str) -> int:
    with head.app.state.context.session_factory() as s:
        found = s.scalar(select(User.id).where(User.email == email))
    assert found is not None
    return int(found)


def _dead_letter(head: Head, channel_id: int, email: str, key: str) -> int:
    """A notification of ``channel_id`` that used up its attempts (as the dispatcher leaves
    one); returns its id."""
    at = datetime.now(UTC)
    payload = {
        "id": key,
        "type": "order.filled",
        "severity": "info",
        "title": f"BUY 0.1 BTC/USDT ({key})",
        "text": "",
        "at": at.isoformat(),
        "data": {},
    }
    with head.app.state.context.session_factory() as s:
        row = Notification(
            channel_id=channel_id,
            user_id=_user_id(head, email),
            event_key=key,
            event_type="order.filled",
            severity="info",
            payload=payload,
            status="dead",
            attempts=8,
            next_attempt_at=at,
            last_error="HTTP 503 from the receiver",
        )
        s.add(row)
        s.commit()
        return int(row.id)


def _status(head: Head, notification_id: int) -> str | None:
    with head.app.state.context.session_factory() as s:
        row = s.get(Notification, notification_id)
        return None if row is None else row.status


def _storage(page: Any) -> str:
    return str(page.evaluate("JSON.stringify([{...localStorage}, {...sessionStorage}])"))


def _read_secret(page: Any) -> str:
    page.wait_for_selector("#secret-dialog[open]")
    secret = page.input_value("#secret-value")
    assert secret.startswith(signing.PREFIX)
    assert "will not be shown again" in page.inner_text("#secret-dialog")
    return secret


def _close_secret(page: Any, secret: str) -> None:
    page.click("#secret-done")
    page.wait_for_selector("#secret-dialog", state="detached")
    # Gone once the dialog closed: not in the page, not in any storage.
    assert secret not in page.content()
    assert secret not in page.evaluate(
        "[...document.querySelectorAll('input')].map(i => i.value).join(' ')"
    )
    assert secret not in _storage(page)


def test_event_catalogue_is_the_platforms(head: Head) -> None:
    with httpx.Client(base_url=head.url, timeout=60) as http:
        assert http.get("/api/notifications/events").status_code == 401
        r = http.get("/api/notifications/events", headers=_auth(head.viewer_token))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["severities"] == ["info", "warning", "error", "critical"]
    listed = {e["type"]: e for e in body["events"]}
    assert set(listed) == {e.value for e in EventType} - {"test"}
    assert listed["kill_switch.engaged"]["severity"] == "critical"
    assert listed["bot.error"]["severity"] == "error"
    assert listed["backup.failed"]["system"] is True
    assert listed["order.filled"]["system"] is False


def test_trader_manages_a_webhook_channel(browser: Any, head: Head, receiver: Receiver) -> None:
    context, page, watch = _trader_page(browser, head, DESKTOP)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=head.url)
    try:
        page.click("nav a[data-route=notifications]")
        page.wait_for_selector("#new-channel:not([disabled])")
        assert page.get_attribute("nav a[data-route=notifications]", "aria-current") == "page"
        page.wait_for_selector("table.channels")
        page.click("#new-channel")
        page.wait_for_selector("#channel-form [data-field=url] input")
        # The event types are the API's catalogue (the test message is not one to choose).
        catalogue = [e.value for e in EventType if e is not EventType.TEST]
        boxes = page.locator("#channel-form input[data-event]")
        assert boxes.count() == len(catalogue)
        assert sorted(boxes.evaluate_all("els => els.map(e => e.value)")) == sorted(catalogue)
        assert page.is_checked("#ev-all")
        # Telegram asks for its own fields; back to a webhook.
        page.select_option("#f-kind", "telegram")
        assert page.is_visible("#f-botToken")
        assert page.is_hidden("#f-url")
        page.select_option("#f-kind", "webhook")
        assert page.is_hidden("#f-botToken")

        # Not http(s): the API's 422 lands next to the URL field, nothing is stored.
        page.fill("#f-name", "ops hook")
        page.fill("#f-url", f"ftp://{receiver.host}/hook")
        watch.expected.append((422, "POST", CHANNELS))
        page.click("#channel-form button[type=submit]")
        page.wait_for_selector("#channel-form [data-field=url] .field-error:not([hidden])")
        assert "https" in page.inner_text("#channel-form [data-field=url] .field-error")
        assert page.get_attribute("#f-url", "aria-invalid") == "true"
        assert page.locator("#channel-form [data-field=name] .field-error").is_hidden()
        assert watch.expected == []
        assert _channels(head, head.trader_token) == []

        # Fixed: created, and its signing secret shown once, with a copy button.
        page.fill("#f-url", f"{receiver.url}/hook")
        page.click("#channel-form button[type=submit]")
        secret = _read_secret(page)
        page.click("#secret-copy")
        page.wait_for_selector("#secret-dialog .copy-state:has-text('Copied')")
        assert page.evaluate("navigator.clipboard.readText()") == secret
        _shot(page, "notifications-secret-1440x900")
        _close_secret(page, secret)
        assert page.locator("#channel-form").count() == 0
        row = _row(page, "ops hook")
        row.wait_for()
        [stored] = _channels(head, head.trader_token)
        assert secret not in str(stored)
        assert stored["target"] == f"{receiver.url}/…"
        assert stored["events"] is None
        assert stored["enabled"] is True
        assert row.get_attribute("data-channel-id") == str(stored["id"])
        assert stored["target"] in row.locator("td.target").inner_text()
        assert "all events" in row.locator("td.subscription").inner_text()
        assert row.locator("td.state").inner_text().strip() == "enabled"

        # A test: acknowledged, and the receiver got one request signed with that secret.
        row.locator("button[data-action=test]").click()
        row.locator(".test-result[data-ok=true]").wait_for()
        [first] = _tests_received(receiver)
        assert signing.verify(secret, first.headers, first.body) == first.json()["id"]
        with pytest.raises(signing.WebhookVerificationError):
            signing.verify(signing.new_secret(), first.headers, first.body)

        # A dead letter in the delivery log: retried by hand, then delivered.
        dead = _dead_letter(head, stored["id"], "trader@example.com", "fill:e2e-dead-1")
        page.click("#log-dead")
        dead_row = page.locator(f"table.deliveries tr[data-notification-id='{dead}']")
        dead_row.wait_for()
        assert dead_row.get_attribute("data-status") == "dead"
        assert "HTTP 503" in dead_row.locator("td.last-error").inner_text()
        assert "ops hook" in dead_row.inner_text()
        _shot(page, "notifications-dead-1440x900")
        dead_row.locator("button[data-action=retry]").click()
        dead_row.wait_for(state="detached")
        _until(lambda: _status(head, dead) == "sent", "the retried notification to be sent")
        with receiver.lock:
            bodies = [r.body for r in receiver.requests]
        assert sum(b"fill:e2e-dead-1" in b for b in bodies) == 1
        page.click("#log-all")
        page.wait_for_selector(
            f"table.deliveries tr[data-notification-id='{dead}'][data-status=sent]"
        )

        # The subscription: a bad time zone is refused next to its field, then fixed.
        row.locator("button[data-action=edit]").click()
        page.wait_for_selector(f"#subscription-form[data-channel-id='{stored['id']}']")
        assert page.input_value("#f-name") == "ops hook"
        page.uncheck("#ev-all")
        page.uncheck("#subscription-form input[data-event='order.filled']")
        page.select_option("#f-minSeverity", "warning")
        page.fill("#f-quietStart", "22:00")
        page.fill("#f-quietEnd", "07:00")
        page.fill("#f-dailySummaryAt", "08:30")
        page.fill("#f-timezone", "Mars/Olympus_Mons")
        watch.expected.append((422, "PATCH", f"{CHANNELS}/{stored['id']}"))
        page.click("#subscription-form button[type=submit]")
        page.wait_for_selector(
            "#subscription-form [data-field=timezone] .field-error:not([hidden])"
        )
        assert "time zone" in page.inner_text(
            "#subscription-form [data-field=timezone] .field-error"
        )
        assert watch.expected == []
        assert _channels(head, head.trader_token)[0]["quietStart"] is None
        page.fill("#f-timezone", "Europe/Berlin")
        page.click("#subscription-form button[type=submit]")
        page.wait_for_selector("#subscription-form", state="detached")
        page.wait_for_selector(
            f"tr[data-channel-id='{stored['id']}'] "
            "td.subscription:has-text('quiet 22:00–07:00 Europe/Berlin')"
        )
        subscription = row.locator("td.subscription")
        assert "warning and above" in subscription.inner_text()
        assert f"{len(catalogue) - 1} event types" in subscription.inner_text()
        [edited] = _channels(head, head.trader_token)
        assert (edited["quietStart"], edited["quietEnd"]) == ("22:00", "07:00")
        assert edited["timezone"] == "Europe/Berlin"
        assert edited["dailySummaryAt"] == "08:30"
        assert edited["minSeverity"] == "warning"
        assert sorted(edited["events"]) == sorted(set(catalogue) - {"order.filled"})
        assert edited["botIds"] is None
        _shot(page, "notifications-1440x900")
        page.click("#theme-toggle")
        _shot(page, "notifications-toggled-theme-1440x900")

        # Paused and resumed.
        row.locator("button[data-action=pause]").click()
        page.wait_for_selector(f"tr[data-channel-id='{stored['id']}'][data-enabled=false]")
        assert _channels(head, head.trader_token)[0]["enabled"] is False
        assert row.locator("td.state").inner_text().strip() == "paused"
        row.locator("button[data-action=resume]").click()
        page.wait_for_selector(f"tr[data-channel-id='{stored['id']}'][data-enabled=true]")
        assert _channels(head, head.trader_token)[0]["enabled"] is True

        # Rotated: a new secret, shown once; the next request verifies with it (and, in the
        # grace period, with the old one too).
        row.locator("button[data-action=rotate]").click()
        page.click("#rotate-dialog-confirm")
        rotated = _read_secret(page)
        assert rotated != secret
        assert "old secret still signs" in page.inner_text("#secret-dialog")
        _close_secret(page, rotated)
        row.locator("button[data-action=test]").click()
        _until(lambda: len(_tests_received(receiver)) == 2, "the second test request")
        second = _tests_received(receiver)[1]
        assert signing.verify(rotated, second.headers, second.body) == second.json()["id"]
        assert signing.verify(secret, second.headers, second.body) == second.json()["id"]
        row.locator(".test-result[data-ok=true]").wait_for()

        # Removed through its confirmation (cancelling keeps it).
        row.locator("button[data-action=remove]").click()
        page.click("#remove-dialog button[value=cancel]")
        page.wait_for_selector("#remove-dialog", state="detached")
        assert row.count() == 1
        assert len(_channels(head, head.trader_token)) == 1
        row.locator("button[data-action=remove]").click()
        page.click("#remove-dialog-confirm")
        row.wait_for(state="detached")
        assert _channels(head, head.trader_token) == []
        page.wait_for_selector("section[aria-label=Channels] > .empty:not([hidden])")
        for shown in (secret, rotated):
            assert shown not in page.content()
            assert shown not in _storage(page)
        _assert_clean(watch)
    finally:
        context.close()


def test_another_users_channels_never_appear(browser: Any, head: Head, receiver: Receiver) -> None:
    made: list[tuple[str, int]] = []
    with httpx.Client(base_url=head.url, timeout=60) as http:
        for token, name in ((head.viewer_token, "viewer hook"), (head.trader_token, "phone hook")):
            body = {"name": name, "kind": "webhook", "url": f"{receiver.url}/{name[:5]}"}
            r = http.post(CHANNELS, json=body, headers=_auth(token))
            assert r.status_code == 201, r.text
            made.append((token, r.json()["id"]))
        (_, viewer_channel), (_, trader_channel) = made
        # The trader cannot reach the viewer's channel through the API either.
        r = http.patch(
            f"{CHANNELS}/{viewer_channel}",
            json={"enabled": False},
            headers=_auth(head.trader_token),
        )
        assert r.status_code == 404
    viewer_dead = _dead_letter(head, viewer_channel, "viewer@example.com", "fill:e2e-viewer")
    trader_dead = _dead_letter(head, trader_channel, "trader@example.com", "fill:e2e-trader")
    context, page, watch = _trader_page(browser, head, PHONE)
    try:
        page.click("nav a[data-route=notifications]")
        _row(page, "phone hook").wait_for()
        # The log names the channel of each delivery (whichever of the two reads came first).
        page.wait_for_selector(
            f"table.deliveries tr[data-notification-id='{trader_dead}']:has-text('phone hook')"
        )
        ids = page.locator("table.channels tbody tr").evaluate_all(
            "rows => rows.map(r => r.dataset.channelId)"
        )
        assert ids == [str(trader_channel)]
        assert "viewer hook" not in page.content()
        logged = page.locator("table.deliveries tbody tr").evaluate_all(
            "rows => rows.map(r => r.dataset.notificationId)"
        )
        assert str(trader_dead) in logged
        assert str(viewer_dead) not in logged
        # Nothing wider than the phone's screen: no sideways scrolling.
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        _shot(page, "notifications-390x844")
        page.click("#new-channel")
        page.wait_for_selector("#channel-form [data-field=url] input")
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        _shot(page, "notifications-form-390x844")
        page.click("#channel-form button:has-text('Cancel')")
        assert page.locator("#channel-form").count() == 0
        _assert_clean(watch)
    finally:
        context.close()
        with httpx.Client(base_url=head.url, timeout=60) as http:
            for token, channel_id in made:
                assert http.delete(f"{CHANNELS}/{channel_id}", headers=_auth(token)).is_success
