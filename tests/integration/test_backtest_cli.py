"""``cryptoorch backtest`` / ``check-lookahead`` end to end, and the ``co.backtest`` SDK."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.feather as feather
import pytest

from cryptoorchestrator.cli.main import main
from cryptoorchestrator.platform.settings import Settings


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def db_env(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Settings:
    monkeypatch.setenv("CRYPTOORCH_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("CRYPTOORCH_VAR_DIR", str(settings.var_dir))
    monkeypatch.setenv("CRYPTOORCH_DATA_DIR", str(settings.data_dir))
    code, _, err = _run(["db", "upgrade"], capsys)
    assert code == 0, err
    return settings


def test_backtest_file_json_report_and_run_record(
    db_env: Settings, shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import cryptoorchestrator as co

    data = shared_data / "candles" / "binance_BTC_USDT-1h.feather"
    out_dir = tmp_path / "out"
    code, out, err = _run(
        [
            "backtest",
            "--strategy",
            "sma_cross",
            "--symbol",
            "BTC/USDT",
            "--timeframe",
            "1h",
            "--data",
            str(data),
            "--start",
            "2021-01-01",
            "--end",
            "2022-01-01",
            "--param",
            "fast=10",
            "--param",
            "slow=50",
            "--fee-bps",
            "10",
            "--out",
            str(out_dir),
            "--json",
        ],
        capsys,
    )
    assert code == 0, err
    summary = json.loads(out)
    assert summary["params"] == {"fast": 10, "slow": 50}
    assert summary["timeframe"] == "1h"
    for name in (
        "report.html",
        "report.png",
        "trades.csv",
        "orders.csv",
        "equity.csv",
        "metrics.json",
    ):
        assert (out_dir / name).stat().st_size > 0
    html = (out_dir / "report.html").read_text()
    assert "data:image/png;base64," in html
    # the CLI's numbers equal the SDK's on the same bars
    table = feather.read_table(data)
    ts = table.column("date").cast("int64").to_numpy() // 1_000_000
    start, end = 1_609_459_200_000, 1_640_995_200_000
    keep = (ts >= start) & (ts < end)
    bars = {"timestamp": ts[keep]} | {
        c: table.column(c).to_numpy()[keep] for c in ("open", "high", "low", "close", "volume")
    }
    res = co.backtest("sma_cross", bars, {"fast": 10, "slow": 50}, fee_bps=10, timeframe="1h")
    assert summary["metrics"]["final_equity"] == pytest.approx(res.metrics["final_equity"])
    assert summary["metrics"]["trade_count"] == res.metrics["trade_count"] > 10
    trades = res.trades.to_pandas()
    assert len(trades) == res.metrics["trade_count"] + res.metrics["open_trades"]
    from sqlalchemy import create_engine, text

    engine = create_engine(db_env.database_url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT id, strategy, status FROM backtest_runs")).all()
    engine.dispose()
    assert [(r[0], r[1]) for r in rows] == [(summary["run_id"], "sma_cross")]


def test_backtest_table_output_and_bad_input(
    db_env: Settings, shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = shared_data / "candles" / "ftx_BTC-PERP-1m_2022-01.csv"
    code, out, err = _run(
        [
            "backtest",
            "--strategy",
            "rsi_reversion",
            "--data",
            str(data),
            "--timeframe",
            "1m",
            "--out",
            str(tmp_path / "o"),
            "--no-record",
        ],
        capsys,
    )
    assert code == 0, err
    assert "sharpe" in out
    assert "max_drawdown" in out
    code, _, err = _run(
        ["backtest", "--strategy", "nope", "--data", str(data), "--no-record"], capsys
    )
    assert code == 2
    assert "unknown strategy 'nope'" in err
    assert "sma_cross" in err
    code, _, err = _run(
        [
            "backtest",
            "--strategy",
            "sma_cross",
            "--data",
            str(data),
            "--param",
            "fast=900",
            "--no-record",
        ],
        capsys,
    )
    assert code == 2
    assert "params.fast" in err
    assert "int in [2, 500]" in err


def test_check_lookahead_command(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = shared_data / "candles" / "ftx_BTC-PERP-1m_2022-01.csv"
    code, out, _ = _run(
        ["check-lookahead", "macd_trend", "--data", str(data), "--json", "--checks", "6"], capsys
    )
    assert code == 0
    assert json.loads(out)["ok"] is True
    (tmp_path / "peek.py").write_text(
        "import numpy as np\n"
        "from cryptoorchestrator.platform.strategy.base import Signals, Strategy\n"
        "class Peek(Strategy):\n"
        "    name = 'peek_cli'\n"
        "    def signals(self, bars, params):\n"
        "        c = np.asarray(bars.close)\n"
        "        up = np.zeros(len(c), bool)\n"
        "        up[:-5] = c[5:] > c[:-5]\n"
        "        return Signals(up, ~up)\n"
    )
    code, out, _ = _run(
        [
            "check-lookahead",
            f"{tmp_path / 'peek.py'}:Peek",
            "--data",
            str(data),
            "--json",
            "--checks",
            "6",
        ],
        capsys,
    )
    assert code == 1
    report = json.loads(out)
    assert report["ok"] is False
    assert isinstance(report["first_bad_bar"], int)


def test_sdk_accepts_class_instance_and_numpy() -> None:
    import cryptoorchestrator as co
    from cryptoorchestrator.strategies.sma_cross import SmaCross

    rng = np.random.default_rng(3)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 2000)))
    # Closes alone carry no timestamps: the timeframe sets the annualisation.
    a = co.backtest("sma_cross", close, {"fast": 5, "slow": 30}, fee_bps=10, timeframe="1h")
    b = co.backtest(SmaCross, close, {"fast": 5, "slow": 30}, fee_bps=10, timeframe="1h")
    c = co.backtest(SmaCross(), close, {"fast": 5, "slow": 30}, fee_bps=10, timeframe="1h")
    assert a.metrics == b.metrics == c.metrics
    assert a.orders.num_rows == a.metrics["order_count"] > 0
    assert "sma_cross" in co.list_strategies()
    assert co.check_lookahead("sma_cross", close, {"fast": 5, "slow": 30}, timeframe="1h").ok
    multi = co.backtest(
        "sma_cross",
        {"A": close, "B": close[::-1].copy()},
        {"fast": 5, "slow": 30},
        size=0.5,
        max_open_positions=2,
        timeframe="1h",
    )
    assert set(multi.orders.column("symbol").to_pylist()) == {"A", "B"}
