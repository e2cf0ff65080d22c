"""Hostile input is refused with 422 naming the field, never a 500, and nothing is stored.

Each test sends one kind of malformed value from outside (huge integers, lone surrogates, NUL
characters, explicit nulls, out-of-range cursors, numbers wider than a money column), asserts
the one error shape with the offending field named, and then reads the resource back to check
that the refused request changed nothing.  Every test runs on SQLite and on PostgreSQL, whose
drivers refuse NUL characters, unpaired surrogates and out-of-range numbers with errors of their
own that used to surface as 500s.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.security.conftest import assert_error_shape

BOT = {"name": "victim", "tradingPair": "BTC/USDT", "strategy": "sma_cross"}
ACCOUNT = {"name": "main", "exchange": "binance", "mode": "paper"}
HUGE = 10**400


def _raw(client: TestClient, method: str, url: str, text: str, headers: dict[str, str]) -> Any:
    """Send ``text`` as a JSON body verbatim (non-finite numbers, exact big integers)."""
    return client.request(
        method, url, content=text.encode(), headers={**headers, "Content-Type": "application/json"}
    )


def _json(
    client: TestClient, method: str, url: str, body: Any, headers: dict[str, str] | None = None
) -> Any:
    """Send ``body`` as ASCII JSON: ``\\ud800`` escapes reach the server as sent."""
    return _raw(client, method, url, json.dumps(body), headers or {})


def _refused(response: Any, field: str, *, allowed: bool = False) -> dict[str, Any]:
    """Assert a 422 in the error shape whose details name ``field``; return that detail."""
    assert response.status_code == 422, response.text
    body = response.json()
    assert_error_shape(body, "invalid_input")
    names = (field, f"query.{field}", f"path.{field}")
    named = [
        d for d in body["details"] if d["field"] in names or d["field"].startswith(field + ".")
    ]
    assert named, body
    if allowed:
        assert named[0].get("allowed"), body
    # Nothing the client sent is echoed back in bulk.
    assert len(response.content) < 4000
    return named[0]


def _bot(client: TestClient, headers: dict[str, str], **extra: Any) -> dict[str, Any]:
    r = client.post("/api/bots", json={**BOT, **extra}, headers=headers)
    assert r.status_code == 201, r.text
    return dict(r.json())


def _unchanged(client: TestClient, headers: dict[str, str], before: dict[str, Any]) -> None:
    r = client.get(f"/api/bots/{before['id']}", headers=headers)
    assert r.status_code == 200, r.text
    assert r.json() == before


def _no_bots(client: TestClient, headers: dict[str, str]) -> None:
    r = client.get("/api/bots", headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["items"] == []


# ------------------------------------------------------------------------------ bot params
#: Hostile ``params`` objects (verbatim JSON) and the field each error must name.
BAD_PARAMS = {
    "int-10**400": (f'{{"fast": {HUGE}}}', "params.fast"),
    "int-minus-10**400": (f'{{"fast": -{HUGE}}}', "params.fast"),
    "float-overflow": ('{"fast": 1e400}', "params.fast"),
    "nan": ('{"fast": NaN}', "params.fast"),
    "minus-infinity": ('{"fast": -Infinity}', "params.fast"),
    "beyond-declared-range": ('{"fast": 1000000}', "params.fast"),
    "int-beyond-2**53": ('{"fast": 9007199254740993}', "params.fast"),
    "long-string": ('{"slow": "' + "9" * 5000 + '"}', "params.slow"),
    "nul-in-value": ('{"fast": "\\u0000"}', "params.fast"),
    "surrogate-in-value": ('{"fast": "\\ud800"}', "params.fast"),
    "nul-in-key": ('{"fa\\u0000st": 5}', "params"),
    "deep-nesting": ('{"fast": ' + "[" * 40 + "]" * 40 + "}", "params.fast"),
    "long-list": ('{"fast": [' + ",".join(["1"] * 5000) + "]}", "params.fast"),
}


@pytest.mark.parametrize("attack", sorted(BAD_PARAMS))
def test_hostile_params_are_refused_on_bots_and_backtests(
    client: TestClient, users: dict[str, dict[str, str]], attack: str
) -> None:
    params, field = BAD_PARAMS[attack]
    headers = users["trader"]
    create = json.dumps(BOT)[:-1] + f', "params": {params}}}'
    _refused(_raw(client, "POST", "/api/bots", create, headers), field)
    _no_bots(client, headers)
    before = _bot(client, headers, params={"fast": 5, "slow": 20})
    r = _raw(client, "PATCH", f"/api/bots/{before['id']}", f'{{"params": {params}}}', headers)
    _refused(r, field)
    _unchanged(client, headers, before)
    backtest = f'{{"strategy": "sma_cross", "params": {params}}}'
    _refused(_raw(client, "POST", "/api/backtests", backtest, headers), field)
    assert client.get("/api/backtests", headers=headers).json() == []


def test_declared_param_range_is_named_with_the_allowed_values(
    client: TestClient, users: dict[str, dict[str, str]]
) -> None:
    headers = users["trader"]
    r = client.post("/api/bots", json={**BOT, "params": {"fast": 10**6}}, headers=headers)
    detail = _refused(r, "params.fast", allowed=True)
    assert "500" in detail["allowed"]
    _no_bots(client, headers)


def test_optimization_with_hostile_space_is_refused(
    client: TestClient, users: dict[str, dict[str, str]]
) -> None:
    headers = users["trader"]
    for space, field in [
        (f'{{"fast": [5, {HUGE}]}}', "space.fast.1"),
        ('{"fast": {"low": NaN, "high": 5}}', "space.fast.low"),
        ('{"fast": "\\u0000"}', "space.fast"),
        ('{"fast": ' + "[" * 40 + "]" * 40 + "}", "space.fast"),
    ]:
        body = f'{{"strategy": "sma_cross", "space": {space}}}'
        _refused(_raw(client, "POST", "/api/optimizations", body, headers), field)
    assert client.get("/api/optimizations", headers=headers).json() == []


# ------------------------------------------------------------------- surrogates and NULs
NASTY = [pytest.param("\ud800", id="lone-surrogate"), pytest.param("a\x00b", id="nul")]


@pytest.mark.parametrize("value", NASTY)
def test_bot_text_fields_refuse_nul_and_surrogates(
    client: TestClient, users: dict[str, dict[str, str]], value: str
) -> None:
    headers = users["trader"]
    before = _bot(client, headers)
    for field in ("name", "tradingPair", "strategy", "timeframe", "actorGroup"):
        _refused(
            _json(client, "POST", "/api/bots", {**BOT, "name": "x", field: value}, headers), field
        )
        r = _json(client, "PATCH", f"/api/bots/{before['id']}", {field: value}, headers)
        _refused(r, field)
    _unchanged(client, headers, before)
    assert [b["id"] for b in client.get("/api/bots", headers=headers).json()["items"]] == [
        before["id"]
    ]


@pytest.mark.parametrize("value", NASTY)
def test_exchange_account_fields_refuse_nul_and_surrogates(
    client: TestClient, users: dict[str, dict[str, str]], value: str
) -> None:
    headers = users["trader"]
    url = "/api/integrations/exchanges/accounts"
    for field in ("name", "exchange", "apiUrl", "apiKey", "apiSecret", "passphrase"):
        r = _json(client, "POST", url, {**ACCOUNT, field: value}, headers)
        _refused(r, field)
        assert json.dumps(value)[1:-1] not in r.text  # the value is not echoed
    assert client.get(url, headers=headers).json() == []
    created = client.post(url, json={**ACCOUNT, "apiKey": "k" * 16}, headers=headers)
    assert created.status_code == 201, created.text
    before = created.json()
    for field in ("name", "apiUrl", "apiKey", "apiSecret", "passphrase"):
        r = _json(client, "PATCH", f"{url}/{before['id']}", {field: value}, headers)
        _refused(r, field)
    assert client.get(url, headers=headers).json() == [before]


@pytest.mark.parametrize("value", NASTY)
def test_auth_and_run_bodies_refuse_nul_and_surrogates(
    client: TestClient, users: dict[str, dict[str, str]], value: str
) -> None:
    good = {"email": "new@example.com", "password": "a long enough password"}
    for field in ("email", "password"):
        _refused(_json(client, "POST", "/api/auth/register", {**good, field: value}), field)
    assert client.post("/api/auth/login", json=good).status_code == 401
    headers = users["trader"]
    for field in ("strategy", "exchange", "symbol", "timeframe"):
        body = {"strategy": "sma_cross", field: value}
        _refused(_json(client, "POST", "/api/backtests", body, headers), field)
    assert client.get("/api/backtests", headers=headers).json() == []


def test_nul_in_path_and_query_is_refused(
    client: TestClient, users: dict[str, dict[str, str]]
) -> None:
    for url, field in [
        ("/api/markets/BTC-US%00DT/ohlcv", "symbol"),
        ("/api/markets/BTC-USDT/ohlcv?exchange=bin%00ance", "exchange"),
        ("/api/markets/BTC-USDT/ohlcv?timeframe=1%00", "timeframe"),
        ("/api/markets?exchange=bin%00ance", "exchange"),
        ("/api/backtests/abc%00def", "run_id"),
        ("/api/backtests/abc%00def/results", "run_id"),
        ("/api/optimizations/abc%00def", "run_id"),
        ("/api/orders/?status=fil%00led", "status"),
        ("/api/orders/?cursor=ab%00cd", "cursor"),
        ("/api/trades/?cursor=ab%00cd", "cursor"),
        ("/api/positions/?cursor=ab%00cd", "cursor"),
        ("/api/bots?cursor=ab%00cd", "cursor"),
    ]:
        _refused(client.get(url, headers=users["trader"]), field)


def test_no_route_answers_500_to_a_nul_in_a_text_parameter(
    client: TestClient, users: dict[str, dict[str, str]]
) -> None:
    """Every documented string path or query parameter of every GET refuses a NUL with 422."""
    spec = client.get("/openapi.json").json()
    tried = 0
    for path, item in spec["paths"].items():
        get = item.get("get")
        if get is None:
            continue
        params = get.get("parameters", [])
        for param in (p for p in params if _is_text(p.get("schema", {}))):
            url, query = path, {}
            for p in params:
                if p["in"] == "path":
                    text = _is_text(p["schema"])
                    filler = "a%00b" if p is param else ("x" if text else "1")
                    url = url.replace("{" + p["name"] + "}", filler)
            if param["in"] == "query":
                query[param["name"]] = "a\x00b"
            r = client.get(url, params=query, headers=users["trader"])
            assert r.status_code == 422, (path, param["name"], r.text)
            _refused(r, param["name"])
            tried += 1
    assert tried >= 8


def _is_text(schema: dict[str, Any]) -> bool:
    if schema.get("type") == "string" and "enum" not in schema:
        return True
    return any(_is_text(s) for s in schema.get("anyOf", []))


# ---------------------------------------------------------------------- explicit nulls
def test_patch_null_on_a_required_field_is_refused(
    client: TestClient, users: dict[str, dict[str, str]]
) -> None:
    headers = users["trader"]
    before = _bot(client, headers, stopLoss="2.5")
    for field in (
        "name",
        "tradingPair",
        "strategy",
        "params",
        "timeframe",
        "mode",
        "riskPerTrade",
        "maxPositionSize",
    ):
        r = client.patch(f"/api/bots/{before['id']}", json={field: None}, headers=headers)
        _refused(r, field)
    _unchanged(client, headers, before)
    assert client.get("/api/bots", headers=headers).json()["items"][0]["name"] == "victim"


def test_patch_null_clears_an_optional_field(
    client: TestClient, users: dict[str, dict[str, str]]
) -> None:
    headers = users["trader"]
    before = _bot(client, headers, stopLoss="2.5", actorGroup="g1")
    r = client.patch(
        f"/api/bots/{before['id']}", json={"stopLoss": None, "actorGroup": None}, headers=headers
    )
    assert r.status_code == 200, r.text
    assert r.json()["stopLoss"] is None
    assert r.json()["actorGroup"] is None
    assert r.json()["name"] == "victim"


def test_patch_null_on_an_exchange_account_is_refused(
    client: TestClient, users: dict[str, dict[str, str]]
) -> None:
    headers = users["trader"]
    url = "/api/integrations/exchanges/accounts"
    before = client.post(url, json=ACCOUNT, headers=headers).json()
    for field in ("name", "mode"):
        r = client.patch(f"{url}/{before['id']}", json={field: None}, headers=headers)
        _refused(r, field)
    assert client.get(url, headers=headers).json() == [before]


# ---------------------------------------------------------------------------- cursors
def _cursor(stamp: Any, row_id: Any) -> str:
    raw = json.dumps([stamp, row_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


GARBAGE_CURSORS = [
    _cursor(1, 2**63),
    _cursor(1, -1),
    _cursor(1, 0),
    _cursor(1, True),
    _cursor(1, HUGE),
    _cursor(-1, 5),
    _cursor(10**30, 5),
    _cursor(1.5, 5),
    _cursor("x", 5),
    base64.urlsafe_b64encode(b"[1,2,3]").decode(),
    base64.urlsafe_b64encode(b'{"a":1}').decode(),
    "!!!",
    "\u00e9t\u00e9",
    "x" * 199,
]
LISTS = ["/api/bots", "/api/trades/", "/api/orders/", "/api/positions/"]


def test_out_of_range_or_garbage_cursor_is_refused(
    client: TestClient, users: dict[str, dict[str, str]]
) -> None:
    _bot(client, users["trader"])
    for url in LISTS:
        for cursor in GARBAGE_CURSORS:
            r = client.get(url, params={"cursor": cursor}, headers=users["trader"])
            assert r.status_code == 422, (url, cursor, r.text)
            _refused(r, "cursor")


def test_cursor_ids_stay_within_the_id_column_of_each_list(
    client: TestClient, users: dict[str, dict[str, str]]
) -> None:
    """``bots.id`` and ``positions.id`` are INTEGER: a cursor id past 2^31-1 never reaches SQL,
    where PostgreSQL's cast to the column type would overflow; BIGINT lists take up to 2^63-1."""
    headers = users["trader"]
    _bot(client, headers)
    for url, largest in [
        ("/api/bots", 2**31 - 1),
        ("/api/positions/", 2**31 - 1),
        ("/api/trades/", 2**63 - 1),
        ("/api/orders/", 2**63 - 1),
    ]:
        ok = client.get(url, params={"cursor": _cursor(1, largest)}, headers=headers)
        assert ok.status_code == 200, (url, ok.text)
        for beyond in {largest + 1, 2**63 - 1} - {largest}:
            r = client.get(url, params={"cursor": _cursor(1, beyond)}, headers=headers)
            _refused(r, "cursor")


