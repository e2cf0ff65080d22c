"""Evaluating a batch of trials serially in-process: the unit of work of a sweep task.

:func:`run_trials` is what each Ray task calls (``cluster/optimize.py`` is a thin shell around it)
and what the serial reference run calls, so the two agree bit for bit.  Within a batch, indicator
arrays are computed once per distinct period (``indicators.sma_batch``) when a batch adapter is
registered for the strategy; the adapter is checked once per process against the strategy's own
``signals`` and is dropped (with a warning) if they differ, so reuse can never change a result.
"""

from __future__ import annotations

import logging
import math
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from cryptoorchestrator.platform.backtest.engine import SimConfig, simulate
from cryptoorchestrator.platform.backtest.metrics import metrics_from_stats
from cryptoorchestrator.platform.errors import InvalidInputError, StrategyError
from cryptoorchestrator.platform.optimize.objective import Objective, ResultFilter
from cryptoorchestrator.platform.optimize.space import Params, trial_key

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


def bars_to_arrays(bars: Any) -> BarArrays:
    """Convert a pyarrow table, pandas DataFrame, mapping of arrays or BarArrays to BarArrays.

    Raises
    ------
    InvalidInputError
        If a column is missing or there are no bars.
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
    if ts is None:
        ts = np.arange(n, dtype=np.int64)
    elif np.issubdtype(ts.dtype, np.datetime64):
        ts = ts.astype("datetime64[ms]").astype(np.int64)
    out = [np.ascontiguousarray(ts, dtype=np.int64)]
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


class Signals(NamedTuple):
    """The four signal arrays the engine takes (None: never)."""

    long_entries: np.ndarray | None
    long_exits: np.ndarray | None
    short_entries: np.ndarray | None = None
    short_exits: np.ndarray | None = None


def strategy_name(strategy: Any) -> str:
    """Return a strategy's registered name (its ``name`` attribute, else the class name)."""
    name = getattr(strategy, "name", None)
    return str(name) if name else type(strategy).__name__


def declared_params(strategy: Any) -> dict[str, Any]:
    """Return the strategy's declared parameters as ``{name: Param}``."""
    decl = getattr(strategy, "params", None)
    if decl is None:
        decl = getattr(strategy, "parameters", None)
    if callable(decl):
        decl = decl()
    if decl is None:
        return {}
    if isinstance(decl, Mapping):
        return dict(decl)
    return {p.name: p for p in decl}


def param_domain(param: Any) -> tuple[Any, Any, tuple[Any, ...] | None]:
    """Return ``(low, high, choices)`` of a declared parameter (None where not declared)."""
    choices = getattr(param, "choices", None)
    low = getattr(param, "low", getattr(param, "min", None))
    high = getattr(param, "high", getattr(param, "max", None))
    rng = getattr(param, "range", None)
    if rng is not None and low is None and high is None:
        low, high = rng[0], rng[1]
    return low, high, tuple(choices) if choices else None


def validate_trial_params(strategy: Any, params: Mapping[str, Any]) -> Params:
    """Return the full parameter dict the strategy runs with (defaults filled in).

    Raises
    ------
    InvalidInputError
        If the strategy rejects the parameters.
    """
    validate = getattr(strategy, "validate_params", None)
    if callable(validate):
        validated = validate(dict(params))
        return dict(validated) if validated is not None else dict(params)
    return dict(params)


def strategy_signals(strategy: Any, bars: BarArrays, params: Params) -> Signals:
    """Run the strategy's ``signals`` inside the guard and normalise what it returns.

    Raises
    ------
    StrategyError
        If the strategy raises.
    """
    try:
        out = strategy.signals(bars, params)
    except StrategyError:
        raise
    except Exception as exc:
        raise StrategyError(strategy_name(strategy), params, exc) from exc
    return _as_signals(out)


