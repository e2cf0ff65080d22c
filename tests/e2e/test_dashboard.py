"""The web dashboard end to end, in Debian's headless Chromium driven by Playwright.

One head node (uvicorn in a thread, SQLite, the session's real local Ray with the risk actor)
and one browser for the whole module.  A trader logs in with MFA, sees their seeded bots, starts
one from the page and watches another change over ``/ws/bots`` when it is stopped behind the
page's back, opens a bot's chart, pulls the kill switch through its confirmation and releases
it, reads health, and logs out; a viewer sees no action buttons; a phone-sized screen logs in
with a backup code.  Every page load must leave zero console errors and zero failed requests
(the one 401 ``mfa_required`` challenge of the login API is the flow itself, and is checked
as such).  Screenshots at 1440x900 and 390x844 go to ``test-artifacts/dashboard/``.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest
from sqlalchemy import select, update
from tests.conftest import IN_CI, REPO_ROOT
from tests.integration.api.conftest import PASSWORD, options

from cryptoorchestrator.api.middleware import DASHBOARD_CSP
from cryptoorchestrator.platform.storage.models import (
    Bot,
    EquitySnapshot,
    Order,
    Position,
    Trade,
    User,
)

pytestmark = [
    pytest.mark.ray,
    pytest.mark.slow,
    # One head node and one browser for the module: keep its tests on one xdist worker.
    pytest.mark.xdist_group("e2e-dashboard"),
]

CHROMIUM = Path(os.environ.get("CRYPTOORCH_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = REPO_ROOT / "test-artifacts" / "dashboard"
DESKTOP = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}
#: Long enough for a slow, busy machine; the assertions wait for events, never for a time.
WAIT_MS = 20_000
#: Fill times of the seeded bot, inside the bundled BTC/USDT candles (2021-2022).
FILL_START = datetime(2022, 6, 1, tzinfo=UTC)


@dataclass
class Head:
    """The running head node and what the tests seeded into it."""

    url: str
    app: Any
    totp: pyotp.TOTP
    backup_codes: list[str]
    bots: dict[str, int]
    trader_token: str
    viewer_token: str
    context: Any = None


@dataclass
class Watch:
    """Console errors, page errors and failed requests of one page.

    ``expected`` holds the refusals a test provokes on purpose, as (status, method, path);
    each is accepted once.
    """

    console_errors: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    expected: list[tuple[int, str, str]] = field(default_factory=list)
    mfa_challenges: int = 0
    refreshes: int = 0

    def provoked(self, status: int, method: str, url: str) -> bool:
        """Whether this refusal was expected (and, for the next one, no longer is)."""
        for item in self.expected:
            if item[0] == status and item[1] == method and url.endswith(item[2]):
                self.expected.remove(item)
                return True
        return False


def _free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def _seed(app: Any, http: httpx.Client) -> tuple[pyotp.TOTP, list[str], dict[str, int], str, str]:
    """Users (admin, a trader with MFA, a viewer), bots in each status, the trader's fills."""
    for email in ("admin@example.com", "trader@example.com", "viewer@example.com"):
        r = http.post("/api/auth/register", json={"email": email, "password": PASSWORD})
        assert r.status_code == 201, r.text

    def login(email: str, **extra: str) -> str:
        r = http.post("/api/auth/login", json={"email": email, "password": PASSWORD, **extra})
        assert r.status_code == 200, r.text
        return str(r.json()["accessToken"])

    trader = {"Authorization": f"Bearer {login('trader@example.com')}"}
    enrol = http.post("/api/auth/mfa/enroll", headers=trader).json()
    totp = pyotp.TOTP(enrol["secret"])
    confirmed = http.post("/api/auth/mfa/confirm", json={"code": totp.now()}, headers=trader)
    assert confirmed.status_code == 200, confirmed.text
    backup_codes = confirmed.json()["backupCodes"]
    # The confirmation spent this time step's code: scripts log in with a backup code.
    trader_token = login("trader@example.com", backupCode=backup_codes.pop())
    trader = {"Authorization": f"Bearer {trader_token}"}
    bots = {}
    for name in ("alpha", "beta", "gamma"):
        body = {"name": name, "tradingPair": "BTC/USDT", "strategy": "sma_cross"}
        r = http.post("/api/bots", json={**body, "params": {"fast": 5, "slow": 20}}, headers=trader)
        assert r.status_code == 201, r.text
        bots[name] = r.json()["id"]

    factory = app.state.context.session_factory
    with factory() as s:
        s.execute(update(User).where(User.email == "viewer@example.com").values(role="viewer"))
        viewer_id = s.scalar(select(User.id).where(User.email == "viewer@example.com"))
        # What the cluster would have recorded: one running bot, one that failed, one live.
        now = datetime.now(UTC)
        s.execute(
            update(Bot)
            .where(Bot.id == bots["alpha"])
            .values(status="Running", desired_state="running", status_changed_at=now)
        )
        s.execute(
            update(Bot)
            .where(Bot.id == bots["gamma"])
            .values(
                status="Error",
                mode="live",
                status_reason="exchange refused the API key",
                status_changed_at=now,
            )
        )
        viewer_bot = Bot(
            user_id=viewer_id,
            name="watched",
            trading_pair="BTC/USDT",
            strategy="sma_cross",
            params={},
            timeframe="1h",
            risk_per_trade=Decimal(1),
            max_position_size=Decimal(10),
            status="Running",
            desired_state="running",
        )
        s.add(viewer_bot)
        # Three fills of alpha, its open position and its equity.
        for i, (side, price, pnl) in enumerate(
            [("buy", "29800", None), ("sell", "31500", "170"), ("buy", "30100", None)]
        ):
            at = FILL_START + timedelta(hours=24 * i)
            order = Order(
                bot_id=bots["alpha"],
                client_order_id=f"seed-{i}",
                exchange="binance",
                symbol="BTC/USDT",
                side=side,
                type="market",
                amount=Decimal("0.1"),
                filled=Decimal("0.1"),
                average_price=Decimal(price),
                status="closed",
                submitted_at=at,
                closed_at=at,
            )
            s.add(order)
            s.flush()
            s.add(
                Trade(
                    bot_id=bots["alpha"],
                    order_id=order.id,
                    exchange_trade_id=f"t{i}",
                    symbol="BTC/USDT",
                    side=side,
                    price=Decimal(price),
                    amount=Decimal("0.1"),
                    fee=Decimal("0.03"),
                    fee_currency="USDT",
                    realized_pnl=None if pnl is None else Decimal(pnl),
                    timestamp=at,
                )
            )
        for i in range(6):
            at = FILL_START + timedelta(hours=12 * i)
            equity = Decimal(10_000 + 40 * i)
            s.add(
                EquitySnapshot(
                    bot_id=bots["alpha"],
                    timestamp=at,
                    equity=equity,
                    cash=equity,
                    position_value=Decimal(0),
                )
            )
        s.add(
            Position(
                bot_id=bots["alpha"],
                symbol="BTC/USDT",
                amount=Decimal("0.1"),
                average_price=Decimal("30100"),
            )
        )
        s.commit()
    app.state.context.identity.forget(viewer_id)
    viewer_token = login("viewer@example.com")
    return totp, backup_codes, bots, trader_token, viewer_token


