"""``cryptoorch optimize``: a parameter study over stored bars, on Ray, recorded in the database."""

from __future__ import annotations

import json
import math
from typing import Annotated, Any

import typer

from cryptoorchestrator.platform.errors import InvalidInputError
from cryptoorchestrator.platform.model.fees import DEFAULT_FEE_BPS


def optimize(
    strategy: Annotated[str, typer.Option(help="Strategy name (see `cryptoorch strategies`).")],
    symbol: Annotated[str, typer.Option(help="Symbol, e.g. BTC/USDT.")],
    timeframe: Annotated[str, typer.Option(help="Candle timeframe, e.g. 1h.")],
    space: Annotated[
        list[str], typer.Option(help="name=low:high:step (inclusive) or name=a,b,c; repeat.")
    ],
    exchange: Annotated[str, typer.Option(help="Exchange of the stored data.")] = "binance",
    start: Annotated[str | None, typer.Option(help="First candle (ISO date).")] = None,
    end: Annotated[str | None, typer.Option(help="End of data, exclusive (ISO date).")] = None,
    constraint: Annotated[
        list[str] | None, typer.Option(help='Parameter constraint, e.g. "fast < slow"; repeat.')
    ] = None,
    objective: Annotated[str, typer.Option(help="Metric to optimise.")] = "sharpe",
    minimize: Annotated[bool, typer.Option("--minimize", help="Minimise the objective.")] = False,
    method: Annotated[str, typer.Option(help="grid, random or tpe.")] = "grid",
    trials: Annotated[int | None, typer.Option(help="Trials for random/tpe.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for random/tpe.")] = None,
    min_trades: Annotated[int | None, typer.Option(help="Reject trials with fewer trades.")] = None,
    fee_bps: Annotated[
        float, typer.Option(help="Fee per fill in basis points (Binance spot taker).")
    ] = DEFAULT_FEE_BPS,
    top: Annotated[int, typer.Option(help="Rows in the result table.")] = 10,
    walk_forward: Annotated[
        int | None, typer.Option("--walk-forward", help="Walk-forward with this many folds.")
    ] = None,
    wf_mode: Annotated[str, typer.Option(help="rolling or anchored.")] = "rolling",
    train_frac: Annotated[float, typer.Option(help="Train share of a fold.")] = 0.7,
    plot: Annotated[str | None, typer.Option(help="Save the heatmap/plot PNG here.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable output.")] = False,
) -> None:
    """Optimise a strategy's parameters on stored bars (grid, random or TPE) on Ray."""
    from rich.console import Console
    from rich.table import Table

    from cryptoorchestrator.cluster import optimize as opt
    from cryptoorchestrator.platform.data.store import load_ohlcv
    from cryptoorchestrator.platform.settings import get_settings
    from cryptoorchestrator.platform.storage.runs import json_safe

    settings = get_settings()
    bars = load_ohlcv(exchange, symbol, timeframe, start, end, data_dir=settings.data_dir)
    if bars.num_rows == 0:
        raise InvalidInputError(
            "start", "no bars in the requested range", allowed="a range with stored data"
        )
    console = Console()
    kw: dict[str, Any] = dict(
        space=space,
        constraint=constraint or None,
        objective=objective,
        minimize=True if minimize else None,
        method=method,
        n_trials=trials,
        seed=seed,
        min_trades=min_trades,
        fee_bps=fee_bps,
        timeframe=timeframe,
        settings=settings,
        progress=not as_json,
        study_name=f"{strategy}:{symbol}:{timeframe}",
    )
    if walk_forward:
        wf = opt.walk_forward(
            strategy,
            bars,
            n_folds=walk_forward,
            mode=wf_mode,  # type: ignore[arg-type]
            train_frac=train_frac,
            **kw,
        )
        rows = json_safe([{k: v for k, v in f.items()} for f in wf.folds])
        if as_json:
            typer.echo(json.dumps({"folds": rows, "oos_return": json_safe(wf.oos_return)}))
            return
        table = Table(title=f"walk-forward ({wf_mode}, {walk_forward} folds)")
        for col in ("fold", "params", f"IS {objective}", f"OOS {objective}", "OOS return"):
            table.add_column(col)
        for f in wf.folds:
            oos = f["oos_metrics"] or {}
            table.add_row(
                str(f["fold"]),
                json.dumps(f["params"]),
                _fmt(f["is_value"]),
                _fmt(f["oos_value"]),
                _fmt(oos.get("total_return")),
            )
        console.print(table)
        console.print(f"stitched out-of-sample return: {_fmt(wf.oos_return)}")
        return
    res = opt.optimize(strategy, bars, **kw)
    best = res.top(top)
    if as_json:
        typer.echo(
            json.dumps(
                json_safe(
                    {
                        "run_id": res.run_id,
                        "study_key": res.study_key,
                        "status": res.status,
                        "n_trials": len(res.trials),
                        "reused": res.n_reused,
                        "best": res.best,
                        "best_value": res.best_value,
                        "top": [
                            {"params": t.params, "value": t.value, "metrics": t.metrics}
                            for t in best
                        ],
                    }
                )
            )
        )
        return
    table = Table(title=f"top {len(best)} of {len(res.trials)} trials ({res.status})")
    for name in (*res.param_names, objective, "total_return", "max_drawdown", "trades"):
        table.add_column(name, justify="right")
    for t in best:
        m = t.metrics or {}
        table.add_row(
            *(str(t.params[n]) for n in res.param_names),
            _fmt(t.value),
            _fmt(m.get("total_return")),
            _fmt(m.get("max_drawdown")),
            _fmt(m.get("trade_count")),
        )
    console.print(table)
    failed = sum(1 for t in res.trials if t.status == "failed")
    console.print(
        f"run {res.run_id}: {len(res.trials)} trials ({res.n_reused} resumed, "
        f"{failed} failed), best {res.best} = {_fmt(res.best_value)}"
    )
    if plot:
        console.print(f"plot: {res.plot(plot)}")


def _fmt(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.4g}"
