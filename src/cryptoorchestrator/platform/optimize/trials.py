"""Evaluating a batch of trials serially in-process: the unit of work of a sweep task.

:func:`run_trials` is what each Ray task calls (``cluster/optimize.py`` is a thin shell around it)
and what the serial reference run calls, so the two agree bit for bit.  Within a batch, each
indicator a strategy calls through the strategy API
(:mod:`cryptoorchestrator.platform.strategy.indicators`) is computed once per distinct input
and arguments and reused by the batch's later trials
(:mod:`cryptoorchestrator.platform.strategy.memo`), for every strategy, built-in or not; reuse
never changes a trial's signals.
"""

from __future__ import annotations

import logging
import math
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from cryptoorchestrator.platform.backtest.engine import SimConfig
from cryptoorchestrator.platform.backtest.evaluate import engine_inputs, simulate_stats
from cryptoorchestrator.platform.backtest.metrics import metrics_from_stats
from cryptoorchestrator.platform.errors import InvalidInputError, StrategyError
from cryptoorchestrator.platform.model.timeframe import TIMEFRAMES, timeframe_to_ms
from cryptoorchestrator.platform.model.timestamps import timestamps_to_ms
from cryptoorchestrator.platform.optimize.objective import Objective, ResultFilter
from cryptoorchestrator.platform.optimize.space import Params, trial_key
from cryptoorchestrator.platform.strategy.base import Param, Strategy
from cryptoorchestrator.platform.strategy.memo import (
    DEFAULT_MAX_BYTES,
    indicator_cache,
    signals_in_batch,
)

log = logging.getLogger(__name__)

OK = "succeeded"
FAILED = "failed"
REJECTED = "rejected"

_COLUMNS = ("timestamp", "open", "high", "low", "close", "volume")


class BarArrays(NamedTuple):
    """OHLCV as contiguous float64 arrays (int64 ms timestamps); cheap to slice and ray.put."""

    timestamp: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray

    def __len__(self) -> int:  # type: ignore[override]
        return int(self.close.shape[0])

    def window(self, start: int, stop: int) -> BarArrays:
        """Return the bars ``[start, stop)`` as views (no copy)."""
        return BarArrays(*(a[start:stop] for a in self))

    def column(self, name: str) -> np.ndarray:
        """Return the column called ``name``."""
        return getattr(self, name)  # type: ignore[no-any-return]

    def to_table(self) -> Any:
        """Return the bars as a pyarrow table with the OHLCV column names."""
        import pyarrow as pa

        return pa.table(
            {
                "timestamp": pa.array(self.timestamp.astype("datetime64[ms]")),
                **{name: pa.array(getattr(self, name)) for name in _COLUMNS[1:]},
            }
        )


def bars_to_arrays(bars: Any, *, timeframe: str | None = None) -> BarArrays:
    """Convert a pyarrow table, pandas DataFrame, mapping of arrays or BarArrays to BarArrays.

    Timestamps in s, us or ns are converted to ms (the unit is read from their magnitude).
    Without a ``timestamp`` column the ``timeframe`` is required and the bars are numbered
    ``i * timeframe`` from the epoch, so that annualisation never guesses the bar interval.

    Raises
    ------
    InvalidInputError
        If a column is missing, there are no bars, the timestamps are not dates in any unit, or
        there are no timestamps and no ``timeframe``.
    """
    if isinstance(bars, BarArrays):
        return bars
    cols: dict[str, np.ndarray] = {}
    if hasattr(bars, "column_names"):
        names = list(bars.column_names)
    elif hasattr(bars, "keys"):
        names = list(bars.keys())
    else:
        raise InvalidInputError(
            "bars",
            f"cannot read bars from {type(bars).__name__}",
            allowed="pyarrow table, pandas DataFrame, mapping of arrays",
        )
    for name in _COLUMNS:
        if name not in names:
            if name in ("timestamp", "volume") and "close" in names:
                continue
            raise InvalidInputError("bars", f"missing column {name!r}", allowed=_COLUMNS)
        col = bars[name]
        if hasattr(col, "to_numpy"):
            col = col.to_numpy()
        cols[name] = np.asarray(col)
    n = cols["close"].shape[0]
    if n == 0:
        raise InvalidInputError("bars", "no bars", allowed=">= 1 bar")
    ts = cols.get("timestamp")
    if ts is not None:
        ts = timestamps_to_ms(ts, field="bars.timestamp")
    elif timeframe is None:
        raise InvalidInputError(
            "timeframe",
            "the bars have no timestamps, so the bar interval must be given",
            allowed=TIMEFRAMES,
        )
    else:
        ts = np.arange(n, dtype=np.int64) * timeframe_to_ms(timeframe)
    out = [ts]
    for name in _COLUMNS[1:]:
        arr = cols.get(name)
        if arr is None:
            arr = np.zeros(n)
        out.append(np.ascontiguousarray(arr, dtype=np.float64))
    return BarArrays(*out)


