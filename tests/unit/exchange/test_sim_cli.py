"""``cryptoorch exchange-sim``: --data words and a real server process driven by ccxt."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from cryptoorchestrator.cli.exchange_sim import load_data_specs
from cryptoorchestrator.platform.errors import InvalidInputError
from cryptoorchestrator.platform.exchange.ccxt_factory import build_ccxt_client


def test_data_words_files_and_symbols(shared_data: Path) -> None:
    feather = shared_data / "candles" / "binance_BTC_USDT-1h.feather"
    csv = shared_data / "candles" / "ftx_BTC-PERP-1m_2022-01.csv"
    specs = load_data_specs([str(feather), f"btc/usd={csv}"], "BTC/USDT")
    assert specs == {"BTC/USDT": feather, "BTC/USD": csv}
    with pytest.raises(InvalidInputError):
        load_data_specs(["no/such/file.feather"], "BTC/USDT")


def test_data_word_reads_the_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cryptoorchestrator.platform.settings import get_settings

    monkeypatch.setenv("CRYPTOORCH_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    try:
        specs = load_data_specs(["binance:BTC/USDT:1h"], "ETH/USDT")
    finally:
        get_settings.cache_clear()
    table = specs["BTC/USDT"]
    assert isinstance(table, pa.Table)
    assert table.num_rows > 1000


@pytest.mark.slow
def test_cli_serves_ccxt_until_terminated(shared_data: Path) -> None:
    feather = shared_data / "candles" / "binance_BTC_USDT-1h.feather"
    cmd = [
        sys.executable,
        "-m",
        "cryptoorchestrator.cli.main",
        "exchange-sim",
        "--port",
        "0",
        "--data",
        str(feather),
        "--balance",
        "USDT=500",
        "--balance",
        "BTC=0.25",
        "--api-key",
        "cli-key",
        "--api-secret",
        "cli-secret",
        "--fault",
        "latency_ms=1",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert "serving http://127.0.0.1:" in first, proc.stderr.read() if proc.stderr else ""
        url = first.strip().rsplit(" ", 1)[-1]
        assert "cli-secret" not in proc.stdout.readline()
        ex = build_ccxt_client(
            "binance",
            url,
            kind="sync",
            api_key="cli-key",
            secret="cli-secret",
            enable_rate_limit=False,
        )
        balance = ex.fetch_balance()
        assert balance["USDT"]["free"] == 500
        assert balance["BTC"]["free"] == 0.25
        bars = ex.fetch_ohlcv("BTC/USDT", "1h", limit=2)
        assert bars[-1][0] == 1713708000000  # the file's last candle, 2024-04-21 14:00 UTC
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert proc.returncode == 0
