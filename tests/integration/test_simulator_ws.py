"""The simulator's Binance kline stream, through ccxt.pro's real ``binance`` and CandleFeed."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import aiohttp
import ccxt
import pyarrow as pa
import pytest

from cryptoorchestrator.platform.exchange.candle_feed import CandleFeed
from cryptoorchestrator.platform.exchange.ccxt_factory import ClientKind, build_ccxt_client
from cryptoorchestrator.platform.exchange.sim import (
    ExchangeSimulator,
    run_simulator_in_thread,
    ws_url_for,
)

HOUR = 3_600_000
SYMBOL = "BTC/USDT"


def _sim_client(base_url: str, *, kind: ClientKind = "sync", **kwargs: Any) -> Any:
    """Return ccxt's real ``binance`` at the simulator, unthrottled (tests pace themselves)."""
    return build_ccxt_client("binance", base_url, kind=kind, enable_rate_limit=False, **kwargs)


@pytest.fixture(scope="module")
def ts(candles: pa.Table) -> list[int]:
    return [int(t) for t in candles.column("timestamp").to_pylist()]


async def _next_json(ws: aiohttp.ClientWebSocketResponse, timeout: float = 5.0) -> Any:
    msg = await ws.receive(timeout=timeout)
    assert msg.type == aiohttp.WSMsgType.TEXT, msg
    return json.loads(msg.data)


async def _admin_ws(sim: ExchangeSimulator) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(sim.base_url + "/_sim/ws") as resp,
    ):
        result: dict[str, Any] = await resp.json()
        return result


