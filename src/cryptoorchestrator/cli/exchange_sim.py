"""``cryptoorch exchange-sim``: serve the Binance-compatible exchange simulator on loopback."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    import pyarrow as pa


def load_data_specs(specs: list[str], default_symbol: str) -> dict[str, pa.Table | Path]:
    """Return symbol -> candles for ``--data`` words.

    A word is a candle file (served as ``default_symbol``), ``SYMBOL=file``, or
    ``exchange:SYMBOL:timeframe`` (e.g. ``binance:BTC/USDT:1h``) read from the market-data store.

    Raises
    ------
    InvalidInputError
        If a word matches none of these forms.
    """
    from cryptoorchestrator.platform.errors import InvalidInputError
    from cryptoorchestrator.platform.model.symbols import normalize_symbol

    out: dict[str, pa.Table | Path] = {}
    for spec in specs:
        if Path(spec).is_file():
            out[normalize_symbol(default_symbol)] = Path(spec)
            continue
        symbol, sep, file_part = spec.partition("=")
        if sep and Path(file_part).is_file():
            out[normalize_symbol(symbol)] = Path(file_part)
            continue
        parts = spec.split(":")
        if len(parts) == 3 and all(parts):
            from cryptoorchestrator.platform.data.store import load_ohlcv

            exchange, symbol, timeframe = parts
            out[normalize_symbol(symbol)] = load_ohlcv(exchange, symbol, timeframe)
            continue
        raise InvalidInputError(
            "--data",
            f"not a candle file or dataset: {spec!r}",
            allowed="a file, SYMBOL=file, or exchange:SYMBOL:timeframe (binance:BTC/USDT:1h)",
        )
    if not out:
        raise InvalidInputError("--data", "give at least one candle file or dataset")
    return out


def exchange_sim(
    data: Annotated[
        list[str],
        typer.Option(
            "--data",
            "-d",
            help="Candles: a feather/CSV/Parquet file, SYMBOL=file, or exchange:SYMBOL:timeframe "
            "from the store (binance:BTC/USDT:1h). Repeat for several symbols.",
        ),
    ],
    port: Annotated[int, typer.Option(help="TCP port (0: a free one).")] = 8765,
    host: Annotated[str, typer.Option(help="Address to bind; keep it on loopback.")] = "127.0.0.1",
    symbol: Annotated[str, typer.Option(help="Symbol for a plain --data file.")] = "BTC/USDT",
    speed: Annotated[
        float, typer.Option(help="Live feed at this many x real time; 0 serves all history.")
    ] = 0.0,
    start: Annotated[
        str | None,
        typer.Option(help="Clock start (date, ISO time or epoch ms); default per --speed."),
    ] = None,
    api_key: Annotated[
        str | None, typer.Option("--api-key", help="API key (default: cryptoorch-sim-key).")
    ] = None,
    api_secret: Annotated[
        str | None,
        typer.Option(
            "--api-secret",
            help="API secret (default: cryptoorch-sim-secret).",
            envvar="CRYPTOORCH_SIM_API_SECRET",
        ),
    ] = None,
    balance: Annotated[
        list[str] | None, typer.Option(help="Starting balance ASSET=amount; repeatable.")
    ] = None,
    slippage_bps: Annotated[
        float, typer.Option("--slippage-bps", help="Market-order slippage in bps.")
    ] = 0.0,
    fee_rate: Annotated[str, typer.Option("--fee-rate", help="Commission rate.")] = "0.001",
    partial_fill: Annotated[
        float | None,
        typer.Option(
            "--partial-fill", help="Fill at most this fraction of a limit order a candle."
        ),
    ] = None,
    fault: Annotated[
        list[str] | None,
        typer.Option(help="Fault switch key=value (latency_ms=200, fail_next=3, ...); repeatable."),
    ] = None,
) -> None:
    """Serve a Binance-compatible spot exchange replaying stored candles until interrupted."""
    import asyncio
    import signal

    from cryptoorchestrator.platform.data.times import to_ms
    from cryptoorchestrator.platform.exchange.sim import (
        DEFAULT_API_KEY,
        DEFAULT_API_SECRET,
        ExchangeSimulator,
        SimAccountSpec,
        parse_balances,
        parse_fault_args,
    )

    account_args: dict[str, Any] = {
        "api_key": api_key or DEFAULT_API_KEY,
        "api_secret": api_secret or DEFAULT_API_SECRET,
    }
    if balance:
        account_args["balances"] = parse_balances(balance)
    sim = ExchangeSimulator(
        load_data_specs(data, symbol),
        start_ms=to_ms(start, field="--start") if start else None,
        speed=speed,
        accounts=[SimAccountSpec(**account_args)],
        fee_rate=fee_rate,
        slippage_bps=str(slippage_bps),
        partial_fill_ratio=partial_fill,
        faults=parse_fault_args(fault or []),
    )

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        url = await sim.start(host, port)
        markets = ", ".join(f"{m}:{mk.timeframe}" for m, mk in sim.markets.items())
        secret_note = "given" if api_secret else "the documented default"
        typer.echo(f"exchange simulator serving {url}", err=False)
        typer.echo(
            f"  markets {markets}; clock {sim.now()} ms at {speed:g}x; "
            f"api key {sim.api_key!r} (secret: {secret_note}); admin {url}/_sim/clock",
        )
        try:
            await stop.wait()
        finally:
            await sim.stop()

    asyncio.run(serve())
