"""``cryptoorch bots`` and ``co.bots`` act as the host operator: every user's bots, any count."""

from __future__ import annotations

import pytest

from cryptoorchestrator.cli.main import main
from cryptoorchestrator.cluster.sdk import BotsAPI
from cryptoorchestrator.platform.errors import ConflictError, NotFoundError
from cryptoorchestrator.platform.services.bots import BotService
from cryptoorchestrator.platform.services.pagination import MAX_LIMIT
from cryptoorchestrator.platform.settings import Settings, get_settings
from cryptoorchestrator.platform.storage.db import session_scope, upgrade
from cryptoorchestrator.platform.storage.models import User


def _user(settings: Settings, email: str) -> int:
    with session_scope(settings) as session:
        user = User(email=email, password_hash="!x", role="trader")  # noqa: S106
        session.add(user)
        session.flush()
        return int(user.id)


def _bots(settings: Settings, user_id: int, names: list[str]) -> None:
    with session_scope(settings) as session:
        service = BotService(session, user_id)
        for name in names:
            service.create({"name": name, "trading_pair": "BTC/USDT", "strategy": "sma_cross"})


@pytest.fixture
def host(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """A migrated database that ``get_settings()`` (the CLI's settings) points at."""
    monkeypatch.setenv("CRYPTOORCH_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("CRYPTOORCH_LOG_DIR", str(settings.log_dir))
    get_settings.cache_clear()
    upgrade(settings)
    return settings


def test_finds_another_users_bot_by_id_and_name(host: Settings) -> None:
    demo = _user(host, "demo@example.com")
    _bots(host, demo, ["sma"])
    api = BotsAPI(host, start_local=False)
    by_name = api.get("sma")
    assert api.get(by_name.id).name == "sma"
    assert api.get(str(by_name.id)).id == by_name.id
    with pytest.raises(NotFoundError):
        api.get("nope")
    _bots(host, _user(host, "other@example.com"), ["sma"])
    with pytest.raises(ConflictError, match="give its id"):
        api.get("sma")


def test_lists_more_bots_than_one_page(host: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    demo = _user(host, "demo@example.com")
    _bots(host, demo, [f"b{i}" for i in range(MAX_LIMIT + 3)])
    listed = BotsAPI(host, start_local=False).list()
    assert len(listed) == MAX_LIMIT + 3
    assert {b["owner"] for b in listed} == {"demo@example.com"}
    main(["bots", "list"])
    out = capsys.readouterr().out
    assert "b502" in out
    assert "demo@example.com" in out
