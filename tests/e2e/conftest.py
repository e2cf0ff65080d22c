"""Shared set-up of the dashboard's browser tests (``test_dashboard*.py``).

One head node per test module (uvicorn in a thread, SQLite, the session's real local Ray with
the risk actor) seeded with an admin, a trader with MFA, a viewer and the trader's bots and
fills; one headless Chromium (Debian's) per module; helpers that open a watched page (console
errors, failed requests), log in, and take screenshots to ``test-artifacts/dashboard/``.
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import jwt
import pyotp
import pytest
from sqlalchemy import select, update
from tests.conftest import IN_CI, REPO_ROOT
from tests.integration.api.conftest import PASSWORD, options

from cryptoorchestrator.platform.data.importers import read_ohlcv_file
from cryptoorchestrator.platform.data.store import OhlcvStore
from cryptoorchestrator.platform.model.ohlcv import OHLCV_SCHEMA
from cryptoorchestrator.platform.services.auth import create_access_token
from cryptoorchestrator.platform.storage.models import (
    Bot,
    EquitySnapshot,
    Order,
    Position,
    Trade,
    User,
)

CHROMIUM = Path(os.environ.get("CRYPTOORCH_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = REPO_ROOT / "test-artifacts" / "dashboard"
DESKTOP = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}
#: How long a page may take to show an event: the assertions wait for events, never for a
#: time, and a busy machine (the README's platform on the other worker, Ray actors starting
#: and being halted by the kill switch) took over 20 s in a clean-clone run; a test that
#: passes never waits this long.
WAIT_MS = 120_000
#: Fill times of the seeded bot, inside the bundled BTC/USDT candles (2021-2022).
FILL_START = datetime(2022, 6, 1, tzinfo=UTC)


def _lasting(app: Any, token: str) -> str:
    """The same login's access token, valid for an hour (same session and auth epoch)."""
    config = app.state.context.auth_config
    claims = jwt.decode(token, config.secret_key, algorithms=["HS256"], issuer=config.issuer)
    return create_access_token(
        dataclasses.replace(config, access_ttl=timedelta(hours=1)),
        int(claims["sub"]),
        session_id=claims["sid"],
        epoch=int(claims["ep"]),
    )


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
    seen: list[tuple[int, str, str]] = field(default_factory=list)

    def provoked(self, status: int, method: str, url: str) -> bool:
        """Whether this refusal was expected (and, for the next one, no longer is)."""
        for item in self.expected:
            if item[0] == status and item[1] == method and url.endswith(item[2]):
                self.expected.remove(item)
                self.seen.append(item)
                return True
        return False

    def logged_refusal(self, text: str, url: str) -> bool:
        """Whether a console line is Chromium's log of a refusal provoked on purpose.

        Chromium logs every 4xx fetch; the response itself is checked by :meth:`provoked`
        (the console line may come before or after it).
        """
        found = re.search(r"status of (\d{3})", text)
        return found is not None and any(
            int(found.group(1)) == status and url.endswith(path)
            for status, _method, path in [*self.expected, *self.seen]
        )


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


def _forget_named_actors(ray_session: Any, names: list[str], deadline_s: float = 120.0) -> None:
    """Kill the named actors of this namespace that exist, and wait until each name is free."""
    from cryptoorchestrator.cluster.runtime import NAMESPACE

    deadline = time.monotonic() + deadline_s
    for name in names:
        while True:
            try:
                handle = ray_session.get_actor(name, namespace=NAMESPACE)
            except ValueError:
                break  # no such actor (any more)
            assert time.monotonic() < deadline, f"actor {name} left by another module stays"
            ray_session.kill(handle, no_restart=True)
            time.sleep(0.1)


@pytest.fixture(scope="module")
def head(tmp_path_factory: pytest.TempPathFactory, ray_session: Any) -> Iterator[Head]:
    """The head node on a free port, with the session's Ray as its cluster."""
    import uvicorn

    from cryptoorchestrator.api.app import create_app
    from cryptoorchestrator.cluster.facade import RayCluster
    from cryptoorchestrator.cluster.handles import RISK_ACTOR_NAME, actor_name, find_bot_actor
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
        # The session's Ray is shared by every module of this worker: a risk actor or bot
        # actors another module left behind hold that module's database (the kill switch
        # wrote its Stopped there, and this page never saw it).  They go before this head
        # node starts.
        _forget_named_actors(ray_session, [RISK_ACTOR_NAME, *(actor_name(i) for i in range(1, 33))])
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
            # The pages' tokens live 63 s (their background refresh is tested); the tests' own
            # API calls use the same sessions with tokens that outlive a slow module.
            trader, viewer = _lasting(app, trader_token), _lasting(app, viewer_token)
            yield Head(url, app, totp, backups, bots, trader, viewer)
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
        if watch.logged_refusal(message.text, url):
            return
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


