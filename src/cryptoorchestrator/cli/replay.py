"""``cryptoorch replay``: the real bot runtime trading stored candles on the exchange simulator.

Bars come from the market-data store or a file, as for ``cryptoorch backtest``.  The replay
prints the bot's metrics (or JSON with ``--json``) and, with ``--compare``, backtests the same
bars with the equivalent configuration and says whether the bot's fills are the backtest's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, cast

import typer

from cryptoorchestrator.cli.backtest import _fmt, _load_bars, _parse_params
from cryptoorchestrator.platform.model.fees import DEFAULT_FEE_BPS


def _compare(replayed: Any, backtested: Any) -> dict[str, Any]:
    """Where the bot's fills and the backtest's differ: first differing fill, counts."""
    got, expected = replayed.orders.to_pylist(), backtested.orders.to_pylist()
    key = ("bar", "side", "reason", "price")
    step = replayed.config.qty_step or 0.0
    first = None
    for i, (g, e) in enumerate(zip(got, expected, strict=False)):
        same_lots = (
            round(g["qty"] / step) == round(e["qty"] / step) if step else g["qty"] == e["qty"]
        )
        if any(g[k] != e[k] for k in key) or not same_lots:
            first = {"index": i, "replay": _plain(g), "backtest": _plain(e)}
            break
    if first is None and len(got) != len(expected):
        i = min(len(got), len(expected))
        extra = got[i] if len(got) > i else expected[i]
        first = {"index": i, "only_in": "replay" if len(got) > i else "backtest", "fill": extra}
    return {
        "same": first is None,
        "replay_fills": len(got),
        "backtest_fills": len(expected),
        "first_difference": first,
    }


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in ("bar", "side", "qty", "price", "fee", "reason")}


def replay(
    strategy: Annotated[str, typer.Option(help="Strategy name, module:Class or file.py:Class.")],
    symbol: Annotated[str, typer.Option(help="Symbol, e.g. BTC/USDT.")] = "BTC/USDT",
    timeframe: Annotated[str | None, typer.Option(help="Candle timeframe, e.g. 1h.")] = None,
    exchange: Annotated[str, typer.Option(help="Exchange of the stored data.")] = "binance",
    start: Annotated[str | None, typer.Option(help="First candle (ISO date).")] = None,
    end: Annotated[str | None, typer.Option(help="End of data, exclusive (ISO date).")] = None,
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="NAME=VALUE; repeat.")
    ] = None,
    fee_bps: Annotated[float, typer.Option(help="Fee per fill in basis points.")] = DEFAULT_FEE_BPS,
    init_cash: Annotated[float, typer.Option(help="Starting cash (quote currency).")] = 10_000.0,
    sizing: Annotated[str, typer.Option(help="fraction (no stop-loss) or risk.")] = "fraction",
    size: Annotated[float, typer.Option(help="Size for the sizing mode.")] = 1.0,
    max_position: Annotated[
        float, typer.Option(help="Largest position, fraction of equity (risk sizing).")
    ] = 1.0,
    stop_loss: Annotated[float | None, typer.Option(help="Stop-loss fraction.")] = None,
    take_profit: Annotated[float | None, typer.Option(help="Take-profit fraction.")] = None,
    trailing_stop: Annotated[float | None, typer.Option(help="Trailing-stop fraction.")] = None,
    window: Annotated[
        int | None, typer.Option(help="Closed candles the bot evaluates (default: as a bot).")
    ] = None,
    data: Annotated[
        Path | None, typer.Option(help="Replay this CSV/Parquet/feather file directly.")
    ] = None,
    database_url: Annotated[
        str | None, typer.Option(help="Keep the bot's rows in this database (default: temporary).")
    ] = None,
    use_ray: Annotated[bool, typer.Option("--ray", help="Run the bot in a Ray worker.")] = False,
    compare: Annotated[
        bool, typer.Option("--compare", help="Also backtest and compare the fills (exit 1 if not).")
    ] = False,
    strategies_dir: Annotated[
        str | None, typer.Option(help="Load user strategies from this folder or module.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Write orders, trades and equity CSVs here.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable output.")] = False,
) -> int:
    """Replay candles through the bot runtime on the exchange simulator; print its metrics."""
    from cryptoorchestrator.cluster.replay import replay as run_replay
    from cryptoorchestrator.platform.backtest.engine import SizeMode
    from cryptoorchestrator.platform.backtest.metrics import METRIC_NAMES
    from cryptoorchestrator.strategies import sdk
    from cryptoorchestrator.strategies.registry import load_strategies

    if strategies_dir:
        load_strategies(strategies_dir)
    params = _parse_params(param)
    table = _load_bars(data, exchange, symbol, timeframe, start, end)
    result = run_replay(
        strategy,
        table,
        params,
        fee_bps=fee_bps,
        init_cash=init_cash,
        sizing=cast("SizeMode", sizing),
        size=size,
        max_position=max_position,
        stop_loss=stop_loss,
        take_profit=take_profit,
        trailing_stop=trailing_stop,
        symbol=symbol,
        timeframe=timeframe,
        window=window,
        database_url=database_url,
        ray=use_ray,
    )
    summary: dict[str, Any] = {
        "strategy": result.strategy,
        "params": result.params,
        "mode": result.mode,
        "metrics": result.metrics,
        "fills": result.orders.num_rows,
    }
    if database_url is not None:
        summary["database_url"] = database_url
    if compare:
        backtested = sdk.backtest(strategy, table, params, config=result.config, symbol=symbol)
        summary["comparison"] = _compare(result, backtested)
    if out is not None:
        import pyarrow.csv as pacsv

        out.mkdir(parents=True, exist_ok=True)
        pacsv.write_csv(result.orders, out / "orders.csv")
        pacsv.write_csv(result.trades, out / "trades.csv")
        pacsv.write_csv(result.equity_curve, out / "equity.csv")
        summary["output_dir"] = str(out)
    code = 1 if compare and not summary["comparison"]["same"] else 0
    if as_json:
        typer.echo(json.dumps(summary, default=str))
        return code
    from rich.console import Console
    from rich.table import Table

    tbl = Table(title=f"replay of {result.strategy} {result.params} ({result.mode})")
    tbl.add_column("metric")
    tbl.add_column("value", justify="right")
    for name in METRIC_NAMES:
        if name in result.metrics:
            tbl.add_row(name, _fmt(name, result.metrics[name]))
    console = Console()
    console.print(tbl)
    if compare:
        cmp = summary["comparison"]
        if cmp["same"]:
            console.print(f"fills: {cmp['replay_fills']}, the same as the backtest's")
        else:
            console.print(f"[bold red]fills differ from the backtest's:[/] {cmp}")
    return code
