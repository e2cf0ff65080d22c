"""The risk gate's direct line: framing, the token, replies matched by id, broken lines."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import pytest

from cryptoorchestrator.platform.risk.line import (
    MAX_FRAME,
    LineClient,
    LineError,
    LineServer,
    frame,
    read_frame,
)

TOKEN = "s3cret-token"


def _decide(checks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # Approve even amounts, deny odd ones: answers that show which check each belongs to.
    return [
        {"approved": int(c["amount"]) % 2 == 0, "reason": f"amount {c['amount']}", "limit": None}
        for c in checks
    ]


async def _server() -> LineServer:
    server = LineServer(_decide, TOKEN)
    await server.start("127.0.0.1")
    return server


def test_answers_each_request_in_order_of_its_checks() -> None:
    async def go() -> list[list[dict[str, Any]]]:
        server = await _server()
        client = await LineClient.connect(server.host, server.port, TOKEN)
        # Several requests in flight at once on one line: each gets its own answers.
        answers = await asyncio.gather(
            *(client.call([{"amount": str(i)}, {"amount": str(i + 1)}]) for i in range(5))
        )
        await client.close()
        await server.close()
        return list(answers)

    answers = asyncio.run(go())
    for i, pair in enumerate(answers):
        assert [a["reason"] for a in pair] == [f"amount {i}", f"amount {i + 1}"]
        assert [a["approved"] for a in pair] == [i % 2 == 0, (i + 1) % 2 == 0]


def test_a_wrong_token_is_refused() -> None:
    async def go() -> None:
        server = await _server()
        try:
            with pytest.raises(LineError, match="refused the token"):
                await LineClient.connect(server.host, server.port, "not-the-token")
        finally:
            await server.close()

    asyncio.run(go())


def test_nothing_listening_is_a_line_error() -> None:
    async def go() -> None:
        server = await _server()
        port = server.port
        await server.close()
        await asyncio.sleep(0)
        with pytest.raises(LineError, match="cannot reach"):
            await LineClient.connect("127.0.0.1", port, TOKEN, timeout_s=1.0)

    asyncio.run(go())


def test_a_failing_decision_fails_its_request_only() -> None:
    async def go() -> None:
        server = await _server()
        client = await LineClient.connect(server.host, server.port, TOKEN)
        with pytest.raises(LineError, match="risk gate failed: KeyError"):
            await client.call([{"no amount": "1"}])
        # The line survives a bad request.
        assert not client.closed
        assert (await client.call([{"amount": "2"}]))[0]["approved"] is True
        await client.close()
        await server.close()

    asyncio.run(go())


def test_a_line_that_breaks_fails_what_waits_on_it() -> None:
    """A peer that takes a request and goes away: the caller learns, the line is closed."""

    async def go() -> None:
        got_request = asyncio.Event()

        async def vanish(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_frame(reader)
            writer.write(frame({"ok": True}))
            await read_frame(reader)  # the request ...
            got_request.set()
            writer.close()  # ... never answered

        server = await asyncio.start_server(vanish, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = await LineClient.connect("127.0.0.1", port, TOKEN)
        with pytest.raises(LineError):
            await asyncio.wait_for(client.call([{"amount": "2"}]), 5)
        assert got_request.is_set()
        assert client.closed
        with pytest.raises(LineError, match="closed"):
            await client.call([{"amount": "2"}])
        server.close()

    asyncio.run(go())


def test_an_oversized_frame_ends_the_line() -> None:
    async def go() -> None:
        server = await _server()
        reader, writer = await asyncio.open_connection(server.host, server.port)
        writer.write(struct.pack(">I", MAX_FRAME + 1))
        # The server drops the connection instead of reading 4 MB of garbage.
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        await server.close()

    asyncio.run(go())
