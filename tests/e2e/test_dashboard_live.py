"""The dashboard's live and aggregate reads, end to end in Debian's headless Chromium.

One head node and one browser for the module (see ``conftest.py``).  Each feature is checked
through the API and on the page:

* warnings and errors per bot on the overview, from the bot's log and its risk events, in one
  aggregate read (``GET /api/dashboard/bot-alerts``);
* the trades listing's server-side period (``from``/``to``), its 422s naming the field, and the
  trades page sending it;
* ``/ws/runs``: a backtest's and a study's changes pushed to the open pages, which read the
  run once and never poll while the socket is up; its protocol errors;
* a study over three parameters drawn as parallel coordinates, and the walk-forward folds it
  belongs to (``GET /api/optimizations/{id}/folds``).

Runs are seeded straight into the database and moved on there, as the cluster's workers do, so
the pushes are tested without waiting for Ray to run anything.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import update
from tests.e2e.conftest import (
    DESKTOP,
    PHONE,
    WAIT_MS,
    Head,
    _assert_clean,
    _auth,
    _seed_fills,
    _shot,
    _trader_page,
)

from cryptoorchestrator.platform.storage.models import (
    BacktestRun,
    OptimizationRun,
    OptimizationTrial,
    RiskEvent,
)

pytestmark = [
    pytest.mark.ray,
    pytest.mark.slow,
]


def _trader_id(head: Head) -> int:
    with httpx.Client(base_url=head.url, timeout=60) as http:
        return int(http.get("/api/auth/profile", headers=_auth(head.trader_token)).json()["id"])


def _requests(page: Any, fragment: str) -> list[str]:
    """A live list of the URLs of the page's requests that contain ``fragment``."""
    seen: list[str] = []
    page.on("request", lambda r: seen.append(r.url) if fragment in r.url else None)
    return seen


@pytest.fixture(scope="module")
def sessions(head: Head) -> Any:
    """The head node's session factory."""
    return head.app.state.context.session_factory


# ------------------------------------------------------------------------- warnings and errors


def test_overview_counts_each_bots_warnings_and_errors(
    browser: Any, head: Head, sessions: Any
) -> None:
    gamma, beta = head.bots["gamma"], head.bots["beta"]
    now = datetime.now(UTC)
    log_dir = head.app.state.context.settings.log_dir
    log_dir.mkdir(parents=True, exist_ok=True)

    def record(level: str, at: datetime, message: str) -> str:
        time = at.isoformat(timespec="milliseconds")
        return json.dumps({"time": time, "level": level, "logger": "bot", "message": message})

    lines = [
        record("INFO", now, "started"),
        record("WARNING", now - timedelta(days=2), "too old to count"),
        record("WARNING", now - timedelta(minutes=5), "order rejected: min notional"),
        record("WARNING", now - timedelta(minutes=4), "feed stale"),
        record("ERROR", now - timedelta(minutes=3), "exchange refused the API key"),
        "not a JSON line",
    ]
    (log_dir / f"bot_{gamma}.log").write_text("\n".join(lines) + "\n")
    with sessions() as s:
        s.add(RiskEvent(bot_id=gamma, kind="breach", message="drawdown over 20%"))
        s.add(RiskEvent(bot_id=gamma, kind="denied", message="position over the limit"))
        s.add(RiskEvent(bot_id=beta, kind="kill_switch", message="kill switch activated"))
        old = RiskEvent(bot_id=beta, kind="breach", message="long ago")
        old.created_at = now - timedelta(days=3)
        s.add(old)
        s.commit()

    with httpx.Client(base_url=head.url, timeout=60) as http:
        r = http.get("/api/dashboard/bot-alerts", headers=_auth(head.trader_token))
        assert r.status_code == 200, r.text
        counts = {a["botId"]: (a["warnings"], a["errors"]) for a in r.json()["items"]}
        assert counts[gamma] == (3, 2)  # 2 log warnings + a denial; a log error + a breach
        assert counts[beta] == (1, 0)  # the kill switch; the breach is older than 24 h
        assert set(counts) == set(head.bots.values())
        wider = http.get("/api/dashboard/bot-alerts?hours=96", headers=_auth(head.trader_token))
        assert {a["botId"]: a["errors"] for a in wider.json()["items"]}[beta] == 1
        # Someone else's bots are not counted for the viewer; a bad window names the field.
        viewer = http.get("/api/dashboard/bot-alerts", headers=_auth(head.viewer_token))
        assert gamma not in {a["botId"] for a in viewer.json()["items"]}
        bad = http.get("/api/dashboard/bot-alerts?hours=0", headers=_auth(head.trader_token))
        assert bad.status_code == 422
        assert bad.json()["details"][0]["field"].endswith("hours")

    context, page, watch = _trader_page(browser, head, DESKTOP)
    alerts = _requests(page, "/api/dashboard/bot-alerts")
    try:
        page.reload()
        page.wait_for_selector(f'tr[data-bot-id="{gamma}"] .alerts[data-errors="2"]')
        row = page.locator(f'tr[data-bot-id="{gamma}"] .alerts')
        assert row.get_attribute("data-warnings") == "3"
        assert row.locator("[data-kind=errors]").inner_text() == "2"
        assert "err" in (row.locator("[data-kind=errors]").get_attribute("class") or "")
        alpha = page.locator(f'tr[data-bot-id="{head.bots["alpha"]}"] .alerts')
        assert alpha.get_attribute("data-errors") == "0"
        # One read for every bot, not one per bot.
        assert len(alerts) == 1
        _shot(page, "overview-alerts-1440x900")
        _assert_clean(watch)
    finally:
        context.close()