def data_fingerprint(bars: BarArrays) -> str:
    """Return a short hash of the bars' content (part of the study key)."""
    import hashlib

    h = hashlib.blake2b(digest_size=16)
    for arr in bars:
        h.update(np.ascontiguousarray(arr).view(np.uint8).data)
    return h.hexdigest()


@dataclass(frozen=True)
class TrialConfig:
    """Everything fixed across the trials of a study (pickled once into each task)."""

    sim: SimConfig
    periods_per_year: float
    objective: Objective
    result_filter: ResultFilter = field(default_factory=ResultFilter)


@dataclass
class TrialResult:
    """The outcome of one trial: ``status`` is succeeded, failed (with ``error``) or rejected."""

    trial_key: str
    params: Params
    metrics: dict[str, float] | None
    value: float | None
    status: str
    error: str | None = None
    duration_s: float = 0.0
    node: str | None = None
    reused: bool = False

    def same_outcome(self, other: TrialResult) -> bool:
        """Return whether two results have the same key, status, metrics and value (NaN == NaN)."""

        def eq(a: Any, b: Any) -> bool:
            if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
                return True
            return bool(a == b)

        if (self.trial_key, self.status) != (other.trial_key, other.status):
            return False
        if (self.metrics is None) != (other.metrics is None) or not eq(self.value, other.value):
            return False
        if self.metrics is None or other.metrics is None:
            return True
        return self.metrics.keys() == other.metrics.keys() and all(
            eq(self.metrics[k], other.metrics[k]) for k in self.metrics
        )


# ---------------------------------------------------------------------------- the strategy API


def strategy_name(strategy: Strategy) -> str:
    """Return a strategy's registered name (its ``name`` attribute, else the class name)."""
    return strategy.name or type(strategy).__name__


def declared_params(strategy: Strategy) -> dict[str, Param]:
    """Return the strategy's declared parameters as ``{name: Param}``."""
    return strategy.param_map()


def param_domain(param: Param) -> tuple[Any, Any, tuple[Any, ...] | None]:
    """Return ``(low, high, choices)`` of a declared parameter (None where not declared)."""
    return param.low, param.high, tuple(param.choices) if param.choices else None


# -------------------------------------------------------------------- batch (indicator reuse)

#: Bytes of indicator arrays one batch may keep for its later trials (per worker process).
REUSE_BYTES = DEFAULT_MAX_BYTES


def _rank_key(value: Any) -> tuple[int, Any]:
    # numbers sort by value; anything else (choices) after them, by its text
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (0, value)
    return (1, repr(value))


def plan_batches(
    trials: Sequence[Params], n_batches: int, order: Sequence[str] = ()
) -> list[list[Params]]:
    """Split ``trials`` into ``n_batches`` batches of near-equal size, neighbours together.

    Trials are ordered along a Z-order (Morton) curve over each parameter's rank, so that a
    batch covers a compact block of the space: a block of ``a x b`` trials of a two-parameter
    grid needs ``a + b`` indicator arrays instead of up to one or two per trial, which is what
    the batch adapters reuse.  With ``order`` (a strategy's ``sweep_order``) they are sorted by
    those parameters instead, outermost first: the strategy says which parameters its costly
    indicators depend on, so a batch holds whole runs of trials that share them.  Only the
    grouping changes; every trial's result is the same.
    """
    items = list(trials)
    n_batches = max(1, min(n_batches, len(items)))
    if n_batches == 1:
        return [items] if items else []
    names = tuple(order)
    if names:
        ordered = sorted(items, key=lambda p: tuple(_rank_key(p.get(n)) for n in names))
    else:
        ordered = z_order(items)
    base, extra = divmod(len(ordered), n_batches)
    out: list[list[Params]] = []
    start = 0
    for i in range(n_batches):
        stop = start + base + (1 if i < extra else 0)
        out.append(ordered[start:stop])
        start = stop
    return out


def z_order(trials: Sequence[Params]) -> list[Params]:
    """Return ``trials`` along a Z-order (Morton) curve over each parameter's rank."""
    items = list(trials)
    if not items:
        return items
    names = sorted({k for p in items for k in p})
    ranks: list[dict[Any, int]] = []
    for name in names:
        values = sorted({repr(p.get(name)): p.get(name) for p in items}.values(), key=_rank_key)
        ranks.append({repr(v): i for i, v in enumerate(values)})
    bits = max(1, max(len(r) for r in ranks).bit_length())

    def morton(p: Params) -> int:
        coords = [r[repr(p.get(name))] for name, r in zip(names, ranks, strict=True)]
        code = 0
        for b in range(bits - 1, -1, -1):
            for c in coords:
                code = (code << 1) | ((c >> b) & 1)
        return code

    return sorted(items, key=morton)


