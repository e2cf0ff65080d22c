"""``cryptoorch backtest`` and ``cryptoorch check-lookahead``.

Bars come from the market-data store (``--exchange/--symbol/--timeframe/--start/--end``) or
straight from a file (``--data``: CSV, Parquet or freqtrade feather); ``check-lookahead``
defaults to Binance BTC/USDT 1h, which the store seeds from the candles bundled with the package.
The backtest prints a metrics table (or JSON with ``--json``), writes trades, orders, equity and
the PNG/HTML report to the output folder, and records the run in the database.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer

from cryptoorchestrator.platform.errors import InvalidInputError
from cryptoorchestrator.platform.model.fees import DEFAULT_FEE_BPS

if TYPE_CHECKING:
    from cryptoorchestrator.platform.backtest.engine import FillMode, SizeMode


def _parse_params(items: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise InvalidInputError(
                "--param", f"expected NAME=VALUE, got {item!r}", allowed="NAME=VALUE, e.g. fast=10"
            )
        out[name.strip()] = value.strip()
    return out


def _load_bars(
    data: Path | None,
    exchange: str,
    symbol: str | None,
    timeframe: str | None,
    start: str | None,
    end: str | None,
) -> Any:
    from cryptoorchestrator.platform.data.times import optional_ms

    start_ms = optional_ms(start, field="start")
    end_ms = optional_ms(end, field="end")
    if data is not None:
        import pyarrow.compute as pc

        from cryptoorchestrator.platform.data.importers import read_ohlcv_file

        table = read_ohlcv_file(data)
        ts = table.column("timestamp")
        if start_ms is not None:
            table = table.filter(pc.greater_equal(ts, start_ms))
            ts = table.column("timestamp")
        if end_ms is not None:
            table = table.filter(pc.less(ts, end_ms))
        return table
    if symbol is None or timeframe is None:
        raise InvalidInputError(
            "--symbol",
            "--symbol and --timeframe are needed without --data",
            allowed="e.g. --symbol BTC/USDT --timeframe 1h, or --data FILE",
        )
    from cryptoorchestrator.platform.data.store import load_ohlcv
    from cryptoorchestrator.platform.settings import get_settings

    return load_ohlcv(
        exchange, symbol, timeframe, start_ms, end_ms, data_dir=get_settings().data_dir
    )


def _fmt(name: str, value: float) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if name in ("total_return", "cagr", "volatility", "max_drawdown", "win_rate", "exposure"):
        return f"{value:.2%}"
    if name in (
        "trade_count",
        "order_count",
        "open_trades",
        "skipped_orders",
        "bars",
        "skipped_entries_limit",
        "max_drawdown_duration",
    ):
        return f"{int(value)}"
    return f"{value:.4f}"


def backtest(
    strategy: Annotated[str, typer.Option(help="Strategy name, module:Class or file.py:Class.")],
    symbol: Annotated[str | None, typer.Option(help="Symbol, e.g. BTC/USDT.")] = None,
    timeframe: Annotated[str | None, typer.Option(help="Candle timeframe, e.g. 1h.")] = None,
    exchange: Annotated[str, typer.Option(help="Exchange of the stored data.")] = "binance",
    start: Annotated[str | None, typer.Option(help="First candle (ISO date).")] = None,
    end: Annotated[str | None, typer.Option(help="End of data, exclusive (ISO date).")] = None,
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="NAME=VALUE; repeat.")
    ] = None,
    fee_bps: Annotated[
        float, typer.Option(help="Fee per fill in basis points (Binance spot taker).")
    ] = DEFAULT_FEE_BPS,
    slippage_bps: Annotated[float, typer.Option(help="Slippage per fill in bps.")] = 0.0,
    init_cash: Annotated[float, typer.Option(help="Starting cash (quote currency).")] = 10_000.0,
    fill: Annotated[str, typer.Option(help="next_open or close.")] = "next_open",
    sizing: Annotated[str, typer.Option(help="fraction, quote or risk.")] = "fraction",
    size: Annotated[float, typer.Option(help="Size for the sizing mode.")] = 1.0,
    stop_loss: Annotated[float | None, typer.Option(help="Stop-loss fraction.")] = None,
    take_profit: Annotated[float | None, typer.Option(help="Take-profit fraction.")] = None,
    trailing_stop: Annotated[float | None, typer.Option(help="Trailing-stop fraction.")] = None,
    data: Annotated[
        Path | None, typer.Option(help="Run on this CSV/Parquet/feather file directly.")
    ] = None,
    strategies_dir: Annotated[
        str | None, typer.Option(help="Load user strategies from this folder or module.")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Output folder for report and tables.")] = None,
    record: Annotated[bool, typer.Option(help="Record the run in the database.")] = True,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print machine-readable metrics.")
    ] = False,
) -> None:
    """Backtest a strategy on stored bars or a file; print metrics and write a report."""
    import pyarrow.csv as pacsv

    from cryptoorchestrator.platform.backtest.metrics import METRIC_NAMES
    from cryptoorchestrator.platform.settings import get_settings
    from cryptoorchestrator.strategies import sdk
    from cryptoorchestrator.strategies.registry import load_strategies

    if strategies_dir:
        load_strategies(strategies_dir)
    params = _parse_params(param)
    table = _load_bars(data, exchange, symbol, timeframe, start, end)
    settings = get_settings()
    result = sdk.backtest(
        strategy,
        table,
        params,
        fee_bps=fee_bps,
        slippage_bps=slippage_bps,
        init_cash=init_cash,
        fill=cast("FillMode", fill),
        sizing=cast("SizeMode", sizing),
        size=size,  # type: ignore[arg-type]
        stop_loss=stop_loss,
        take_profit=take_profit,
        trailing_stop=trailing_stop,
        symbol=symbol,
        timeframe=timeframe,
    )
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    folder = (
        out if out is not None else settings.var_dir / "backtests" / f"{result.strategy}-{stamp}"
    )
    folder.mkdir(parents=True, exist_ok=True)
    pacsv.write_csv(result.trades, folder / "trades.csv")
    pacsv.write_csv(result.orders, folder / "orders.csv")
    pacsv.write_csv(result.equity_curve, folder / "equity.csv")
    result.plot(folder / "report.png", html_path=folder / "report.html")
    summary = result.summary()
    summary["output_dir"] = str(folder)
    first_ts, last_ts = int(result.timestamp[0]), int(result.timestamp[-1])
    summary["start"], summary["end"] = first_ts, last_ts
    if record:
        from cryptoorchestrator.platform.storage.runs import record_backtest_run

        summary["run_id"] = record_backtest_run(
            settings,
            strategy=result.strategy,
            params=result.params,
            symbol=symbol,
            timeframe=result.timeframe,
            start=first_ts,
            end=last_ts,
            metrics=summary["metrics"],
            exchange=None if data is not None else exchange,
            output_dir=str(folder),
            config={
                "fee_bps": fee_bps,
                "slippage_bps": slippage_bps,
                "fill": fill,
                "sizing": sizing,
                "size": size,
                "init_cash": init_cash,
                "data": str(data) if data is not None else None,
            },
        )
    (folder / "metrics.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    if as_json:
        typer.echo(json.dumps(summary))
        return
    from rich.console import Console
    from rich.table import Table

    tbl = Table(title=f"{result.strategy} {result.params} on {symbol or data}")
    tbl.add_column("metric")
    tbl.add_column("value", justify="right")
    for name in METRIC_NAMES:
        tbl.add_row(name, _fmt(name, result.metrics[name]))
    console = Console()
    console.print(tbl)
    console.print(f"report: {folder / 'report.html'}")
    if "run_id" in summary:
        console.print(f"run id: {summary['run_id']}")


def check_lookahead(
    strategy: Annotated[str, typer.Argument(help="Strategy name, module:Class or file.py:Class.")],
    symbol: Annotated[
        str, typer.Option(help="Symbol; BTC/USDT 1h ships with the package.")
    ] = "BTC/USDT",
    timeframe: Annotated[str, typer.Option(help="Candle timeframe.")] = "1h",
    exchange: Annotated[str, typer.Option(help="Exchange of the stored data.")] = "binance",
    start: Annotated[str | None, typer.Option(help="First candle (ISO date).")] = None,
    end: Annotated[str | None, typer.Option(help="End of data, exclusive (ISO date).")] = None,
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="NAME=VALUE; repeat.")
    ] = None,
    data: Annotated[Path | None, typer.Option(help="Check on this file's bars.")] = None,
    checks: Annotated[
        int, typer.Option(help="Evenly spread prefix ends tried besides the signal changes.")
    ] = 20,
    every_bar: Annotated[
        bool, typer.Option("--every-bar", help="Try every prefix end (slow on long histories).")
    ] = False,
    strategies_dir: Annotated[
        str | None, typer.Option(help="Load user strategies from this folder or module.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable output.")] = False,
) -> None:
    """Test that a strategy's signals and stops ignore later bars; exit 1 naming the first bad bar.

    Prefixes of the history ending at each bar where a signal or stop changes (and the bar
    before it), at the first and last bars and at ``--checks`` spread bars are recomputed and
    compared with the full run; ``--every-bar`` tries every prefix end.
    """
    from cryptoorchestrator.strategies import sdk
    from cryptoorchestrator.strategies.registry import load_strategies

    if strategies_dir:
        load_strategies(strategies_dir)
    table = _load_bars(data, exchange, symbol, timeframe, start, end)
    report = sdk.check_lookahead(
        strategy, table, _parse_params(param), n_checks=checks, every_bar=every_bar
    )
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "strategy": report.strategy,
                    "params": report.params,
                    "ok": report.ok,
                    "first_bad_bar": report.first_bad_bar,
                    "signal": report.signal,
                    "timestamp": report.timestamp,
                    "cut": report.cut,
                    "details": report.details,
                    "cuts": len(report.checked_cuts),
                    "bars": report.n_bars,
                    "every_bar": report.every_bar,
                },
                default=str,
            )
        )
    else:
        typer.echo(str(report))
    if not report.ok:
        raise typer.Exit(1)
