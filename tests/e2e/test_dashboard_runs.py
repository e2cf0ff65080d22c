"""The dashboard's run pages end to end: backtests and optimizations on the session's Ray.

One head node and one browser for the module (see ``conftest.py``).  A trader runs a tiny
backtest from the form and reads its report (metrics, candles with the fills, equity and
drawdown), runs a second and compares the two; starts a small grid study and watches its
trials arrive, the best-so-far curve and the heatmap.  The reads the pages added
(``/api/strategies``, ``/api/backtests/{id}/report``,
``/api/optimizations/{id}/trials``) are checked for their owner rule and shape.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from tests.e2e.conftest import (
    DESKTOP,
    PHONE,
    WAIT_MS,
    Head,
    _assert_clean,
    _auth,
    _login,
    _open,
    _shot,
    _trader_page,
)

pytestmark = [
    pytest.mark.ray,
    pytest.mark.slow,
]

#: A run on a busy machine: a Ray worker may have to start first.
RUN_WAIT_MS = 4 * WAIT_MS
#: A tiny period of the bundled BTC/USDT 1h candles: a few hundred bars.
START, END = "2022-01-01", "2022-01-15"


def _run_backtest(page: Any, fast: int, slow: int) -> str:
    """Fill the backtest form, submit it, and return the new run's id once it succeeded."""
    page.wait_for_selector("#bt-form [data-field='params.fast'] input")
    page.fill("#f-start", START)
    page.fill("#f-end", END)
    page.fill("#f-feeBps", "10")
    page.fill("#f-params-fast", str(fast))
    page.fill("#f-params-slow", str(slow))
    ids_js = "rows => rows.map(r => r.dataset.runId)"
    before = set(page.eval_on_selector_all("table.runs tbody tr", ids_js))
    page.click("#bt-run")
    page.wait_for_function(
        "n => document.querySelectorAll('table.runs tbody tr').length > n", arg=len(before)
    )
    ids = page.eval_on_selector_all("table.runs tbody tr", ids_js)
    (run_id,) = set(ids) - before
    page.wait_for_selector(
        f'table.runs tr[data-run-id="{run_id}"][data-status=succeeded]', timeout=RUN_WAIT_MS
    )
    return str(run_id)


def test_strategies_report_and_trials_reads(head: Head) -> None:
    with httpx.Client(base_url=head.url, timeout=60) as http:
        listed = http.get("/api/strategies", headers=_auth(head.viewer_token))
        assert listed.status_code == 200
        sma = next(s for s in listed.json() if s["name"] == "sma_cross")
        fast = next(p for p in sma["params"] if p["name"] == "fast")
        assert (fast["type"], fast["low"], fast["high"], fast["default"]) == ("int", 2, 500, 10)
        assert fast["allowed"] == "int in [2, 500]"
        assert http.get("/api/strategies").status_code == 401
        # Someone else's (or no) run: 404, never its data.
        missing = "00000000-0000-4000-8000-000000000000"
        for path in (f"/api/backtests/{missing}/report", f"/api/optimizations/{missing}/trials"):
            r = http.get(path, headers=_auth(head.trader_token))
            assert r.status_code == 404, r.text
        bad = http.get(
            f"/api/optimizations/{missing}/trials?after=-1", headers=_auth(head.trader_token)
        )
        assert bad.status_code == 422
        assert bad.json()["details"][0]["field"].endswith("after")


