"""Server-side request forgery through exchange-account URLs, and what health discloses.

A tenant's ``apiUrl`` decides where the head node sends requests.  Each test points it (or finds
it pointed) at a counting HTTP server on loopback, the stand-in for an internal service, and
proves both the refusal and that no request reached the server.  Every test runs on SQLite and
PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.security.conftest import assert_error_shape
from tests.security.http_servers import (
    CountingServer,
    counting_server,
    insert_account,
    login_as,
    stored_url,
)

ACCOUNTS = "/api/integrations/exchanges/accounts"
TEST = "/api/integrations/exchanges/test"


def _refused_api_url(response: Any) -> None:
    assert response.status_code == 422, response.text
    body = response.json()
    assert_error_shape(body, "invalid_input")
    assert [d for d in body["details"] if d["field"] == "apiUrl"], body


def test_anonymous_health_probes_no_user_url_and_shows_none(
    make_client: Callable[..., TestClient], server: CountingServer
) -> None:
    with counting_server() as operator:
        client = make_client(exchange_endpoints={"binance": operator.url})
        admin = login_as(client, "admin@example.com", "admin")
        login_as(client, "victim@example.com")
        # Rows written before the rule: another user's URLs, one with credentials in it.
        insert_account(client, "victim@example.com", server.url, name="a")
        insert_account(
            client, "victim@example.com", f"http://user:hunter2@{server.host}/x", name="b"
        )

        anonymous = client.get("/api/health/external-apis")
        assert anonymous.status_code == 200, anonymous.text
        assert server.hits == []  # the users' URLs were never requested
        assert operator.hits  # the operator's endpoint was
        text = anonymous.text
        for leak in (str(server.port), "hunter2", "127.0.0.1", operator.url):
            assert leak not in text
        exchanges = anonymous.json()["components"]["exchanges"]["exchanges"]
        assert exchanges == {"binance": {"reachable": True}}  # up/down only, no details

        detailed = client.get("/api/health/external-apis", headers=admin)
        details = detailed.json()["components"]["exchanges"]["exchanges"]["binance"]
        assert details["reachable"] is True
        assert details["status_code"] == 200  # an admin sees the details
        assert server.hits == []


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "gopher://127.0.0.1:6379/_INFO",
        "http://user:pass@api.binance.com",
        "https://api.binance.com@{host}",
        "http://169.254.169.254/latest/meta-data/",
        "http://{host}",
        "http://localhost:{port}",
        "http://[::1]:{port}",
        "http://2130706433:{port}",
        "https://api.binance.com/?redirect=http://{host}",
        "https://api.binance.com/#@{host}",
        "https://api.binance.com/%2e%2e/",
    ],
)
def test_refused_api_urls_at_create_and_patch(
    make_client: Callable[..., TestClient], server: CountingServer, url: str
) -> None:
    client = make_client()
    h = login_as(client, "trader@example.com")
    url = url.format(host=server.host, port=server.port)
    account = {"name": "evil", "exchange": "binance", "mode": "paper", "apiUrl": url}

    _refused_api_url(client.post(ACCOUNTS, json=account, headers=h))
    assert client.get(ACCOUNTS, headers=h).json() == []  # nothing was stored

    created = client.post(ACCOUNTS, json={"name": "ok", "exchange": "binance"}, headers=h)
    assert created.status_code == 201, created.text
    account_id = created.json()["id"]
    _refused_api_url(client.patch(f"{ACCOUNTS}/{account_id}", json={"apiUrl": url}, headers=h))
    assert stored_url(client, account_id) is None  # unchanged
    assert server.hits == []


def test_allowed_hosts_are_the_operators_and_the_exchanges(
    make_client: Callable[..., TestClient], server: CountingServer
) -> None:
    client = make_client(allowed_api_hosts=[server.host])
    h = login_as(client, "trader@example.com")
    ok = client.post(
        ACCOUNTS, json={"name": "sim", "exchange": "binance", "apiUrl": server.url}, headers=h
    )
    assert ok.status_code == 201, ok.text
    testnet = client.post(
        ACCOUNTS,
        json={"name": "testnet", "exchange": "binance", "apiUrl": "https://testnet.binance.vision"},
        headers=h,
    )
    assert testnet.status_code == 201, testnet.text  # the exchange's own host, by default
    # The operator allowed one port, not the host: another port on it stays refused.
    other = f"http://127.0.0.1:{server.port + 1 if server.port < 65535 else server.port - 1}"
    _refused_api_url(
        client.post(ACCOUNTS, json={"name": "x", "exchange": "binance", "apiUrl": other}, headers=h)
    )
    # An exchange's host is allowed for that exchange only.
    _refused_api_url(
        client.post(
            ACCOUNTS,
            json={"name": "y", "exchange": "kraken", "apiUrl": "https://api.binance.com"},
            headers=h,
        )
    )
    assert server.hits == []  # creating an account connects to nothing


def test_stored_disallowed_url_is_refused_at_test_time(
    make_client: Callable[..., TestClient], server: CountingServer
) -> None:
    client = make_client()
    h = login_as(client, "trader@example.com")
    account_id = insert_account(
        client, "trader@example.com", server.url, api_key_enc=None, api_secret_enc=None
    )

    _refused_api_url(client.get(TEST, headers=h))
    _refused_api_url(client.get(f"{TEST}?accountId={account_id}", headers=h))
    assert server.hits == []
    tested = client.get(f"{ACCOUNTS}/{account_id}", headers=h).json()
    assert tested["lastTestedAt"] is None  # nothing was tested


def test_redirects_are_not_followed(make_client: Callable[..., TestClient]) -> None:
    with counting_server() as inner:
        moved = {"Location": f"{inner.url}/api/v3/exchangeInfo"}
        with counting_server(302, b"", moved) as outer:
            client = make_client(allowed_api_hosts=[outer.host])
            h = login_as(client, "trader@example.com")
            created = client.post(
                ACCOUNTS,
                json={"name": "moved", "exchange": "binance", "apiUrl": outer.url},
                headers=h,
            )
            assert created.status_code == 201, created.text

            tested = client.get(TEST, headers=h)
            assert tested.status_code == 200, tested.text
            report = tested.json()["accounts"][str(created.json()["id"])]
            assert report["ok"] is False
            assert outer.hits  # the allowed host was asked
            assert inner.hits == []  # its redirect to another port was not followed


def test_errors_do_not_tell_whether_a_port_answers(
    make_client: Callable[..., TestClient], server: CountingServer
) -> None:
    with counting_server() as closed:
        closed_port = closed.port  # free again once this block ends: nothing listens there
    client = make_client(allowed_api_hosts=["127.0.0.1"])
    h = login_as(client, "trader@example.com")
    ids = []
    for name, port in (("answers", server.port), ("closed", closed_port)):
        body = {"name": name, "exchange": "binance", "apiUrl": f"http://127.0.0.1:{port}"}
        created = client.post(ACCOUNTS, json=body, headers=h)
        assert created.status_code == 201, created.text
        ids.append(str(created.json()["id"]))

    report = client.get(TEST, headers=h).json()["accounts"]
    answers, closed_report = report[ids[0]], report[ids[1]]
    assert answers["ok"] is closed_report["ok"] is False
    assert (answers["error"], answers["errorCode"]) == (
        closed_report["error"],
        closed_report["errorCode"],
    )
    assert answers["error"] == "exchange unreachable"
    assert str(server.port) not in str(report)


def test_bot_on_a_stored_disallowed_url_does_not_start(
    make_client: Callable[..., TestClient], server: CountingServer
) -> None:
    import asyncio

    from cryptoorchestrator.platform.bots.clients import candle_feed_for, execution_client_for
    from cryptoorchestrator.platform.errors import ConfigError

    client = make_client()
    h = login_as(client, "trader@example.com")
    account_id = insert_account(client, "trader@example.com", server.url)
    bot = client.post(
        "/api/bots",
        json={
            "name": "scanner",
            "tradingPair": "BTC/USDT",
            "strategy": "sma_cross",
            "exchangeAccountId": account_id,
        },
        headers=h,
    )
    assert bot.status_code == 201, bot.text
    settings = client.app.state.context.settings  # type: ignore[attr-defined]

    # What a bot actor does when it starts: build its clients from the stored account.
    with pytest.raises(ConfigError, match="apiUrl"):
        asyncio.run(execution_client_for(settings, bot.json()["id"]))
    with pytest.raises(ConfigError, match="apiUrl"):
        candle_feed_for(settings, bot.json()["id"])
    assert server.hits == []


def test_operator_cli_may_use_loopback_but_never_a_non_http_url(
    make_client: Callable[..., TestClient],
    server: CountingServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sqlalchemy import select
    from typer.testing import CliRunner

    from cryptoorchestrator.cli.main import app as cli
    from cryptoorchestrator.platform.errors import InvalidInputError
    from cryptoorchestrator.platform.settings import get_settings
    from cryptoorchestrator.platform.storage.models import ExchangeAccount

    client = make_client()
    settings = client.app.state.context.settings  # type: ignore[attr-defined]
    monkeypatch.setenv("CRYPTOORCH_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("CRYPTOORCH_VAR_DIR", str(settings.var_dir))
    monkeypatch.setenv("CRYPTOORCH_LOG_DIR", str(settings.log_dir))
    get_settings.cache_clear()
    runner = CliRunner()
    base = ["bots", "create", "--pair", "BTC/USDT", "--strategy", "sma_cross"]

    for url in ("file:///etc/passwd", f"http://user:pass@{server.host}"):
        refused = runner.invoke(cli, [*base, "--name", "evil", "--api-url", url])
        assert refused.exit_code != 0, refused.output
        assert isinstance(refused.exception, InvalidInputError)
        assert refused.exception.field == "apiUrl"
    factory: Any = client.app.state.context.session_factory  # type: ignore[attr-defined]
    with factory() as session:
        assert session.scalars(select(ExchangeAccount.api_url)).all() == []

    # The README's simulator on loopback: the operator's own command may point there.
    ok = runner.invoke(cli, [*base, "--name", "sim", "--api-url", server.url])
    assert ok.exit_code == 0, ok.output
    with factory() as session:
        assert session.scalars(select(ExchangeAccount.api_url)).all() == [server.url]
    assert server.hits == []
