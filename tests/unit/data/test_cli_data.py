"""``cryptoorch data``: import, check, list, resample through the real CLI entry point."""

from __future__ import annotations

from pathlib import Path

import pytest

from cryptoorchestrator.cli.main import main
from cryptoorchestrator.platform.data.store import OhlcvStore


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run the CLI; return (exit code, stdout, stderr)."""
    code = 0
    try:
        main(list(args))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_import_feather_reports_28_gaps_and_lists_them(
    tmp_path: Path, shared_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dd = str(tmp_path / "store")
    feather = str(shared_data / "candles" / "binance_BTC_USDT-1h.feather")
    code, out, _ = run(
        capsys,
        "data",
        "import",
        feather,
        "-e",
        "binance",
        "-s",
        "BTC/USDT",
        "-t",
        "1h",
        "--data-dir",
        dd,
    )
    assert code == 0
    assert "58419 rows read, 58419 added" in out
    assert "28 gap(s)" in out
    assert "2018-02-08 01:00 .. 2018-02-09 10:00 (33 candles missing)" in out
    info = OhlcvStore(dd).info("binance", "BTC/USDT", "1h")
    assert info is not None
    assert (info.rows, info.gaps, info.filled) == (58_419, 28, 0)
    code, out, _ = run(capsys, "data", "list", "--data-dir", dd)
    assert code == 0
    assert "BTC/USDT" in out
    assert "58,419" in out
    # importing the same file again adds nothing and changes nothing
    code, out, _ = run(
        capsys,
        "data",
        "import",
        feather,
        "-e",
        "binance",
        "-s",
        "BTC/USDT",
        "-t",
        "1h",
        "--data-dir",
        dd,
    )
    assert "0 added, 58419 already stored" in out


def test_import_with_explicit_gap_filling(
    tmp_path: Path, shared_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dd = str(tmp_path / "store")
    feather = str(shared_data / "candles" / "binance_BTC_USDT-1h.feather")
    code, out, _ = run(
        capsys,
        "data",
        "import",
        feather,
        "-e",
        "binance",
        "-s",
        "BTC/USDT",
        "-t",
        "1h",
        "--fill-gaps",
        "--data-dir",
        dd,
    )
    assert code == 0
    info = OhlcvStore(dd).info("binance", "BTC/USDT", "1h")
    assert info is not None
    assert info.gaps == 0
    assert info.filled == info.rows - 58_419 > 0


def test_import_quarantines_bad_rows_and_check_finds_none_left(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dd = str(tmp_path / "store")
    csv = tmp_path / "x.csv"
    csv.write_text(
        "timestamp,open,high,low,close,volume\n"
        "2024-01-01T00:00:00Z,10,11,9,10.5,1\n"
        "2024-01-01T01:00:00Z,10.5,11,9,10,-1\n"  # negative volume
        "2024-01-01T02:00:00Z,10,9,11,10,1\n"  # high below low
        "2024-01-01T03:00:00Z,10,11,9,10.2,2\n"
    )
    code, out, _ = run(
        capsys,
        "data",
        "import",
        str(csv),
        "-e",
        "binance",
        "-s",
        "ETH/USDT",
        "-t",
        "1h",
        "--data-dir",
        dd,
    )
    assert code == 0
    assert "4 rows read, 2 added" in out
    assert "2 quarantined" in out
    store = OhlcvStore(dd)
    q = store.read_quarantine("binance", "ETH/USDT", "1h")
    assert sorted(q.column("reason").to_pylist()) == ["high below low", "negative volume"]
    assert store.quarantine_path("binance", "ETH/USDT", "1h").is_file()
    code, out, _ = run(
        capsys,
        "data",
        "check",
        "-e",
        "binance",
        "-s",
        "ETH/USDT",
        "-t",
        "1h",
        "--dry-run",
        "--data-dir",
        dd,
    )
    assert code == 0
    assert "2 rows, 0 bad, 1 gap(s)" in out


def test_check_moves_newly_detected_bad_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dd = str(tmp_path / "store")
    csv = tmp_path / "spike.csv"
    rows = ["timestamp,open,high,low,close,volume"]
    for h in range(10):
        close = 100.0 if h != 5 else 140.0  # +40 %: passes the default 50 % limit
        rows.append(f"{h * 3_600_000},100,{max(close, 100)},100,{close},1")
    csv.write_text("\n".join(rows) + "\n")
    run(
        capsys,
        "data",
        "import",
        str(csv),
        "-e",
        "binance",
        "-s",
        "BTC/USDT",
        "-t",
        "1h",
        "--data-dir",
        dd,
    )
    code, out, _ = run(
        capsys,
        "data",
        "check",
        "-e",
        "binance",
        "-s",
        "BTC/USDT",
        "-t",
        "1h",
        "--max-jump",
        "0.3",
        "--dry-run",
        "--data-dir",
        dd,
    )
    assert code == 2
    assert "1 bad" in out
    assert OhlcvStore(dd).info("binance", "BTC/USDT", "1h").rows == 10  # type: ignore[union-attr]
    code, out, _ = run(
        capsys,
        "data",
        "check",
        "-e",
        "binance",
        "-s",
        "BTC/USDT",
        "-t",
        "1h",
        "--max-jump",
        "0.3",
        "--data-dir",
        dd,
    )
    assert code == 0
    store = OhlcvStore(dd)
    assert store.info("binance", "BTC/USDT", "1h").rows == 9  # type: ignore[union-attr]
    q = store.read_quarantine("binance", "BTC/USDT", "1h")
    assert q.column("reason").to_pylist() == ["outlier spike"]
    assert q.column("close").to_pylist() == [140.0]


def test_failed_import_is_one_line_and_changes_nothing(
    tmp_path: Path, shared_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dd = str(tmp_path / "store")
    csv = str(shared_data / "candles" / "ftx_BTC-PERP-1m_2022-01.csv")
    run(capsys, "data", "import", csv, "-e", "ftx", "-s", "BTC/USD", "-t", "1m", "--data-dir", dd)
    store = OhlcvStore(dd)
    before = store.read("ftx", "BTC/USD", "1m")
    bad = tmp_path / "bad.csv"
    bad.write_text("when,price\n1,2\n")
    for args in (
        [str(bad), "-t", "1m"],
        [str(tmp_path / "missing.csv"), "-t", "1m"],
        [csv, "-t", "7m"],
    ):
        code, _, err = run(
            capsys, "data", "import", *args, "-e", "ftx", "-s", "BTC/USD", "--data-dir", dd
        )
        assert code == 2
        assert err.count("\n") == 1
        assert err.startswith("error:")
    assert store.read("ftx", "BTC/USD", "1m").equals(before)


def test_resample_command(
    tmp_path: Path, shared_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dd = str(tmp_path / "store")
    csv = str(shared_data / "candles" / "ftx_BTC-PERP-1m_2022-01.csv")
    run(capsys, "data", "import", csv, "-e", "ftx", "-s", "BTC/USD", "-t", "1m", "--data-dir", dd)
    code, out, _ = run(
        capsys,
        "data",
        "resample",
        "-e",
        "ftx",
        "-s",
        "BTC/USD",
        "--from",
        "1m",
        "--to",
        "1h",
        "--to",
        "1d",
        "--data-dir",
        dd,
    )
    assert code == 0
    store = OhlcvStore(dd)
    hourly = store.info("ftx", "BTC/USD", "1h")
    daily = store.info("ftx", "BTC/USD", "1d")
    assert hourly is not None
    assert daily is not None
    # 2022-01-01 00:00 .. 2022-02-01 04:00: partial first (23:00) and last (05:00) hours dropped
    assert (hourly.first_text, hourly.last_text, hourly.gaps) == (
        "2022-01-01 00:00",
        "2022-02-01 04:00",
        0,
    )
    assert (daily.first_text, daily.last_text, daily.rows) == (
        "2022-01-01 00:00",
        "2022-01-31 00:00",
        31,
    )
