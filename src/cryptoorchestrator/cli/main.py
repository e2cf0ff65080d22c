"""The ``cryptoorch`` command: one typer app with a sub-app per capability.

Heavy imports (numba, Ray, ccxt, uvicorn) happen inside the commands, so ``cryptoorch --help``
stays fast.  Every :class:`CryptoOrchError` is printed as one line and exits with status 2;
``--verbose`` shows the traceback as well.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.console import Console

from cryptoorchestrator import __version__
from cryptoorchestrator.cli import backtest as backtest_cli
from cryptoorchestrator.cli import bots as bots_cli
from cryptoorchestrator.cli import data as data_cli
from cryptoorchestrator.cli import db as db_cli
from cryptoorchestrator.cli import exchange_sim as exchange_sim_cli
from cryptoorchestrator.cli import notify as notify_cli
from cryptoorchestrator.cli import optimize as optimize_cli
from cryptoorchestrator.cli import replay as replay_cli
from cryptoorchestrator.cli import strategies as strategies_cli
from cryptoorchestrator.cli import users as users_cli
from cryptoorchestrator.cli import warmup as warmup_cli
from cryptoorchestrator.cli.serve import serve
from cryptoorchestrator.platform.errors import CryptoOrchError

app = typer.Typer(
    name="cryptoorch",
    help="CryptoOrchestrator: backtest, optimize and run crypto trading bots on Ray.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(db_cli.app, name="db")
app.add_typer(data_cli.app, name="data")
app.command()(serve)
app.command("exchange-sim")(exchange_sim_cli.exchange_sim)
app.command("optimize")(optimize_cli.optimize)
app.add_typer(bots_cli.app, name="bots")
app.add_typer(bots_cli.risk_app, name="risk")
app.add_typer(users_cli.app, name="users")
app.add_typer(notify_cli.app, name="notify")
app.command("backtest")(backtest_cli.backtest)
app.command("check-lookahead")(backtest_cli.check_lookahead)
app.command("replay")(replay_cli.replay)
app.command("strategies")(strategies_cli.strategies)
app.command("warmup")(warmup_cli.warmup)

err_console = Console(stderr=True)


@app.callback()
def _root(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show tracebacks and debug logs.")
    ] = False,
) -> None:
    """CryptoOrchestrator command line."""
    # --verbose is read by main() from the raw arguments (errors raised before any command
    # runs need it too); declared here so that it is in --help and accepted before a command.


@app.command()
def version() -> None:
    """Print the installed version."""
    typer.echo(f"cryptoorchestrator {__version__}")


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; turn platform errors into one clear line and a non-zero exit."""
    args = sys.argv[1:] if argv is None else argv
    verbose = "--verbose" in args or "-v" in args
    try:
        # Outside standalone mode typer returns a command's exit code instead of exiting.
        code = app(args=args, standalone_mode=False)
        if isinstance(code, int) and code != 0:
            sys.exit(code)
    except CryptoOrchError as exc:
        if verbose:
            err_console.print_exception()
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("aborted")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.TyperException as exc:  # usage errors: typer's own click raises these
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(int(getattr(exc, "exit_code", 2)))
    except Exception as exc:
        if verbose:
            err_console.print_exception()
        else:
            err_console.print(
                f"[bold red]unexpected error:[/] {type(exc).__name__}: {exc} "
                "(run with --verbose for the traceback)",
                highlight=False,
                soft_wrap=True,
            )
        sys.exit(1)


if __name__ == "__main__":
    main()
