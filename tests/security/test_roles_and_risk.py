"""Roles, the kill switches and risk limits in a multi-tenant platform (issue 16, item 4).

Each test performs an attack from outside (HTTP, or the ``cryptoorch users`` CLI) and checks
both the refusal and that nothing happened: no call reached the cluster, no row was written.
The Ray tests at the end drive a real risk actor: one trader's kill switch stops only their
bots and denies only their orders.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from decimal import Decimal as D
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from tests.security.conftest import (
    PASSWORD,
    assert_error_shape,
    options,
    register_and_login,
    set_role,
)
from typer.testing import CliRunner

from cryptoorchestrator.cli.main import app as cli
from cryptoorchestrator.platform.model import OrderSide
from cryptoorchestrator.platform.risk.limits import OrderCheck
from cryptoorchestrator.platform.settings import get_settings
from cryptoorchestrator.platform.storage.models import (
    BacktestRun,
    Bot,
    ExchangeAccount,
    RefreshToken,
    RiskEvent,
    RiskLimit,
    User,
)

BOT = {"name": "b1", "tradingPair": "BTC/USDT", "strategy": "sma_cross", "riskPerTrade": 1}


class RecordingCluster:
    """A cluster facade that records every call (so a test can prove none was made)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def _record(self, name: str, *args: Any, **kwargs: Any) -> None:
        self.calls.append((name, args, kwargs))

    def ray_status(self) -> dict[str, Any]:
        return {"status": "healthy"}

    def risk_status(self) -> dict[str, Any]:
        return {"status": "healthy"}

    async def start_bot(self, bot_id: int) -> str:
        self._record("start_bot", bot_id)
        return "Starting"

    async def stop_bot(self, bot_id: int, reason: str) -> str:
        self._record("stop_bot", bot_id)
        return "Stopped"

    async def risk_utilisation(self, user_id: int, *, portfolio: bool = False) -> dict[str, Any]:
        self._record("risk_utilisation", user_id, portfolio=portfolio)
        return {"portfolio": {}} if portfolio else {}

    async def set_risk_limits(self, user_id: int, limits: dict[str, Any]) -> dict[str, Any]:
        self._record("set_risk_limits", user_id, limits)
        return {}

    async def kill_switch(self, user_id: int, flatten: bool, scope: str = "user") -> dict[str, Any]:
        self._record("kill_switch", user_id, scope=scope)
        return {"kill_switch": True, "scope": scope}

    async def release_kill_switch(self, user_id: int, scope: str = "user") -> dict[str, Any]:
        self._record("release_kill_switch", user_id, scope=scope)
        return {"kill_switch": False, "scope": scope}

    async def submit_backtest(self, user_id: int, spec: dict[str, Any]) -> str:
        self._record("submit_backtest", user_id)
        return "bt-1"

    async def submit_optimization(self, user_id: int, spec: dict[str, Any]) -> str:
        self._record("submit_optimization", user_id)
        return "opt-1"

    async def cancel_run(self, kind: str, run_id: str) -> None:
        self._record("cancel_run", kind, run_id)


@pytest.fixture
def rec(app_factory: Callable[..., TestClient], db_url: str) -> tuple[TestClient, RecordingCluster]:
    """An app on SQLite and PostgreSQL whose cluster records calls."""
    cluster = RecordingCluster()
    return app_factory(db_url, cluster=cluster), cluster


def _db(tc: TestClient) -> Any:
    return tc.app.state.context.session_factory()  # type: ignore[attr-defined]


def _role(tc: TestClient, email: str) -> str:
    with _db(tc) as s:
        return str(s.scalar(select(User.role).where(User.email == email)))


def _forbidden(r: Any, role: str) -> None:
    assert r.status_code == 403, r.text
    assert_error_shape(r.json())
    assert f"'{role}'" in r.json()["message"]


# ------------------------------------------------------------------------- first user


