"""Server-side request forgery through notification channels, and their secrets' exposure.

A tenant's webhook (or Discord/Slack) URL decides where the head node sends requests.  Each
attack is refused with a 422 naming the field, and a counting server on loopback (the stand-in
for an internal service) proves that nothing reached it.  Every test runs on SQLite and
PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.integration.notify.receivers import http_receiver
from tests.security.conftest import assert_error_shape
from tests.security.http_servers import CountingServer, counting_server, login_as

from cryptoorchestrator.platform.notify.config import NotifySettings

CHANNELS = "/api/notifications/channels"


def _refused(response: Any, field: str) -> None:
    assert response.status_code == 422, response.text
    body = response.json()
    assert_error_shape(body, "invalid_input")
    assert [d for d in body["details"] if d["field"] == field], body


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("loopback", "https"),
        ("https://127.0.0.1:{port}/hook", "non-public"),
        ("https://localhost:{port}/hook", "non-public"),
        ("https://10.0.0.7/hook", "non-public"),
        ("https://192.168.1.1/hook", "non-public"),
        ("https://169.254.169.254/latest/meta-data", "non-public"),
        ("https://[::1]:{port}/hook", "non-public"),
        ("https://user:secret@93.184.216.34/hook", "credentials"),
        ("http://93.184.216.34/hook", "https"),
        ("file:///etc/passwd", "https"),
        ("gopher://127.0.0.1:{port}/", "https"),
    ],
)
def test_webhook_urls_to_internal_or_insecure_places_are_refused(
    make_client: Callable[..., TestClient], server: CountingServer, url: str, why: str
) -> None:
    client = make_client()
    headers = login_as(client, "t@example.com")
    target = server.url + "/hook" if url == "loopback" else url.format(port=server.port)
    r = client.post(CHANNELS, json={"name": "x", "kind": "webhook", "url": target}, headers=headers)
    _refused(r, "url")
    assert why in r.json()["message"]
    assert server.hits == []
    assert client.get(CHANNELS, headers=headers).json() == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"kind": "discord", "url": "https://93.184.216.34/api/webhooks/1/x"}, "url"),
        ({"kind": "slack", "url": "https://discord.com/services/T/B/x"}, "url"),
        ({"kind": "discord", "url": "https://discord.com/not-a-webhook"}, "url"),
        ({"kind": "telegram", "botToken": "nope", "chatId": "1"}, "botToken"),
        ({"kind": "telegram", "botToken": "1:" + "a" * 30, "chatId": "1; drop"}, "chatId"),
        ({"kind": "email", "address": "me@example.com"}, "kind"),  # no SMTP server configured
        ({"kind": "pager", "url": "https://discord.com/api/webhooks/1/x"}, "kind"),
        ({"kind": "webhook", "url": "https://93.184.216.34/h", "events": ["order.nope"]}, "events"),
        (
            {"kind": "webhook", "url": "https://93.184.216.34/h", "minSeverity": "loud"},
            "minSeverity",
        ),
        ({"kind": "webhook", "url": "https://93.184.216.34/h", "extra": 1}, "extra"),
    ],
)
def test_bad_channels_are_refused_naming_the_field(
    make_client: Callable[..., TestClient], body: dict[str, Any], field: str
) -> None:
    client = make_client()
    headers = login_as(client, "t@example.com")
    _refused(client.post(CHANNELS, json={"name": "x", **body}, headers=headers), field)


def test_redirects_are_not_followed(
    make_client: Callable[..., TestClient], server: CountingServer
) -> None:
    with http_receiver(default=302) as rx:
        rx.location = server.url + "/internal"
        client = make_client(notify=NotifySettings(allowed_hosts=[rx.host], dispatcher=False))
        headers = login_as(client, "t@example.com")
        r = client.post(
            CHANNELS, json={"name": "x", "kind": "webhook", "url": rx.url + "/h"}, headers=headers
        )
        assert r.status_code == 201, r.text
        result = client.post(f"{CHANNELS}/{r.json()['id']}/test", headers=headers).json()
        assert result["ok"] is False
        assert "redirect" in result["error"]
        assert len(rx.requests) == 1
        assert server.hits == []


def test_a_host_allowed_only_on_another_port_is_refused(
    make_client: Callable[..., TestClient], server: CountingServer
) -> None:
    with counting_server() as other:
        client = make_client(notify=NotifySettings(allowed_hosts=[other.host], dispatcher=False))
        headers = login_as(client, "t@example.com")
        r = client.post(
            CHANNELS,
            json={"name": "x", "kind": "webhook", "url": server.url + "/h"},
            headers=headers,
        )
        _refused(r, "url")
        assert server.hits == []