# --------------------------------------------------------------------------- trades period


def test_trades_are_filtered_by_period_on_the_server(browser: Any, head: Head) -> None:
    gamma = head.bots["gamma"]
    # 60 hourly fills from Aug 1st 2022 00:00 UTC: 24 on Aug 2nd (indexes 24..47).
    ids = _seed_fills(head, gamma, 60, datetime(2022, 8, 1, tzinfo=UTC))
    with httpx.Client(base_url=head.url, timeout=60) as http:

        def page(**query: Any) -> httpx.Response:
            params = {"botId": gamma, **query}
            return http.get("/api/trades/", params=params, headers=_auth(head.trader_token))

        day = {"from": "2022-08-02", "to": "2022-08-03T00:00:00Z"}
        got: list[int] = []
        cursor = None
        for _ in range(5):
            r = page(limit=10, **day, **({"cursor": cursor} if cursor else {}))
            assert r.status_code == 200, r.text
            got += [t["id"] for t in r.json()["items"]]
            cursor = r.json()["nextCursor"]
            if cursor is None:
                break
        assert got == list(reversed(ids[24:48]))  # newest first, all of the day, no more
        # Epoch milliseconds mean the same; an ISO time with an offset too.
        start_ms = int(datetime(2022, 8, 2, tzinfo=UTC).timestamp() * 1000)
        ms = page(limit=100, **{"from": str(start_ms), "to": str(start_ms + 86_400_000)})
        assert [t["id"] for t in ms.json()["items"]] == got
        offset = page(limit=100, **{"from": "2022-08-02T02:00:00+02:00", "to": "2022-08-02T01:00Z"})
        assert [t["id"] for t in offset.json()["items"]] == [ids[24]]
        # Only "to": everything before it; only "from": everything from it.
        assert len(page(limit=500, to="2022-08-01T10:00:00Z").json()["items"]) == 10
        assert len(page(limit=500, **{"from": "2022-08-03T06:00:00Z"}).json()["items"]) == 6
        # Bad input: 422 naming the field and what is allowed.
        for query, name in (
            ({"from": "yesterday"}, "from"),
            ({"to": "2022-13-01"}, "to"),
            ({"from": "2022-08-03", "to": "2022-08-02"}, "to"),
            ({"from": "-5"}, "from"),
        ):
            bad = page(**query)
            assert bad.status_code == 422, (query, bad.text)
            detail = bad.json()["details"][0]
            assert detail["field"] == name, bad.text
            assert detail.get("allowed"), bad.text

    context, page_, watch = _trader_page(browser, head, DESKTOP)
    trades = _requests(page_, "/api/trades/")
    try:
        page_.goto(f"{head.url}/#/trades?bot={gamma}")
        page_.wait_for_selector("table.trades-all tbody tr")
        page_.fill("#trades-from", "2022-08-02")
        page_.fill("#trades-to", "2022-08-02")
        page_.dispatch_event("#trades-to", "change")
        page_.wait_for_function(
            "() => document.querySelectorAll('table.trades-all tbody tr').length === 24"
        )
        first = page_.locator("table.trades-all tbody tr").first
        assert first.get_attribute("data-trade-id") == str(ids[47])
        # The period went to the server: the day's page is one read (per change event) with
        # from and to, not pages of every fill filtered here.
        filtered = {u for u in trades if "from=" in u and "to=" in u}
        assert len(filtered) == 1
        (url,) = filtered
        assert "from=2022-08-02T00%3A00%3A00Z" in url
        assert "to=2022-08-03T00%3A00%3A00.000Z" in url
        assert "cursor=" not in url
        # A To before From is refused on the page, before any request.
        before = len(trades)
        page_.fill("#trades-from", "2022-08-05")
        page_.dispatch_event("#trades-from", "change")
        page_.wait_for_selector("p.empty:has-text('ends before it starts')")
        assert len(trades) == before
        _assert_clean(watch)
    finally:
        context.close()