def test_first_account_is_admin_later_ones_traders(client: TestClient) -> None:
    first = client.post("/api/auth/register", json={"email": "a@example.com", "password": PASSWORD})
    second = client.post(
        "/api/auth/register", json={"email": "b@example.com", "password": PASSWORD}
    )
    assert (first.json()["role"], second.json()["role"]) == ("admin", "trader")
    assert (_role(client, "a@example.com"), _role(client, "b@example.com")) == ("admin", "trader")


def test_local_operator_does_not_make_the_first_registration_a_trader(client: TestClient) -> None:
    # The CLI operator cannot log in: the first account that can still becomes the admin.
    with _db(client) as s:
        s.add(User(email="local@cryptoorchestrator", password_hash="!local", role="admin"))
        s.commit()
    r = client.post("/api/auth/register", json={"email": "a@example.com", "password": PASSWORD})
    assert r.json()["role"] == "admin"


def test_concurrent_first_registrations_make_exactly_one_admin(client: TestClient) -> None:
    n = 6
    barrier = threading.Barrier(n)
    codes: list[int] = []

    def register(i: int) -> None:
        barrier.wait()
        r = client.post(
            "/api/auth/register", json={"email": f"race{i}@example.com", "password": PASSWORD}
        )
        codes.append(r.status_code)

    threads = [threading.Thread(target=register, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert codes == [201] * n
    with _db(client) as s:
        roles = sorted(s.scalars(select(User.role)).all())
    assert roles == ["admin"] + ["trader"] * (n - 1)


# ----------------------------------------------------------------- viewers mutate nothing


def _viewer_with_bot_and_account(tc: TestClient) -> tuple[dict[str, str], int, int]:
    """A trader creates a bot and an account, then is made a viewer."""
    register_and_login(tc, "admin@example.com")  # the first account: the admin
    h = register_and_login(tc, "viewer@example.com")
    account = tc.post(
        "/api/integrations/exchanges/accounts",
        json={"name": "paper", "exchange": "binance", "mode": "paper"},
        headers=h,
    )
    assert account.status_code == 201, account.text
    bot = tc.post("/api/bots", json=BOT, headers=h)
    assert bot.status_code == 201, bot.text
    set_role(tc, "viewer@example.com", "viewer")
    return h, bot.json()["id"], account.json()["id"]


def test_viewer_cannot_change_anything(rec: tuple[TestClient, RecordingCluster]) -> None:
    tc, cluster = rec
    h, bot_id, account_id = _viewer_with_bot_and_account(tc)
    attempts: list[tuple[str, str, dict[str, Any] | None]] = [
        ("POST", "/api/bots", {**BOT, "name": "b2"}),
        ("PATCH", f"/api/bots/{bot_id}", {"name": "renamed"}),
        ("DELETE", f"/api/bots/{bot_id}", None),
        ("POST", f"/api/bots/{bot_id}/start", None),
        ("POST", f"/api/bots/{bot_id}/stop", None),
        (
            "POST",
            "/api/integrations/exchanges/accounts",
            {"name": "p2", "exchange": "binance", "mode": "paper"},
        ),
        ("PATCH", f"/api/integrations/exchanges/accounts/{account_id}", {"name": "renamed"}),
        ("DELETE", f"/api/integrations/exchanges/accounts/{account_id}", None),
        ("GET", "/api/integrations/exchanges/test", None),
        ("POST", "/api/backtests", {"strategy": "sma_cross"}),
        ("POST", "/api/backtests/some-run/cancel", None),
        ("POST", "/api/optimizations", {"strategy": "sma_cross", "space": {"fast": [5, 10]}}),
        ("POST", "/api/optimizations/some-run/cancel", None),
        ("PUT", "/api/risk/limits", {"limits": [{"name": "max_open_orders", "value": 1}]}),
        ("POST", "/api/risk/kill-switch", {}),
        ("DELETE", "/api/risk/kill-switch", None),
    ]
    for method, url, body in attempts:
        r = tc.request(method, url, json=body, headers=h)
        _forbidden(r, "trader")
    # The shared market-data refresh is an admin's (owner B's rule): refused as well.
    assert tc.post("/api/integrations/exchanges/sync", headers=h).status_code == 403
    assert cluster.calls == []
    with _db(tc) as s:
        assert s.scalar(select(func.count()).select_from(Bot)) == 1
        assert s.scalar(select(Bot.name)) == "b1"
        assert s.scalar(select(ExchangeAccount.name)) == "paper"
        assert s.scalar(select(func.count()).select_from(ExchangeAccount)) == 1
        assert s.scalar(select(func.count()).select_from(BacktestRun)) == 0
        assert s.scalar(select(func.count()).select_from(RiskLimit)) == 0
    # Reading their own data still works.
    assert tc.get(f"/api/bots/{bot_id}", headers=h).status_code == 200
    assert tc.get("/api/risk/limits", headers=h).status_code == 200


def test_unknown_stored_role_grants_nothing(rec: tuple[TestClient, RecordingCluster]) -> None:
    tc, cluster = rec
    register_and_login(tc, "admin@example.com")
    h = register_and_login(tc, "odd@example.com")
    set_role(tc, "odd@example.com", "superuser")
    _forbidden(tc.post("/api/bots", json=BOT, headers=h), "trader")
    assert cluster.calls == []


# ------------------------------------------------- global switch and portfolio: admin only


def test_trader_cannot_pull_the_global_kill_switch(
    rec: tuple[TestClient, RecordingCluster],
) -> None:
    tc, cluster = rec
    register_and_login(tc, "admin@example.com")
    h = register_and_login(tc, "trader@example.com")
    _forbidden(tc.post("/api/risk/kill-switch", json={"scope": "global"}, headers=h), "admin")
    _forbidden(tc.delete("/api/risk/kill-switch?scope=global", headers=h), "admin")
    assert cluster.calls == []
    # Their own switch is theirs to pull: scope user, for their own id.
    r = tc.post("/api/risk/kill-switch", json={}, headers=h)
    assert r.status_code == 200
    trader_id = tc.get("/api/auth/profile", headers=h).json()["id"]
    assert cluster.calls == [("kill_switch", (trader_id,), {"scope": "user"})]


def test_trader_cannot_set_portfolio_limits(rec: tuple[TestClient, RecordingCluster]) -> None:
    tc, cluster = rec
    register_and_login(tc, "admin@example.com")
    h = register_and_login(tc, "trader@example.com")
    body = {
        "limits": [
            {"scope": "user", "name": "max_open_orders", "value": 2},
            {"scope": "portfolio", "name": "max_open_orders", "value": 1000},
        ]
    }
    _forbidden(tc.put("/api/risk/limits", json=body, headers=h), "admin")
    bad = tc.put("/api/risk/limits", json={"limits": [{"scope": "user:1", "name": "x"}]}, headers=h)
    assert bad.status_code == 422
    assert_error_shape(bad.json())
    assert cluster.calls == []
    # Without a scope, a trader's limits are their own.
    ok = tc.put(
        "/api/risk/limits", json={"limits": [{"name": "max_open_orders", "value": 2}]}, headers=h
    )
    assert ok.status_code == 200
    [(name, _, _)] = cluster.calls
    assert name == "set_risk_limits"
    assert cluster.calls[0][1][1]["limits"][0]["scope"] == "user"


def test_admin_may_use_the_global_switch_and_portfolio_limits(
    rec: tuple[TestClient, RecordingCluster],
) -> None:
    tc, cluster = rec
    h = register_and_login(tc, "admin@example.com")
    assert tc.post("/api/risk/kill-switch", json={"scope": "global"}, headers=h).status_code == 200
    assert tc.delete("/api/risk/kill-switch?scope=global", headers=h).status_code == 200
    limits = {"limits": [{"scope": "portfolio", "name": "max_open_orders", "value": 3}]}
    assert tc.put("/api/risk/limits", json=limits, headers=h).status_code == 200
    assert [(c[0], c[2].get("scope")) for c in cluster.calls] == [
        ("kill_switch", "global"),
        ("release_kill_switch", "global"),
        ("set_risk_limits", None),
    ]


# ------------------------------------------------------------------------ tenant isolation


def test_analytics_totals_over_every_bot_are_for_admins_only(
    rec: tuple[TestClient, RecordingCluster],
) -> None:
    tc, cluster = rec
    admin = register_and_login(tc, "admin@example.com")
    trader = register_and_login(tc, "trader@example.com")
    assert "portfolio" not in tc.get("/api/analytics/risk", headers=trader).json()
    assert "portfolio" in tc.get("/api/analytics/risk", headers=admin).json()
    assert [c[2]["portfolio"] for c in cluster.calls] == [False, True]


def test_risk_limits_list_shows_no_other_users_limits(client: TestClient) -> None:
    register_and_login(client, "admin@example.com")
    h = register_and_login(client, "trader@example.com")
    other = register_and_login(client, "other@example.com")
    me = client.get("/api/auth/profile", headers=h).json()["id"]
    them = client.get("/api/auth/profile", headers=other).json()["id"]
    with _db(client) as s:
        s.add_all(
            [
                RiskLimit(scope="portfolio", name="max_open_orders", value=D(5)),
                RiskLimit(scope=f"user:{me}", name="max_open_orders", value=D(2)),
                RiskLimit(scope=f"user:{them}", name="max_open_orders", value=D(1)),
            ]
        )
        s.commit()
    scopes = {r["scope"] for r in client.get("/api/risk/limits", headers=h).json()}
    assert scopes == {"portfolio", f"user:{me}"}


# ---------------------------------------------------------------------------- the CLI


def _cli_env(monkeypatch: pytest.MonkeyPatch, tc: TestClient) -> None:
    settings = tc.app.state.context.settings  # type: ignore[attr-defined]
    monkeypatch.setenv("CRYPTOORCH_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("CRYPTOORCH_VAR_DIR", str(settings.var_dir))
    monkeypatch.setenv("CRYPTOORCH_LOG_DIR", str(settings.log_dir))
    get_settings.cache_clear()


def test_cli_set_role_demotes_and_ends_sessions(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    _cli_env(monkeypatch, client)
    register_and_login(client, "admin@example.com")
    register_and_login(client, "trader@example.com")
    with _db(client) as s:
        before = s.scalar(select(User.auth_epoch).where(User.email == "trader@example.com"))
    runner = CliRunner()
    result = runner.invoke(cli, ["users", "set-role", "trader@example.com", "viewer"])
    assert result.exit_code == 0, result.output
    listed = runner.invoke(cli, ["users", "list"])
    assert "viewer" in listed.output
    assert "trader@example.com" in listed.output
    with _db(client) as s:
        user = s.scalar(select(User).where(User.email == "trader@example.com"))
        assert user is not None
        assert (user.role, user.auth_epoch) == ("viewer", before + 1)
        live = s.scalar(
            select(func.count())
            .select_from(RefreshToken)
            .where(RefreshToken.user_id == user.id, RefreshToken.revoked_at.is_(None))
        )
        assert live == 0
    # A fresh login carries the new role: no more changes.
    h = register_and_login_existing(client, "trader@example.com")
    _forbidden(client.post("/api/bots", json=BOT, headers=h), "trader")


def register_and_login_existing(tc: TestClient, email: str) -> dict[str, str]:
    """Log an existing user in; return the Authorization header."""
    r = tc.post("/api/auth/login", json={"email": email, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['accessToken']}"}


def test_cli_refuses_unknown_roles_and_users(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    _cli_env(monkeypatch, client)
    register_and_login(client, "admin@example.com")
    register_and_login(client, "trader@example.com")
    runner = CliRunner()
    bad = runner.invoke(cli, ["users", "set-role", "trader@example.com", "root"])
    assert bad.exit_code != 0
    assert "role" in str(bad.exception)
    missing = runner.invoke(cli, ["users", "set-role", "ghost@example.com", "admin"])
    assert missing.exit_code != 0
    assert _role(client, "trader@example.com") == "trader"


def test_cli_create_and_deactivate(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    _cli_env(monkeypatch, client)
    runner = CliRunner()
    made = runner.invoke(
        cli,
        ["users", "create", "ops@example.com", "--role", "admin"],
        input=f"{PASSWORD}\n{PASSWORD}\n",
    )
    assert made.exit_code == 0, made.output
    assert _role(client, "ops@example.com") == "admin"
    h = register_and_login_existing(client, "ops@example.com")
    assert (
        client.post("/api/risk/kill-switch", json={"scope": "global"}, headers=h).status_code == 503
    )
    gone = runner.invoke(cli, ["users", "deactivate", "ops@example.com"])
    assert gone.exit_code == 0, gone.output
    r = client.post("/api/auth/login", json={"email": "ops@example.com", "password": PASSWORD})
    assert r.status_code == 401


# ------------------------------------------------------------------- with the risk actor


def _bot(s: Any, user_id: int, name: str) -> int:
    bot = Bot(
        user_id=user_id,
        name=name,
        trading_pair="BTC/USDT",
        strategy="sma_cross",
        timeframe="1h",
        risk_per_trade=D(1),
        max_position_size=D(50),
        desired_state="running",
        status="Running",
        starting_balance=D(1000),
    )
    s.add(bot)
    s.flush()
    return int(bot.id)


def _order(bot_id: int, n: int) -> OrderCheck:
    return OrderCheck(
        bot_id=bot_id,
        client_order_id=f"k{bot_id}-{n}",
        symbol="BTC/USDT",
        side=OrderSide.BUY,
        amount=D("0.1"),
        price=D(100),
    )


@pytest.mark.ray
def test_trader_kill_switch_stops_only_their_bots(
    app_factory: Callable[..., TestClient], ray_session: Any
) -> None:
    from cryptoorchestrator.cluster.facade import RayCluster
    from cryptoorchestrator.cluster.risk_actor import RiskActor, request_approval, settings_payload
    from cryptoorchestrator.cluster.runtime import NAMESPACE

    probe = app_factory()
    settings = probe.app.state.context.settings  # type: ignore[attr-defined]
    cluster = RayCluster(settings, connect=False)
    tc = app_factory(cluster=cluster, options=options())
    admin = register_and_login(tc, "admin@example.com")
    alice = register_and_login(tc, "alice@example.com")
    bob = register_and_login(tc, "bob@example.com")
    ids = {
        k: tc.get("/api/auth/profile", headers=h).json()["id"]
        for k, h in [("alice", alice), ("bob", bob)]
    }
    with _db(tc) as s:
        a1, a2 = _bot(s, ids["alice"], "a1"), _bot(s, ids["alice"], "a2")
        b1 = _bot(s, ids["bob"], "b1")
        s.commit()
    actor = RiskActor.options(namespace=NAMESPACE).remote(settings_payload(settings))  # type: ignore[attr-defined]
    cluster._risk = actor  # noqa: SLF001 (a private actor per test, not the named one)
    assert ray_session.get(actor.ping.remote())["ready"]
    n = iter(range(1000))

    def approved(bot_id: int) -> tuple[bool, str | None]:
        d = asyncio.run(request_approval(actor, _order(bot_id, next(n)), timeout_s=60))
        return d.approved, d.limit

    try:
        assert approved(a1) == (True, None)
        assert approved(b1) == (True, None)
        # Alice pulls her switch: her bots stop, Bob's keep running and trading.
        r = tc.post("/api/risk/kill-switch", json={}, headers=alice)
        assert r.status_code == 200, r.text
        assert r.json()["bots_stopped"] == sorted([a1, a2])
        assert approved(a1) == (False, "user_kill_switch")
        assert approved(a2) == (False, "user_kill_switch")
        assert approved(b1) == (True, None)
        with _db(tc) as s:
            status = {b.id: (b.status, b.status_reason) for b in s.scalars(select(Bot))}
            events = s.scalars(select(RiskEvent.bot_id).where(RiskEvent.kind == "kill_switch"))
            assert sorted(e for e in events.all() if e is not None) == sorted([a1, a2])
        assert status[a1][0] == status[a2][0] == "Stopped"
        assert "kill switch" in (status[a1][1] or "")
        assert status[b1][0] == "Running"
        # Bob cannot release Alice's switch or pull the global one.
        _forbidden(tc.post("/api/risk/kill-switch", json={"scope": "global"}, headers=bob), "admin")
        assert approved(b1) == (True, None)
        # Her analytics sum her bots only; the admin's include the whole portfolio.
        mine = tc.get("/api/analytics/risk", headers=alice).json()
        assert set(mine["utilisation"]["bots"]) == {str(a1), str(a2)}
        assert mine["utilisation"]["equity"] == "2000"
        assert mine["utilisation"]["user_kill_switch"] is True
        assert "portfolio" not in mine
        assert "portfolio_equity" not in mine["utilisation"]
        whole = tc.get("/api/analytics/risk", headers=admin).json()
        assert whole["portfolio"]["portfolio_equity"] == "3000"
        # Released: her orders are approved again (her bots restart through /start).
        assert tc.delete("/api/risk/kill-switch", headers=alice).status_code == 200
        assert approved(a1) == (True, None)
        # Her own limits tighten hers only, and are persisted for the next actor.
        own = {"limits": [{"name": "max_open_orders", "value": 1}]}
        assert (
            tc.put("/api/risk/limits", json=own, headers=alice).json()["user"]["max_open_orders"]
            == 1
        )
        assert approved(a2) == (True, None)
        assert approved(a2) == (False, "max_open_orders")
        assert approved(b1) == (True, None)
        # The admin's global switch stops everyone; releasing it restores approvals.
        r = tc.post("/api/risk/kill-switch", json={"scope": "global"}, headers=admin)
        assert r.status_code == 200
        assert set(r.json()["bots_stopped"]) >= {a1, a2, b1}
        assert approved(b1) == (False, "kill_switch")
        with _db(tc) as s:
            assert s.get(Bot, b1).status == "Stopped"  # type: ignore[union-attr]
        assert tc.delete("/api/risk/kill-switch?scope=global", headers=admin).status_code == 200
        assert approved(b1) == (True, None)
    finally:
        ray_session.kill(actor)


@pytest.mark.ray
def test_user_kill_switch_survives_an_actor_restart(
    app_factory: Callable[..., TestClient], ray_session: Any
) -> None:
    from cryptoorchestrator.cluster.facade import RayCluster
    from cryptoorchestrator.cluster.risk_actor import RiskActor, request_approval, settings_payload
    from cryptoorchestrator.cluster.runtime import NAMESPACE

    probe = app_factory()
    settings = probe.app.state.context.settings  # type: ignore[attr-defined]
    cluster = RayCluster(settings, connect=False)
    tc = app_factory(cluster=cluster)
    register_and_login(tc, "admin@example.com")
    alice = register_and_login(tc, "alice@example.com")
    bob = register_and_login(tc, "bob@example.com")
    with _db(tc) as s:
        a1 = _bot(s, tc.get("/api/auth/profile", headers=alice).json()["id"], "a1")
        b1 = _bot(s, tc.get("/api/auth/profile", headers=bob).json()["id"], "b1")
        s.commit()
    payload = settings_payload(settings)
    first = RiskActor.options(namespace=NAMESPACE).remote(payload)  # type: ignore[attr-defined]
    cluster._risk = first  # noqa: SLF001
    try:
        assert tc.post("/api/risk/kill-switch", json={}, headers=alice).status_code == 200
    finally:
        ray_session.kill(first)
    with _db(tc) as s:  # the stopped bot is running again (a user restarted it)
        s.get(Bot, a1).desired_state = "running"  # type: ignore[union-attr]
        s.commit()
    second = RiskActor.options(namespace=NAMESPACE).remote(payload)  # type: ignore[attr-defined]
    try:
        assert ray_session.get(second.ping.remote())["ready"]
        denied = asyncio.run(request_approval(second, _order(a1, 1), timeout_s=60))
        assert (denied.approved, denied.limit) == (False, "user_kill_switch")
        assert asyncio.run(request_approval(second, _order(b1, 1), timeout_s=60)).approved
    finally:
        ray_session.kill(second)