@pytest.fixture(scope="module")
def head(tmp_path_factory: pytest.TempPathFactory, ray_session: Any) -> Iterator[Head]:
    """The head node on a free port, with the session's Ray as its cluster."""
    import uvicorn

    from cryptoorchestrator.api.app import create_app
    from cryptoorchestrator.cluster.facade import RayCluster
    from cryptoorchestrator.cluster.handles import find_bot_actor
    from cryptoorchestrator.cluster.risk_actor import get_risk_actor
    from cryptoorchestrator.platform.settings import Settings, get_settings
    from cryptoorchestrator.platform.storage.db import dispose_engines, upgrade

    root = tmp_path_factory.mktemp("dashboard")
    with pytest.MonkeyPatch.context() as mp:
        for key in list(os.environ):
            if key.startswith("CRYPTOORCH_") and key not in ("CRYPTOORCH_TEST_PG_URL",):
                mp.delenv(key, raising=False)
        mp.chdir(root)
        get_settings.cache_clear()
        settings = Settings(
            database_url=f"sqlite:///{root / 'var' / 'test.db'}",
            log_dir=root / "logs",
            data_dir=root / "var" / "data",
            var_dir=root / "var",
        )
        upgrade(settings)
        cluster = RayCluster(settings, connect=False)
        # Access tokens of 63 s: the page renews them in the background a few seconds in.
        app = create_app(settings, options=options(access_token_minutes=1.05), cluster=cluster)
        sock = _free_socket()
        port = sock.getsockname()[1]
        server = uvicorn.Server(
            uvicorn.Config(app, log_level="warning", ws_ping_interval=None, lifespan="on")
        )
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while not server.started:
            assert thread.is_alive(), "the head node did not start"
            assert time.monotonic() < deadline, "the head node did not start in time"
            time.sleep(0.05)
        bots: dict[str, int] = {}
        try:
            with httpx.Client(base_url=url, timeout=60) as http:
                totp, backups, bots, trader_token, viewer_token = _seed(app, http)
            yield Head(url, app, totp, backups, bots, trader_token, viewer_token)
        finally:
            server.should_exit = True
            thread.join(timeout=60)
            for bot_id in bots.values():
                handle = find_bot_actor(bot_id)
                if handle is not None:
                    ray_session.kill(handle, no_restart=True)
            ray_session.kill(get_risk_actor(settings), no_restart=True)
            dispose_engines()
            get_settings.cache_clear()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium (Debian's) for the module."""
    if not CHROMIUM.exists():
        message = (
            f"Chromium not found at {CHROMIUM}: `apt-get install chromium` "
            "(scripts/bootstrap.sh dev installs it)"
        )
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield chromium
        chromium.close()


def _open(browser: Any, head: Head, viewport: dict[str, int]) -> tuple[Any, Any, Watch]:
    """A fresh context and page on the dashboard, watched for errors and failed requests."""
    context = browser.new_context(viewport=viewport)
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    watch = Watch()

    def on_console(message: Any) -> None:
        if message.type != "error":
            return
        url = (message.location or {}).get("url", "")
        # Chromium logs every 4xx fetch: the refusals provoked on purpose are checked on their
        # responses (the MFA challenge's 401, the 409 of a start under the kill switch).
        if re.search(r"status of (401|409)", message.text) and url.endswith(
            ("/api/auth/login", "/start")
        ):
            return
        watch.console_errors.append(f"{message.text} ({url})")

    def on_response(response: Any) -> None:
        if response.url.endswith("/api/auth/refresh") and response.status == 200:
            watch.refreshes += 1
        if response.status < 400:
            return
        if response.url.endswith("/api/auth/login") and response.status == 401:
            body = response.json()
            if body.get("code") == "mfa_required":
                watch.mfa_challenges += 1
                return
        if watch.provoked(response.status, response.request.method, response.url):
            return
        watch.failed.append(f"{response.status} {response.request.method} {response.url}")

    page.on("console", on_console)
    page.on("pageerror", lambda error: watch.console_errors.append(f"page error: {error}"))
    page.on(
        "requestfailed",
        lambda request: watch.failed.append(f"failed {request.method} {request.url}"),
    )
    page.on("response", on_response)
    page.goto(head.url + "/")
    return context, page, watch


def _assert_clean(watch: Watch) -> None:
    assert watch.console_errors == []
    assert watch.failed == []


def _shot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 0
    return path


def _login(page: Any, email: str, *, code: str | None = None, backup: str | None = None) -> None:
    page.fill("#email", email)
    page.fill("#password", PASSWORD)
    page.click("form.step-password button[type=submit]")
    if code is None and backup is None:
        return
    page.wait_for_selector("form.step-mfa:not([hidden])")
    if backup is not None:
        page.click("text=Use a backup code instead")
        page.fill("#code", backup)
    else:
        page.fill("#code", code or "")
    page.click("form.step-mfa button[type=submit]")


def _book_fill(head: Head, bot_id: int, at: datetime) -> None:
    """Persist a fill of ``bot_id`` and announce it on the event hub, as a bot's relay does."""
    with head.app.state.context.session_factory() as s:
        order = Order(
            bot_id=bot_id,
            client_order_id=f"live-{at.timestamp():.0f}",
            exchange="binance",
            symbol="BTC/USDT",
            side="sell",
            type="market",
            amount=Decimal("0.1"),
            filled=Decimal("0.1"),
            average_price=Decimal("30500"),
            status="closed",
            submitted_at=at,
            closed_at=at,
        )
        s.add(order)
        s.flush()
        trade = Trade(
            bot_id=bot_id,
            order_id=order.id,
            exchange_trade_id=f"live-{order.id}",
            symbol="BTC/USDT",
            side="sell",
            price=Decimal("30500"),
            amount=Decimal("0.1"),
            fee=Decimal("0.03"),
            fee_currency="USDT",
            realized_pnl=Decimal("40"),
            timestamp=at,
        )
        s.add(trade)
        s.commit()
        event = {"type": "fill", "orderId": order.id, "price": "30500", "amount": "0.1"}
    assert head.app.state.context.event_hub.publish(bot_id, event) >= 1


def _badge(page: Any, bot_id: int) -> Any:
    return page.locator(f'tr[data-bot-id="{bot_id}"] td.status .badge')


def test_page_is_served_with_a_strict_csp(head: Head) -> None:
    with httpx.Client(base_url=head.url) as http:
        page = http.get("/")
        assert page.status_code == 200
        assert page.headers["content-security-policy"] == DASHBOARD_CSP
        csp = page.headers["content-security-policy"]
        assert "unsafe-inline" not in csp
        assert "http" not in csp
        assert "script-src 'self'" in csp
        assert "style-src 'self'" in csp
        assert page.headers["x-frame-options"] == "DENY"
        assert page.headers["x-content-type-options"] == "nosniff"
        # No inline script or style anywhere in the page: every script has a same-origin src.
        assert not re.search(rb"<script(?![^>]*\bsrc=\"/)", page.content)
        assert b"<style" not in page.content
        assert b" style=" not in page.content
        vendor = http.get("/vendor/lightweight-charts.mjs")
        assert vendor.status_code == 200
        assert vendor.headers["content-type"].startswith("text/javascript")
        assert b"TradingView" in vendor.content[:400]
        # Only the dashboard's own files are served: nothing else of the package or disk.
        assert http.get("/assets/../app.py").status_code == 404
        assert http.get("/assets/%2e%2e/routers/dashboard.py").status_code == 404
        assert http.get("/vendor/package.json").status_code == 404
        # The bot page's equity: the owner's bot only, oldest first.
        trader = {"Authorization": f"Bearer {head.trader_token}"}
        viewer = {"Authorization": f"Bearer {head.viewer_token}"}
        equity = http.get(f"/api/bots/{head.bots['alpha']}/equity", headers=trader)
        assert equity.status_code == 200
        stamps = [p["timestamp"] for p in equity.json()["points"]]
        assert len(stamps) == 6
        assert stamps == sorted(stamps)
        assert Decimal(equity.json()["points"][0]["equity"]) == 10_000
        assert http.get(f"/api/bots/{head.bots['alpha']}/equity", headers=viewer).status_code == 404
        assert http.get(f"/api/bots/{head.bots['alpha']}/equity").status_code == 401
        # The API keeps its own strict policy and no-store.
        api = http.get("/api/health")
        assert api.headers["content-security-policy"].startswith("default-src 'none'")


def test_trader_logs_in_with_mfa_and_runs_the_dashboard(browser: Any, head: Head) -> None:
    context, page, watch = _open(browser, head, DESKTOP)
    try:
        # Login: password first, then the MFA step asked for by the API.
        page.wait_for_selector("#email")
        assert page.locator("#boot").count() == 0  # the loading note is gone
        _shot(page, "login-1440x900")
        # The next time step's code: the enrolment spent this one's (replay protection).
        next_code = head.totp.at(datetime.now(UTC) + timedelta(seconds=30))
        _login(page, "trader@example.com", code=next_code)
        page.wait_for_selector("table.bots tbody tr")
        assert watch.mfa_challenges == 1
        assert page.locator("#who").inner_text().startswith("trader@example.com")

        # Overview: each seeded bot with its status badge (and the error's reason).
        alpha, beta, gamma = (head.bots[n] for n in ("alpha", "beta", "gamma"))
        assert _badge(page, alpha).inner_text() == "Running"
        assert _badge(page, beta).inner_text() == "Stopped"
        assert _badge(page, gamma).inner_text() == "Error"
        assert (
            "exchange refused the API key"
            in page.locator(f'tr[data-bot-id="{gamma}"] td.status').inner_text()
        )
        page.wait_for_selector("#live[data-state=on]")
        page.wait_for_selector(f'tr[data-bot-id="{alpha}"] td[data-label=Position]:has-text("0.1")')
        _shot(page, "overview-1440x900")

        # The live/paper filter.
        page.click("button[data-filter=live]")
        assert page.locator("table.bots tbody tr").count() == 1
        assert page.locator(f'tr[data-bot-id="{gamma}"]').count() == 1
        page.click("button[data-filter=all]")
        assert page.locator("table.bots tbody tr").count() == 3

        # Start a bot from the page: the cluster creates its actor, the badge says Starting.
        page.click(f'tr[data-bot-id="{beta}"] button[data-action=start]')
        page.wait_for_selector(f'tr[data-bot-id="{beta}"][data-status=Starting]')
        # Stopped behind the page's back: only /ws/bots can tell the page.
        with httpx.Client(base_url=head.url, timeout=60) as http:
            r = http.post(
                f"/api/bots/{alpha}/stop",
                headers={"Authorization": f"Bearer {head.trader_token}"},
            )
            assert r.status_code == 200, r.text
        page.wait_for_selector(f'tr[data-bot-id="{alpha}"][data-status=Stopped]')
        assert _badge(page, alpha).inner_text() == "Stopped"

        # The bot page: candles with the fills as markers, equity, the trades.
        page.click(f'tr[data-bot-id="{alpha}"] a')
        page.wait_for_selector("#bot-chart canvas")
        page.wait_for_selector(".legend:has-text('3 fills')")
        assert page.locator("#chart-missing").count() == 0
        assert page.locator("table.trades tbody tr").count() == 3
        assert "6 equity points" in page.locator(".legend").inner_text()
        legend = page.locator(".legend").inner_text()
        assert int(re.search(r"(\d+) candles", legend).group(1)) > 100  # type: ignore[union-attr]
        # The chart library's attribution (its license asks for the TradingView link).
        assert page.locator("footer a[href='https://www.tradingview.com/']").count() == 1
        assert page.locator(".legend a[href='https://www.tradingview.com/']").count() == 1
        _shot(page, "bot-1440x900")
        # A fill booked now reaches the open page through /ws/bots: a new marker and row.
        _book_fill(head, alpha, FILL_START + timedelta(hours=96))
        page.wait_for_selector(".legend:has-text('4 fills')")
        assert page.locator("table.trades tbody tr").count() == 4

        # Risk: the kill switch asks first; cancelling does nothing.
        page.click("nav a[data-route=risk]")
        page.wait_for_selector("#kill-state.released")
        page.click("#kill-open")
        assert page.locator("#kill-dialog").is_visible()
        _shot(page, "kill-switch-dialog-1440x900")
        page.click("#kill-cancel")
        assert not page.locator("#kill-dialog").is_visible()
        assert page.locator("#kill-state").get_attribute("data-engaged") == "false"
        # Confirmed: the switch is engaged, the risk events say so, the bots are stopped.
        page.click("#kill-open")
        page.click("#kill-confirm")
        # The risk actor halts the started bot's actor first, which may still be starting up.
        page.wait_for_selector("#kill-state.engaged", timeout=4 * WAIT_MS)
        page.wait_for_selector("table.events tbody tr[data-kind=kill_switch]")
        _shot(page, "risk-engaged-1440x900")
        page.click("nav a[data-route=overview]")
        page.wait_for_selector(f'tr[data-bot-id="{beta}"][data-status=Stopped]')
        # While it is engaged a start is refused, and the page says why.
        watch.expected.append((409, "POST", f"/api/bots/{beta}/start"))
        page.click(f'tr[data-bot-id="{beta}"] button[data-action=start]')
        page.wait_for_selector(".toast.error:has-text('kill switch')")
        assert watch.expected == []
        # Released.
        page.click("nav a[data-route=risk]")
        page.click("#kill-release-user")
        page.wait_for_selector("#kill-state.released")

        # Health: every component, and the way to Ray's dashboard.
        page.click("nav a[data-route=health]")
        for name in ("database", "ray", "risk_actor", "circuit_breaker", "bots"):
            page.wait_for_selector(f"section[data-component={name}] .badge")
        assert page.locator("section[data-component=database] .badge").inner_text() == "healthy"
        assert page.locator("#ray-dashboard-link").get_attribute("href", timeout=WAIT_MS)
        _shot(page, "health-1440x900")

        # The light theme (the toggle), then logout.
        before = page.evaluate("getComputedStyle(document.body).backgroundColor")
        page.click("#theme-toggle")
        assert page.evaluate("document.documentElement.dataset.theme") in ("light", "dark")
        assert page.evaluate("getComputedStyle(document.body).backgroundColor") != before
        page.click("nav a[data-route=overview]")
        page.wait_for_selector("table.bots tbody tr")
        _shot(page, "overview-other-theme-1440x900")

        # The access token was renewed in the background meanwhile (63 s tokens).
        if watch.refreshes == 0:
            page.wait_for_event(
                "response", lambda r: r.url.endswith("/api/auth/refresh"), timeout=90_000
            )
        assert watch.refreshes >= 1
        page.click("#logout")
        page.wait_for_selector("#email")
        assert page.locator("#topbar").is_hidden()
        assert page.locator("table.bots").count() == 0  # nothing of the session is left shown
        _assert_clean(watch)
    finally:
        context.close()


def test_without_npm_the_vendor_files_are_explained(tmp_path: Path) -> None:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from cryptoorchestrator.api.errors import install_error_handlers
    from cryptoorchestrator.api.routers.dashboard import make_router, vendor_status

    status = vendor_status(tmp_path)  # an empty node_modules: `npm ci` never ran
    assert status["lightweightCharts"] is None
    assert "npm" in status["reason"]
    assert "scripts/bootstrap.sh" in status["reason"]
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(make_router(node_modules=tmp_path))
    with TestClient(app) as client:
        assert client.get("/").status_code == 200  # the page itself still serves
        missing = client.get("/vendor/lightweight-charts.mjs")
        assert missing.status_code == 404
        assert "bootstrap.sh" in missing.json()["message"]


def test_viewer_sees_no_actions(browser: Any, head: Head, tmp_path: Path) -> None:
    context, page, watch = _open(browser, head, DESKTOP)
    try:
        _login(page, "viewer@example.com")
        page.wait_for_selector("table.bots tbody tr")
        assert "viewer" in page.locator("#who").inner_text()
        assert page.locator("table.bots tbody tr").count() == 1
        assert page.locator("button[data-action]").count() == 0
        assert page.locator("th:has-text('Actions')").count() == 0
        # Their bot's page, as on a head node set up without npm: the chart's place says why.
        from cryptoorchestrator.api.routers.dashboard import vendor_status

        without = {**vendor_status(tmp_path), "rayDashboard": {"enabled": False, "port": 8265}}
        page.route(
            "**/dashboard/config.json",
            lambda route: route.fulfill(json=without, headers={"cache-control": "no-store"}),
        )
        page.click("table.bots tbody tr a")
        page.wait_for_selector("#chart-missing")
        assert "npm" in page.locator("#chart-missing").inner_text()
        assert page.locator("#bot-chart canvas").count() == 0
        assert page.locator("button[data-action]").count() == 0
        _shot(page, "bot-without-chart-library-1440x900")
        page.unroute("**/dashboard/config.json")
        page.click("nav a[data-route=risk]")
        page.wait_for_selector("#kill-state:not(:has-text('…'))")
        assert page.locator("#kill-open").count() == 0
        assert page.locator("[id^=kill-release]").count() == 0
        _assert_clean(watch)
        # The server refuses a viewer's start whatever the page shows.
        with httpx.Client(base_url=head.url) as http:
            bots = http.get(
                "/api/bots", headers={"Authorization": f"Bearer {head.viewer_token}"}
            ).json()["items"]
            r = http.post(
                f"/api/bots/{bots[0]['id']}/start",
                headers={"Authorization": f"Bearer {head.viewer_token}"},
            )
            assert r.status_code == 403
    finally:
        context.close()


def test_phone_screen_with_a_backup_code(browser: Any, head: Head) -> None:
    context, page, watch = _open(browser, head, PHONE)
    try:
        page.wait_for_selector("#email")
        _shot(page, "login-390x844")
        _login(page, "trader@example.com", backup=head.backup_codes.pop())
        page.wait_for_selector("table.bots tbody tr")
        # A reload keeps the tab's session (its refresh token; the access token was in memory).
        page.reload()
        page.wait_for_selector("table.bots tbody tr")
        assert page.locator("#email").count() == 0
        # Nothing wider than the screen: no sideways scrolling.
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        _shot(page, "overview-390x844")
        page.click(f'tr[data-bot-id="{head.bots["alpha"]}"] a')
        page.wait_for_selector("#bot-chart canvas")
        page.wait_for_selector(".legend:has-text(' fills')")
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        _shot(page, "bot-390x844")
        page.click("nav a[data-route=risk]")
        page.wait_for_selector("#kill-state.released")
        _shot(page, "risk-390x844")
        page.click("nav a[data-route=health]")
        page.wait_for_selector("section[data-component=database] .badge")
        _shot(page, "health-390x844")
        _assert_clean(watch)
    finally:
        context.close()