# ----------------------------------------------------------------------------- /ws/runs


def _frames(page: Any) -> list[dict[str, Any]]:
    """A live list of the JSON messages /ws/runs sent to the page."""
    got: list[dict[str, Any]] = []

    def on_socket(ws: Any) -> None:
        if ws.url.endswith("/ws/runs"):
            ws.on("framereceived", lambda payload: got.append(json.loads(payload)))

    page.on("websocket", on_socket)
    return got


def test_backtest_list_follows_ws_runs_without_polling(
    browser: Any, head: Head, sessions: Any
) -> None:
    run_id = str(uuid.uuid4())
    with sessions() as s:
        s.add(
            BacktestRun(
                id=run_id,
                user_id=_trader_id(head),
                strategy="sma_cross",
                params={"fast": 5, "slow": 20},
                exchange="binance",
                symbol="BTC/USDT",
                timeframe="1h",
                status="running",
                progress=0.1,
            )
        )
        s.commit()
    context, page, watch = _trader_page(browser, head, DESKTOP)
    frames = _frames(page)
    lists = _requests(page, "/api/backtests?")
    try:
        page.reload()  # the socket opens again under the watch of _frames
        page.wait_for_selector("#live[data-runs=on]")
        page.click("nav a[data-route=backtests]")
        row = f'table.runs tr[data-run-id="{run_id}"]'
        page.wait_for_selector(f"{row}[data-status=running] progress")
        with sessions() as s:
            s.execute(update(BacktestRun).where(BacktestRun.id == run_id).values(progress=0.6))
            s.commit()
        page.wait_for_function(
            "sel => { const p = document.querySelector(sel); return p && p.value === 0.6; }",
            arg=f"{row} progress",
        )
        with sessions() as s:
            s.execute(
                update(BacktestRun)
                .where(BacktestRun.id == run_id)
                .values(status="failed", error="no candles in that period")
            )
            s.commit()
        page.wait_for_selector(f"{row}[data-status=failed]")
        assert "no candles in that period" in page.locator(row).inner_text()
        assert page.locator(f"{row} progress").count() == 0
        # The list was read once; the changes came over the socket.
        assert len(lists) == 1
        pushed = [f for f in frames if f.get("type") == "run" and f.get("id") == run_id]
        assert [f["status"] for f in pushed][-1] == "failed"
        assert any(f["progress"] == 0.6 for f in pushed)
        # A run queued and done between two reads of the socket's runs is still told (once);
        # the list, which lacks it, reads itself again to show it with its metrics.
        quick = str(uuid.uuid4())
        with sessions() as s:
            s.add(
                BacktestRun(
                    id=quick,
                    user_id=_trader_id(head),
                    strategy="sma_cross",
                    params={"fast": 8, "slow": 30},
                    status="succeeded",
                    progress=1.0,
                    metrics={"total_return": 0.125, "sharpe": 1.5, "max_drawdown": -0.05},
                    finished_at=datetime.now(UTC),
                )
            )
            s.commit()
        page.wait_for_selector(f'table.runs tr[data-run-id="{quick}"][data-status=succeeded]')
        assert "12.50%" in page.locator(f'table.runs tr[data-run-id="{quick}"]').inner_text()
        assert len(lists) == 2
        told = [f for f in frames if f.get("type") == "run" and f.get("id") == quick]
        assert len(told) == 1
        _assert_clean(watch)
    finally:
        context.close()


