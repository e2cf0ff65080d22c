"""Tiny HTTP servers on loopback that count the requests reaching them (SSRF tests).

Each server answers every request with one fixed response; ``hits`` records the paths asked
for, so a test proves that the platform sent nothing (``hits == []``) rather than guessing it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from cryptoorchestrator.api.app import create_app
from cryptoorchestrator.platform.settings import Settings
from cryptoorchestrator.platform.storage.db import dispose_engines, upgrade
from cryptoorchestrator.platform.storage.models import ExchangeAccount, User


@dataclass
class CountingServer:
    """A running server: where it listens and what reached it."""

    port: int
    hits: list[str] = field(default_factory=list)

    @property
    def host(self) -> str:
        """``127.0.0.1:<port>``."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://{self.host}"


@contextmanager
def counting_server(
    status: int = 200,
    body: bytes = b"{}",
    headers: dict[str, str] | None = None,
) -> Iterator[CountingServer]:
    """Run a server on a free loopback port answering ``status``/``body``/``headers``."""
    record: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            record.append(self.path)
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _answer  # noqa: N815

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield CountingServer(port=server.server_address[1], hits=record)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def server() -> Iterator[CountingServer]:
    """A loopback server answering 200 ``{}`` to everything, counting requests."""
    with counting_server() as s:
        yield s


@pytest.fixture
def make_client(settings: Settings, db_url: str) -> Iterator[Callable[..., TestClient]]:
    """Build an app on ``db_url`` (SQLite, then PostgreSQL) with settings overridden."""
    from tests.integration.api.conftest import options

    clients: list[TestClient] = []

    def make(**overrides: Any) -> TestClient:
        s = settings.model_copy(update={"database_url": db_url, **overrides})
        upgrade(s)
        client = TestClient(create_app(s, options=options()))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)
    dispose_engines()


def insert_account(client: TestClient, email: str, api_url: str, **values: Any) -> int:
    """Write an account row straight into the database (as if written before the rule)."""
    factory: Any = client.app.state.context.session_factory  # type: ignore[attr-defined]
    with factory() as session:
        user_id = session.scalar(select(User.id).where(User.email == email))
        row = ExchangeAccount(
            user_id=user_id,
            name=values.pop("name", "stored"),
            exchange=values.pop("exchange", "binance"),
            mode=values.pop("mode", "paper"),
            api_url=api_url,
            **values,
        )
        session.add(row)
        session.commit()
        return int(row.id)


def stored_url(client: TestClient, account_id: int) -> str | None:
    """Return an account's ``api_url`` as stored."""
    factory: Any = client.app.state.context.session_factory  # type: ignore[attr-defined]
    with factory() as session:
        row = session.get(ExchangeAccount, account_id)
        return None if row is None else row.api_url


def login_as(client: TestClient, email: str, role: str = "trader") -> dict[str, str]:
    """Register ``email``, give it ``role`` in the database and return its auth header."""
    from tests.integration.api.conftest import register_and_login

    headers = register_and_login(client, email)
    factory: Any = client.app.state.context.session_factory  # type: ignore[attr-defined]
    with factory() as session:
        user = session.scalar(select(User).where(User.email == email))
        assert user is not None
        user.role = role
        session.commit()
    identity = client.app.state.context.identity  # type: ignore[attr-defined]
    for forget in ("forget_all", "clear"):
        if callable(getattr(identity, forget, None)):
            getattr(identity, forget)()
            break
    return headers
