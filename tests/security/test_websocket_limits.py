"""WebSocket abuse: deeply nested JSON, oversized messages, socket floods per address and per
user, tokens in URLs.  Each socket must answer or close cleanly, never die of an exception.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect
from tests.security.conftest import options, register_and_login


def _token(headers: dict[str, str]) -> str:
    return headers["Authorization"].split()[1]


def _slots(client: TestClient) -> tuple[int, int]:
    counts: tuple[int, int] = client.app.state.context.ws_slots.open_count()  # type: ignore[attr-defined]
    return counts


def _refused(ws: Any) -> WebSocketDisconnect:
    with pytest.raises(WebSocketDisconnect) as info:
        ws.receive_json()
    return info.value


@pytest.mark.parametrize(
    "payload",
    [
        "[" * 100_000,  # what once raised RecursionError and killed the socket
        '{"type": "subscribe", "symbols": ' + "[" * 40 + "]" * 40 + "}",
        '{"type": "ping", "x": ' + '{"a": ' * 50 + "1" + "}" * 50 + "}",
    ],
)
def test_deeply_nested_message_is_answered_and_socket_survives(
    app_factory: Callable[..., TestClient], payload: str
) -> None:
    client = app_factory(options=options(ws_max_message_bytes=200_000))
    with client.websocket_connect("/ws/market-data") as ws:
        ws.send_text(payload)
        reply = ws.receive_json()
        assert reply["type"] == "error"
        assert reply["code"] == "too_deep"
        ws.send_json({"type": "ping"})
        assert ws.receive_json() == {"type": "pong"}
        # Brackets inside strings nest nothing: such a message is handled normally.
        ws.send_json({"type": "ping", "note": "[" * 100})
        assert ws.receive_json() == {"type": "pong"}


def test_deeply_nested_message_on_bot_socket(lite: TestClient) -> None:
    token = _token(register_and_login(lite, "deep@example.com"))
    with lite.websocket_connect("/ws/bots") as ws:
        ws.send_text('{"type": "auth", "token": ' + "[" * 5000 + "}")
        assert ws.receive_json()["type"] == "error"
        assert _refused(ws).code == 4401  # no token: refused as unauthenticated, not a crash
    with lite.websocket_connect("/ws/bots") as ws:
        ws.send_json({"type": "auth", "token": token})
        assert ws.receive_json()["type"] == "authenticated"
        ws.send_text("[" * 60_000)  # within the default 64 KiB message limit
        assert ws.receive_json()["code"] == "too_deep"
        ws.send_json({"type": "ping"})
        assert ws.receive_json() == {"type": "pong"}


def test_oversized_message_closes_with_1009(app_factory: Callable[..., TestClient]) -> None:
    client = app_factory(options=options(ws_max_message_bytes=1024))
    with client.websocket_connect("/ws/market-data") as ws:
        ws.send_json({"type": "subscribe", "symbols": ["BTC/USDT"] + ["X"] * 300})
        closed = _refused(ws)
        assert closed.code == 1009
        assert "1024" in (closed.reason or "")
    with client.websocket_connect("/ws/market-data") as ws:  # binary frames too
        ws.send_bytes(b"\0" * 2048)
        assert _refused(ws).code == 1009
    assert _slots(client) == (0, 0)
    with client.websocket_connect("/ws/market-data") as ws:  # the limit is per message
        ws.send_json({"type": "ping", "pad": "x" * 900})
        assert ws.receive_json() == {"type": "pong"}


def test_sockets_per_address_are_capped_and_freed(app_factory: Callable[..., TestClient]) -> None:
    client = app_factory(options=options(ws_max_per_ip=2, ws_max_per_user=10))
    token = _token(register_and_login(client, "flood@example.com"))
    with ExitStack() as stack:
        first = ExitStack()
        first.enter_context(client.websocket_connect("/ws/market-data"))
        # A forged X-Forwarded-For from an untrusted peer is the same address.
        stack.enter_context(
            client.websocket_connect(
                f"/ws/bots?token={token}", headers={"X-Forwarded-For": "203.0.113.9"}
            )
        )
        for path in ("/ws/market-data", f"/ws/bots?token={token}"):
            with client.websocket_connect(path, headers={"X-Forwarded-For": "203.0.113.10"}) as ws:
                refused = _refused(ws)
                assert refused.code == 1008
                assert "at most 2" in (refused.reason or "")
        assert _slots(client) == (2, 1)
        first.close()  # leaves the socket and waits until the server is done with it
        assert _slots(client) == (1, 1)
        # A freed slot is usable again.
        with client.websocket_connect("/ws/market-data") as ws:
            ws.send_json({"type": "ping"})
            assert ws.receive_json() == {"type": "pong"}
    assert _slots(client) == (0, 0)
    # Other addresses have their own slots.
    proxyless = TestClient(client.app, client=("192.0.2.7", 1))
    with proxyless.websocket_connect("/ws/market-data") as ws:
        ws.send_json({"type": "ping"})
        assert ws.receive_json() == {"type": "pong"}


def test_sockets_per_user_are_capped_and_freed(app_factory: Callable[..., TestClient]) -> None:
    client = app_factory(options=options(ws_max_per_ip=50, ws_max_per_user=2))
    alice = _token(register_and_login(client, "alice@example.com"))
    bob = _token(register_and_login(client, "bob@example.com"))
    with ExitStack() as stack:
        sockets = []
        for _ in range(2):
            own = ExitStack()
            ws = own.enter_context(client.websocket_connect("/ws/bots"))
            stack.enter_context(own)
            ws.send_json({"type": "auth", "token": alice})
            assert ws.receive_json()["type"] == "authenticated"
            sockets.append(own)
        with client.websocket_connect("/ws/bots") as ws:
            ws.send_json({"type": "auth", "token": alice})
            reply = ws.receive_json()
            assert reply["code"] == "too_many_connections"
            refused = _refused(ws)
            assert refused.code == 1008
            assert "at most 2" in (refused.reason or "")
        hub = client.app.state.context.event_hub  # type: ignore[attr-defined]
        assert hub.subscriber_count() == 2  # the refused socket never subscribed
        with client.websocket_connect("/ws/bots") as ws:  # another user is not affected
            ws.send_json({"type": "auth", "token": bob})
            assert ws.receive_json()["type"] == "authenticated"
        sockets[0].close()  # leaves the socket and waits until the server is done with it
        assert _slots(client)[1] == 1
        with client.websocket_connect("/ws/bots") as ws:
            ws.send_json({"type": "auth", "token": alice})
            assert ws.receive_json()["type"] == "authenticated"
    assert _slots(client) == (0, 0)


def test_token_in_subprotocol_header_instead_of_url(lite: TestClient) -> None:
    token = _token(register_and_login(lite, "proto@example.com"))
    with lite.websocket_connect("/ws/bots", subprotocols=["bearer", token]) as ws:
        assert ws.accepted_subprotocol == "bearer"  # selected; the token is never echoed
        assert ws.receive_json()["type"] == "authenticated"
    with lite.websocket_connect("/ws/bots", subprotocols=["bearer", "garbage"]) as ws:
        assert ws.receive_json()["type"] == "error"
        assert _refused(ws).code == 4401
    with lite.websocket_connect(f"/ws/bots?token={token}") as ws:  # the old form still works
        assert ws.receive_json()["type"] == "authenticated"
