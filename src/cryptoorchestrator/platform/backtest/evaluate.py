"""The one evaluation contract: a strategy's signals and stops plus a ``SimConfig`` -> the engine.

Every path that turns a strategy into trades goes through here, so that they cannot disagree:
``co.backtest`` (:func:`~cryptoorchestrator.platform.backtest.runner.run_backtest`), each
optimizer trial (:func:`~cryptoorchestrator.platform.optimize.trials.run_trials`), each
walk-forward window, and a live bot's decision on its last closed bar (:func:`decision_at`).

* :func:`resolve_stops` settles which stops apply, in one order of precedence: the ``SimConfig``
  value, else the per-bar array in the strategy's :class:`Signals`, else the strategy's class
  default (``Strategy.stop_loss`` ...).
* :func:`engine_inputs` returns the arrays and stops :func:`simulate` takes, optionally cutting
  a warm-up off the front (the bars before ``start`` only feed the indicators).
* :func:`evaluate` runs a strategy end to end (parameters checked, signals inside the guard,
  simulation, metrics); :func:`simulate_inputs` is the simulation step alone, for callers that
  produce the signals themselves (the optimizer's indicator-reuse adapters).
* :func:`simulate_stats` is :func:`simulate_inputs`'s statistics vector alone, bit for bit, from
  a kernel that keeps no records (:mod:`~cryptoorchestrator.platform.backtest.sweep_nb`): what
  an optimizer trial needs, since its metrics come from the statistics only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from cryptoorchestrator.platform.backtest import sweep_nb
from cryptoorchestrator.platform.backtest.engine import (
    SimConfig,
    SimOutput,
    _as_2d,
    _false,
    _stop,
    frozen,
    simulate,
)
from cryptoorchestrator.platform.backtest.metrics import metrics_from_stats
from cryptoorchestrator.platform.errors import InvalidInputError
from cryptoorchestrator.platform.strategy.base import Signals, Strategy, run_signals

#: The stop fields of :class:`Signals` and :class:`SimConfig`, in engine order.
STOP_FIELDS: tuple[str, str, str] = ("stop_loss", "take_profit", "trailing_stop")

Stop = float | np.ndarray | None


class EngineInputs(NamedTuple):
    """Everything :func:`simulate` takes besides the config, for one or several symbols.

    Prices and signals are 1-D (one symbol) or 2-D ``(n_bars, n_symbols)``; signals are ``None``
    for "never" (short signals are ``None`` when the config forbids shorts); a stop is a scalar
    fraction, one value per bar, or ``None`` (none).
    """

    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    long_entries: np.ndarray | None
    long_exits: np.ndarray | None
    short_entries: np.ndarray | None
    short_exits: np.ndarray | None
    stop_loss: Stop
    take_profit: Stop
    trailing_stop: Stop

    def __len__(self) -> int:  # type: ignore[override]
        return int(np.shape(self.close)[0])


class Evaluation(NamedTuple):
    """The outcome of :func:`evaluate`: validated parameters, metrics and the raw engine output."""

    params: dict[str, Any]
    metrics: dict[str, float]
    output: SimOutput


class BarDecision(NamedTuple):
    """What the engine would act on at one bar: its signals and the stops of an entry there.

    Stops are fractions of the fill price (``None``: none); the trailing stop trails the best
    price since entry, as in the backtest.
    """

    long_entry: bool
    long_exit: bool
    short_entry: bool
    short_exit: bool
    stop_loss: float | None
    take_profit: float | None
    trailing_stop: float | None


def resolve_stops(
    strategy: Strategy, signals: Signals, config: SimConfig
) -> tuple[Stop, Stop, Stop]:
    """Return ``(stop_loss, take_profit, trailing_stop)`` as the engine must apply them.

    Each is the config's value when set, else the per-bar array the strategy returned, else the
    strategy's class default, else ``None``.
    """
    out: list[Stop] = []
    for name in STOP_FIELDS:
        config_value = getattr(config, name)
        per_bar = getattr(signals, name)
        if config_value is not None:
            out.append(config_value)
        elif per_bar is not None:
            out.append(per_bar)
        else:
            out.append(getattr(strategy, name, None))
    return out[0], out[1], out[2]


def _cut(value: Any, start: int) -> Any:
    if start == 0 or value is None or np.ndim(value) == 0:
        return value
    return value[start:]


def engine_inputs(
    strategy: Strategy,
    signals: Signals,
    bars: Any,
    config: SimConfig,
    *,
    start: int = 0,
) -> EngineInputs:
    """Return the engine's inputs for ``strategy``'s ``signals`` over ``bars`` under ``config``.

    ``bars`` is anything with ``open``/``high``/``low``/``close`` arrays (``Bars``,
    ``BarArrays``, or 2-D price arrays for several symbols) that ``signals`` were computed on.
    Stops follow :func:`resolve_stops`; short signals are dropped when ``config.allow_short`` is
    false.  With ``start > 0`` the first ``start`` bars are warm-up only: prices, signals and
    per-bar stops are cut to ``[start, n)`` (views, no copies), so trading starts at ``start``
    on indicators that were already warm.

    Raises
    ------
    InvalidInputError
        If ``start`` leaves no bar to trade.
    """
    n = int(np.shape(bars.close)[0])
    if not (isinstance(start, int | np.integer) and 0 <= start < n):
        raise InvalidInputError(
            "warmup", f"{start!r} warm-up bars leave none of {n} to trade", allowed=f"0..{n - 1}"
        )
    start = int(start)
    shorts = config.allow_short
    stops = resolve_stops(strategy, signals, config)
    return EngineInputs(
        _cut(bars.open, start),
        _cut(bars.high, start),
        _cut(bars.low, start),
        _cut(bars.close, start),
        _cut(signals.long_entries, start),
        _cut(signals.long_exits, start),
        _cut(signals.short_entries, start) if shorts else None,
        _cut(signals.short_exits, start) if shorts else None,
        _cut(stops[0], start),
        _cut(stops[1], start),
        _cut(stops[2], start),
    )


def simulate_inputs(
    inputs: EngineInputs, config: SimConfig, *, equity_out: np.ndarray | None = None
) -> SimOutput:
    """Simulate ``inputs`` under ``config`` (see :func:`simulate` for ``equity_out``).

    Raises
    ------
    InvalidInputError
        If a shape, dtype or setting is wrong.
    """
    return simulate(
        inputs.open,
        inputs.high,
        inputs.low,
        inputs.close,
        inputs.long_entries,
        inputs.long_exits,
        inputs.short_entries,
        inputs.short_exits,
        config=config,
        stop_loss=inputs.stop_loss,
        take_profit=inputs.take_profit,
        trailing_stop=inputs.trailing_stop,
        equity_out=equity_out,
    )


def simulate_stats(inputs: EngineInputs, config: SimConfig) -> np.ndarray:
    """Return the statistics vector of :func:`simulate_inputs` (``nb.S_*`` layout), bit for bit.

    One symbol runs the stats-only kernel, which writes no order, trade or equity record;
    several symbols take :func:`simulate_inputs` (without the equity curve).  The inputs are
    checked and shaped as :func:`simulate` does, with the same errors.

    Raises
    ------
    InvalidInputError
        If a shape, dtype or setting is wrong.
    """
    if np.ndim(inputs.close) != 1 and not (
        np.ndim(inputs.close) == 2 and np.shape(inputs.close)[1] == 1
    ):
        return simulate_inputs(inputs, config, equity_out=np.empty(0, dtype=np.float64)).stats
    # simulate's own conversions (engine.py), so that both kernels see the same arrays
    close = _as_2d(inputs.close, np.float64, "close", None)
    shape: tuple[int, int] = close.shape  # type: ignore[assignment]
    if shape[0] == 0:
        raise InvalidInputError("bars", "no bars to simulate", allowed=">= 1 bar")
    open_ = _as_2d(inputs.open, np.float64, "open", shape)
    high = _as_2d(inputs.high, np.float64, "high", shape)
    low = _as_2d(inputs.low, np.float64, "low", shape)
    sigs = []
    for name in ("long_entries", "long_exits", "short_entries", "short_exits"):
        sig = getattr(inputs, name)
        if sig is None or (not config.allow_short and name.startswith("short")):
            sigs.append(_false(shape))
        else:
            sigs.append(_as_2d(sig, np.bool_, name, shape))
    stops = [
        _stop(getattr(inputs, name), getattr(config, name), name, shape) for name in STOP_FIELDS
    ]
    use_stops = any(
        getattr(inputs, name) is not None or getattr(config, name) is not None
        for name in STOP_FIELDS
    )
    fee, slip, at_close, size_mode, size, max_pos = config._kernel
    # All read-only: numba compiles one specialisation per read-only/writable mix, and a
    # sweep mixes them (bars from Ray's object store, indicator outputs reused by the batch
    # cache, fresh arrays), which compiled the kernel again, for seconds, inside a study.
    return sweep_nb.sweep_stats_1d_nb(  # type: ignore[no-any-return]
        frozen(open_),
        frozen(high),
        frozen(low),
        frozen(close),
        frozen(sigs[0]),
        frozen(sigs[1]),
        frozen(sigs[2]),
        frozen(sigs[3]),
        frozen(stops[0]),
        frozen(stops[1]),
        frozen(stops[2]),
        frozen(config.per_symbol("qty_step", 1)),
        frozen(config.per_symbol("min_qty", 1)),
        frozen(config.per_symbol("min_notional", 1)),
        frozen(config.per_symbol("price_tick", 1)),
        float(config.init_cash),
        fee,
        slip,
        at_close,
        size_mode,
        size,
        max_pos,
        int(config.max_open_positions or 1),
        bool(config.close_at_end),
        use_stops,
        float(config.max_gross_leverage),
        float(config.maintenance_margin),
        bool(config.liquidation),
    )


def evaluate(
    strategy: Strategy,
    bars: Any,
    params: Mapping[str, Any] | None,
    config: SimConfig,
    *,
    periods_per_year: float,
    start: int = 0,
    equity: bool = True,
) -> Evaluation:
    """Backtest ``strategy`` with ``params`` on one symbol's ``bars``; return metrics and output.

    The signals are computed over all ``bars`` inside the strategy guard; trading and the
    metrics cover ``[start, n)`` (see :func:`engine_inputs`).  ``periods_per_year`` annualises
    the metrics (see :func:`~cryptoorchestrator.platform.model.timestamps.annualisation`).
    ``equity=False`` skips writing the equity curve (the statistics still cover it).

    Raises
    ------
    InvalidInputError
        Bad parameters, settings, or a ``start`` beyond the bars.
    StrategyError
        If the strategy's code raises or returns malformed signals.
    """
    checked = strategy.validate_params(params)
    sigs = run_signals(strategy, bars, checked)
    inputs = engine_inputs(strategy, sigs, bars, config, start=start)
    out = simulate_inputs(
        inputs, config, equity_out=None if equity else np.empty(0, dtype=np.float64)
    )
    metrics = metrics_from_stats(out.stats, config.init_cash, periods_per_year)
    return Evaluation(checked, metrics, out)


def _at(value: Any, i: int) -> Any:
    if value is None:
        return None
    if np.ndim(value) == 0:
        return value
    return value[i]


def _stop_at(value: Stop, i: int) -> float | None:
    v = _at(value, i)
    if v is None:
        return None
    f = float(v)
    return None if np.isnan(f) else f


def decision_at(inputs: EngineInputs, i: int = -1) -> BarDecision:
    """Return the signals and entry stops of bar ``i`` of one symbol's ``inputs``.

    The per-bar form of the contract for a live bot: build the inputs over its rolling window
    with :func:`engine_inputs` (same strategy, same config) and read the last closed bar; the
    stops are those the backtest would attach to a position opened on that bar's signal.
    """
    flags = [
        bool(_at(a, i)) if a is not None else False
        for a in (inputs.long_entries, inputs.long_exits, inputs.short_entries, inputs.short_exits)
    ]
    return BarDecision(
        flags[0],
        flags[1],
        flags[2],
        flags[3],
        _stop_at(inputs.stop_loss, i),
        _stop_at(inputs.take_profit, i),
        _stop_at(inputs.trailing_stop, i),
    )


def stack_signals(signals: Sequence[Signals], n_bars: int) -> Signals:
    """Return several symbols' signals as one :class:`Signals` of 2-D ``(n_bars, k)`` arrays.

    A field every symbol leaves ``None`` stays ``None``; otherwise a missing signal is ``False``
    and a missing per-bar stop is ``NaN`` (no stop) for that symbol.
    """
    fields: list[np.ndarray | None] = []
    for name in Signals._fields:
        arrays = [getattr(s, name) for s in signals]
        if all(a is None for a in arrays):
            fields.append(None)
            continue
        filler = (
            np.full(n_bars, np.nan) if name in STOP_FIELDS else np.zeros(n_bars, dtype=np.bool_)
        )
        fields.append(np.column_stack([filler if a is None else a for a in arrays]))
    return Signals(*fields)
