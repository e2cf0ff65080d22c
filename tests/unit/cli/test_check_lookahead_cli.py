"""``cryptoorch check-lookahead``: the README command on the bundled candles, and a leak found."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cryptoorchestrator.cli.main import app
from cryptoorchestrator.platform.settings import Settings

LEAK = (
    "import numpy as np\n"
    "from cryptoorchestrator.platform.strategy.base import Signals, Strategy\n"
    "class Jump(Strategy):\n"
    "    '''Buys before the next close jumps 2 %: a sparse look-ahead.'''\n"
    "    name = 'jump_cli'\n"
    "    def signals(self, bars, params):\n"
    "        c = np.asarray(bars.close)\n"
    "        up = np.zeros(len(c), bool)\n"
    "        up[:-1] = c[1:] > c[:-1] * 1.02\n"
    "        return Signals(up, None)\n"
)


@pytest.fixture
def env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Point the store at an empty folder, so the bundled candles seed it."""
    monkeypatch.setenv("CRYPTOORCH_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("CRYPTOORCH_VAR_DIR", str(settings.var_dir))
    return settings


def test_readme_command_runs_on_the_bundled_candles(env: Settings) -> None:
    result = CliRunner().invoke(
        app, ["check-lookahead", "sma_cross", "--param", "fast=10", "--param", "slow=50"]
    )
    assert result.exit_code == 0, result.output
    assert "no look-ahead found" in result.output
    assert "prove" not in result.output
    result = CliRunner().invoke(
        app, ["check-lookahead", "sma_cross", "-p", "fast=10", "-p", "slow=50", "--json"]
    )
    report = json.loads(result.output)
    assert report["ok"] is True
    assert report["bars"] == 17_507  # the bundled 2021-2022 slice, see SOURCE.md
    assert 100 < report["cuts"] < report["bars"]


def test_sparse_leak_exits_1_naming_the_first_bar(env: Settings, tmp_path: Path) -> None:
    from cryptoorchestrator.platform.data.store import load_ohlcv

    close = load_ohlcv("binance", "BTC/USDT", "1h").column("close").to_numpy()
    jumps = (close[1:] > close[:-1] * 1.02).nonzero()[0]
    (tmp_path / "jump.py").write_text(LEAK)
    for extra in ([], ["--every-bar"]):
        result = CliRunner().invoke(
            app,
            ["check-lookahead", f"{tmp_path / 'jump.py'}:Jump", "--json", *extra],
        )
        assert result.exit_code == 1, result.output
        report = json.loads(result.output)
        assert report["ok"] is False
        assert report["first_bad_bar"] == report["cut"] == int(jumps[0])
        assert report["signal"] == "long_entries"
        assert report["every_bar"] is bool(extra)