def _seed_study(sessions: Any, user_id: int, name: str, status: str, space: dict[str, Any]) -> str:
    run_id = str(uuid.uuid4())
    with sessions() as s:
        s.add(
            OptimizationRun(
                id=run_id,
                user_id=user_id,
                study_key=uuid.uuid4().hex,
                strategy="sma_cross",
                method="grid",
                objective="sharpe",
                space=space,
                config={"name": name},
                status=status,
                progress=0.0 if status != "succeeded" else 1.0,
                n_trials=0,
                best_params={"fast": 5, "slow": 20} if status == "succeeded" else None,
                best_value=1.25 if status == "succeeded" else None,
            )
        )
        s.commit()
    return run_id


def _add_trials(sessions: Any, run_id: str, params: list[dict[str, int]]) -> None:
    with sessions() as s:
        for p in params:
            value = (p["fast"] - 4) * 0.1 + p["slow"] * 0.01 - p["lookback"] * 0.001
            s.add(
                OptimizationTrial(
                    run_id=run_id,
                    trial_key=uuid.uuid4().hex,
                    params=p,
                    metrics={"sharpe": value},
                    value=value,
                    status="succeeded",
                )
            )
        s.commit()


SPACE3 = {
    "fast": {"low": 5, "high": 9, "step": 2},
    "slow": {"low": 20, "high": 30, "step": 10},
    "lookback": {"low": 10, "high": 20, "step": 10},
}


def test_study_follows_ws_runs_with_parallel_coordinates_and_folds(
    browser: Any, head: Head, sessions: Any
) -> None:
    user_id = _trader_id(head)
    fold0 = _seed_study(sessions, user_id, "wf-sma:fold0", "succeeded", SPACE3)
    study = _seed_study(sessions, user_id, "wf-sma:fold1", "running", SPACE3)
    fold2 = _seed_study(sessions, user_id, "wf-sma:fold2", "queued", SPACE3)
    plain = _seed_study(sessions, user_id, "sma_cross", "succeeded", SPACE3)
    grid = [
        {"fast": f, "slow": s, "lookback": b} for f in (5, 7, 9) for s in (20, 30) for b in (10, 20)
    ]
    _add_trials(sessions, study, grid[:4])
    with httpx.Client(base_url=head.url, timeout=60) as http:
        folds = http.get(f"/api/optimizations/{study}/folds", headers=_auth(head.trader_token))
        assert folds.status_code == 200, folds.text
        body = folds.json()
        assert body["walkForward"] is True
        assert [(f["fold"], f["runId"]) for f in body["folds"]] == [
            (0, fold0),
            (1, study),
            (2, fold2),
        ]
        assert body["folds"][0]["bestParams"] == {"fast": 5, "slow": 20}
        alone = http.get(f"/api/optimizations/{plain}/folds", headers=_auth(head.trader_token))
        assert alone.json() == {
            "runId": plain,
            "walkForward": False,
            "name": "sma_cross",
            "folds": [],
        }
        other = http.get(f"/api/optimizations/{study}/folds", headers=_auth(head.viewer_token))
        assert other.status_code == 404

    context, page, watch = _trader_page(browser, head, DESKTOP)
    frames = _frames(page)
    reads = _requests(page, f"/api/optimizations/{study}/trials")
    try:
        page.reload()
        page.wait_for_selector("#live[data-runs=on]")
        page.goto(f"{head.url}/#/optimizations/{study}")
        page.wait_for_function("() => document.getElementById('app').dataset.trials === '4'")
        # Three parameters: parallel coordinates, an axis each and one for the objective.
        page.wait_for_selector("#opt-parallel svg")
        assert page.locator("#opt-parallel-panel").is_visible()
        assert page.locator("#opt-parallel line.pc-axis").count() == 4
        assert page.locator("#opt-parallel polyline.pc-line").count() == 4
        # The folds of its walk-forward analysis, this one marked.
        page.wait_for_selector("table.folds tbody tr")
        assert page.locator("table.folds tbody tr").count() == 3
        assert page.locator("table.folds tr[data-current=true]").get_attribute("data-fold") == "1"
        assert page.locator(f'table.folds a[href="#/optimizations/{fold0}"]').count() == 1

        # The cluster records more trials and ends the study: both are pushed to the page.
        _add_trials(sessions, study, grid[4:])
        page.wait_for_function("() => document.getElementById('app').dataset.trials === '12'")
        with sessions() as s:
            s.execute(
                update(OptimizationRun)
                .where(OptimizationRun.id == study)
                .values(status="succeeded", progress=1.0, n_trials=12, best_value=0.79)
            )
            s.commit()
        page.wait_for_selector("#opt-status .badge-succeeded")
        assert page.locator("#opt-parallel polyline.pc-line").count() == 12
        assert page.locator("table.trials tbody tr").count() == 12
        # Read once; the rest was pushed: trials after the first four, then the end.
        assert len(reads) == 1
        pushed = [f for f in frames if f.get("type") == "trials" and f.get("runId") == study]
        assert sum(len(f["items"]) for f in pushed) == 8
        assert any(f.get("type") == "watching" for f in frames)
        _shot(page, "optimization-parallel-folds-1440x900")
        _assert_clean(watch)
    finally:
        context.close()
    # Two parameters: the heatmap is enough, no parallel coordinates.
    two = _seed_study(
        sessions, user_id, "two", "succeeded", {k: SPACE3[k] for k in ("fast", "slow")}
    )
    with sessions() as s:
        for f in (5, 7):
            s.add(
                OptimizationTrial(
                    run_id=two,
                    trial_key=f"k{f}",
                    params={"fast": f, "slow": 20},
                    value=f * 0.1,
                    status="succeeded",
                )
            )
        s.commit()
    context, page, watch = _trader_page(browser, head, PHONE)
    try:
        page.goto(f"{head.url}/#/optimizations/{two}")
        page.wait_for_selector("#opt-heatmap td.heat")
        assert not page.locator("#opt-parallel-panel").is_visible()
        page.goto(f"{head.url}/#/optimizations/{study}")
        page.wait_for_selector("#opt-parallel svg")
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        _shot(page, "optimization-parallel-390x844")
        _assert_clean(watch)
    finally:
        context.close()