def test_backtest_run_report_and_comparison(browser: Any, head: Head) -> None:
    context, page, watch = _trader_page(browser, head, DESKTOP)
    try:
        page.click("nav a[data-route=backtests]")
        first = _run_backtest(page, 5, 20)
        second = _run_backtest(page, 8, 30)
        _shot(page, "backtests-1440x900")

        # The report: stored metrics, candles with the fills as markers, equity, drawdown.
        page.click(f'table.runs tr[data-run-id="{first}"] td[data-label=Run] a')
        page.wait_for_selector("#bt-chart canvas")
        page.wait_for_selector("#bt-metrics [data-metric=sharpe]")
        assert (
            page.locator("#bt-metrics [data-metric=total_return] .value").inner_text().endswith("%")
        )
        legend = page.locator("#bt-legend").inner_text()
        candles = int(legend.split(" candles")[0])
        assert 300 <= candles <= 340  # two weeks of hourly bars
        assert int(legend.split(" fills")[0].split()[-1]) > 0
        _shot(page, "backtest-report-1440x900")
        with httpx.Client(base_url=head.url, timeout=60) as http:
            report = http.get(
                f"/api/backtests/{first}/report", headers=_auth(head.trader_token)
            ).json()
            stored = http.get(f"/api/backtests/{first}", headers=_auth(head.trader_token)).json()
            # The report is the same backtest as the stored run: same trades, same return.
            assert report["metrics"] == stored["metrics"]
            equity = report["equity"]
            assert equity[-1] / 10_000 - 1 == pytest.approx(stored["metrics"]["total_return"])
            assert len(report["candles"]["timestamp"]) == candles
            assert min(report["drawdown"]) <= 0
            assert report["params"] == {"fast": 5, "slow": 20}
            # Only its owner reads it.
            viewer = http.get(f"/api/backtests/{first}/report", headers=_auth(head.viewer_token))
            assert viewer.status_code == 404

        # Compare the two: a metrics table with a column each, their equity overlaid.
        page.click("a:has-text('← Backtests')")
        page.check(f'table.runs tr[data-run-id="{first}"] input[type=checkbox]')
        assert page.locator("#bt-compare").is_disabled()
        page.check(f'table.runs tr[data-run-id="{second}"] input[type=checkbox]')
        page.click("#bt-compare")
        page.wait_for_selector("#bt-compare-table tr[data-metric=sharpe]")
        assert page.locator("#bt-compare-table thead th").count() == 3
        assert page.locator("#bt-compare-table tr[data-metric=sharpe] td").count() == 3
        page.wait_for_selector("#bt-compare-chart canvas")
        _shot(page, "backtest-compare-1440x900")
        _assert_clean(watch)
    finally:
        context.close()
    context, page, watch = _trader_page(browser, head, PHONE)
    try:
        page.goto(f"{head.url}/#/backtests/{first}")
        page.wait_for_selector("#bt-chart canvas")
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        _shot(page, "backtest-report-390x844")
        page.click("a:has-text('← Backtests')")
        page.wait_for_selector("#bt-form")
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        _shot(page, "backtests-390x844")
        _assert_clean(watch)
    finally:
        context.close()


