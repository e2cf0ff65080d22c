"""The one ccxt client factory: flavours, spot options, roots moved to ``api_url``, URL checks."""

from __future__ import annotations

import pytest

from cryptoorchestrator.platform.errors import InvalidInputError
from cryptoorchestrator.platform.exchange.ccxt_factory import ClientKind, build_ccxt_client

SIM = "http://127.0.0.1:9"


@pytest.mark.parametrize("kind", ["sync", "async", "pro"])
def test_clients_at_a_url_load_spot_only_and_keep_the_real_clock(kind: ClientKind) -> None:
    ex = build_ccxt_client("binance", SIM + "/", kind=kind, api_key="k", secret="s")
    assert ex.urls["api"]["public"] == SIM + "/api/v3"
    assert ex.urls["api"]["sapi"] == SIM + "/sapi/v1"
    assert ex.options["defaultType"] == "spot"
    assert ex.options["fetchMarkets"]["types"] == ["spot"]
    assert ex.options["fetchMargins"] is False
    assert ex.options["fetchCurrencies"] is False
    assert ex.options["adjustForTimeDifference"] is False
    assert (ex.apiKey, ex.secret) == ("k", "s")
    assert ex.enableRateLimit
    assert ex.timeout == 10_000


def test_pro_client_points_rest_and_streams_at_api_url() -> None:
    sim = build_ccxt_client("binance", SIM, kind="pro")
    assert sim.has["watchOHLCV"]
    assert sim.urls["api"]["public"] == SIM + "/api/v3"
    assert sim.urls["api"]["ws"]["spot"] == "ws://127.0.0.1:9/ws"
    assert sim.urls["api"]["ws"]["ws-api"]["spot"] == "ws://127.0.0.1:9/ws-api/v3"
    testnet = build_ccxt_client("binance", "https://testnet.example", kind="pro")
    assert testnet.urls["api"]["ws"]["spot"] == "wss://testnet.example/ws"
    real = build_ccxt_client("binance", kind="pro")
    assert real.urls["api"]["ws"]["spot"].startswith("wss://stream.binance.com")


def test_without_a_url_ccxt_keeps_its_own_roots_and_loads_every_market_type() -> None:
    for api_url in (None, ""):
        ex = build_ccxt_client("Binance ", api_url, kind="sync")
        assert ex.id == "binance"
        assert ex.urls["api"]["public"].startswith("https://api.binance.com")
        assert ex.options["defaultType"] == "spot"
        assert ex.options.get("fetchMarkets") != {"types": ["spot"]}


def test_options_merge_over_the_defaults_and_pacing_is_chosen() -> None:
    ex = build_ccxt_client(
        "binance",
        SIM,
        kind="sync",
        options={"recvWindow": 5_000, "fetchCurrencies": True},
        timeout_ms=300,
        enable_rate_limit=False,
        rolling_window=False,
    )
    assert ex.options["recvWindow"] == 5_000
    assert ex.options["fetchCurrencies"] is True
    assert ex.options["adjustForTimeDifference"] is False
    assert ex.timeout == 300
    assert not ex.enableRateLimit
    rolling = build_ccxt_client("binance", SIM, kind="sync")
    assert rolling.tokenBucket["algorithm"] == "rollingWindow"
    assert ex.tokenBucket.get("algorithm") != "rollingWindow"


def test_any_exchange_can_be_pointed_at_a_testnet_url() -> None:
    ex = build_ccxt_client("kraken", "https://kraken.testnet.example/", kind="async")
    assert ex.urls["api"]["public"] == "https://kraken.testnet.example"
    assert ex.urls["api"]["private"] == "https://kraken.testnet.example"


def test_unknown_exchanges_are_refused_with_close_names() -> None:
    with pytest.raises(InvalidInputError, match="exchange.*binanse.*allowed: binance"):
        build_ccxt_client("binanse", kind="sync")
    with pytest.raises(InvalidInputError, match="exchange"):
        build_ccxt_client("no_such_exchange", kind="pro")


@pytest.mark.parametrize(
    "url",
    [
        "127.0.0.1:1",
        "ftp://127.0.0.1:1",
        "http://user:pass@127.0.0.1:1",
        "http://127.0.0.1:1/?x=1",
        "http://127.0.0.1:1/a%2Fb",
    ],
)
def test_urls_failing_the_shape_checks_are_refused(url: str) -> None:
    with pytest.raises(InvalidInputError, match="api_url"):
        build_ccxt_client("binance", url, kind="sync")
