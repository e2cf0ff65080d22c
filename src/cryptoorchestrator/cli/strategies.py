"""``cryptoorch strategies``: the strategy names a bot, backtest or study may use.

Those are the built-ins plus the operator's strategies from the ``strategy_paths`` setting
(``CRYPTOORCH_STRATEGY_PATHS``), which the API, bot actors and job workers load at start.
``--path`` loads more sources for this listing only: it is the operator running their own code.
"""

from __future__ import annotations

import inspect
import json
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:  # the strategy modules import numpy: kept out of `cryptoorch --help`
    from cryptoorchestrator.platform.strategy.base import Param


def _param_text(param: Param) -> str:
    """Return ``name=default`` with the declared range or choices, e.g. ``fast=10 [2..200]``."""
    text = f"{param.name}={param.default!r}"
    if param.choices is not None:
        return f"{text} {{{', '.join(repr(c) for c in param.choices)}}}"
    if param.low is not None or param.high is not None:
        low = "" if param.low is None else f"{param.low:g}"
        high = "" if param.high is None else f"{param.high:g}"
        return f"{text} [{low}..{high}]"
    return text


def strategies(
    path: Annotated[
        list[str] | None,
        typer.Option(
            "--path",
            help="Also load strategies from this folder of *.py files, file or module; repeat.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable output.")] = False,
) -> None:
    """List registered strategies with their parameters and description."""
    from rich.console import Console
    from rich.table import Table

    from cryptoorchestrator.platform.settings import get_settings
    from cryptoorchestrator.strategies.registry import (
        load_strategies,
        load_strategy_paths,
        registered_names,
        registered_strategy,
    )

    load_strategy_paths(get_settings().strategy_paths)
    for source in path or []:
        load_strategies(source)
    rows: list[tuple[str, list[str], str]] = []
    for name in registered_names():
        strategy = registered_strategy(name)
        doc = inspect.getdoc(type(strategy)) or ""
        params = [_param_text(p) for p in strategy.params]
        rows.append((name, params, doc.splitlines()[0] if doc else ""))
    if as_json:
        out = [{"name": n, "params": p, "description": d} for n, p, d in rows]
        typer.echo(json.dumps(out, indent=2))
        return
    table = Table("name", "params", "description", title="strategies")
    for name, params, description in rows:
        table.add_row(name, ", ".join(params), description)
    Console().print(table)
