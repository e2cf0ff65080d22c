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

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.e2e.conftest import (
    DESKTOP,
    FILL_START,
    PHONE,
    WAIT_MS,
    FillSpec,
    Head,
    _assert_clean,
    _login,
    _open,
    _seed_fills,
    _shot,
    _trader_page,
    book_fill,
)

from cryptoorchestrator.api.middleware import DASHBOARD_CSP
from cryptoorchestrator.platform.storage.models import Order

pytestmark = [
    pytest.mark.ray,
    pytest.mark.slow,
]


def _book_fill(head: Head, bot_id: int, at: datetime) -> None:
    """Persist a fill of ``bot_id`` and announce it on the event hub, as a bot's relay does."""
    spec = FillSpec(Decimal(30_500), Decimal("0.1"), Decimal("0.03"), realized_pnl=Decimal(40))
    assert book_fill(head.app, bot_id, at, f"live-{at.timestamp():.0f}", "sell", spec) >= 1


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
        page.wait_for_selector("#kill-state.engaged", timeout=3 * WAIT_MS)
        # The switch's risk event names the bots it stopped; a bot still starting under load
        # may be stopped before its actor runs, and then no event names it: not waited for here
        # (tests/integration/cluster/test_kill_switch.py checks the events on Ray).
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


def _field_error(page: Any, field: str) -> Any:
    return page.locator(f'#bot-form .field[data-field="{field}"] .field-error')


def test_trader_creates_a_bot_with_the_apis_validation(browser: Any, head: Head) -> None:
    context, page, watch = _trader_page(browser, head, DESKTOP)
    try:
        page.click("#new-bot")
        page.wait_for_selector("#bot-form [data-field='params.fast'] input")
        # The ranges are shown next to the fields, as the API declares them.
        assert "0.1-5" in page.locator("#bot-form [data-field=riskPerTrade] .hint").inner_text()
        fast = page.locator("#bot-form [data-field='params.fast']")
        assert "int in [2, 500]" in fast.inner_text()
        page.fill("#f-name", "delta")
        # Out of the API's range: refused next to the field, nothing sent.
        page.fill("#f-riskPerTrade", "9")
        page.click("#bot-form button[type=submit]")
        page.wait_for_selector("#bot-form [data-field=riskPerTrade] .field-error:not([hidden])")
        assert "0.1, 5" in _field_error(page, "riskPerTrade").inner_text()
        assert page.get_attribute("#f-riskPerTrade", "aria-invalid") == "true"
        # Live needs one of the user's exchange accounts (the trader has none).
        page.select_option("#f-mode", "live")
        page.click("#bot-form button[type=submit]")
        assert "exchange account" in _field_error(page, "exchangeAccountId").inner_text()
        page.select_option("#f-mode", "paper")
        # In range, but fast >= slow: only the API knows; its 422 detail lands next to params.fast.
        page.fill("#f-riskPerTrade", "2")
        page.fill("#f-params-fast", "30")
        page.fill("#f-params-slow", "20")
        watch.expected.append((422, "POST", "/api/bots"))
        page.click("#bot-form button[type=submit]")
        page.wait_for_selector("#bot-form [data-field='params.fast'] .field-error:not([hidden])")
        assert "fast < slow" in _field_error(page, "params.fast").inner_text()
        assert _field_error(page, "riskPerTrade").is_hidden()
        assert watch.expected == []
        _shot(page, "create-bot-error-1440x900")
        # Fixed: created, listed, stored with what the form said.
        page.fill("#f-params-fast", "8")
        page.click("#bot-form button[type=submit]")
        page.wait_for_selector("table.bots tbody tr:has-text('delta')")
        assert page.locator("#bot-form").count() == 0
        with httpx.Client(base_url=head.url) as http:
            bots = http.get(
                "/api/bots", headers={"Authorization": f"Bearer {head.trader_token}"}
            ).json()["items"]
        delta = next(b for b in bots if b["name"] == "delta")
        assert delta["params"] == {"fast": 8, "slow": 20}
        assert Decimal(delta["riskPerTrade"]) == 2
        assert delta["status"] == "Stopped"
        _assert_clean(watch)
    finally:
        context.close()
    context, page, watch = _trader_page(browser, head, PHONE)
    try:
        page.click("#new-bot")
        page.wait_for_selector("#bot-form [data-field='params.slow'] input")
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        _shot(page, "create-bot-390x844")
        page.click("#bot-form button:has-text('Cancel')")
        assert page.locator("#bot-form").count() == 0
        _assert_clean(watch)
    finally:
        context.close()


