"""Health, rate limits, error shape, HEAD, body limit, CORS."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from datetime import datetime

import pytest
from fastapi.testclient import TestClient
from tests.integration.api.conftest import assert_error_shape, options, register_and_login

from cryptoorchestrator.api.health import HealthRegistry
from cryptoorchestrator.platform.logs import flush_logs
from cryptoorchestrator.platform.settings import Settings


def test_health_routes(client: TestClient) -> None:
    r = client.get("/api/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}
    # The first account is the operator (admin): the full report is theirs.
    admin = register_and_login(client, "ops@example.com")
    d = client.get("/api/health/detailed", headers=admin)
    assert d.status_code == 200
    body = d.json()
    assert {"database", "ray", "risk_actor", "circuit_breaker", "bots"} <= set(body["components"])
    assert "circuit_breaker" in body
    assert body["components"]["database"]["status"] == "healthy"
    assert body["components"]["bots"]["by_status"] == {
        "Starting": 0,
        "Running": 0,
        "Stopped": 0,
        "Error": 0,
    }
    db = client.get("/api/health/database")
    assert db.status_code == 200
    assert db.json()["latency_ms"] >= 0
    assert "pool" in db.json()
    ext = client.get("/api/health/external-apis")
    assert ext.status_code == 200
    assert "exchanges" in ext.json()["components"]


def test_unhealthy_component_gives_503_with_reason(lite: TestClient) -> None:
    registry: HealthRegistry = lite.app.state.context.health  # type: ignore[attr-defined]

    def broken() -> dict[str, str]:
        raise ConnectionError("risk actor unreachable")

    registry.register("risk_actor", broken)
    admin = register_and_login(lite, "ops@example.com")
    r = lite.get("/api/health/detailed", headers=admin)
    assert r.status_code == 503
    assert r.json()["status"] == "unhealthy"
    assert any("risk actor unreachable" in reason for reason in r.json()["reasons"])
    # Anonymous monitors get the same status, without the operator's error text.
    anonymous = lite.get("/api/health/detailed")
    assert anonymous.status_code == 503
    assert anonymous.json()["reasons"] == ["risk_actor: unhealthy"]
    lite.app.state.context.circuit_breakers = lambda: {  # type: ignore[attr-defined]
        "binance:1": {"state": "open", "failures": 5, "last_error": "timeout"}
    }
    cb = lite.get("/api/health/detailed", headers=admin).json()["circuit_breaker"]
    assert cb["open"] == ["binance:1"]
    assert lite.get("/api/health/detailed").json()["circuit_breaker"] == {"status": "degraded"}


def test_exchange_probe_reports_unreachable_exchange(
    app_factory: Callable[..., TestClient], settings: Settings
) -> None:
    # The operator's configured exchanges are probed (never the accounts' URLs).
    configured = settings.model_copy(
        update={"exchange_endpoints": {"binance": "http://127.0.0.1:9"}}  # nothing listens
    )
    lite = app_factory(settings=configured)
    r = lite.get("/api/health/external-apis")
    assert r.status_code == 503
    assert r.json()["reasons"] == ["exchanges: unreachable: binance"]
    exchanges = r.json()["components"]["exchanges"]["exchanges"]
    assert exchanges == {"binance": {"reachable": False}}


def test_error_shapes_404_405_422_413_500(app_factory: Callable[..., TestClient]) -> None:
    client = app_factory(options=options(max_body_bytes=1000))
    assert_error_shape(client.get("/api/nope").json(), "not_found")
    r = client.delete("/api/health")
    assert r.status_code == 405
    assert_error_shape(r.json(), "method_not_allowed")
    r = client.get("/api/trades/?limit=0", headers={"Authorization": "Bearer x"})
    assert r.status_code in (401, 422)
    assert_error_shape(r.json())
    r = client.post(
        "/api/auth/register", content=b"x" * 5000, headers={"content-type": "application/json"}
    )
    assert r.status_code == 413
    assert_error_shape(r.json(), "payload_too_large")

    def boom() -> None:
        raise RuntimeError("kaput")

    client.app.add_api_route("/api/boom", boom)  # type: ignore[attr-defined]
    crashing = TestClient(client.app, raise_server_exceptions=False)
    r = crashing.get("/api/boom")
    assert r.status_code == 500
    assert_error_shape(r.json(), "internal_error")
    assert "kaput" not in r.text


def test_head_answers_where_get_does(lite: TestClient) -> None:
    for path in ("/api/health", "/api/markets", "/api/health/database"):
        r = lite.head(path)
        assert r.status_code == 200
        assert r.content == b""
        assert r.headers["x-ratelimit-limit"]


def test_rate_limit_headers_and_429(app_factory: Callable[..., TestClient]) -> None:
    client = app_factory(
        options=options(rate_limit=5, rate_limit_auth=3, rate_limit_window_s=86_400)
    )
    seen = []
    for _ in range(5):
        # /api/health has a budget of its own (test_health_rate_limit.py): count an API route.
        r = client.get("/api/markets")
        assert r.status_code == 200
        seen.append(int(r.headers["x-ratelimit-remaining"]))
        assert r.headers["x-ratelimit-limit"] == "5"
        assert int(r.headers["x-ratelimit-reset"]) > 0
    assert seen == [4, 3, 2, 1, 0]
    over = client.get("/api/markets")
    assert over.status_code == 429
    assert_error_shape(over.json(), "rate_limited")
    assert "Rate limit exceeded" in over.json()["message"]
    assert int(over.headers["retry-after"]) >= 1
    # Auth routes have their own, stricter budget.
    codes = [
        client.post(
            "/api/auth/login", json={"email": "x@example.com", "password": "p" * 8}
        ).status_code
        for _ in range(4)
    ]
    assert codes[:3] == [401, 401, 401]
    assert codes[3] == 429


def test_rate_limit_is_per_user_when_authenticated(app_factory: Callable[..., TestClient]) -> None:
    client = app_factory(
        options=options(rate_limit=4, rate_limit_auth=100, rate_limit_window_s=86_400)
    )
    alice = register_and_login(client, "rl-a@example.com")
    bob = register_and_login(client, "rl-b@example.com")
    for _ in range(4):
        assert client.get("/api/bots", headers=alice).status_code == 200
    assert client.get("/api/bots", headers=alice).status_code == 429
    r = client.get("/api/bots", headers=bob)
    assert r.status_code == 200
    assert r.headers["x-ratelimit-remaining"] == "3"
    # Anonymous traffic from the same IP has its own budget too.
    assert client.get("/api/health").status_code == 200


def test_redis_shares_limits_between_replicas(
    app_factory: Callable[..., TestClient], settings: object
) -> None:
    redis = pytest.importorskip("redis")
    try:
        redis.Redis.from_url("redis://127.0.0.1:6379/0", socket_timeout=1).ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis not reachable at 127.0.0.1:6379: {exc}")
    prefix = f"cryptoorch-test:{uuid.uuid4().hex}"
    opts = options(
        rate_limit=6,
        rate_limit_backend="redis",
        rate_limit_prefix=prefix,
        rate_limit_window_s=86_400,
    )
    redis_settings = settings.model_copy(update={"redis_url": "redis://127.0.0.1:6379/0"})  # type: ignore[attr-defined]
    from cryptoorchestrator.api.app import create_app

    app_factory()  # migrates the database
    a_app = create_app(redis_settings, options=opts)
    b_app = create_app(redis_settings, options=opts)
    with TestClient(a_app) as one, TestClient(b_app) as two:
        got = [one.get("/api/markets").status_code for _ in range(3)]
        got += [two.get("/api/markets").status_code for _ in range(3)]
        assert got == [200] * 6
        assert one.get("/api/markets").status_code == 429
        assert two.get("/api/markets").status_code == 429
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    for key in client.scan_iter(f"{prefix}:*"):
        client.delete(key)


def test_cors_from_settings(app_factory: Callable[..., TestClient], settings: object) -> None:
    from cryptoorchestrator.api.app import create_app

    s = settings.model_copy(update={"cors_origins": ["https://ui.example.com"]})  # type: ignore[attr-defined]
    app_factory()  # migrates the database
    with TestClient(create_app(s, options=options())) as client:
        r = client.get("/api/health", headers={"Origin": "https://ui.example.com"})
        assert r.headers["access-control-allow-origin"] == "https://ui.example.com"
        r = client.get("/api/health", headers={"Origin": "https://evil.example.com"})
        assert "access-control-allow-origin" not in r.headers


def test_liveness_fast_path_is_limited_headed_and_logged(
    app_factory: Callable[..., TestClient], settings: object
) -> None:
    """GET/HEAD /api/health are answered outermost, yet counted, headed and logged."""
    from cryptoorchestrator.api.ratelimit import HEALTH_FACTOR

    client = app_factory(
        options=options(rate_limit=5, rate_limit_window_s=86_400, max_body_bytes=100)
    )
    budget = 5 * HEALTH_FACTOR  # /api/health* has its own budget, apart from the API's
    # A body takes the full stack: the size limit still applies to the probe's path.
    big = client.request("GET", "/api/health", content=b"x" * 500)
    assert big.status_code == 413
    assert_error_shape(big.json(), "payload_too_large")
    assert big.headers["x-ratelimit-remaining"] == str(budget - 1)
    get = client.get("/api/health")
    assert get.json() == {"status": "ok"}
    assert get.headers["content-type"] == "application/json"
    head = client.head("/api/health")
    assert head.content == b""
    assert head.headers["content-length"] == "15"
    statuses = []
    for r in (get, head):
        statuses.append(r.status_code)
        assert r.headers["x-ratelimit-limit"] == str(budget)
        assert int(r.headers["x-ratelimit-reset"]) > 0
    assert [get.headers["x-ratelimit-remaining"], head.headers["x-ratelimit-remaining"]] == [
        str(budget - 2),
        str(budget - 3),
    ]
    # The fast path and the full stack count in one health budget; the API's is apart.
    database = client.get("/api/health/database")
    assert database.headers["x-ratelimit-remaining"] == str(budget - 4)
    markets = client.get("/api/markets")
    assert markets.headers["x-ratelimit-remaining"] == "4"
    statuses += [database.status_code, markets.status_code]
    statuses += [client.get("/api/health").status_code for _ in range(budget - 4)]
    over = client.head("/api/health")
    statuses.append(over.status_code)
    assert statuses == [200] * (budget - 4 + 4) + [429]
    assert over.content == b""
    assert over.headers["x-ratelimit-remaining"] == "0"
    assert int(over.headers["retry-after"]) >= 1
    over_get = client.get("/api/health")
    assert over_get.status_code == 429
    assert_error_shape(over_get.json(), "rate_limited")

    flush_logs()
    log = settings.log_dir / "fastapi.log"  # type: ignore[attr-defined]
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    access = [
        line
        for line in lines
        if line["logger"] == "cryptoorchestrator.api.access" and line["path"] == "/api/health"
    ]
    assert [(a["method"], a["status"]) for a in access] == [
        ("GET", 413),
        ("GET", 200),
        ("HEAD", 200),
        *[("GET", 200)] * (budget - 4),
        ("HEAD", 429),
        ("GET", 429),
    ]
    for a in access:
        assert a["message"] == f"{a['method']} /api/health {a['status']}"
        assert a["level"] == "INFO"
        assert a["client"] == "testclient"
        assert a["user_id"] is None
        assert isinstance(a["duration_ms"], float)
        assert a["duration_ms"] >= 0
        datetime.fromisoformat(a["time"])
    # uvicorn's own access logger gets no handler of ours (no duplicate line per request).
    ours = str(log.resolve())
    assert all(
        getattr(h, "baseFilename", None) != ours
        for h in logging.getLogger("uvicorn.access").handlers
    )


def test_rate_limit_window_rolls_over(monkeypatch: pytest.MonkeyPatch) -> None:
    """Counters and the reset header move on when the window ends (cached per window)."""
    from cryptoorchestrator.api import ratelimit

    clock = [1_000_000.5]
    monkeypatch.setattr(ratelimit.time, "time", lambda: clock[0])
    limiter = ratelimit.RateLimiter(
        ratelimit.MemoryBackend(),
        ratelimit.RateLimits(default=2, auth=1, window_s=60),
        lambda _: None,
    )
    scope = {"type": "http", "path": "/api/bots", "headers": [], "client": ("10.0.0.1", 1)}
    answers = [limiter.check_now(scope) for _ in range(3)]
    assert [dict(h)[b"x-ratelimit-remaining"] for h, _ in answers] == [b"1", b"0", b"0"]
    assert [retry for _, retry in answers] == [0, 0, 60 - 40]  # 1_000_000.5 is 40.5 s in
    assert dict(answers[0][0])[b"x-ratelimit-reset"] == b"1000020"
    other = {**scope, "client": ("10.0.0.2", 1)}
    assert limiter.check_now(other)[1] == 0  # per IP
    clock[0] = 1_000_020.0  # the next window
    headers, retry = limiter.check_now(scope)
    assert (dict(headers)[b"x-ratelimit-remaining"], retry) == (b"1", 0)
    assert dict(headers)[b"x-ratelimit-reset"] == b"1000080"
    auth = {**scope, "path": "/api/auth/login"}
    assert [limiter.check_now(auth)[1] for _ in range(2)] == [0, 60]  # its own budget