# ------------------------------------------------------------------------------- the runner


def run_trials(
    batch: Sequence[Params],
    bars: BarArrays,
    strategy: Strategy,
    config: TrialConfig,
) -> list[TrialResult]:
    """Evaluate ``batch`` serially on ``bars``; one result per parameter set, in order.

    Each trial is the backtest ``co.backtest`` runs: the strategy's signals and stops reach the
    engine through :func:`~cryptoorchestrator.platform.backtest.evaluate.engine_inputs`, and
    :func:`~cryptoorchestrator.platform.backtest.evaluate.simulate_stats` returns the engine's
    statistics without its records, so a trial's metrics equal a backtest's with the same
    parameters, bars and ``SimConfig``, float for float.  A trial whose parameters are
    rejected or whose strategy code raises is returned as failed with its error; the other
    trials go on.  Arrays may be read-only (Ray's object store).
    """
    results: list[TrialResult] = []
    if not batch:
        return results
    validated: list[Params | BaseException] = []
    for params in batch:
        try:
            validated.append(strategy.validate_params(params))
        except Exception as exc:
            validated.append(exc)
    if getattr(strategy, "stateful_signals", False):
        # signals that keep state from call to call must compute every call themselves
        return _run_batch(batch, validated, bars, bars, strategy, config)
    order = sweep_permutation(strategy, validated)
    batch = [batch[i] for i in order]
    validated = [validated[i] for i in order]
    # The batch's trials share indicators through the strategy API's cache.
    with indicator_cache(REUSE_BYTES) as cache:
        ran = _run_batch(batch, validated, bars, cache.trust_bars(bars), strategy, config)
    out: list[TrialResult] = [ran[0]] * len(ran)
    for i, result in zip(order, ran, strict=True):
        out[i] = result
    return out


def sweep_permutation(strategy: Strategy, validated: Sequence[Params | BaseException]) -> list[int]:
    """Return the order to evaluate ``validated`` in: by ``strategy.sweep_order``, stable.

    Trials whose parameters failed validation keep their place at the end.
    """
    names = tuple(getattr(strategy, "sweep_order", ()) or ())
    index = list(range(len(validated)))
    if not names:
        return index

    def key(i: int) -> tuple[Any, ...]:
        p = validated[i]
        if isinstance(p, BaseException):
            return (1,)
        return (0, *(_rank_key(p.get(name)) for name in names))

    return sorted(index, key=key)


def _run_batch(
    batch: Sequence[Params],
    validated: Sequence[Params | BaseException],
    bars: BarArrays,
    trusted: BarArrays,
    strategy: Strategy,
    config: TrialConfig,
) -> list[TrialResult]:
    """Evaluate the trials, the strategy seeing ``trusted`` bars, the engine ``bars``."""
    results: list[TrialResult] = []
    sim = config.sim
    for params, full in zip(batch, validated, strict=True):
        key = trial_key(params)
        t0 = time.perf_counter()
        if isinstance(full, BaseException):
            results.append(
                TrialResult(
                    key, dict(params), None, None, FAILED, _describe(full), time.perf_counter() - t0
                )
            )
            continue
        try:
            sigs = signals_in_batch(strategy, trusted, full, bars)
            # the statistics alone (no records, no equity curve): all the metrics read
            stats = simulate_stats(engine_inputs(strategy, sigs, bars, sim), sim)
            metrics = metrics_from_stats(stats, sim.init_cash, config.periods_per_year)
            value = config.objective.value(metrics)
        except Exception as exc:
            results.append(
                TrialResult(
                    key, dict(params), None, None, FAILED, _describe(exc), time.perf_counter() - t0
                )
            )
            continue
        reason = config.result_filter.reason(metrics)
        status = OK if reason is None else REJECTED
        results.append(
            TrialResult(key, dict(params), metrics, value, status, reason, time.perf_counter() - t0)
        )
    return results


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    if not isinstance(exc, InvalidInputError | StrategyError):
        # An unexpected error: keep where it came from, the last frames are enough.
        tb = "".join(traceback.format_exception(exc)[-3:])
        text = f"{text}\n{tb}"
    return text[:4000]


def best_of(results: Sequence[TrialResult], objective: Objective) -> TrialResult | None:
    """Return the succeeded trial with the best finite value (ties: the earliest trial)."""
    best: TrialResult | None = None
    for r in results:
        if r.status != OK or r.value is None:
            continue
        if best is None or objective.is_better(r.value, best.value):
            best = r
    return best
