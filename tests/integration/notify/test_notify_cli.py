"""``cryptoorch notify`` and the SDK's notification methods against the real API (SQLite and
PostgreSQL): add, list, test, edit, rotate, dead letters, retry, remove; errors as 422s."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from tests.integration.api.conftest import register_and_login
from tests.integration.notify.receivers import http_receiver
from typer.testing import CliRunner

from cryptoorchestrator.cli import main as cli_main
from cryptoorchestrator.cli import notify as notify_cli
from cryptoorchestrator.client import ApiError, Client
from cryptoorchestrator.platform.notify import signing
from cryptoorchestrator.platform.notify.config import NotifySettings
from cryptoorchestrator.platform.settings import Settings
from cryptoorchestrator.platform.storage.models import Notification
from cryptoorchestrator.platform.storage.types import utcnow

SECRET = re.compile(r"whsec_[A-Za-z0-9+/=]+")


class _InProcess(Client):
    """A ``co.Client`` over the test app (closing it leaves the shared test client open)."""

    def __init__(self, http: TestClient, token: str) -> None:
        super().__init__("http://testserver", token=token)
        self._http.close()
        self._http = http

    def close(self) -> None:
        return None


def test_notify_cli_and_sdk_end_to_end(
    app_factory: Callable[..., TestClient],
    settings: Settings,
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with http_receiver() as rx:
        ns = NotifySettings(allowed_hosts=[rx.host], dispatcher=False)
        app = app_factory(db_url, settings=settings.model_copy(update={"notify": ns}))
        register_and_login(app, "ops@example.com")
        token = register_and_login(app, "me@example.com")["Authorization"].split()[1]
        sdk = _InProcess(app, token)
        monkeypatch.setattr(notify_cli, "_client", lambda _login: sdk)
        runner = CliRunner()

        def cli(*args: str, stdin: str | None = None, code: int = 0) -> str:
            result = runner.invoke(
                cli_main.app, ["notify", *args], input=stdin, env={"COLUMNS": "250"}
            )
            assert result.exit_code == code, (result.output, result.exception)
            return result.output

        out = cli("add", "ops hook", "--kind", "webhook", "--url", "-", stdin=rx.url + "/h/x\n")
        assert "created channel" in out
        (secret,) = SECRET.findall(out)
        (channel,) = sdk.notification_channels()
        listed = cli("channels")
        assert "ops hook" in listed
        assert secret not in listed
        assert "/h/x" not in listed

        assert "acknowledged" in cli("test", str(channel["id"]))
        sent = rx.requests[-1]
        assert sent.path == "/h/x"
        assert signing.verify(secret, sent.headers, sent.body).startswith("test_")

        out = cli(
            "edit",
            str(channel["id"]),
            "--event",
            "order.filled",
            "--quiet",
            "22:00-07:00",
            "--timezone",
            "Europe/Berlin",
        )
        assert "order.filled" in out
        assert "quiet 22:00-07:00 Europe/Berlin" in out
        assert "summary 18:30 Europe/Berlin" in cli(
            "edit", str(channel["id"]), "--daily-summary", "18:30"
        )
        assert sdk.notification_channels()[0]["dailySummaryAt"] == "18:30"
        assert "summary" not in cli("edit", str(channel["id"]), "--daily-summary", "")
        assert sdk.notification_channels()[0]["dailySummaryAt"] is None

        (rotated,) = SECRET.findall(cli("rotate", str(channel["id"])))
        assert rotated != secret
        assert secret not in json.dumps(sdk.notification_channels())

        # A dead letter: listed by `dead`, queued again by `retry`.
        factory: Any = app.app.state.context.session_factory  # type: ignore[attr-defined]
        with factory() as session:
            session.add(
                Notification(
                    channel_id=channel["id"],
                    user_id=sdk.profile()["id"],
                    event_key="fill:99",
                    event_type="order.filled",
                    severity="info",
                    payload={"title": "a fill"},
                    status="pending",
                    attempts=0,
                    next_attempt_at=utcnow(),
                )
            )
            session.commit()
            session.execute(update(Notification).values(status="dead", last_error="HTTP 410"))
            session.commit()
        dead = json.loads(cli("dead", "--json"))
        assert [d["eventKey"] for d in dead] == ["fill:99"]
        assert "requeued 1" in cli("retry", str(dead[0]["id"]))
        assert sdk.dead_letters() == []
        assert [n["status"] for n in sdk.notifications()] == ["pending"]

        # Bad input: the API's 422 names the field.
        bad = runner.invoke(
            cli_main.app,
            ["notify", "add", "x", "--kind", "webhook", "--url", "ftp://example.com/h"],
        )
        assert isinstance(bad.exception, ApiError)
        assert bad.exception.status == 422
        assert bad.exception.details[0]["field"] == "url"
        quiet = runner.invoke(cli_main.app, ["notify", "edit", "1", "--quiet", "22:00"])
        assert getattr(quiet.exception, "field", None) == "--quiet"

        assert "deleted" in cli("remove", str(channel["id"]))
        assert sdk.notification_channels() == []
        with pytest.raises(ApiError) as err:
            sdk.remove_notification_channel(channel["id"])
        assert err.value.status == 404