def test_out_of_range_ids_in_path_and_query_are_refused(
    client: TestClient, users: dict[str, dict[str, str]]
) -> None:
    for url in [
        "/api/bots/2147483648",
        "/api/bots/9223372036854775807",
        "/api/bots/0",
        "/api/bots/-1",
        "/api/trades/?botId=2147483648",
        "/api/orders/?botId=99999999999999999999999",
        "/api/analytics/performance?botId=2147483648",
        "/api/integrations/exchanges/accounts/2147483648",
        "/api/markets/BTC-USDT/ohlcv?since=99999999999999999999999",
    ]:
        r = client.get(url, headers=users["trader"])
        assert r.status_code == 422, (url, r.text)
        assert_error_shape(r.json(), "invalid_input")


# ---------------------------------------------------------------------------- money
MONEY = [
    ("startingBalance", "1" + "0" * 39),
    ("startingBalance", "1e40"),
    ("startingBalance", "100000000000000000000"),
    ("startingBalance", "0.0000000000000000001"),
    ("startingBalance", "-5"),
    ("riskPerTrade", "1" + "0" * 39),
    ("riskPerTrade", "1.0000000000000000001"),
    ("maxPositionSize", "1e40"),
    ("stopLoss", "1" + "0" * 39),
    ("takeProfit", "NaN"),
    ("trailingStop", "Infinity"),
    ("stopLoss", "1E-30"),
]


