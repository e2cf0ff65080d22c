"""``co.Client`` against the real app over an in-process transport."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import httpx
import pyotp
import pytest
from fastapi.testclient import TestClient

import cryptoorchestrator as co
from cryptoorchestrator.api.app import create_app
from cryptoorchestrator.api.config import ApiOptions
from cryptoorchestrator.client import ApiError
from cryptoorchestrator.platform.settings import Settings
from cryptoorchestrator.platform.storage.db import dispose_engines, upgrade
from cryptoorchestrator.platform.storage.types import utcnow


def test_client_login_mfa_bots_trades(settings: Settings) -> None:
    upgrade(settings)
    app = create_app(settings, options=ApiOptions(rate_limit_backend="memory"))
    # TOTP codes are single use: each use below moves the auth clock to the next step.
    steps = [utcnow()]
    app.state.context.auth_config = replace(app.state.context.auth_config, clock=lambda: steps[-1])

    def code(secret: str) -> str:
        steps.append(steps[-1] + timedelta(seconds=30))
        return pyotp.TOTP(secret).at(steps[-1])

    with TestClient(app) as tc:
        # TestClient is an httpx.Client; reuse its ASGI transport for co.Client.
        api = co.Client("http://testserver", transport=tc._transport)
        api.register("nb@example.com", "a long password")
        api.login("nb@example.com", "a long password")
        secret = api.request("POST", "/api/auth/mfa/enroll")["secret"]
        codes = api.request("POST", "/api/auth/mfa/confirm", json={"code": code(secret)})[
            "backupCodes"
        ]
        with pytest.raises(ApiError) as info:
            api.login("nb@example.com", "a long password")
        assert info.value.code == "mfa_required"
        api.login("nb@example.com", "a long password", totp=code(secret))
        api.login("nb@example.com", "a long password", backup_code=codes[0])
        bot = api.create_bot(name="nb", tradingPair="ETH/USDT", strategy="sma_cross")
        assert api.bot(bot["id"])["tradingPair"] == "ETH/USDT"
        assert [b["id"] for b in api.bots()] == [bot["id"]]
        assert list(api.trades(bot_id=bot["id"])) == []
        with pytest.raises(ApiError) as info:
            api.create_bot(name="bad", tradingPair="ETH/USDT", strategy="s", riskPerTrade=9)
        assert info.value.status == 422
        assert info.value.details[0]["field"] == "riskPerTrade"
        with pytest.raises(ApiError) as info:
            api.submit_backtest("sma_cross")
        assert info.value.status == 503
        old = api.refresh_token
        api.refresh()
        assert api.refresh_token != old
        assert api.profile()["mfaEnabled"] is True
        assert isinstance(api._http, httpx.Client)
        api.close()
    dispose_engines()