def _as_signals(out: Any) -> Signals:
    if isinstance(out, Signals):
        return out
    get = (lambda k: out.get(k)) if isinstance(out, Mapping) else (lambda k: getattr(out, k, None))
    le = get("long_entries")
    if le is None:
        le = get("entries")
    if le is not None or get("long_exits") is not None or get("exits") is not None:
        lx = get("long_exits")
        if lx is None:
            lx = get("exits")
        return Signals(le, lx, get("short_entries"), get("short_exits"))
    parts = tuple(out)
    return Signals(*parts[:4])


# -------------------------------------------------------------------- batch (indicator reuse)

BatchAdapter = Callable[[BarArrays, Sequence[Params]], Iterator[Signals]]


#: Memory for one batch's indicator table; beyond it the batch is served in chunks.
_TABLE_BYTES = 64 * 2**20

#: Scratch buffers kept from batch to batch (see :func:`keep_scratch`), by name.
_SCRATCH: dict[str, np.ndarray] = {}
_KEEP_SCRATCH = [False]


def keep_scratch() -> None:
    """Keep batch adapters' scratch buffers in this process from one batch to the next.

    For processes that run batch after batch (Ray workers): a new 64 MB indicator table per
    batch is fresh memory for the kernel to fault in and zero, 30-150 ms of system time on a
    1M-bar batch when its pages were reclaimed meanwhile.  Off by default, so a driver or an
    API process that optimises once does not hold the memory afterwards.
    """
    _KEEP_SCRATCH[0] = True


