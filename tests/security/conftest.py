"""Fixtures of the security suite: apps on SQLite and PostgreSQL, users of each role.

Each test here reproduces one attack from outside (over HTTP or the WebSocket) and asserts the
refusal; the fixtures are the API tests' own (one app factory, one error shape).
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from tests.integration.api.conftest import (  # noqa: F401  (fixtures re-exported for this suite)
    PASSWORD,
    app_factory,
    assert_error_shape,
    client,
    lite,
    options,
    register_and_login,
)
from tests.security.http_servers import make_client, server  # noqa: F401  (SSRF fixtures)

from cryptoorchestrator.platform.storage.models import User


def set_role(tc: TestClient, email: str, role: str) -> None:
    """Give ``email`` the ``role`` directly in the database (what ``cryptoorch users`` does)."""
    factory: Any = tc.app.state.context.session_factory  # type: ignore[attr-defined]
    with factory() as session:
        session.execute(update(User).where(User.email == email).values(role=role))
        session.commit()
    identity = tc.app.state.context.identity  # type: ignore[attr-defined]
    for forget in ("forget_all", "clear"):
        if callable(getattr(identity, forget, None)):
            getattr(identity, forget)()
            break


@pytest.fixture
def users(client: TestClient) -> dict[str, dict[str, str]]:  # noqa: F811
    """Headers of an admin (the first account), two traders and a viewer, on ``client``."""
    out = {"admin": register_and_login(client, "admin@example.com")}
    set_role(client, "admin@example.com", "admin")
    out["trader"] = register_and_login(client, "trader@example.com")
    out["other"] = register_and_login(client, "other@example.com")
    out["viewer"] = register_and_login(client, "viewer@example.com")
    set_role(client, "viewer@example.com", "viewer")
    return out
