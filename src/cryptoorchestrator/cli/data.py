"""``cryptoorch data``: download, import, check, list and resample market data."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from cryptoorchestrator.platform.data.store import OhlcvStore
    from cryptoorchestrator.platform.data.validate import Gap

app = typer.Typer(
    name="data",
    help="Market data: download candles, import files, validate, list, resample.",
    no_args_is_help=True,
)

ExchangeOpt = Annotated[str, typer.Option("--exchange", "-e", help="Exchange id, e.g. binance.")]
SymbolOpt = Annotated[str, typer.Option("--symbol", "-s", help="Trading pair, e.g. BTC/USDT.")]
TimeframeOpt = Annotated[str, typer.Option("--timeframe", "-t", help="Candle length, e.g. 1h.")]
DataDirOpt = Annotated[
    Path | None, typer.Option("--data-dir", help="Store root (default: settings' data_dir).")
]


def _store(data_dir: Path | None) -> OhlcvStore:
    from cryptoorchestrator.platform.data.store import OhlcvStore

    return OhlcvStore(data_dir)


def _print_gaps(gaps: list[Gap], limit: int = 10) -> None:
    for g in gaps[:limit]:
        typer.echo(f"  gap {g}")
    if len(gaps) > limit:
        longest = max(gaps, key=lambda g: g.span_ms)
        typer.echo(f"  ... {len(gaps) - limit} more; longest {longest}")


@app.command()
def download(
    exchange: ExchangeOpt,
    symbol: Annotated[
        list[str], typer.Option("--symbol", "-s", help="Trading pair; repeat for several.")
    ],
    timeframe: Annotated[
        list[str], typer.Option("--timeframe", "-t", help="Candle length; repeat for several.")
    ],
    start: Annotated[str, typer.Option(help="First candle, YYYY-MM-DD or ISO (UTC).")],
    end: Annotated[str | None, typer.Option(help="End (exclusive); default now.")] = None,
    api_url: Annotated[
        str | None, typer.Option("--api-url", help="Binance-compatible base URL (simulator).")
    ] = None,
    retries: Annotated[int, typer.Option(min=0, help="Retries of transient errors.")] = 5,
    backoff: Annotated[float, typer.Option(min=0.0, help="First retry delay, seconds.")] = 1.0,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    data_dir: DataDirOpt = None,
) -> None:
    """Download candles through ccxt, resuming after the last stored candle."""
    from cryptoorchestrator.platform.data.download import download_ohlcv

    reports = download_ohlcv(
        exchange,
        symbol,
        timeframe,
        start,
        end,
        store=_store(data_dir),
        api_url=api_url,
        max_retries=retries,
        backoff_s=backoff,
        progress=progress,
    )
    for rep in reports:
        typer.echo(rep.summary())
        _print_gaps(rep.gaps)
        for reason, n in sorted(rep.quarantine_reasons.items()):
            typer.echo(f"  quarantined {n}: {reason}")


@app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(help="CSV, Parquet, freqtrade feather or JSON file.")],
    exchange: ExchangeOpt,
    symbol: SymbolOpt,
    timeframe: TimeframeOpt,
    fill_gaps: Annotated[
        bool,
        typer.Option(
            "--fill-gaps",
            help="Fill gaps with flat candles (previous close, volume 0). Off by default.",
        ),
    ] = False,
    max_jump: Annotated[float, typer.Option(help="Spike size that marks a bad tick.")] = 0.5,
    data_dir: DataDirOpt = None,
) -> None:
    """Validate a file and merge its good rows into the store; bad rows go to quarantine."""
    from cryptoorchestrator.platform.data.importers import read_ohlcv_file
    from cryptoorchestrator.platform.data.validate import fill_gaps as fill
    from cryptoorchestrator.platform.data.validate import validate_ohlcv

    store = _store(data_dir)
    store.dataset_dir(exchange, symbol, timeframe)  # fail on bad names before reading
    table = read_ohlcv_file(file)
    report = validate_ohlcv(table, timeframe, max_jump=max_jump)
    good, filled = fill(report.good, timeframe) if fill_gaps else (report.good, 0)
    result = store.write(exchange, symbol, timeframe, good, filled=filled)
    n_bad = store.quarantine(exchange, symbol, timeframe, report.bad, source=str(file))
    typer.echo(
        f"{file.name}: {report.rows} rows read, {result.rows_added} added, "
        f"{result.overlapping} already stored, {n_bad} quarantined, {len(report.gaps)} gap(s)"
        + (f", {filled} candles filled" if fill_gaps else "")
    )
    _print_gaps(report.gaps)
    for reason, n in sorted(report.reasons().items()):
        typer.echo(f"  quarantined {n}: {reason}")


@app.command()
def check(
    exchange: ExchangeOpt,
    symbol: SymbolOpt,
    timeframe: TimeframeOpt,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Report only; do not move bad rows.")
    ] = False,
    max_jump: Annotated[float, typer.Option(help="Spike size that marks a bad tick.")] = 0.5,
    data_dir: DataDirOpt = None,
) -> None:
    """Validate a stored dataset; move bad rows to its quarantine file unless --dry-run.

    With --dry-run, bad rows make the command fail (exit status 2) and change nothing.
    """
    from cryptoorchestrator.platform.data.validate import validate_ohlcv

    store = _store(data_dir)
    table = store.read(exchange, symbol, timeframe)
    report = validate_ohlcv(table, timeframe, max_jump=max_jump)
    typer.echo(
        f"{exchange} {symbol} {timeframe}: {report.rows} rows, {report.bad.num_rows} bad, "
        f"{len(report.gaps)} gap(s)"
    )
    _print_gaps(report.gaps)
    for reason, n in sorted(report.reasons().items()):
        typer.echo(f"  bad {n}: {reason}")
    if report.bad.num_rows and not dry_run:
        # Quarantine first: if the rewrite then fails, the rows exist twice, never zero times.
        store.quarantine(exchange, symbol, timeframe, report.bad, source="check")
        store.write(exchange, symbol, timeframe, report.good, mode="replace")
        typer.echo(
            f"moved {report.bad.num_rows} row(s) to "
            f"{store.quarantine_path(exchange, symbol, timeframe)}"
        )
    if report.bad.num_rows and dry_run:
        from cryptoorchestrator.platform.errors import DataError

        raise DataError(
            f"{report.bad.num_rows} bad row(s) in {exchange} {symbol} {timeframe}; "
            "run without --dry-run to move them to quarantine"
        )


@app.command("list")
def list_(data_dir: DataDirOpt = None) -> None:
    """Show the stored datasets: first/last candle, rows, gaps."""
    from rich.console import Console
    from rich.table import Table

    infos = _store(data_dir).list_datasets()
    if not infos:
        typer.echo("no datasets stored")
        return
    table = Table(
        "exchange", "symbol", "timeframe", "first", "last", "rows", "gaps", "quarantined", "filled"
    )
    for i in infos:
        table.add_row(
            i.exchange,
            i.symbol,
            i.timeframe,
            i.first_text,
            i.last_text,
            f"{i.rows:,}",
            str(i.gaps),
            str(i.quarantined),
            str(i.filled),
        )
    Console(width=140).print(table)


@app.command()
def resample(
    exchange: ExchangeOpt,
    symbol: SymbolOpt,
    source: Annotated[str, typer.Option("--from", help="Stored timeframe, e.g. 1m.")],
    target: Annotated[list[str], typer.Option("--to", help="Target timeframe; repeatable.")],
    data_dir: DataDirOpt = None,
) -> None:
    """Resample a stored dataset to longer timeframes and store the results."""
    from cryptoorchestrator.platform.data.resample import resample_ohlcv

    store = _store(data_dir)
    bars = store.read(exchange, symbol, source)
    for tf in target:
        out = resample_ohlcv(bars, source, tf)
        result = store.write(exchange, symbol, tf, out)
        typer.echo(
            f"{exchange} {symbol} {source} -> {tf}: {out.num_rows} candles, "
            f"{result.rows_added} added"
        )
