"""Benchmark: the dashboard's bot page with 58,000 hourly candles and 2,000 fill markers.

A head node (the full app, SQLite, no cluster: nothing here needs Ray) runs in this process
under uvicorn on a free port, its market store holding the real Binance BTC/USDT 1h history
(``../shared/data/candles/binance_BTC_USDT-1h.feather``, 58,419 candles, 2017-2024).  A trader
(no MFA) and a bot on that market are created through the API, and 2,000 fills of the bot are
written spread evenly over the history.  Debian's headless Chromium, driven by Playwright as the
end-to-end tests drive it (``/usr/bin/chromium`` or ``CRYPTOORCH_CHROMIUM``), at 1440x900:

* **first paint**: the bot page is loaded ``--repeat`` times (the first load cold, then
  reloads); each time, the milliseconds from the navigation's start to the frame after the
  chart's first paint (``#bot-chart[data-painted]``, set two animation frames after the
  data, i.e. after that paint).  The page draws a long history in two steps: the candles
  around the first view (the latest fills, up to a month of bars) and their markers, then,
  right after that paint, all 58,419 candles and 2,000 markers with the view kept; the
  second step's paint (``data-complete``) is reported too, as ``whole_history_painted``;
* **fill to marker**: ``--repeat`` times, a fill is booked the way a bot's event relay books
  one (its order and trade rows committed, then the hub's ``fill`` event to the owner's
  ``/ws/bots`` sockets) and the time is taken from just before the commit to the frame after
  the chart's marker count grows;
* the API requests one page load makes.

Targets: first paint < 1.5 s, fill to marker < 1 s.  Prints the figures and writes
``benchmarks/results/dashboard.json``.  Run: ``.venv/bin/python -m benchmarks.dashboard
[--repeat 5]`` (needs ``scripts/bootstrap.sh``'s ``web/node_modules`` for the chart library).

The set-up (:func:`load_history`, :func:`seed_fills`, :func:`book_fill`) is shared with
``tests/e2e/test_dashboard_chart_load.py``, which checks the same page renders every marker.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import socket
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

# The page's set-up is the end-to-end test's (tests/e2e/test_dashboard_chart_load.py): one
# copy, in its conftest (run this module with ``python -m`` from the repository's root).
from tests.e2e.conftest import book_fill, load_history, seed_fills, spread

ROOT = Path(__file__).resolve().parents[1]
HISTORY = ROOT.parent / "shared" / "data" / "candles" / "binance_BTC_USDT-1h.feather"
CHROMIUM = Path(os.environ.get("CRYPTOORCH_CHROMIUM", "/usr/bin/chromium"))
RESULTS = ROOT / "benchmarks" / "results" / "dashboard.json"
MARKERS = 2000
PAINT_TARGET_MS = 1500.0
MARKER_TARGET_MS = 1000.0
PASSWORD = "correct horse battery staple"
VIEWPORT = {"width": 1440, "height": 900}


@contextlib.contextmanager
def head_node(root: Path) -> Iterator[tuple[str, Any]]:
    """The full app on a free loopback port (uvicorn in a thread); yields its URL and app."""
    import uvicorn

    from cryptoorchestrator.api.app import create_app
    from cryptoorchestrator.api.config import ApiOptions
    from cryptoorchestrator.platform.settings import Settings
    from cryptoorchestrator.platform.storage.db import dispose_engines, upgrade

    settings = Settings(
        database_url=f"sqlite:///{root / 'var' / 'bench.db'}",
        log_dir=root / "logs",
        data_dir=root / "var" / "data",
        var_dir=root / "var",
    )
    upgrade(settings)
    options = ApiOptions(rate_limit=100_000, rate_limit_auth=10_000, rate_limit_backend="memory")
    app = create_app(settings, options=options)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", ws_ping_interval=None, lifespan="on")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the head node did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", app
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        dispose_engines()


def _summary(values: list[float], target: float) -> dict[str, Any]:
    return {
        "runs_ms": [round(v, 1) for v in values],
        "median_ms": round(statistics.median(values), 1),
        "max_ms": round(max(values), 1),
        "target_ms": target,
        "meets_target": max(values) < target,
    }


_WATCH_MARKERS = """() => {
    window.__markers = [];
    const box = document.getElementById("bot-chart");
    new MutationObserver(() => {
        const n = Number(box.dataset.markers);
        // The frame after the one that draws the new marker.
        requestAnimationFrame(() => requestAnimationFrame(() =>
            window.__markers.push([n, performance.timeOrigin + performance.now()])));
    }).observe(box, { attributes: true, attributeFilter: ["data-markers"] });
}"""


def run(repeat: int) -> dict[str, Any]:
    """Measure the bot page; return the figures."""
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="bench-dashboard-") as tmp:
        root = Path(tmp)
        times = load_history(root / "var" / "data", HISTORY)
        with head_node(root) as (url, app), httpx.Client(base_url=url, timeout=60) as http:
            email = "bench@example.com"
            body = {"email": email, "password": PASSWORD}
            assert http.post("/api/auth/register", json=body).status_code == 201
            token = http.post("/api/auth/login", json=body).json()["accessToken"]
            bot = {"name": "bench", "tradingPair": "BTC/USDT", "strategy": "sma_cross"}
            created = http.post(
                "/api/bots",
                json={**bot, "params": {"fast": 5, "slow": 20}},
                headers={"Authorization": f"Bearer {token}"},
            )
            bot_id = int(created.json()["id"])
            seed_fills(app.state.context.session_factory, bot_id, spread(times, MARKERS))
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True)
                page = browser.new_context(viewport=VIEWPORT).new_page()
                page.set_default_timeout(120_000)
                page.goto(url + "/")
                page.fill("#email", email)
                page.fill("#password", PASSWORD)
                page.click("form.step-password button[type=submit]")
                page.wait_for_selector("table.bots tbody tr")
                api_calls: list[str] = []
                page.on("request", lambda r: api_calls.append(r.url) if "/api/" in r.url else None)
                page.goto(f"{url}/#/bots/{bot_id}")
                paints: list[float] = []
                completes: list[float] = []
                for _ in range(repeat):
                    api_calls.clear()
                    page.reload()  # a full load of the page, as a browser opening it
                    page.wait_for_selector(f'#bot-chart[data-markers="{MARKERS}"][data-complete]')
                    painted = page.get_attribute("#bot-chart", "data-painted")
                    paints.append(float(painted or "nan"))
                    complete = page.get_attribute("#bot-chart", "data-complete")
                    completes.append(float(complete or "nan"))
                requests_per_load = len(api_calls)
                # Where the last load's time went: each request's start and end (ms).
                waterfall = page.evaluate(
                    """() => performance.getEntriesByType("resource").map((e) =>
                        [e.name.replace(location.origin, ""), Math.round(e.startTime),
                         Math.round(e.responseEnd)])"""
                )
                legend = page.inner_text("#bot-chart + .legend")
                page.wait_for_selector("#live[data-state=on]")
                page.evaluate(_WATCH_MARKERS)
                delays: list[float] = []
                for i in range(repeat):
                    expected = MARKERS + i + 1
                    # A free candle near the end of the history (every 2,000th bar has a fill).
                    at = times[-2 - i]
                    start = time.time() * 1000
                    book_fill(app, bot_id, at, f"booked-{i}")
                    shown = page.wait_for_function(
                        "n => (window.__markers.find((m) => m[0] >= n) || [])[1]", arg=expected
                    ).json_value()
                    delays.append(float(shown) - start)
                page.screenshot(path=str(root / "bot.png"))
                browser.close()
    return {
        "benchmark": "dashboard bot page, headless Chromium",
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "chromium": str(CHROMIUM),
        "viewport": VIEWPORT,
        "candles": len(times),
        "markers": MARKERS,
        "legend": legend,
        "first_paint": {**_summary(paints, PAINT_TARGET_MS), "first_is_cold": True},
        "whole_history_painted": _summary(completes, PAINT_TARGET_MS),
        "fill_to_marker": _summary(delays, MARKER_TARGET_MS),
        "api_requests_per_load": requests_per_load,
        "last_load_requests": waterfall,
    }


def main() -> None:
    """Run the benchmark, print its figures and write them to benchmarks/results/."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="page loads and fills (5)")
    args = parser.parse_args()
    if not HISTORY.is_file():
        raise SystemExit(f"the real candles are missing: {HISTORY}")
    if not CHROMIUM.is_file():
        raise SystemExit(f"Chromium not found at {CHROMIUM}: apt-get install chromium")
    result = run(max(1, args.repeat))
    paint, marker = result["first_paint"], result["fill_to_marker"]
    print(f"bot page: {result['candles']} candles, {result['markers']} markers")
    print(
        f"first paint of the chart: median {paint['median_ms']} ms, max {paint['max_ms']} ms "
        f"(target < {PAINT_TARGET_MS:.0f} ms) runs {paint['runs_ms']}"
    )
    whole = result["whole_history_painted"]
    print(
        f"every candle and marker set and painted: median {whole['median_ms']} ms, max "
        f"{whole['max_ms']} ms"
    )
    print(
        f"fill booked -> marker shown: median {marker['median_ms']} ms, max "
        f"{marker['max_ms']} ms (target < {MARKER_TARGET_MS:.0f} ms) runs {marker['runs_ms']}"
    )
    print(f"API requests per page load: {result['api_requests_per_load']}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