def _scratch(name: str, shape: tuple[int, ...], dtype: Any, reserve_bytes: int = 0) -> np.ndarray:
    """Return an uninitialised buffer of ``shape``: the kept one when it is big enough.

    A kept buffer is made at least ``reserve_bytes`` large and written once when it is made, so
    its pages are the process's from then on: a worker warmed up on a small study then runs a
    large one without faulting in (and the kernel zeroing, or compacting for huge pages) a new
    table in its first batch, which cost every worker 0.1-0.2 s of system time at once on a
    1M-bar study, so two workers ran their first batch 20-40 % slower than one.
    """
    size = int(np.prod(shape))
    buf = _SCRATCH.get(name)
    if buf is None or buf.dtype != dtype or buf.size < size:
        if _KEEP_SCRATCH[0]:
            itemsize = np.dtype(dtype).itemsize
            buf = np.empty(max(size, reserve_bytes // itemsize), dtype=dtype)
            buf.fill(0)  # its pages now, not in a batch
            _SCRATCH[name] = buf
        else:
            buf = np.empty(size, dtype=dtype)
    return buf[:size].reshape(shape)


def _sma_cross_batch(bars: BarArrays, batch: Sequence[Params]) -> Iterator[Signals]:
    """Signals of an SMA cross for every trial, each SMA period computed once per chunk.

    Consecutive trials are served from one table of their distinct periods (``sma_batch``, one
    pass), written into a buffer reused from chunk to chunk; a chunk holds as many trials as
    fit ``_TABLE_BYTES`` of periods, which bounds a worker's memory whatever the batch size.
    Batches come in Z-order (:func:`plan_batches`), so neighbouring trials share periods.
    Every trial's signals are written into the same two bool buffers: a trial's arrays are
    valid until the next trial's are asked for (:func:`run_trials` simulates in between).
    """
    from cryptoorchestrator.indicators import crossings, sma_batch

    n = len(bars)
    max_rows = max(2, min(64, _TABLE_BYTES // max(8 * n, 1)))
    pairs = [(int(p["fast"]), int(p["slow"])) for p in batch]
    buf: np.ndarray | None = None
    cross = _scratch("crossings", (2, n), np.bool_)
    above, below = cross[0], cross[1]
    i = 0
    while i < len(pairs):
        chunk: set[int] = set()
        j = i
        while j < len(pairs):
            grown = chunk | set(pairs[j])
            if chunk and len(grown) > max_rows:
                break
            chunk = grown
            j += 1
        periods = sorted(chunk)
        if buf is None:
            buf = _scratch(
                "sma_table",
                (min(max_rows, 2 * len(pairs)), n),
                np.float64,
                reserve_bytes=_TABLE_BYTES,
            )
        table = sma_batch(bars.close, periods, out=buf[: len(periods)])
        row = {p: r for r, p in enumerate(periods)}
        for f, sl in pairs[i:j]:
            fast, slow = table[row[f]], table[row[sl]]
            yield Signals(*crossings(fast, slow, out=(above, below)), None, None)
        i = j


#: Batch adapters by strategy name; each is verified against the strategy before use.
BATCH_ADAPTERS: dict[str, BatchAdapter] = {"sma_cross": _sma_cross_batch}
_VERIFIED: dict[tuple[str, str], bool] = {}


def _signals_equal(a: Signals, b: Signals, n: int) -> bool:
    for x, y in zip(a, b, strict=True):
        xa = np.zeros(n, dtype=np.bool_) if x is None else np.asarray(x, dtype=np.bool_).ravel()
        ya = np.zeros(n, dtype=np.bool_) if y is None else np.asarray(y, dtype=np.bool_).ravel()
        if xa.shape != ya.shape or not np.array_equal(xa, ya):
            return False
    return True


def _adapter_for(strategy: Any, bars: BarArrays, sample: Params) -> BatchAdapter | None:
    name = strategy_name(strategy)
    adapter = BATCH_ADAPTERS.get(name)
    if adapter is None or getattr(strategy, "stateful_signals", False):
        return None
    key = (f"{type(strategy).__module__}.{type(strategy).__qualname__}", name)
    ok = _VERIFIED.get(key)
    if ok is None:
        try:
            mine = next(adapter(bars, [sample]))
            theirs = strategy_signals(strategy, bars, sample)
            ok = _signals_equal(mine, theirs, len(bars))
        except Exception:  # the adapter does not fit this strategy: use the strategy itself
            ok = False
        if not ok:
            log.warning(
                "batch adapter for %r differs from the strategy; not reusing indicators", name
            )
        _VERIFIED[key] = ok
    return adapter if ok else None


def _rank_key(value: Any) -> tuple[int, Any]:
    # numbers sort by value; anything else (choices) after them, by its text
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (0, value)
    return (1, repr(value))


def plan_batches(trials: Sequence[Params], n_batches: int) -> list[list[Params]]:
    """Split ``trials`` into ``n_batches`` batches of near-equal size, neighbours together.

    Trials are ordered along a Z-order (Morton) curve over each parameter's rank, so that a
    batch covers a compact block of the space: a block of ``a x b`` trials of a two-parameter
    grid needs ``a + b`` indicator arrays instead of up to one or two per trial, which is what
    the batch adapters reuse.  Only the grouping changes; every trial's result is the same.
    """
    items = list(trials)
    n_batches = max(1, min(n_batches, len(items)))
    if n_batches == 1:
        return [items] if items else []
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
    strategy: Any,
    config: TrialConfig,
) -> list[TrialResult]:
    """Evaluate ``batch`` serially on ``bars``; one result per parameter set, in order.

    A trial whose parameters are rejected or whose strategy code raises is returned as failed
    with its error; the other trials go on.  Arrays may be read-only (Ray's object store).
    """
    results: list[TrialResult] = []
    if not batch:
        return results
    validated: list[Params | BaseException] = []
    for params in batch:
        try:
            validated.append(validate_trial_params(strategy, params))
        except Exception as exc:
            validated.append(exc)
    good = [p for p in validated if not isinstance(p, BaseException)]
    adapter = _adapter_for(strategy, bars, good[0]) if good else None
    batch_sigs = adapter(bars, good) if adapter is not None else None
    empty = np.empty(0)
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
            sigs = (
                next(batch_sigs)
                if batch_sigs is not None
                else strategy_signals(strategy, bars, full)
            )
            out = simulate(
                bars.open, bars.high, bars.low, bars.close, *sigs, config=sim, equity_out=empty
            )
            metrics = metrics_from_stats(out.stats, sim.init_cash, config.periods_per_year)
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
