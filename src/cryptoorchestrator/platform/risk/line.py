"""A direct line to the risk gate: framed JSON requests over one TCP connection per process.

Every order waits for its approval, so the approval's round trip is on every order's critical
path.  As a Ray actor call it crosses about eight threads (the caller's core worker, gRPC on both
sides, the actor's task queue, its event loop, and back), and on a busy node each of them waits
for a CPU, so its latency tail is long; a socket read by the actor's own event loop crosses
two (figures in ``docs/bots.md``, "The risk actor's line").  The line carries approvals only;
everything else (limits, reports, the kill switch) stays on Ray, whose ordering and failure
handling it needs.

Protocol: a frame is a 4-byte big-endian length and a UTF-8 JSON document.  A client opens with
``{"token": ...}`` (the token the actor handed out over Ray, so only a caller of the cluster can
use the line) and gets ``{"ok": true}``; then each request ``{"id": n, "checks": [...]}`` gets
``{"id": n, "answers": [...]}`` (or ``{"id": n, "error": "..."}``), in any order.

A line that breaks fails the requests on it (their callers deny their orders: the gate may or
may not have counted them, and an order never goes out unapproved); the next request opens a new
line, so a restarted actor (new process, new port) is found again.  No Ray here (``platform``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import struct
from collections.abc import Callable
from typing import Any

log = logging.getLogger("cryptoorchestrator.risk.line")

_HEADER = struct.Struct(">I")
#: Largest frame accepted (a batch of 500 checks is ~150 KB); anything larger is a broken peer.
MAX_FRAME = 4 * 2**20


class LineError(ConnectionError):
    """The line broke, or the other side refused or misspoke."""


async def read_frame(reader: asyncio.StreamReader) -> Any:
    """Read one frame and return its decoded JSON document."""
    (size,) = _HEADER.unpack(await reader.readexactly(_HEADER.size))
    if size > MAX_FRAME:
        raise LineError(f"frame of {size} bytes is larger than {MAX_FRAME}")
    return json.loads(await reader.readexactly(size))


def frame(document: Any) -> bytes:
    """Encode ``document`` as one frame."""
    body = json.dumps(document, separators=(",", ":")).encode()
    return _HEADER.pack(len(body)) + body


#: Decides a batch of checks (as :func:`~cryptoorchestrator.cluster.risk_actor.check_to_dict`
#: writes them) and returns one answer each; runs on the server's event loop.
Decide = Callable[[list[dict[str, Any]]], list[dict[str, Any]]]


class LineServer:
    """The risk gate's end: serves approvals on the event loop that runs the gate."""

    def __init__(self, decide: Decide, token: str) -> None:
        self._decide = decide
        self._token = token
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.host = ""
        self.port = 0

    async def start(self, host: str, port: int = 0) -> tuple[str, int]:
        """Listen on ``host:port`` (0: a free port); return the address bound."""
        self._server = await asyncio.start_server(self._serve, host, port)
        sock = self._server.sockets[0]
        self.host, self.port = host, int(sock.getsockname()[1])
        return self.host, self.port

    async def close(self) -> None:
        """Stop listening and drop every line."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            hello = await read_frame(reader)
            token = hello.get("token") if isinstance(hello, dict) else None
            if not isinstance(token, str) or not hmac.compare_digest(token, self._token):
                writer.write(frame({"ok": False, "error": "bad token"}))
                return
            writer.write(frame({"ok": True}))
            while True:
                request = await read_frame(reader)
                rid = request.get("id")
                try:
                    reply = {"id": rid, "answers": self._decide(request["checks"])}
                except Exception as exc:  # a malformed check: that request fails, the line lives
                    reply = {"id": rid, "error": f"{type(exc).__name__}: {exc}"}
                writer.write(frame(reply))
                # Small replies: drain only waits when the peer stops reading.
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, LineError, ValueError):
            pass  # the client went away or misspoke: its line ends, others go on
        finally:
            self._writers.discard(writer)
            writer.close()


class LineClient:
    """A process's end of the line: many requests in flight, matched to replies by id."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._pending: dict[int, asyncio.Future[list[dict[str, Any]]]] = {}
        self._next = 0
        self._reading = asyncio.get_running_loop().create_task(self._read())
        self.closed = False

    @classmethod
    async def connect(cls, host: str, port: int, token: str, timeout_s: float = 2.0) -> LineClient:
        """Open a line to ``host:port`` and present ``token``.

        Raises
        ------
        LineError
            If the connection fails, times out or the token is refused.
        """
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
        except (OSError, TimeoutError) as exc:
            raise LineError(f"cannot reach the risk line at {host}:{port}: {exc}") from exc
        try:
            writer.write(frame({"token": token}))
            hello = await asyncio.wait_for(read_frame(reader), timeout_s)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
            writer.close()
            raise LineError(f"the risk line at {host}:{port} did not answer: {exc}") from exc
        if not (isinstance(hello, dict) and hello.get("ok") is True):
            writer.close()
            raise LineError(f"the risk line at {host}:{port} refused the token")
        return cls(reader, writer)

    async def call(self, checks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Send ``checks``; return the gate's answers (one each, in order).

        Raises
        ------
        LineError
            If the line is or becomes broken before the answer arrives, or the gate failed the
            request.
        """
        if self.closed:
            raise LineError("the risk line is closed")
        self._next += 1
        rid = self._next
        future: asyncio.Future[list[dict[str, Any]]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = future
        try:
            self._writer.write(frame({"id": rid, "checks": checks}))
            return await future
        finally:
            self._pending.pop(rid, None)

    async def _read(self) -> None:
        error: BaseException = LineError("the risk line closed")
        try:
            while True:
                reply = await read_frame(self._reader)
                future = self._pending.get(reply.get("id"))
                if future is None or future.done():
                    continue  # its caller gave up (timeout): nothing waits for it
                if "error" in reply:
                    future.set_exception(LineError(f"risk gate failed: {reply['error']}"))
                else:
                    future.set_result(list(reply["answers"]))
        except asyncio.CancelledError:
            raise
        except (asyncio.IncompleteReadError, ConnectionError, LineError, ValueError) as exc:
            error = exc if isinstance(exc, LineError) else LineError(f"risk line lost: {exc!r}")
        finally:
            self._fail(error)

    def _fail(self, error: BaseException) -> None:
        self.closed = True
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error)
        self._pending.clear()
        self._writer.close()

    async def close(self) -> None:
        """Close the line; requests still waiting fail."""
        self._reading.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):  # closing: nothing to report
            await self._reading
        self._fail(LineError("the risk line was closed"))


__all__ = ["MAX_FRAME", "LineClient", "LineError", "LineServer", "frame", "read_frame"]