def test_ws_runs_authenticates_and_refuses_bad_messages(
    browser: Any, head: Head, sessions: Any
) -> None:
    study = _seed_study(sessions, _trader_id(head), "other", "succeeded", SPACE3)
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    try:
        page.goto(head.url + "/")  # the page's CSP lets it open sockets to its own host
        script = """async ([url, token, messages]) => {
            const ws = new WebSocket(url);
            const got = [];
            const done = new Promise((resolve) => {
                ws.onclose = (e) => resolve({ code: e.code, got });
                ws.onmessage = (e) => {
                    const m = JSON.parse(e.data);
                    got.push(m);
                    if (m.type === "authenticated") for (const out of messages) ws.send(out);
                    const replies = got.filter((x) => x.type !== "run");
                    const authed = replies.length && replies[0].type === "authenticated";
                    if (authed && replies.length === messages.length + 1) ws.close(1000);
                };
            });
            ws.onopen = () => ws.send(JSON.stringify({ type: "auth", token }));
            // A socket that never closes fails the test instead of hanging it.
            setTimeout(() => ws.close(4000, "test gave up"), 60000);
            return done;
        }"""
        url = head.url.replace("http", "ws") + "/ws/runs"
        refused = page.evaluate(script, [url, "not-a-token", []])
        assert refused["code"] == 4401
        assert refused["got"][0]["code"] == "unauthorized"
        messages = [
            json.dumps({"type": "watch", "runId": str(uuid.uuid4())}),
            json.dumps({"type": "watch", "runId": study, "after": -1}),
            json.dumps({"type": "subscribe"}),
            json.dumps({"type": "ping"}),
        ]
        # The viewer does not own the study: not found, like any id that is not theirs.
        answered = page.evaluate(script, [url, head.viewer_token, messages])
        got = [m for m in answered["got"] if m["type"] != "run"]
        assert got[0]["type"] == "authenticated"
        assert [m.get("code") for m in got[1:4]] == ["not_found", "malformed", "malformed"]
        assert got[4] == {"type": "pong"}
        owner = page.evaluate(
            script, [url, head.trader_token, [json.dumps({"type": "watch", "runId": study})]]
        )
        assert [m["type"] for m in owner["got"] if m["type"] != "run"][:2] == [
            "authenticated",
            "watching",
        ]
    finally:
        context.close()
