"""HTTP-layer attacks: forged client addresses, missing browser headers, Host-built redirects,
chunked bodies past the limit, tokens in server logs, a world-readable database, uvicorn options.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text
from tests.security.conftest import (
    PASSWORD,
    assert_error_shape,
    options,
    register_and_login,
)
from typer.testing import CliRunner

from cryptoorchestrator.cli.serve import WS_MAX_MESSAGE_BYTES
from cryptoorchestrator.platform.logs import flush_logs
from cryptoorchestrator.platform.settings import Settings
from cryptoorchestrator.platform.storage.db import create_db_engine, dispose_engines, upgrade
from cryptoorchestrator.platform.storage.models import AuditLog, User

FORGED = [f"203.0.113.{i}" for i in range(1, 20)]


def _audit_ips(client: TestClient) -> list[str | None]:
    factory: Any = client.app.state.context.session_factory  # type: ignore[attr-defined]
    with factory() as session:
        return list(session.scalars(select(AuditLog.ip)))


def _access_clients(settings: Settings, path: str) -> list[str | None]:
    flush_logs()
    lines = [
        json.loads(line)
        for line in (settings.log_dir / "fastapi.log").read_text().split("\n")
        if line
    ]
    return [
        line["client"]
        for line in lines
        if line["logger"] == "cryptoorchestrator.api.access" and line["path"] == path
    ]


# --- X-Forwarded-For ---------------------------------------------------------------------


def test_forged_forwarded_for_neither_resets_login_budget_nor_reaches_audit_log(
    app_factory: Callable[..., TestClient], db_url: str, settings: Settings
) -> None:
    client = app_factory(db_url, options=options(rate_limit_auth=4, rate_limit_window_s=86_400))
    r = client.post(
        "/api/auth/register",
        json={"email": "victim@example.com", "password": PASSWORD},
        headers={"X-Forwarded-For": FORGED[0]},
    )
    assert r.status_code == 201
    codes = []
    for ip in FORGED[1:5]:  # a fresh forged address per guess: once one budget per address
        r = client.post(
            "/api/auth/login",
            json={"email": "victim@example.com", "password": "wrong password!"},
            headers={"X-Forwarded-For": ip, "X-Real-IP": ip, "Forwarded": f"for={ip}"},
        )
        codes.append(r.status_code)
    assert codes == [401, 401, 401, 429]
    assert_error_shape(r.json(), "rate_limited")
    ips = _audit_ips(client)
    assert ips  # registration and the failed logins were audited...
    assert set(ips) == {"testclient"}  # ...with the peer, never a forged address
    assert not set(_access_clients(settings, "/api/auth/login")) & set(FORGED)


def test_trusted_proxy_reports_the_real_client(
    app_factory: Callable[..., TestClient], db_url: str, settings: Settings
) -> None:
    client = app_factory(
        db_url,
        options=options(
            rate_limit_auth=2, rate_limit_window_s=86_400, trusted_proxies=["10.0.0.0/8"]
        ),
    )
    proxy = TestClient(client.app, client=("10.1.2.3", 40000))
    # The client forges a leftmost entry; the proxy appends what it saw (198.51.100.7), and an
    # inner trusted proxy appends itself: the rightmost untrusted entry is the client.
    chain = {"X-Forwarded-For": "1.1.1.1, 198.51.100.7, 10.9.9.9"}
    r = proxy.post(
        "/api/auth/register", json={"email": "p@example.com", "password": PASSWORD}, headers=chain
    )
    assert r.status_code == 201
    assert set(_audit_ips(client)) == {"198.51.100.7"}
    # Budgets follow the real clients behind the proxy, not the proxy's address.
    login = {"email": "p@example.com", "password": "wrong password!"}
    assert proxy.post("/api/auth/login", json=login, headers=chain).status_code == 401
    assert proxy.post("/api/auth/login", json=login, headers=chain).status_code == 429
    other = {"X-Forwarded-For": "198.51.100.8"}
    assert proxy.post("/api/auth/login", json=login, headers=other).status_code == 401
    assert set(_access_clients(settings, "/api/auth/login")) == {"198.51.100.7", "198.51.100.8"}
    # A peer outside the trusted networks is not believed, even with a valid-looking chain.
    stranger = TestClient(client.app, client=("192.0.2.50", 40000))
    r = stranger.post("/api/auth/login", json=login, headers={"X-Forwarded-For": "198.51.100.9"})
    assert r.status_code == 401
    assert "198.51.100.9" not in _access_clients(settings, "/api/auth/login")
    assert "192.0.2.50" in _access_clients(settings, "/api/auth/login")


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        ("192.0.2.1", ["198.51.100.1"], "192.0.2.1"),  # untrusted peer: headers ignored
        ("10.0.0.2", [], "10.0.0.2"),  # a trusted peer that forwards nothing is the client
        ("10.0.0.2", ["1.1.1.1, 198.51.100.1"], "198.51.100.1"),  # rightmost untrusted
        ("10.0.0.2", ["1.1.1.1", "198.51.100.1, 10.0.0.3"], "198.51.100.1"),  # several lines
        ("10.0.0.2", ["10.0.0.4, 10.0.0.3"], "10.0.0.4"),  # every hop trusted: the first
        ("10.0.0.2", ["198.51.100.1:4711"], "198.51.100.1"),  # ports are not addresses
        ("10.0.0.2", ["[2001:db8::1]:443"], "2001:db8::1"),
        ("10.0.0.2", ["1.1.1.1, unknown"], "10.0.0.2"),  # garbage: never logged or keyed
        ("10.0.0.2", ["x" * 500], "10.0.0.2"),
        ("::ffff:10.0.0.2", ["198.51.100.1"], "198.51.100.1"),  # v4-mapped peer
    ],
)
def test_client_address_resolution(peer: str, forwarded: list[str], expected: str) -> None:
    from cryptoorchestrator.api.proxies import TrustedProxies

    scope = {
        "type": "http",
        "client": (peer, 1),
        "headers": [(b"x-forwarded-for", value.encode()) for value in forwarded],
    }
    assert TrustedProxies(["10.0.0.0/24"]).client_ip(scope) == expected
    assert TrustedProxies().client_ip(scope) == peer  # the default trusts no one


def test_trusted_proxies_must_be_addresses() -> None:
    with pytest.raises(ValueError, match="trusted_proxies"):
        options(trusted_proxies=["10.0.0.0/8", "my-proxy"])
    assert options(trusted_proxies="10.0.0.1, fd00::/8").trusted_proxies == [
        "10.0.0.1",
        "fd00::/8",
    ]


# --- security headers ----------------------------------------------------------------------

COMMON = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
}


def _assert_hardened(r: Any, *, api: bool = True) -> None:
    for name, value in COMMON.items():
        assert r.headers[name] == value, (r.request.url, name)
    assert "camera=()" in r.headers["permissions-policy"]
    if api:
        csp = r.headers["content-security-policy"]
        assert "default-src 'none'" in csp
        assert "frame-ancestors 'none'" in csp
        assert r.headers["cache-control"] == "no-store"
    assert "strict-transport-security" not in r.headers  # plain http


def test_every_response_carries_security_headers(app_factory: Callable[..., TestClient]) -> None:
    # Three anonymous API requests per IP (health has a budget of its own): the fourth is 429.
    client = app_factory(options=options(rate_limit=3, max_body_bytes=100))
    headers = register_and_login(client, "h@example.com")  # the auth budget, not this one
    responses = [
        client.get("/api/health"),  # the liveness fast path
        client.head("/api/health"),
        client.get("/api/auth/profile", headers=headers),  # account data
        client.get("/api/bots"),  # 401
        client.get("/api/nope"),  # 404
        client.post("/api/bots", content=b"x" * 500, headers={"content-type": "application/json"}),
    ]
    assert [r.status_code for r in responses] == [200, 200, 200, 401, 404, 413]
    for r in [*responses, client.get("/api/health"), client.get("/api/bots")]:
        _assert_hardened(r)
    assert r.status_code == 429
    login = client.post("/api/auth/login", json={"email": "h@example.com", "password": PASSWORD})
    assert login.status_code == 200
    _assert_hardened(login)  # tokens are never cached
    _assert_hardened(client.get("/openapi.json"), api=False)
    assert "default-src 'none'" in client.get("/openapi.json").headers["content-security-policy"]


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/docs/oauth2-redirect"])
def test_docs_pages_get_a_policy_fitting_what_they_load(lite: TestClient, path: str) -> None:
    r = lite.get(path)
    assert r.status_code == 200
    _assert_hardened(r, api=False)
    csp = r.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp
    assert "'unsafe-inline'" not in csp.split("script-src")[1].split(";")[0]
    assert "https://cdn.jsdelivr.net" in csp  # FastAPI's default CDN for the bundles
    inline = re.findall(rb"<script>(.*?)</script>", r.content, re.S)
    for script in inline:  # exactly the page's own inline scripts are allowed, by hash
        digest = base64.b64encode(hashlib.sha256(script).digest()).decode()
        assert f"'sha256-{digest}'" in csp
    if path == "/docs":
        assert inline


def test_hsts_only_over_https_as_reported_by_a_trusted_proxy(
    app_factory: Callable[..., TestClient],
) -> None:
    client = app_factory(options=options(trusted_proxies=["10.0.0.1"]))
    proto = {"X-Forwarded-Proto": "https"}
    forged = client.get("/api/markets", headers=proto)  # untrusted peer: a plain-http answer
    assert "strict-transport-security" not in forged.headers
    proxy = TestClient(client.app, client=("10.0.0.1", 40000))
    for path in ("/api/markets", "/api/health"):
        r = proxy.get(path, headers=proto)
        assert r.headers["strict-transport-security"].startswith("max-age=")
        assert "strict-transport-security" not in proxy.get(path).headers
    tls = TestClient(client.app, base_url="https://testserver")
    assert "strict-transport-security" in tls.get("/api/markets").headers


# --- redirects, bodies ---------------------------------------------------------------------


def test_trailing_slash_does_not_redirect_to_the_host_header(lite: TestClient) -> None:
    headers = register_and_login(lite, "r@example.com")
    for path in ("/api/bots/", "/api/health/", "/api/auth/profile/"):
        r = lite.get(path, headers={**headers, "Host": "evil.example"}, follow_redirects=False)
        assert r.status_code == 404, path
        assert "location" not in r.headers
        assert "evil.example" not in r.text
        assert_error_shape(r.json(), "not_found")


def _chunks(total: int, size: int = 256) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        yield b" " * min(size, total - sent)
        sent += size


def test_chunked_body_over_the_limit_is_413(app_factory: Callable[..., TestClient]) -> None:
    client = app_factory(options=options(max_body_bytes=1000))

    def body() -> Iterator[bytes]:
        yield json.dumps({"email": "big@example.com", "password": PASSWORD}).encode()
        yield from _chunks(5000)

    r = client.post(
        "/api/auth/register", content=body(), headers={"content-type": "application/json"}
    )
    assert "content-length" not in r.request.headers
    assert r.request.headers["transfer-encoding"] == "chunked"
    assert r.status_code == 413
    assert_error_shape(r.json(), "payload_too_large")
    _assert_hardened(r)
    factory: Any = client.app.state.context.session_factory  # type: ignore[attr-defined]
    with factory() as session:
        assert session.scalar(select(func.count()).select_from(User)) == 0

    def small() -> Iterator[bytes]:
        yield json.dumps({"email": "ok@example.com", "password": PASSWORD}).encode()

    r = client.post(
        "/api/auth/register", content=small(), headers={"content-type": "application/json"}
    )
    assert r.status_code == 201  # a chunked body within the limit is served


# --- tokens in server logs -----------------------------------------------------------------


def test_websocket_query_token_is_redacted_in_server_logs(
    lite: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    token = register_and_login(lite, "log@example.com")["Authorization"].split()[1]
    with caplog.at_level(logging.INFO):
        # What uvicorn logs for every WebSocket handshake, whatever its access-log setting.
        logging.getLogger("uvicorn.error").info(
            '%s - "WebSocket %s" [accepted]', "127.0.0.1:5000", f"/ws/bots?token={token}"
        )
        logging.getLogger("uvicorn.access").info(
            '%s - "%s %s HTTP/%s" %d',
            "127.0.0.1:5000",
            "GET",
            f"/ws/bots?token={token}",
            "1.1",
            101,
        )
    assert len(caplog.records) == 2
    for record in caplog.records:
        line = record.getMessage()
        assert "/ws/bots?token=" in line
        assert token not in line
        assert isinstance(record.args, tuple)  # uvicorn's access formatter unpacks them
    flush_logs()
    log = lite.app.state.context.settings.log_dir / "fastapi.log"  # type: ignore[attr-defined]
    assert token not in log.read_text()


def test_serve_starts_uvicorn_without_header_trust_or_its_access_log(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    import signal

    import uvicorn

    from cryptoorchestrator.cli.main import app
    from cryptoorchestrator.cluster import runtime
    from cryptoorchestrator.platform.storage import db

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: calls.append(kw))
    monkeypatch.setattr(db, "upgrade", lambda *a, **kw: "head")
    monkeypatch.setattr(runtime, "configure_ray_environment", lambda: None)
    monkeypatch.setattr(signal, "signal", lambda *a: None)
    monkeypatch.setenv("CRYPTOORCH_API_WS_MAX_MESSAGE_BYTES", "4096")
    monkeypatch.setenv("CRYPTOORCH_API_CLUSTER", "none")
    # serve sets this for the processes it starts (setdefault); set here through monkeypatch so
    # it is removed after the test and cannot leak into the rest of the session (a library's
    # Ray would then start a dashboard on the README platform's port).
    monkeypatch.setenv("CRYPTOORCH_RAY_DASHBOARD", "true")
    result = CliRunner().invoke(app, ["serve"])
    assert result.exit_code == 0, result.output
    (kwargs,) = calls
    assert kwargs["proxy_headers"] is False
    assert kwargs["forwarded_allow_ips"] == ""
    assert kwargs["access_log"] is False
    assert kwargs["ws_max_size"] == 4096
    # Without the variable, uvicorn and the app share the app's default.
    monkeypatch.delenv("CRYPTOORCH_API_WS_MAX_MESSAGE_BYTES")
    assert CliRunner().invoke(app, ["serve"]).exit_code == 0
    assert calls[-1]["ws_max_size"] == options().ws_max_message_bytes == WS_MAX_MESSAGE_BYTES


# --- the SQLite file -----------------------------------------------------------------------


def test_sqlite_database_and_folder_are_private(settings: Settings, tmp_path: Path) -> None:
    old = os.umask(0o022)  # the usual umask, under which files come out 0644
    try:
        s = settings.model_copy(
            update={"database_url": f"sqlite:///{tmp_path / 'fresh' / 'var' / 'db.sqlite'}"}
        )
        upgrade(s)
        engine = create_db_engine(s)
        with engine.begin() as conn:  # a write leaves the WAL and shared-memory files behind
            conn.execute(text("CREATE TABLE probe (x INTEGER)"))
            conn.execute(text("INSERT INTO probe VALUES (1)"))
            path = tmp_path / "fresh" / "var" / "db.sqlite"
            for file in (path, path.with_name("db.sqlite-wal"), path.with_name("db.sqlite-shm")):
                assert file.exists(), file
                assert stat.S_IMODE(file.stat().st_mode) == 0o600, file
        engine.dispose()
        for folder in (tmp_path / "fresh", tmp_path / "fresh" / "var"):
            assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
        # A database an older version left world-readable is narrowed on the next start.
        path.chmod(0o644)
        upgrade(s)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    finally:
        os.umask(old)
        dispose_engines()