async def _until(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


# ---------------------------------------------------------------- ccxt.pro against the stream


def test_ws_url_and_ccxt_pro_urls() -> None:
    assert ws_url_for("http://127.0.0.1:8123") == "ws://127.0.0.1:8123/ws"
    assert ws_url_for("https://sim.example:443/") == "wss://sim.example:443/ws"
    ex = _sim_client("http://127.0.0.1:8123", kind="pro")
    assert ex.urls["api"]["ws"]["spot"] == "ws://127.0.0.1:8123/ws"
    assert ex.urls["api"]["ws"]["ws-api"]["spot"] == "ws://127.0.0.1:8123/ws-api/v3"
    assert ex.urls["api"]["public"] == "http://127.0.0.1:8123/api/v3"
    assert ex.has["watchOHLCV"] is True


def test_watch_ohlcv_gets_the_closed_candle_rest_returns(
    candles: pa.Table, ts: list[int], run: Any
) -> None:
    # The server in its own thread and advance() from this one: the push crosses threads.
    with run_simulator_in_thread({SYMBOL: candles}, start_ms=ts[2000] + HOUR // 2) as sim:

        async def main() -> None:
            ex = _sim_client(sim.base_url, kind="pro")
            rest = _sim_client(sim.base_url, kind="async")
            try:
                first = await ex.watch_ohlcv(SYMBOL, "1h")
                assert [r[0] for r in first] == [ts[2000]]  # the forming candle, at once
                sim.advance(HOUR)
                # ccxt keeps every update in its cache but resolves a watch only while one
                # waits, so the loop checks the cache before waiting again.  (No wait_for: its
                # extra task lets the next frame arrive while no watch is waiting.)
                async with asyncio.timeout(5):
                    while ts[2001] not in {row[0] for row in ex.ohlcvs[SYMBOL]["1h"]}:
                        await ex.watch_ohlcv(SYMBOL, "1h")
                seen = {row[0]: list(row) for row in ex.ohlcvs[SYMBOL]["1h"]}
                page = await rest.fetch_ohlcv(SYMBOL, "1h", since=ts[2000], limit=2)
                assert seen[ts[2000]] == page[0]  # closed: o, h, l, c, v exactly as REST
                assert seen[ts[2001]] == page[1]  # forming, at the same instant
                high, low = candles.column("high")[2000].as_py(), candles.column("low")[2000]
                assert seen[ts[2000]][2] == pytest.approx(high)
                assert seen[ts[2000]][3] == pytest.approx(low.as_py())
            finally:
                await ex.close()
                await rest.close()

        run(main)


def test_raw_protocol_closed_then_forming_and_several_candles(
    candles: pa.Table, ts: list[int], run: Any
) -> None:
    async def main() -> None:
        sim = ExchangeSimulator({SYMBOL: candles}, start_ms=ts[2000] + HOUR // 2)
        await sim.start()
        rest = _sim_client(sim.base_url, kind="async")
        try:
            async with (
                aiohttp.ClientSession() as http,
                http.ws_connect(ws_url_for(sim.base_url) + "/0") as ws,
            ):
                await ws.send_json({"method": "SUBSCRIBE", "params": ["btcusdt@kline_1h"], "id": 7})
                assert await _next_json(ws) == {"result": None, "id": 7}
                snapshot = await _next_json(ws)
                assert snapshot["k"]["t"] == ts[2000]
                assert snapshot["k"]["x"] is False

                now = sim.advance(HOUR)
                closed, forming = await _next_json(ws), await _next_json(ws)
                assert (closed["e"], closed["s"], closed["E"]) == ("kline", "BTCUSDT", now)
                k = closed["k"]
                assert (k["t"], k["T"], k["i"], k["s"], k["x"]) == (
                    ts[2000],
                    ts[2000] + HOUR - 1,
                    "1h",
                    "BTCUSDT",
                    True,
                )
                raw = await rest.publicGetKlines(
                    {"symbol": "BTCUSDT", "interval": "1h", "startTime": ts[2000], "limit": 2}
                )
                # The same strings as the REST row of that candle (one function builds both).
                assert [k["o"], k["h"], k["l"], k["c"], k["v"]] == raw[0][1:6]
                assert [k["q"], k["n"], k["V"], k["Q"]] == raw[0][7:11]
                assert forming["k"]["t"] == ts[2001]
                assert forming["k"]["x"] is False
                assert forming["k"]["c"] == raw[1][4]

                # Five closes in one move: each candle once, in order, then the forming one.
                now = sim.advance(5 * HOUR)
                events = [await _next_json(ws) for _ in range(6)]
                assert [e["k"]["t"] for e in events] == ts[2001:2007]
                assert [e["k"]["x"] for e in events] == [True] * 5 + [False]
                assert {e["E"] for e in events} == {now}
                page = await rest.publicGetKlines(
                    {"symbol": "BTCUSDT", "interval": "1h", "startTime": ts[2001], "limit": 5}
                )
                assert [
                    [e["k"]["o"], e["k"]["h"], e["k"]["l"], e["k"]["c"]] for e in events[:5]
                ] == [row[1:5] for row in page]

                # Moving inside the candle updates it; nothing closes.
                sim.advance(HOUR // 4)
                update = await _next_json(ws)
                assert (update["k"]["t"], update["k"]["x"]) == (ts[2006], False)
        finally:
            await rest.close()
            await sim.stop()

    run(main)


def test_aggregated_interval_and_raw_stream_path(
    candles: pa.Table, ts: list[int], run: Any
) -> None:
    async def main() -> None:
        four_h = 4 * HOUR
        start = next(t for t in ts[2000:] if t % four_h == 0) + HOUR
        sim = ExchangeSimulator({SYMBOL: candles}, start_ms=start)
        await sim.start()
        rest = _sim_client(sim.base_url, kind="async")
        try:
            async with (
                aiohttp.ClientSession() as http,
                # Binance's raw-stream URL subscribes by path, with no request.
                http.ws_connect(ws_url_for(sim.base_url) + "/btcusdt@kline_4h") as ws,
            ):
                assert (await _next_json(ws))["k"]["t"] == start - HOUR
                sim.advance(3 * HOUR)
                closed = await _next_json(ws)
                row = (await rest.fetch_ohlcv(SYMBOL, "4h", since=start - HOUR, limit=1))[0]
                k = closed["k"]
                assert k["x"] is True
                assert [k["t"], float(k["o"]), float(k["h"]), float(k["l"]), float(k["c"])] == (
                    row[:5]
                )
                assert float(k["v"]) == pytest.approx(row[5])
        finally:
            await rest.close()
            await sim.stop()

    run(main)


def test_unsubscribe_list_and_close(candles: pa.Table, ts: list[int], run: Any) -> None:
    async def main() -> None:
        sim = ExchangeSimulator({SYMBOL: candles}, start_ms=ts[2000] + HOUR // 2)
        await sim.start()
        ex = _sim_client(sim.base_url, kind="pro")
        try:
            async with (
                aiohttp.ClientSession() as http,
                http.ws_connect(ws_url_for(sim.base_url)) as ws,
            ):
                await ws.send_json(
                    {
                        "method": "SUBSCRIBE",
                        "params": ["btcusdt@kline_1h", "btcusdt@kline_1d"],
                        "id": 1,
                    }
                )
                assert await _next_json(ws) == {"result": None, "id": 1}
                await _next_json(ws)
                await _next_json(ws)
                await ws.send_json(
                    {"method": "UNSUBSCRIBE", "params": ["btcusdt@kline_1h"], "id": 2}
                )
                assert await _next_json(ws) == {"result": None, "id": 2}
                sim.advance(HOUR)  # in this loop: any event is queued before the next request
                await ws.send_json({"method": "LIST_SUBSCRIPTIONS", "id": 3})
                answer = await _next_json(ws)
                while answer.get("e") == "kline":  # the daily candle's events, never the hourly
                    assert answer["k"]["i"] == "1d"
                    answer = await _next_json(ws)
                assert answer == {"result": ["btcusdt@kline_1d"], "id": 3}

            # ccxt.pro's own unsubscribe is answered, then closing drops the connection.
            await ex.watch_ohlcv(SYMBOL, "1h")
            assert (await _admin_ws(sim))["streams"] == {"btcusdt@kline_1h": 1}
            async with asyncio.timeout(5):
                await ex.un_watch_ohlcv(SYMBOL, "1h")
            assert (await _admin_ws(sim))["streams"] == {}
            await ex.close()

            async def no_connections() -> bool:
                return (await _admin_ws(sim))["connections"] == 0

            await _until(no_connections)
        finally:
            await ex.close()
            await sim.stop()

    run(main)


def test_bad_requests_get_binance_errors(candles: pa.Table, ts: list[int], run: Any) -> None:
    async def main() -> None:
        sim = ExchangeSimulator({SYMBOL: candles}, start_ms=ts[2000])
        await sim.start()
        ex = _sim_client(sim.base_url, kind="pro")
        try:
            # Finer than the stored candles, as GET /klines refuses it: ccxt raises.
            with pytest.raises(ccxt.ExchangeError, match="kline_1m"):
                async with asyncio.timeout(5):
                    await ex.watch_ohlcv(SYMBOL, "1m")
            async with (
                aiohttp.ClientSession() as http,
                http.ws_connect(ws_url_for(sim.base_url)) as ws,
            ):
                await ws.send_json({"method": "FOO", "params": [], "id": 1})
                error = await _next_json(ws)
                assert error["id"] == 1
                assert error["error"]["code"] == 2
                await ws.send_str("{not json")
                assert (await _next_json(ws))["error"]["code"] == 3
                for stream in ("ethusdt@kline_1h", "btcusdt@kline_7h", "btcusdt@trade"):
                    await ws.send_json(
                        {"method": "SUBSCRIBE", "params": ["btcusdt@kline_1h", stream], "id": 5}
                    )
                    error = await _next_json(ws)
                    assert (error["id"], error["error"]["code"]) == (5, 2)
                await ws.send_json({"method": "SUBSCRIBE", "params": "btcusdt@kline_1h", "id": 6})
                assert (await _next_json(ws))["error"]["code"] == 2
                await ws.send_json({"method": "SUBSCRIBE", "params": [], "id": -1})
                assert (await _next_json(ws))["error"]["code"] == 2
                # A refused SUBSCRIBE subscribed to none of its streams.
                await ws.send_json({"method": "LIST_SUBSCRIPTIONS", "id": 9})
                assert await _next_json(ws) == {"result": [], "id": 9}
        finally:
            await ex.close()
            await sim.stop()

    run(main)


def test_rest_faults_leave_the_stream_handshake_alone(
    candles: pa.Table, ts: list[int], run: Any
) -> None:
    async def main() -> None:
        sim = ExchangeSimulator({SYMBOL: candles}, start_ms=ts[2000], faults={"fail_next": 1})
        await sim.start()
        try:
            async with aiohttp.ClientSession() as http:
                async with http.ws_connect(ws_url_for(sim.base_url)) as ws:
                    await ws.send_json({"method": "LIST_SUBSCRIPTIONS", "id": 1})
                    assert await _next_json(ws) == {"result": [], "id": 1}
                assert sim.faults.fail_next == 1  # still there for the next REST call
                sim.set_faults(path_prefix="/ws")
                with pytest.raises(aiohttp.WSServerHandshakeError):
                    await http.ws_connect(ws_url_for(sim.base_url))
        finally:
            await sim.stop()

    run(main)


# ---------------------------------------------------------------- CandleFeed


@pytest.fixture
def threaded_sim(candles: pa.Table, ts: list[int]) -> Iterator[ExchangeSimulator]:
    with run_simulator_in_thread({SYMBOL: candles}, start_ms=ts[2000] + HOUR // 2) as sim:
        yield sim


def test_feed_wakes_on_advance_and_answers_known_closes_at_once(
    threaded_sim: ExchangeSimulator, ts: list[int], run: Any
) -> None:
    sim = threaded_sim

    async def main() -> None:
        feed = CandleFeed.acquire("binance", sim.base_url)
        try:
            # Subscribing tells the forming candle: the one before it is closed, known at once.
            assert await feed.wait_closed(SYMBOL, "1h", ts[1998], timeout=5) == ts[1999]
            assert feed.connected(SYMBOL, "1h")
            assert await feed.wait_closed(SYMBOL, "1h", ts[1998], timeout=0) == ts[1999]
            before = feed.stats(SYMBOL, "1h")

            waiter = asyncio.create_task(feed.wait_closed(SYMBOL, "1h", ts[1999], timeout=5))
            await asyncio.sleep(0)
            assert not waiter.done()
            started = time.monotonic()
            sim.advance(HOUR)  # from this thread; the server's loop pushes
            assert await waiter == ts[2000]
            assert time.monotonic() - started < 5  # the push, not the timeout, ended the wait
            after = feed.stats(SYMBOL, "1h")
            assert after.events > before.events
            assert (after.closes, after.errors) == (before.closes + 1, 0)

            # Nothing closes: the wait ends with None at its timeout, the stream stays up.
            assert await feed.wait_closed(SYMBOL, "1h", ts[2000], timeout=0.1) is None
            assert feed.connected(SYMBOL, "1h")
            assert feed.stats(SYMBOL, "1h").closes == after.closes
        finally:
            await feed.close()

    run(main)


def test_feed_is_shared_per_loop_and_streams_share_a_connection(
    threaded_sim: ExchangeSimulator, ts: list[int], run: Any
) -> None:
    sim = threaded_sim

    async def main() -> None:
        feed = CandleFeed.acquire("binance", sim.base_url)
        other = CandleFeed.acquire("binance", sim.base_url)
        assert other is feed
        try:
            feed.watch(SYMBOL, "1h")
            feed.watch(SYMBOL, "1h")
            feed.watch(SYMBOL, "4h")

            async def both_streams() -> bool:
                state = await _admin_ws(sim)
                return bool(state["streams"] == {"btcusdt@kline_1h": 1, "btcusdt@kline_4h": 1})

            await _until(both_streams)
            assert (await _admin_ws(sim))["connections"] == 1
            await other.close()
            assert CandleFeed.acquire("binance", sim.base_url) is feed  # still alive
            await feed.close()
        finally:
            await feed.close()
        assert not feed.connected(SYMBOL, "1h")
        assert CandleFeed.acquire("binance", sim.base_url) is not feed
        fresh = CandleFeed.acquire("binance", sim.base_url)
        await fresh.close()
        await fresh.close()

        async def closed() -> bool:
            return (await _admin_ws(sim))["connections"] == 0

        await _until(closed)

    run(main)


def test_feed_reconnects_after_restart_drop_and_failed_handshakes(
    candles: pa.Table, ts: list[int], monkeypatch: pytest.MonkeyPatch, run: Any
) -> None:
    from cryptoorchestrator.platform.exchange import candle_feed

    monkeypatch.setattr(candle_feed, "BACKOFF_MIN_S", 0.1)

    async def main() -> None:
        sim = ExchangeSimulator({SYMBOL: candles}, start_ms=ts[2000] + HOUR // 2)
        base = await sim.start()
        port = int(base.rsplit(":", 1)[1])
        feed = CandleFeed.acquire("binance", base)
        try:
            assert await feed.wait_closed(SYMBOL, "1h", ts[1998], timeout=5) == ts[1999]

            # The server goes away (close 1001) and comes back on the same port, later.
            await sim.stop()
            assert await feed.wait_closed(SYMBOL, "1h", ts[1999], timeout=0.3) is None
            assert not feed.connected(SYMBOL, "1h")
            sim.advance(HOUR)
            await sim.start(port=port)
            assert await feed.wait_closed(SYMBOL, "1h", ts[1999], timeout=5) == ts[2000]
            assert feed.stats(SYMBOL, "1h").reconnects == 1

            # The TCP connection is cut without a close frame.
            assert await sim.drop_ws_connections(abort=True) == 1
            sim.advance(HOUR)
            assert await feed.wait_closed(SYMBOL, "1h", ts[2000], timeout=5) == ts[2001]
            assert feed.stats(SYMBOL, "1h").reconnects == 2

            # Closed by the exchange, and the next two handshakes are refused (503).
            sim.set_faults(path_prefix="/ws", fail_next=2)
            assert await sim.drop_ws_connections() == 1
            sim.advance(HOUR)
            assert await feed.wait_closed(SYMBOL, "1h", ts[2001], timeout=8) == ts[2002]
            stats = feed.stats(SYMBOL, "1h")
            assert stats.reconnects == 3
            assert stats.errors >= 5  # 3 disconnects + 2 refused handshakes
            assert sim.faults.fail_next == 0
            assert feed.connected(SYMBOL, "1h")
        finally:
            await feed.close()
            await sim.stop()

    run(main)


def test_feed_follows_the_running_clock_without_advance(
    candles: pa.Table, ts: list[int], run: Any
) -> None:
    # 36,000x: an hourly candle lasts 0.1 s of real time; nothing calls advance().
    with run_simulator_in_thread(
        {SYMBOL: candles}, start_ms=ts[2000] + HOUR // 2, speed=36_000
    ) as sim:

        async def main() -> None:
            feed = CandleFeed.acquire("binance", sim.base_url)
            try:
                first = await feed.wait_closed(SYMBOL, "1h", ts[1998], timeout=5)
                assert first is not None
                later = await feed.wait_closed(SYMBOL, "1h", first, timeout=5)
                assert later is not None
                assert later > first
                assert later in ts
                assert feed.stats(SYMBOL, "1h").closes >= 1
            finally:
                await feed.close()

        run(main)
