"""The SDK inside Jupyter's running event loop, and listings as DataFrames."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

import cryptoorchestrator as co
from cryptoorchestrator.cluster.sdk import run_sync


async def _answer(value: int) -> tuple[int, bool]:
    await asyncio.sleep(0)
    return value * 2, asyncio.get_running_loop().is_running()


def test_run_sync_works_outside_and_inside_a_running_loop() -> None:
    assert run_sync(_answer(2)) == (4, True)

    async def cell() -> tuple[int, bool]:
        # what a notebook cell is: synchronous SDK code on a thread whose loop runs
        return run_sync(_answer(21))

    assert asyncio.run(cell()) == (42, True)


def test_shutdown_without_ray_is_a_quiet_no_op() -> None:
    assert co.shutdown() is None
    assert "shutdown" in dir(co)


_BOTS = [
    {"id": 2, "name": "b2", "status": "Running"},
    {"id": 1, "name": "b1", "status": "Stopped"},
]
_TRADES = [
    {
        "id": i,
        "price": f"{100 + i}.25",
        "side": "buy",
        "clientOrderId": f"{7 + i}",  # digits, but an identifier: stays text
        "timestamp": f"2024-01-0{1 + i}T00:00:00+00:00",
        "closedAt": None,
    }
    for i in range(5)
]


class _Api(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        path, _, query = self.path.partition("?")
        params = dict(p.split("=", 1) for p in query.split("&") if p)
        if path == "/api/bots":
            body: Any = {"items": _BOTS, "nextCursor": None}
        elif path == "/api/trades/":
            start = int(params.get("cursor", 0))
            nxt = start + 2
            body = {"items": _TRADES[start:nxt], "nextCursor": str(nxt) if nxt < 5 else None}
        elif path == "/api/backtests":
            body = [{"id": "r1", "status": "succeeded"}]
        else:
            self.send_response(404)
            self.end_headers()
            return
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def api_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Api)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_client_listings_as_frames(api_url: str) -> None:
    with co.Client(api_url) as client:
        assert client.bots() == _BOTS
        bots = client.bots(as_frame=True)
        assert bots["name"].tolist() == ["b2", "b1"]
        trades = client.trades(page_size=2, as_frame=True)  # three pages read to the end
        assert trades["id"].tolist() == [0, 1, 2, 3, 4]
        assert [t["id"] for t in client.trades(page_size=2)] == [0, 1, 2, 3, 4]
        # exact decimals in the dicts; numbers and UTC times in the frame, identifiers as text
        assert next(iter(client.trades(page_size=5)))["price"] == "100.25"
        assert trades["price"].dtype == "float64"
        assert trades["price"].tolist() == [100.25, 101.25, 102.25, 103.25, 104.25]
        assert str(trades["timestamp"].dt.tz) == "UTC"
        assert trades["timestamp"].iloc[1].day == 2
        assert trades["clientOrderId"].tolist() == ["7", "8", "9", "10", "11"]
        assert trades["side"].tolist() == ["buy"] * 5
        assert trades["closedAt"].isna().all()
        assert client.backtests(as_frame=True)["status"].tolist() == ["succeeded"]
