"""Bots cannot short: live and paper accounts trade spot, so creation refuses ``params.short``."""

from __future__ import annotations

import pytest

from cryptoorchestrator.platform.errors import InvalidInputError
from cryptoorchestrator.platform.services.bots import BotService
from cryptoorchestrator.platform.settings import Settings
from cryptoorchestrator.platform.storage.db import session_scope, upgrade
from cryptoorchestrator.platform.storage.models import User

BOT = {"name": "b", "trading_pair": "BTC/USDT", "strategy": "sma_cross"}


@pytest.fixture
def user_id(settings: Settings) -> int:
    upgrade(settings)
    with session_scope(settings) as session:
        user = User(email="short@example.com", password_hash="!x", role="trader")  # noqa: S106
        session.add(user)
        session.flush()
        return int(user.id)


@pytest.mark.parametrize("short", [True, 1, "yes"])
def test_create_refuses_a_shorting_strategy(
    settings: Settings, user_id: int, short: object
) -> None:
    with session_scope(settings) as session:
        with pytest.raises(InvalidInputError) as caught:
            BotService(session, user_id).create({**BOT, "params": {"short": short}})
    assert caught.value.field == "params.short"
    assert "spot" in caught.value.reason


def test_update_refuses_turning_shorts_on(settings: Settings, user_id: int) -> None:
    with session_scope(settings) as session:
        service = BotService(session, user_id)
        bot = service.create({**BOT, "params": {"short": False}})
        with pytest.raises(InvalidInputError) as caught:
            service.update(bot.id, {"params": {"short": True}})
        assert caught.value.field == "params.short"
        assert not (bot.params or {}).get("short")