@dataclass(frozen=True)
class FillSpec:
    """What differs between the tests' fills: price, amount, fee and realized P&L."""

    price: Decimal = Decimal(30_000)
    amount: Decimal = Decimal("0.01")
    fee: Decimal = Decimal("0.003")
    realized_pnl: Decimal | None = None


def fill_rows(
    bot_id: int,
    at: datetime,
    key: str,
    side: str,
    spec: FillSpec = FillSpec(),  # noqa: B008 (frozen: one shared default is safe)
) -> tuple[Order, Trade]:
    """A closed market order of ``bot_id`` and its one fill at ``at`` (not yet added)."""
    order = Order(
        bot_id=bot_id,
        client_order_id=key,
        exchange="binance",
        symbol="BTC/USDT",
        side=side,
        type="market",
        amount=spec.amount,
        filled=spec.amount,
        average_price=spec.price,
        status="closed",
        submitted_at=at,
        closed_at=at,
    )
    trade = Trade(
        bot_id=bot_id,
        exchange_trade_id=key,
        symbol="BTC/USDT",
        side=side,
        price=spec.price,
        amount=spec.amount,
        fee=spec.fee,
        fee_currency="USDT",
        realized_pnl=spec.realized_pnl,
        timestamp=at,
    )
    return order, trade


def add_fills(session: Any, pairs: list[tuple[Order, Trade]]) -> list[int]:
    """Add orders and their fills (orders first, for their ids); returns the trade ids."""
    session.add_all([order for order, _ in pairs])
    session.flush()
    for order, trade in pairs:
        trade.order_id = order.id
    session.add_all([trade for _, trade in pairs])
    session.flush()
    return [trade.id for _, trade in pairs]


def _seed_fills(head: Head, bot_id: int, count: int, start: datetime) -> list[int]:
    """``count`` hourly fills of ``bot_id`` from ``start`` (prices 20,000 + i); returns their
    trade ids."""
    pairs = [
        fill_rows(
            bot_id,
            start + timedelta(hours=i),
            f"page-{bot_id}-{i}",
            "buy" if i % 2 == 0 else "sell",
            FillSpec(price=Decimal(20_000 + i), fee=Decimal("0.002")),
        )
        for i in range(count)
    ]
    with head.app.state.context.session_factory() as s:
        ids = add_fills(s, pairs)
        s.commit()
    return ids


def load_history(data_dir: Path, source: Path) -> list[int]:
    """Store the real BTC/USDT 1h history (``source``) as ``binance`` ``BTC/USDT`` ``1h`` in
    ``data_dir``; the chart test and ``benchmarks/dashboard.py`` share this set-up.

    Returns
    -------
    list[int]
        The candles' open times (ms), oldest first.
    """
    table = read_ohlcv_file(source).cast(OHLCV_SCHEMA)
    OhlcvStore(data_dir).write("binance", "BTC/USDT", "1h", table, mode="replace")
    return [int(t) for t in table.column("timestamp").to_pylist()]


def _at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def seed_fills(session_factory: Callable[[], Any], bot_id: int, times_ms: list[int]) -> None:
    """Write one fill (order and trade) of ``bot_id`` at each of ``times_ms``, buys and sells
    alternating, in one transaction."""
    with session_factory() as session:
        add_fills(
            session,
            [
                fill_rows(bot_id, _at(at), f"bench-{bot_id}-{i}", "buy" if i % 2 else "sell")
                for i, at in enumerate(times_ms)
            ],
        )
        session.commit()


def spread(times_ms: list[int], count: int) -> list[int]:
    """``count`` of ``times_ms`` evenly spread over them (the last candle left free)."""
    step = (len(times_ms) - 1) / count
    return [times_ms[int(i * step)] for i in range(count)]


def book_fill(
    app: Any,
    bot_id: int,
    at: datetime | int,
    key: str,
    side: str = "buy",
    spec: FillSpec = FillSpec(),
) -> int:
    """Book one fill as a bot's event relay does: the rows committed, then the hub's ``fill``
    event to the owner's sockets; returns how many sockets it reached."""
    context = app.state.context
    with context.session_factory() as session:
        order, trade = fill_rows(bot_id, _at(at) if isinstance(at, int) else at, key, side, spec)
        add_fills(session, [(order, trade)])
        session.commit()
        event = {
            "type": "fill",
            "orderId": order.id,
            "price": str(spec.price),
            "amount": str(spec.amount),
        }
    return int(context.event_hub.publish(bot_id, event))


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _trader_page(browser: Any, head: Head, viewport: dict[str, int]) -> tuple[Any, Any, Watch]:
    """A page logged in as the trader (with one of the backup codes) on the overview, its
    sockets up (/ws/runs too: from there on a run page reads once and is pushed the rest)."""
    context, page, watch = _open(browser, head, viewport)
    page.wait_for_selector("#email")
    _login(page, "trader@example.com", backup=head.backup_codes.pop())
    page.wait_for_selector("table.bots tbody tr")
    page.wait_for_selector("#live[data-runs=on]")
    return context, page, watch
