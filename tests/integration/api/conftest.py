"""Fixtures for the HTTP tests: an app on a fresh database, clients, logged-in users."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cryptoorchestrator.api.app import create_app
from cryptoorchestrator.api.config import ApiOptions
from cryptoorchestrator.platform.settings import Settings
from cryptoorchestrator.platform.storage.db import dispose_engines, upgrade

PASSWORD = "correct horse battery"


def options(**overrides: Any) -> ApiOptions:
    """API options for tests: generous rate limits unless a test tightens them."""
    base: dict[str, Any] = {
        "rate_limit": 10_000,
        "rate_limit_auth": 10_000,
        "rate_limit_backend": "memory",
        "ws_poll_s": 0.05,
    }
    base.update(overrides)
    return ApiOptions(**base)


@pytest.fixture
def app_factory(settings: Settings) -> Iterator[Callable[..., TestClient]]:
    """Build clients of apps on a migrated database (``db_url`` or the settings' SQLite)."""
    clients: list[TestClient] = []

    def make(db_url: str | None = None, **kwargs: Any) -> TestClient:
        base: Settings = kwargs.pop("settings", None) or settings
        s = base if db_url is None else base.model_copy(update={"database_url": db_url})
        upgrade(s)
        opts = kwargs.pop("options", None) or options()
        client = TestClient(create_app(s, options=opts, **kwargs))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)
    dispose_engines()


@pytest.fixture
def client(app_factory: Callable[..., TestClient], db_url: str) -> TestClient:
    """A client of an app on SQLite and, in a second run, PostgreSQL."""
    return app_factory(db_url)


@pytest.fixture
def lite(app_factory: Callable[..., TestClient]) -> TestClient:
    """A client of an app on SQLite only."""
    return app_factory()


def register_and_login(client: TestClient, email: str) -> dict[str, str]:
    """Create a user and return the Authorization header of a fresh login."""
    r = client.post("/api/auth/register", json={"email": email, "password": PASSWORD})
    assert r.status_code == 201, r.text
    r = client.post("/api/auth/login", json={"email": email, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['accessToken']}"}


def assert_error_shape(body: dict[str, Any], code: str | None = None) -> None:
    """Check the one error shape (and the code when given)."""
    assert set(body) == {"code", "message", "details"}
    assert isinstance(body["message"], str)
    assert body["message"]
    assert isinstance(body["details"], list)
    if code is not None:
        assert body["code"] == code
