"""Health routes are anonymous, so they must not tell anyone about other tenants.

The attack: an anonymous caller (or another tenant) reads ``/api/health/detailed`` and learns how
many bots every user runs, which accounts have an open circuit breaker, and the database's error
text (hosts, addresses).
"""

from __future__ import annotations

from fastapi.testclient import TestClient

BOT = {"tradingPair": "BTC/USDT", "strategy": "sma_cross"}


def _bots(client: TestClient, headers: dict[str, str], n: int, prefix: str) -> None:
    for i in range(n):
        r = client.post("/api/bots", json={**BOT, "name": f"{prefix}{i}"}, headers=headers)
        assert r.status_code == 201, r.text


def _stopped(body: dict) -> int | None:
    return body["components"]["bots"].get("by_status", {}).get("Stopped")


def test_anonymous_sees_statuses_only(client: TestClient, users: dict[str, dict[str, str]]) -> None:
    _bots(client, users["trader"], 2, "t")
    _bots(client, users["other"], 3, "o")
    body = client.get("/api/health/detailed").json()
    assert set(body["components"]["bots"]) == {"status"}
    assert all(set(c) == {"status"} for c in body["components"].values())
    assert "exchanges" not in body["circuit_breaker"]
    assert "by_status" not in str(body)


def test_tenant_sees_own_bots_and_admin_sees_all(
    client: TestClient, users: dict[str, dict[str, str]]
) -> None:
    _bots(client, users["trader"], 2, "t")
    _bots(client, users["other"], 3, "o")
    mine = client.get("/api/health/detailed", headers=users["trader"]).json()
    assert _stopped(mine) == 2
    theirs = client.get("/api/health/detailed", headers=users["other"]).json()
    assert _stopped(theirs) == 3
    viewer = client.get("/api/health/detailed", headers=users["viewer"]).json()
    assert _stopped(viewer) == 0
    everyone = client.get("/api/health/detailed", headers=users["admin"]).json()
    assert _stopped(everyone) == 5


def test_a_bad_token_gets_the_anonymous_view(
    client: TestClient, users: dict[str, dict[str, str]]
) -> None:
    _bots(client, users["trader"], 1, "t")
    forged = {"Authorization": "Bearer " + users["admin"]["Authorization"][7:-2] + "xx"}
    body = client.get("/api/health/detailed", headers=forged).json()
    assert set(body["components"]["bots"]) == {"status"}


def test_circuit_breakers_of_other_tenants_stay_hidden(
    client: TestClient, users: dict[str, dict[str, str]]
) -> None:
    ids = {}
    for who in ("trader", "other"):
        r = client.post(
            "/api/integrations/exchanges/accounts",
            json={"name": "main", "exchange": "binance", "mode": "paper"},
            headers=users[who],
        )
        assert r.status_code == 201, r.text
        ids[who] = r.json()["id"]
    breakers = {
        f"binance:{ids['trader']}": {"state": "closed", "failures": 0},
        f"binance:{ids['other']}": {"state": "open", "failures": 5, "last_error": "timeout"},
    }
    client.app.state.context.circuit_breakers = lambda: breakers  # type: ignore[attr-defined]
    mine = client.get("/api/health/detailed", headers=users["trader"]).json()["circuit_breaker"]
    assert list(mine["exchanges"]) == [f"binance:{ids['trader']}"]
    assert mine["open"] == []
    theirs = client.get("/api/health/detailed", headers=users["other"]).json()["circuit_breaker"]
    assert theirs["open"] == [f"binance:{ids['other']}"]
    everyone = client.get("/api/health/detailed", headers=users["admin"]).json()
    assert set(everyone["circuit_breaker"]["exchanges"]) == set(breakers)