def test_trades_page_paginates_filters_and_exports_csv(browser: Any, head: Head) -> None:
    beta = head.bots["beta"]
    # 70 hourly fills of beta from July 1st 2022 (two pages of 50), 22 of them on July 3rd.
    ids = _seed_fills(head, beta, 70, datetime(2022, 7, 1, tzinfo=UTC))
    context, page, watch = _trader_page(browser, head, DESKTOP)
    try:
        page.click("nav a[data-route=trades]")
        page.wait_for_selector("table.trades-all tbody tr")
        page.select_option("#trades-bot", str(beta))
        page.wait_for_function(
            "document.querySelectorAll('table.trades-all tbody tr').length === 50"
        )
        rows = page.locator("table.trades-all tbody tr")
        # Newest first: the first row is the last fill seeded.
        assert rows.first.get_attribute("data-trade-id") == str(ids[-1])
        assert page.locator("#trades-prev").is_disabled()
        page.click("#trades-next")
        page.wait_for_selector("#trades-page:has-text('Page 2')")
        page.wait_for_function(
            "document.querySelectorAll('table.trades-all tbody tr').length === 20"
        )
        assert rows.last.get_attribute("data-trade-id") == str(ids[0])
        assert page.locator("#trades-next").is_disabled()
        _shot(page, "trades-1440x900")
        # A period: July 3rd only (UTC), the fills from index 48 to 69.
        page.fill("#trades-from", "2022-07-03")
        page.fill("#trades-to", "2022-07-03")
        page.dispatch_event("#trades-to", "change")
        page.wait_for_selector("#trades-page:has-text('Page 1')")
        page.wait_for_function(
            "document.querySelectorAll('table.trades-all tbody tr').length === 22"
        )
        # Exported: the same selection, every page of it, as CSV.
        with page.expect_download() as info:
            page.click("#trades-export")
        download = info.value
        assert download.suggested_filename == f"trades_bot{beta}_2022-07-03_2022-07-03.csv"
        lines = Path(download.path()).read_text().strip().splitlines()
        header = lines[0].split(",")
        assert header[:5] == ["id", "timestamp", "botId", "bot", "symbol"]
        exported = [dict(zip(header, line.split(","), strict=True)) for line in lines[1:]]
        assert [int(r["id"]) for r in exported] == list(reversed(ids[48:70]))
        assert {r["bot"] for r in exported} == {"beta"}
        assert {r["timestamp"][:10] for r in exported} == {"2022-07-03"}
        assert Decimal(exported[0]["price"]) == Decimal(20_069)
        _assert_clean(watch)
    finally:
        context.close()
    context, page, watch = _trader_page(browser, head, PHONE)
    try:
        page.goto(f"{head.url}/#/trades?bot={head.bots['alpha']}")
        page.wait_for_selector("table.trades-all tbody tr")
        assert page.locator("#trades-bot").input_value() == str(head.bots["alpha"])
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        _shot(page, "trades-390x844")
        _assert_clean(watch)
    finally:
        context.close()


def test_bot_page_shows_orders_positions_risk_and_the_live_log(browser: Any, head: Head) -> None:
    alpha = head.bots["alpha"]
    settings = head.app.state.context.settings
    log = settings.log_dir / f"bot_{alpha}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(
        '{"time": "2022-06-01T00:00:00Z", "level": "INFO", "message": "bot started"}\n'
        "a plain line <b>not markup</b>\n"
    )
    with head.app.state.context.session_factory() as s:
        order = Order(
            bot_id=alpha,
            client_order_id="open-limit-1",
            exchange="binance",
            symbol="BTC/USDT",
            side="buy",
            type="limit",
            price=Decimal("25000"),
            amount=Decimal("0.2"),
            filled=Decimal(0),
            status="open",
        )
        s.add(order)
        s.commit()
        order_id = order.id
    context, page, watch = _trader_page(browser, head, DESKTOP)
    try:
        page.click(f'tr[data-bot-id="{alpha}"] a')
        page.wait_for_selector(f'table.orders tr[data-order-id="{order_id}"]')
        assert "25,000.00" in page.locator(f'tr[data-order-id="{order_id}"]').inner_text()
        assert page.locator("table.positions tbody tr[data-position-id]").count() == 1
        page.wait_for_selector("#bot-log[data-lines='2']")
        text = page.locator("#bot-log").inner_text()
        assert "INFO  bot started" in text
        assert "<b>not markup</b>" in text  # shown as text
        assert page.locator("#bot-log b").count() == 0
        # Risk limits with their utilisation (the open position against the bot's maximum).
        page.wait_for_selector("#bot-risk tr[data-limit='Max position'] meter")
        limit = page.locator("#bot-risk tr[data-limit='Max position']")
        assert "10% of equity" in limit.inner_text()
        assert page.locator("#bot-risk tr[data-limit='Max drawdown'] meter").count() == 1
        _shot(page, "bot-details-1440x900")
        # Live: a new log line and an event of the bot, and the tail shows it without a reload.
        with log.open("a") as fh:
            fh.write('{"level": "WARNING", "message": "order rejected by risk"}\n')
        assert head.app.state.context.event_hub.publish(alpha, {"type": "order", "orderId": 1}) >= 1
        page.wait_for_selector("#bot-log[data-lines='3']")
        assert "order rejected by risk" in page.locator("#bot-log").inner_text()
        _assert_clean(watch)
    finally:
        context.close()
    context, page, watch = _trader_page(browser, head, PHONE)
    try:
        page.goto(f"{head.url}/#/bots/{alpha}")
        page.wait_for_selector("#bot-log[data-lines]")
        page.wait_for_selector("#bot-risk meter")
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        _shot(page, "bot-details-390x844")
        _assert_clean(watch)
    finally:
        context.close()