def test_money_beyond_the_column_is_refused_with_the_range(
    client: TestClient, users: dict[str, dict[str, str]]
) -> None:
    headers = users["trader"]
    before = _bot(client, headers, startingBalance="1000")
    for field, value in MONEY:
        r = client.post("/api/bots", json={**BOT, "name": "other", field: value}, headers=headers)
        _refused(r, field, allowed=True)
        r = client.patch(f"/api/bots/{before['id']}", json={field: value}, headers=headers)
        _refused(r, field, allowed=True)
        if value.isdigit():  # the same, as a JSON number (an exact int; floats would round)
            r = _raw(
                client, "PATCH", f"/api/bots/{before['id']}", f'{{"{field}": {value}}}', headers
            )
            _refused(r, field, allowed=True)
    _unchanged(client, headers, before)
    assert len(client.get("/api/bots", headers=headers).json()["items"]) == 1


def test_largest_money_value_round_trips(
    client: TestClient, users: dict[str, dict[str, str]]
) -> None:
    big = "99999999999999999999.999999999999999999"
    bot = _bot(client, users["trader"], startingBalance=big)
    assert bot["startingBalance"] == big
    r = client.get(f"/api/bots/{bot['id']}", headers=users["trader"])
    assert r.json()["startingBalance"] == big


# -------------------------------------------------------------------- error rendering
def test_validation_errors_do_not_echo_huge_or_unencodable_input(
    client: TestClient, users: dict[str, dict[str, str]]
) -> None:
    headers = users["trader"]
    for body in (
        {**BOT, "mode": "\ud800" * 1000},
        {**BOT, "mode": "x" * 100_000},
        {**BOT, "timeframe": "\ud800"},
        {**BOT, "strategy": "no_such_\ud800"},
        {**BOT, "unknown\ud800": 1},
    ):
        r = _json(client, "POST", "/api/bots", body, headers)
        assert r.status_code == 422, r.text
        assert_error_shape(r.json(), "invalid_input")
        assert len(r.content) < 4000
    _no_bots(client, headers)
