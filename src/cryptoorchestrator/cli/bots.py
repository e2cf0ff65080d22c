"""``cryptoorch bots`` and ``cryptoorch risk``: the SDK's ``co.bots`` and ``co.risk`` in a shell."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Create, start, stop and inspect trading bots.", no_args_is_help=True)
risk_app = typer.Typer(help="Risk limits and the kill switch.", no_args_is_help=True)
console = Console()


def _params(values: list[str]) -> dict[str, Any]:
    from cryptoorchestrator.platform.errors import InvalidInputError

    out: dict[str, Any] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise InvalidInputError("--param", f"malformed {item!r}", allowed="NAME=VALUE")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def _bots() -> Any:
    from cryptoorchestrator.cluster.sdk import BotsAPI

    # Bots must outlive this command: join the running platform, never start a private Ray.
    return BotsAPI(start_local=False)


def _risk() -> Any:
    from cryptoorchestrator.cluster.sdk import RiskAPI

    return RiskAPI(start_local=False)


def _print(data: Any) -> None:
    console.print_json(json.dumps(data, default=str))


@app.command()
def create(
    name: Annotated[str, typer.Option(help="Unique bot name.")],
    pair: Annotated[str, typer.Option("--pair", help="Trading pair, e.g. BTC/USDT.")],
    strategy: Annotated[str, typer.Option(help="Strategy name (see `cryptoorch strategies`).")],
    param: Annotated[list[str], typer.Option(help="Strategy parameter NAME=VALUE.")] = [],  # noqa: B006
    timeframe: Annotated[str, typer.Option(help="Candle timeframe.")] = "1h",
    mode: Annotated[str, typer.Option(help="paper or live.")] = "paper",
    exchange: Annotated[str, typer.Option(help="ccxt exchange id.")] = "binance",
    api_url: Annotated[str | None, typer.Option(help="API base URL (the simulator).")] = None,
    account: Annotated[int | None, typer.Option(help="Exchange account id (live).")] = None,
    risk_per_trade: Annotated[float, typer.Option(help="% of equity risked, 0.1-5.0.")] = 1.0,
    max_position_size: Annotated[float, typer.Option(help="% of equity, 1-100.")] = 10.0,
    stop_loss: Annotated[float | None, typer.Option(help="Stop-loss, % below entry.")] = None,
    take_profit: Annotated[float | None, typer.Option(help="Take-profit, % above entry.")] = None,
    trailing_stop: Annotated[float | None, typer.Option(help="Trailing stop, %.")] = None,
    balance: Annotated[float, typer.Option(help="Paper starting balance (quote).")] = 10_000.0,
    group: Annotated[
        str | None, typer.Option(help="Share one actor process with the group's other bots.")
    ] = None,
) -> None:
    """Create a bot (validated exactly as the API validates it)."""
    bots = _bots()

    bot = bots.create(
        name,
        pair,
        strategy,
        params=_params(param),
        timeframe=timeframe,
        mode=mode,
        exchange=exchange,
        api_url=api_url,
        exchange_account_id=account,
        risk_per_trade=str(risk_per_trade),
        max_position_size=str(max_position_size),
        stop_loss=None if stop_loss is None else str(stop_loss),
        take_profit=None if take_profit is None else str(take_profit),
        trailing_stop=None if trailing_stop is None else str(trailing_stop),
        starting_balance=str(balance),
        actor_group=group,
    )
    typer.echo(f"created bot {bot.id} ({bot.name})")


@app.command("list")
def list_bots() -> None:
    """List every user's bots with their owner and status."""
    bots = _bots()

    table = Table("id", "name", "owner", "pair", "strategy", "status", "reason")
    for b in bots.list():
        table.add_row(
            str(b["id"]),
            b["name"],
            b["owner"] or "",
            b["tradingPair"],
            b["strategy"],
            b["status"],
            b["reason"] or "",
        )
    console.print(table)


@app.command()
def start(bot: Annotated[str, typer.Argument(help="Bot id or name.")]) -> None:
    """Start a bot on the cluster."""
    bots = _bots()

    typer.echo(bots.get(bot).start())


@app.command()
def stop(bot: Annotated[str, typer.Argument(help="Bot id or name.")]) -> None:
    """Stop a bot and remove its actor."""
    bots = _bots()

    typer.echo(bots.get(bot).stop())


@app.command()
def status(bot: Annotated[str, typer.Argument(help="Bot id or name.")]) -> None:
    """Show a bot's stored and live status."""
    bots = _bots()

    _print(bots.get(bot).status())


@app.command()
def trades(
    bot: Annotated[str, typer.Argument(help="Bot id or name.")],
    limit: Annotated[int, typer.Option(help="Newest N fills.")] = 50,
) -> None:
    """Show a bot's fills, newest first."""
    bots = _bots()

    table = bots.get(bot).trades(limit)
    out = Table(*table.column_names)
    for row in table.to_pylist():
        out.add_row(*(str(v) for v in row.values()))
    console.print(out)


@app.command()
def logs(
    bot: Annotated[str, typer.Argument(help="Bot id or name.")],
    tail: Annotated[int, typer.Option(help="Last N lines.")] = 50,
) -> None:
    """Print the last lines of ``logs/bot_<id>.log``."""
    bots = _bots()

    for line in bots.get(bot).logs(tail):
        typer.echo(line)


@risk_app.command()
def limits() -> None:
    """Show the risk limits in force."""
    risk = _risk()

    _print(risk.limits())


@risk_app.command("set")
def set_limits(
    limit: Annotated[list[str], typer.Argument(help="NAME=VALUE, e.g. max_drawdown_pct=15.")],
) -> None:
    """Change risk limits (validated, persisted, applied to every bot at once)."""
    risk = _risk()

    _print(risk.set_limits(**_params(limit)))


@risk_app.command()
def utilisation() -> None:
    """Show exposure, drawdown and open orders against the limits."""
    risk = _risk()

    _print(risk.utilisation())


@risk_app.command("kill-switch")
def kill_switch(
    flatten: Annotated[bool, typer.Option(help="Also sell every position at market.")] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Emergency stop-all: deny every order, cancel open orders, stop every bot."""
    risk = _risk()

    if not yes:
        typer.confirm("Stop ALL trading now?", abort=True)
    _print(risk.kill_switch(flatten))


@risk_app.command("status")
def risk_status() -> None:
    """Show whether the kill switches are engaged (global, and how many users' own)."""
    from cryptoorchestrator.cluster.facade import kill_switch_status_local

    risk = _risk()
    state = kill_switch_status_local(risk.settings)
    _print(state)
    if state.get("global"):
        typer.echo("The global kill switch is engaged: release it with `cryptoorch risk release`.")
    for owner in state.get("user_ids", []):
        typer.echo(
            f"User {owner}'s kill switch is engaged: release it with "
            f"`cryptoorch risk release --user {owner}`."
        )


@risk_app.command("release")
def release(
    user: Annotated[
        int | None, typer.Option(help="Release this user's own switch instead of the global one.")
    ] = None,
) -> None:
    """Release the kill switch; bots it stopped stay stopped until you start them again."""
    from cryptoorchestrator.cluster.facade import release_kill_switch_local

    risk = _risk()
    _print(release_kill_switch_local(risk.settings, user))
    typer.echo("Released: start the bots again with `cryptoorch bots start <id>`.")