def test_optimization_trials_arrive_live(browser: Any, head: Head) -> None:
    context, page, watch = _trader_page(browser, head, DESKTOP)
    try:
        page.click("nav a[data-route=optimizations]")
        page.wait_for_selector("#opt-form [data-field='space.fast.low'] input")
        # A 3 x 3 grid over fast and slow on two weeks of bars.
        page.fill("#f-start", START)
        page.fill("#f-end", END)
        page.fill("#f-space-fast-low", "5")
        page.fill("#f-space-fast-high", "9")
        page.fill("#f-space-fast-step", "2")
        page.fill("#f-space-slow-low", "20")
        page.fill("#f-space-slow-high", "30")
        page.fill("#f-space-slow-step", "5")
        # Bad first: a step of 0 is refused next to its field, nothing is sent.
        page.fill("#f-space-slow-step", "0")
        page.click("#opt-run")
        page.wait_for_selector("[data-field='space.slow.step'] .field-error:not([hidden])")
        page.fill("#f-space-slow-step", "5")
        _shot(page, "optimizations-1440x900")
        page.click("#opt-run")
        page.wait_for_url("**/#/optimizations/*")
        run_id = page.url.rsplit("/", 1)[1]
        # Trials arrive while the page is open (read as they are recorded), then the study ends.
        page.wait_for_function(
            "() => Number(document.getElementById('app').dataset.trials || 0) >= 1",
            timeout=RUN_WAIT_MS,
        )
        page.wait_for_selector("#opt-status .badge-succeeded", timeout=RUN_WAIT_MS)
        page.wait_for_function("() => Number(document.getElementById('app').dataset.trials) === 9")
        assert page.locator("table.trials tbody tr").count() == 9
        assert page.locator("#opt-curve svg polyline.best-line").count() == 1
        # The heatmap: fast x slow, one cell per trial of the grid.
        assert page.locator("#opt-heatmap td.heat").count() == 9
        # Each searched parameter's importance (main-effect share of the variance).
        shares = page.eval_on_selector_all("table.importance meter", "ms => ms.map(m => m.value)")
        assert len(shares) == 2
        assert all(0 <= v <= 1 for v in shares)
        assert sum(shares) > 0
        best_text = page.locator("[data-card=best] .value").inner_text()
        with httpx.Client(base_url=head.url, timeout=60) as http:
            run = http.get(f"/api/optimizations/{run_id}", headers=_auth(head.trader_token))
            trials = http.get(
                f"/api/optimizations/{run_id}/trials", headers=_auth(head.trader_token)
            ).json()
            assert len(trials["items"]) == 9
            assert {(t["params"]["fast"], t["params"]["slow"]) for t in trials["items"]} == {
                (f, s) for f in (5, 7, 9) for s in (20, 25, 30)
            }
            last = trials["items"][4]["id"]
            later = http.get(
                f"/api/optimizations/{run_id}/trials?after={last}",
                headers=_auth(head.trader_token),
            ).json()
            assert [t["id"] for t in later["items"]] == [t["id"] for t in trials["items"][5:]]
            assert (
                http.get(
                    f"/api/optimizations/{run_id}/trials", headers=_auth(head.viewer_token)
                ).status_code
                == 404
            )
        if run.json()["bestValue"] is not None:
            assert best_text == f"{run.json()['bestValue']:.4f}"
        _shot(page, "optimization-study-1440x900")
        _assert_clean(watch)
    finally:
        context.close()
    context, page, watch = _trader_page(browser, head, PHONE)
    try:
        page.click("nav a[data-route=optimizations]")
        page.wait_for_selector(f'table.studies tr[data-run-id="{run_id}"][data-status=succeeded]')
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        _shot(page, "optimizations-390x844")
        page.goto(f"{head.url}/#/optimizations/{run_id}")
        page.wait_for_selector("#opt-heatmap td.heat")
        _shot(page, "optimization-study-390x844")
        # The page itself fits; a wide heatmap scrolls inside its panel.
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        _assert_clean(watch)
    finally:
        context.close()


def test_viewer_reads_runs_without_forms(browser: Any, head: Head) -> None:
    context, page, watch = _open(browser, head, DESKTOP)
    try:
        _login(page, "viewer@example.com")
        page.wait_for_selector("table.bots tbody tr")
        page.click("nav a[data-route=backtests]")
        page.wait_for_selector("table.runs")
        page.wait_for_selector("#app p.empty:not([hidden])")  # the viewer has no runs
        assert page.locator("#bt-form").count() == 0
        page.click("nav a[data-route=optimizations]")
        page.wait_for_selector("table.studies")
        assert page.locator("#opt-form").count() == 0
        page.click("nav a[data-route=trades]")
        page.wait_for_selector("#trades-page:has-text('Page 1')")
        assert page.locator("table.trades-all tbody tr").count() == 0
        _assert_clean(watch)
        with httpx.Client(base_url=head.url, timeout=60) as http:
            body = {"strategy": "sma_cross", "params": {}}
            r = http.post("/api/backtests", json=body, headers=_auth(head.viewer_token))
            assert r.status_code == 403
    finally:
        context.close()
