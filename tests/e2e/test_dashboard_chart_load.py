"""The bot page the dashboard benchmark measures, as a test: 58,000 candles and 2,000 markers.

The head node's market store gets the whole real Binance BTC/USDT 1h history (58,419 candles,
``../shared/data``), a bot of the trader gets 2,000 fills spread over it, and the page must
draw every candle and every fill's marker, take a fill booked while it is open, and stay
clean.  The same set-up as ``benchmarks/dashboard.py`` (which times it); no timing is asserted
here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.e2e.conftest import (
    DESKTOP,
    Head,
    _assert_clean,
    _login,
    _open,
    _shot,
    book_fill,
    load_history,
    seed_fills,
    spread,
)

pytestmark = [
    pytest.mark.ray,
    pytest.mark.slow,
]

MARKERS = 2000


def test_bot_page_draws_58k_candles_and_2000_markers(
    browser: Any, head: Head, shared_data: Path
) -> None:
    settings = head.app.state.context.settings
    times = load_history(settings.data_dir, shared_data / "candles" / "binance_BTC_USDT-1h.feather")
    assert len(times) > 58_000
    with httpx.Client(base_url=head.url, timeout=60) as http:
        body = {"name": "history", "tradingPair": "BTC/USDT", "strategy": "sma_cross"}
        created = http.post(
            "/api/bots",
            json={**body, "params": {"fast": 5, "slow": 20}},
            headers={"Authorization": f"Bearer {head.trader_token}"},
        )
        assert created.status_code == 201, created.text
        bot_id = int(created.json()["id"])
        seed_fills(head.app.state.context.session_factory, bot_id, spread(times, MARKERS))
        # One read holds the whole chart: every candle and every fill, oldest first.
        chart = http.get(
            f"/api/bots/{bot_id}/chart", headers={"Authorization": f"Bearer {head.trader_token}"}
        ).json()
        assert len(chart["candles"]["timestamp"]) == len(times)
        assert chart["candles"]["timestamp"][-1] == times[-1]
        assert len(chart["fills"]["id"]) == MARKERS
        assert chart["truncated"] == {"candles": False, "fills": False}
        other = http.get(
            f"/api/bots/{bot_id}/chart", headers={"Authorization": f"Bearer {head.viewer_token}"}
        )
        assert other.status_code == 404

    context, page, watch = _open(browser, head, DESKTOP)
    try:
        page.wait_for_selector("#email")
        _login(page, "trader@example.com", backup=head.backup_codes.pop())
        page.wait_for_selector("table.bots tbody tr")
        page.goto(f"{head.url}/#/bots/{bot_id}")
        page.wait_for_selector(f'#bot-chart[data-markers="{MARKERS}"][data-painted][data-complete]')
        legend = page.locator("#bot-chart + .legend").inner_text()
        assert int(re.search(r"(\d+) candles", legend).group(1)) == len(times)  # type: ignore[union-attr]
        assert f"{MARKERS} fills" in legend
        assert page.locator("#bot-chart canvas").count() > 0
        _shot(page, "bot-58k-candles-2000-markers-1440x900")
        # A fill booked while the page is open adds its marker to the 2,000.
        page.wait_for_selector("#live[data-state=on]")
        book_fill(head.app, bot_id, times[-2], "booked-in-test")
        page.wait_for_selector(f'#bot-chart[data-markers="{MARKERS + 1}"]')
        page.wait_for_selector(f"#bot-fill-count:has-text('{MARKERS + 1} fills')")
        _assert_clean(watch)
    finally:
        context.close()
