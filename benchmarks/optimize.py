"""Benchmark: every built-in strategy's sweep through co.optimize on Ray vs vectorbt broadcasting.

For each strategy of ``strategies/registry.py`` (or ``--strategies``), a grid is swept by
``co.optimize`` on a local Ray with 2 CPUs over ``--bars`` bars, and its vectorbt equivalent
(``Portfolio.from_signals`` with the matching indicators, stops via ``sl_stop``/``sl_trail``) is
timed on ``--vbt-bars`` bars and scaled linearly to ``--bars``, to bound vectorbt's memory; the
output prints trials/s and the ratio, and says where vectorbt's equivalent is not exact.  Also
printed: our serial ms/trial with and without indicator reuse, and the CPU ms/trial of the
full kernel against the stats-only sweep kernel that trials run (same inputs, same run).
``--trials 10000 --bars 200000`` sweeps 10,000 trials per strategy instead (vectorbt timed on
``--vbt-trials`` of them and scaled to 10,000).  ``--scaling`` adds the SMA-cross runs below (1
vs 2 workers, Ray overhead, peak memory).  Results are merged into
``benchmarks/results/optimize.json``.  Run:
``.venv/bin/python benchmarks/optimize.py [--bars N] [--vbt-bars N] [--trials 10000] ...``.

With ``--scaling --runs N`` those three timings are taken N times, interleaved (2-CPU Ray, 1-CPU
Ray, serial) so that load from other processes hits all three alike; figures are medians, with
the spread (min, max) beside them.  vectorbt runs after a warm-up on a small slice so that its
numba compilation is not counted against it (ours is warmed the same way).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "unit" / "optimize"))

SPACE = {"fast": range(5, 55, 5), "slow": range(20, 210, 10)}


class PeakRss:
    """Sample the summed RSS of this process and all its descendants (Ray workers)."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for p in [me, *me.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    continue
            self.peak = max(self.peak, total)
            time.sleep(0.05)

    def __enter__(self) -> PeakRss:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()


def _busy_ticks() -> int:
    """Return the machine's busy CPU time so far, in clock ticks (all CPUs, from /proc/stat)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields[:8]) - idle


def _tree_cpu_s() -> float:
    """Return the CPU seconds used so far by this process and its descendants (Ray's too)."""
    total = 0.0
    me = psutil.Process()
    for p in [me, *me.children(recursive=True)]:
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system
    return total


class ForeignCpu:
    """CPU seconds that processes outside this benchmark's tree used during a timed region.

    Another process's work takes a core from the 2-CPU run but mostly fits on the core the
    1-CPU run leaves idle, so it lowers the measured scaling; it is reported beside each run.
    """

    def __init__(self) -> None:
        self.seconds = 0.0
        self._tick = os.sysconf("SC_CLK_TCK")

    def __enter__(self) -> ForeignCpu:
        self._busy0, self._ours0 = _busy_ticks(), _tree_cpu_s()
        return self

    def __exit__(self, *exc: object) -> None:
        busy = (_busy_ticks() - self._busy0) / self._tick
        self.seconds = max(0.0, busy - (_tree_cpu_s() - self._ours0))


def wait_for_quiet(max_wait_s: float, busy_share: float = 0.15) -> float:
    """Wait (at most ``max_wait_s``) until the machine's CPUs were < ``busy_share`` busy for 0.5 s.

    Our own Ray processes idle at a few percent.  Returns the seconds waited.
    """
    tick, ncpu = os.sysconf("SC_CLK_TCK"), os.cpu_count() or 1
    t0 = time.monotonic()
    while True:
        b0 = _busy_ticks()
        time.sleep(0.5)
        share = (_busy_ticks() - b0) / tick / (0.5 * ncpu)
        if share < busy_share or time.monotonic() - t0 >= max_wait_s:
            return time.monotonic() - t0


QUIET_WAIT_S = 20.0


def strategy() -> Any:
    try:
        from cryptoorchestrator.strategies.registry import get_strategy

        return get_strategy("sma_cross")
    except ImportError:  # the registry has not landed yet: the tests' equivalent strategy
        from _strategy import SmaCross

        return SmaCross()


def run_ours(
    bars: dict[str, np.ndarray], cpus: int, executor: str, quiet_wait_s: float = QUIET_WAIT_S
) -> tuple[float, Any, float, float]:
    """Return the timed optimize() call's seconds and result, the foreign CPU-s and the wait."""
    import ray

    from cryptoorchestrator.cluster.optimize import optimize

    if executor == "ray":
        ray.init(
            num_cpus=cpus, include_dashboard=False, log_to_driver=False, configure_logging=False
        )
        import _strategy
        from ray import cloudpickle

        cloudpickle.register_pickle_by_value(_strategy)
    try:
        kw: dict[str, Any] = {
            "space": SPACE,
            "constraint": "fast < slow",
            "store": False,
            "progress": False,
            "executor": executor,
            "fee_bps": 10.0,
        }
        optimize(strategy(), {k: v[:5000] for k, v in bars.items()}, **kw)  # JIT + workers up
        waited = wait_for_quiet(quiet_wait_s)
        with ForeignCpu() as foreign:
            t0 = time.perf_counter()
            res = optimize(strategy(), bars, **kw)
            elapsed = time.perf_counter() - t0
        return elapsed, res, foreign.seconds, waited
    finally:
        if executor == "ray":
            ray.shutdown()


def run_vectorbt(bars: dict[str, np.ndarray]) -> float:
    _vectorbt({k: v[:2000] for k, v in bars.items()})  # numba compiles here, not in the timing
    return _vectorbt(bars)


def _vectorbt(bars: dict[str, np.ndarray]) -> float:
    import pandas as pd
    import vectorbt as vbt

    close = pd.Series(bars["close"])
    fast_w = [f for f in SPACE["fast"] for s in SPACE["slow"] if f < s]
    slow_w = [s for f in SPACE["fast"] for s in SPACE["slow"] if f < s]
    t0 = time.perf_counter()
    fast = vbt.MA.run(close, fast_w, short_name="fast", per_column=False)
    slow = vbt.MA.run(close, slow_w, short_name="slow", per_column=False)
    fast.ma.columns = slow.ma.columns = range(len(fast_w))
    entries = fast.ma_crossed_above(slow)
    exits = fast.ma_crossed_below(slow)
    pf = vbt.Portfolio.from_signals(close, entries, exits, fees=0.001, freq="1h")
    pf.sharpe_ratio()
    return time.perf_counter() - t0


# ------------------------------------------------------------- every strategy against vectorbt

#: The grid each built-in strategy is swept over in the per-strategy comparison.
STRATEGY_SPACES: dict[str, tuple[dict[str, list[Any]], str | None]] = {
    "sma_cross": ({"fast": list(range(5, 55, 5)), "slow": list(range(20, 210, 10))}, "fast < slow"),
    "ema_cross": (
        {"fast": list(range(5, 55, 5)), "slow": list(range(20, 210, 10)), "short": [False]},
        "fast < slow",
    ),
    "rsi_reversion": (
        {
            "period": [7, 10, 14, 21, 28],
            "lower": [20.0, 25.0, 30.0, 35.0],
            "upper": [65.0, 70.0, 75.0, 80.0],
        },
        None,
    ),
    "macd_trend": (
        {"fast": [6, 8, 10, 12, 14, 16], "slow": [20, 26, 32, 40], "signal": [5, 7, 9, 11]},
        "fast < slow",
    ),
    "bollinger_breakout": (
        {"period": list(range(10, 55, 5)), "nbdev": [1.5, 2.0, 2.5, 3.0]},
        None,
    ),
    "atr_stops": (
        {
            "ema_period": [20, 50, 100, 200],
            "atr_period": [7, 14, 21],
            "atr_mult": [1.5, 2.0, 3.0],
            "tp_mult": [0.0],
            "trail": [True, False],
        },
        None,
    ),
}

#: Grids of exactly 10,000 trials per strategy, for ``--trials 10000``.
BIG_SPACES: dict[str, tuple[dict[str, list[Any]], str | None]] = {
    "sma_cross": ({"fast": list(range(2, 102)), "slow": list(range(102, 202))}, None),
    "ema_cross": (
        {"fast": list(range(2, 102)), "slow": list(range(102, 202)), "short": [False]},
        None,
    ),
    "rsi_reversion": (
        {
            "period": list(range(2, 52)),
            "lower": [float(x) for x in range(10, 50, 2)],
            "upper": [float(x) for x in range(60, 70)],
        },
        None,
    ),
    "macd_trend": (
        {"fast": list(range(2, 22)), "slow": list(range(22, 72)), "signal": list(range(2, 12))},
        None,
    ),
    "bollinger_breakout": (
        {"period": list(range(2, 252)), "nbdev": [round(0.5 + 0.1 * i, 1) for i in range(40)]},
        None,
    ),
    "atr_stops": (
        {
            "ema_period": list(range(5, 105)),
            "atr_period": [7, 14, 21, 28, 35],
            "atr_mult": [float(x) for x in range(1, 11)],
            "tp_mult": [0.0],
            "trail": [True, False],
        },
        None,
    ),
}

#: How the vectorbt equivalent differs from our strategy (the timing compares the same work).
VBT_NOTES = {
    "sma_cross": "exact signals (vbt.MA crossings); vbt fills at the close, ours at the next open",
    "ema_cross": "approximate: vbt's EWM is not TA-Lib's SMA-seeded EMA (same work per trial)",
    "rsi_reversion": "approximate: vbt.RSI(ewm=True) smooths with 2/(n+1), not Wilder's 1/n; "
    "10% stop via sl_stop",
    "macd_trend": "approximate: vbt.MACD(ewm) seeds its EMAs unlike TA-Lib's MACD",
    "bollinger_breakout": "exact bands up to vbt's float rounding (vbt.BBANDS, population std)",
    "atr_stops": "approximate: vbt.ATR(ewm) is not Wilder's ATR; per-bar stop fractions via "
    "sl_stop (sl_trail for trailing); vbt checks stops against high/low as ours does",
}


def grid_trials(space: dict[str, list[Any]], constraint: str | None) -> list[dict[str, Any]]:
    """Return the cartesian product of ``space`` that satisfies ``constraint`` (``fast < slow``)."""
    import itertools

    names = list(space)
    out = [dict(zip(names, v, strict=True)) for v in itertools.product(*space.values())]
    if constraint == "fast < slow":
        out = [p for p in out if p["fast"] < p["slow"]]
    return out


def make_bars(n: int, seed: int = 42) -> dict[str, np.ndarray]:
    """Return ``n`` random-walk bars one minute apart (hourly bars would run past 2100)."""
    from _strategy import random_bars

    bars = random_bars(n, seed=seed)
    bars["timestamp"] = 1_600_000_000_000 + np.arange(n, dtype=np.int64) * 60_000
    return bars


def _frame(values: Any, k: int) -> Any:
    import pandas as pd

    return pd.DataFrame(np.asarray(values), columns=range(k))


def vectorbt_sweep(name: str, bars: dict[str, np.ndarray], trials: list[dict[str, Any]]) -> float:
    """Run the vectorbt equivalent of ``name`` over ``trials`` broadcast; return the seconds."""
    import pandas as pd
    import vectorbt as vbt

    k = len(trials)
    close = pd.Series(bars["close"])
    col = {key: [p[key] for p in trials] for key in trials[0]}
    n = len(close)

    def row(values: list[Any]) -> Any:
        return _frame(np.broadcast_to(np.asarray(values, dtype=np.float64), (n, k)), k)

    kw: dict[str, Any] = {"fees": 0.001, "freq": "1min"}
    t0 = time.perf_counter()
    if name in ("sma_cross", "ema_cross"):
        ewm = name == "ema_cross"
        fast = _frame(vbt.MA.run(close, col["fast"], ewm=ewm, per_column=False).ma.values, k)
        slow = _frame(vbt.MA.run(close, col["slow"], ewm=ewm, per_column=False).ma.values, k)
        entries, exits = fast.vbt.crossed_above(slow), fast.vbt.crossed_below(slow)
    elif name == "rsi_reversion":
        rsi = _frame(vbt.RSI.run(close, col["period"], ewm=True, per_column=False).rsi.values, k)
        entries = rsi.vbt.crossed_above(row(col["lower"]))
        exits = rsi.vbt.crossed_above(row(col["upper"]))
        kw["sl_stop"] = 0.10
    elif name == "macd_trend":
        m = vbt.MACD.run(
            close,
            col["fast"],
            col["slow"],
            col["signal"],
            macd_ewm=True,
            signal_ewm=True,
            per_column=False,
        )
        line, sig = _frame(m.macd.values, k), _frame(m.signal.values, k)
        entries = line.vbt.crossed_above(sig) & (line > 0)
        exits = line.vbt.crossed_below(sig)
    elif name == "bollinger_breakout":
        bb = vbt.BBANDS.run(close, col["period"], alpha=col["nbdev"], per_column=False)
        c = _frame(np.broadcast_to(bars["close"][:, None], (n, k)), k)
        entries = c.vbt.crossed_above(_frame(bb.upper.values, k))
        exits = c.vbt.crossed_below(_frame(bb.middle.values, k))
    elif name == "atr_stops":
        high, low = pd.Series(bars["high"]), pd.Series(bars["low"])
        trend = _frame(
            vbt.MA.run(close, col["ema_period"], ewm=True, per_column=False).ma.values, k
        )
        atr = vbt.ATR.run(high, low, close, col["atr_period"], per_column=False).atr.values
        dist = _frame(atr / bars["close"][:, None] * np.asarray(col["atr_mult"]), k)
        c = _frame(np.broadcast_to(bars["close"][:, None], (n, k)), k)
        entries, exits = c.vbt.crossed_above(trend), c.vbt.crossed_below(trend)
        kw.update(
            sl_stop=dist,
            sl_trail=_frame(np.broadcast_to(np.asarray(col["trail"]), (n, k)), k),
            open=pd.Series(bars["open"]),
            high=high,
            low=low,
        )
    else:
        raise ValueError(f"no vectorbt equivalent for {name!r}")
    pf = vbt.Portfolio.from_signals(close, entries, exits, **kw)
    pf.sharpe_ratio()
    return time.perf_counter() - t0


def vectorbt_per_trial_s(
    name: str, bars: dict[str, np.ndarray], trials: list[dict[str, Any]]
) -> float:
    """Return vectorbt's seconds per trial on ``bars`` (after a warm-up that compiles numba)."""
    vectorbt_sweep(name, {k: v[:2000] for k, v in bars.items()}, trials[:2])
    return vectorbt_sweep(name, bars, trials) / len(trials)


def ours_serial_per_trial_s(
    name: str, bars: dict[str, np.ndarray], trials: list[dict[str, Any]], reuse: bool
) -> float:
    """Return run_trials' CPU seconds per trial in this process, with or without reuse.

    CPU time of this single-threaded process rather than wall time: other processes on the
    machine then slow both variants alike instead of whichever happened to run under them.
    """
    from cryptoorchestrator.platform.backtest.engine import SimConfig
    from cryptoorchestrator.platform.optimize import trials as trials_mod
    from cryptoorchestrator.platform.optimize.objective import Objective
    from cryptoorchestrator.strategies.registry import get_strategy

    strat = get_strategy(name)
    arrays = trials_mod.bars_to_arrays(bars)
    config = trials_mod.TrialConfig(SimConfig(fee_bps=10.0), 525_600.0, Objective("sharpe"))
    batch = trials_mod.z_order([strat.validate_params(p) for p in trials])
    saved = trials_mod.REUSE_BYTES
    trials_mod.REUSE_BYTES = saved if reuse else 0
    try:
        trials_mod.run_trials(batch[:2], arrays.window(0, 2000), strat, config)  # numba
        t0 = time.process_time()
        trials_mod.run_trials(batch, arrays, strat, config)
        return (time.process_time() - t0) / len(batch)
    finally:
        trials_mod.REUSE_BYTES = saved


def kernel_cpu_ms(
    name: str, bars: dict[str, np.ndarray], trials: list[dict[str, Any]], rounds: int = 3
) -> tuple[float, float]:
    """Return the CPU ms per trial of the full kernel and of the stats-only sweep kernel.

    Both simulate the same trials' engine inputs (signals computed once, outside the timing),
    interleaved round by round so that load from other processes hits both alike; medians of
    ``rounds``.  The full kernel is what a trial ran before the sweep kernel
    (``simulate_inputs`` without an equity curve); the statistics are checked equal.
    """
    from cryptoorchestrator.platform.backtest.engine import SimConfig
    from cryptoorchestrator.platform.backtest.evaluate import (
        engine_inputs,
        simulate_inputs,
        simulate_stats,
    )
    from cryptoorchestrator.platform.optimize import trials as trials_mod
    from cryptoorchestrator.platform.strategy.base import run_signals
    from cryptoorchestrator.strategies.registry import get_strategy

    strat = get_strategy(name)
    arrays = trials_mod.bars_to_arrays(bars)
    sim = SimConfig(fee_bps=10.0)
    inputs = []
    for p in trials:
        checked = strat.validate_params(p)
        inputs.append(engine_inputs(strat, run_signals(strat, arrays, checked), arrays, sim))
    empty = np.empty(0)
    for inp in inputs[:1]:  # numba: load or compile both outside the timing
        simulate_inputs(inp, sim, equity_out=empty)
        simulate_stats(inp, sim)
    full: list[float] = []
    sweep: list[float] = []
    for _ in range(rounds):
        t0 = time.process_time()
        outs = [simulate_inputs(inp, sim, equity_out=empty).stats for inp in inputs]
        t1 = time.process_time()
        stats = [simulate_stats(inp, sim) for inp in inputs]
        t2 = time.process_time()
        full.append(1e3 * (t1 - t0) / len(inputs))
        sweep.append(1e3 * (t2 - t1) / len(inputs))
        assert all(np.array_equal(a, b, equal_nan=True) for a, b in zip(outs, stats, strict=True))
    return _median(full), _median(sweep)


def ours_ray_s(
    name: str,
    bars: dict[str, np.ndarray],
    space: dict[str, list[Any]],
    constraint: str | None,
    quiet_wait_s: float,
) -> tuple[float, int]:
    """Return the seconds and trial count of co.optimize on the running Ray (warmed first)."""
    from cryptoorchestrator.cluster.optimize import optimize

    kw: dict[str, Any] = {
        "constraint": constraint,
        "store": False,
        "progress": False,
        "executor": "ray",
        "fee_bps": 10.0,
    }
    small = {key: values[:2] for key, values in space.items()}
    optimize(name, {k: v[:5000] for k, v in bars.items()}, space=small, **kw)
    wait_for_quiet(quiet_wait_s)
    t0 = time.perf_counter()
    res = optimize(name, bars, space=space, **kw)
    elapsed = time.perf_counter() - t0
    assert all(t.status != "failed" for t in res.trials), name
    return elapsed, len(res.trials)


def run_strategies(args: argparse.Namespace) -> dict[str, Any]:
    """Time every built-in strategy's sweep (Ray, 2 CPUs) against its vectorbt equivalent."""
    import ray

    big = args.trials is not None
    spaces = BIG_SPACES if big else STRATEGY_SPACES
    names = args.strategies or list(spaces)
    bars = make_bars(args.bars)
    out: dict[str, Any] = {}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        for name in names:
            space, constraint = spaces[name]
            trials = grid_trials(space, constraint)
            if big:
                assert len(trials) == args.trials, (name, len(trials))
            t_ray, n = ours_ray_s(name, bars, space, constraint, args.quiet_wait)
            out[name] = {
                "trials": n,
                "bars": args.bars,
                "ours_ray2_s": t_ray,
                "ours_trials_per_s": n / t_ray,
            }
            print(
                f"{name}: ours {n} trials in {t_ray:.2f}s on Ray (2 CPUs): {n / t_ray:.1f} trials/s"
            )
    finally:
        ray.shutdown()
    for name in names:
        space, constraint = spaces[name]
        trials = grid_trials(space, constraint)
        row = out[name]
        if not big:
            # Serial, in this process: the same batch with and without indicator reuse.
            sub = trials[: args.serial_trials]
            row["serial_trials"] = len(sub)
            no_reuse: list[float] = []
            reuse: list[float] = []
            for _ in range(3):  # interleaved, medians
                no_reuse.append(1e3 * ours_serial_per_trial_s(name, bars, sub, False))
                reuse.append(1e3 * ours_serial_per_trial_s(name, bars, sub, True))
            row["serial_no_reuse_cpu_ms_per_trial"] = _median(no_reuse)
            row["serial_reuse_cpu_ms_per_trial"] = _median(reuse)
            full_ms, sweep_ms = kernel_cpu_ms(name, bars, trials[: args.kernel_trials])
            row["kernel_full_cpu_ms_per_trial"] = full_ms
            row["kernel_sweep_cpu_ms_per_trial"] = sweep_ms
            row["kernel_speedup"] = full_ms / sweep_ms
        # vectorbt: on fewer bars (or, for --trials, fewer trials) than ours to bound its memory;
        # its time per trial is scaled linearly, which favours it (its broadcast arrays grow
        # with both, and memory traffic with them).
        vb_bars = args.bars if big else min(args.vbt_bars, args.bars)
        vb_trials = trials if not big else trials[:: max(1, len(trials) // args.vbt_trials)]
        per_trial = vectorbt_per_trial_s(name, {k: v[:vb_bars] for k, v in bars.items()}, vb_trials)
        vbt_s = per_trial * args.bars / vb_bars * row["trials"]
        row.update(
            {
                "vectorbt_bars_measured": vb_bars,
                "vectorbt_trials_measured": len(vb_trials),
                "vectorbt_s_extrapolated": vbt_s,
                "vectorbt_trials_per_s": row["trials"] / vbt_s,
                "ratio_vs_vectorbt": vbt_s / row["ours_ray2_s"],
                "vectorbt_equivalence": VBT_NOTES[name],
            }
        )
        serial = (
            f"; serial CPU ms/trial no reuse {row['serial_no_reuse_cpu_ms_per_trial']:.2f} -> "
            f"reuse {row['serial_reuse_cpu_ms_per_trial']:.2f}; kernel CPU ms/trial full "
            f"{row['kernel_full_cpu_ms_per_trial']:.2f} -> stats-only "
            f"{row['kernel_sweep_cpu_ms_per_trial']:.2f} ({row['kernel_speedup']:.2f}x)"
            if not big
            else ""
        )
        print(
            f"{name:>18}: ours {row['ours_trials_per_s']:8.1f} trials/s, vectorbt "
            f"{row['vectorbt_trials_per_s']:7.3f} trials/s ({len(vb_trials)} trials on {vb_bars} "
            f"bars, scaled to {args.bars}): ratio {row['ratio_vs_vectorbt']:.0f}x{serial}"
        )
        print(f"{'':>20}vectorbt equivalent: {VBT_NOTES[name]}")
    return out


MEASURED = """\
Measured (wall clock, perf_counter), per run, in this order:
  ray2   co.optimize(...) on a local Ray started with num_cpus=2 (two worker processes), store
         off; before timing, a 5,000-bar study on the same Ray starts and warms the workers
         (imports, numba) and the machine is given up to --quiet-wait s to be idle.  The timed
         region is the whole call: fingerprinting and ray.put of the bars, batch sizing (a
         small batch timed in the driver), every task, collecting and ranking the results.
  ray1   the same on a fresh Ray with num_cpus=1 (one worker process).
  serial the same call with executor="serial": the 1-CPU plan's batches in this process.
scaling_1_to_2 = ray1 / ray2 per run (median and range); ray_overhead = ray1 / serial - 1.
Foreign CPU-s: CPU time used during the timed region by processes outside this benchmark.
Peak memory: summed RSS of this process and all descendants (driver, Ray, workers), sampled
every 50 ms during one more 2-CPU run (Ray start and warm-up included), kept out of the timed
runs because the sampling takes CPU from the workers."""


def _median(values: list[float]) -> float:
    return float(np.median(values))


def run_scaling(args: argparse.Namespace) -> dict[str, Any]:
    """The SMA-cross grid: Ray 2 CPUs vs 1 CPU vs serial, peak memory, and vectorbt."""
    print(MEASURED)
    bars = make_bars(args.bars)
    out: dict[str, Any] = {"bars": args.bars, "trials": 174, "runs": args.runs}
    t2s: list[float] = []
    t1s: list[float] = []
    tss: list[float] = []
    peaks: list[float] = []
    sizes: list[int] = []
    foreign: list[list[float]] = []
    for _ in range(args.runs):
        t2, res2, f2, w2 = run_ours(bars, 2, "ray", args.quiet_wait)
        t1, res1, f1, w1 = run_ours(bars, 1, "ray", args.quiet_wait)
        ts, ress, fs, ws = run_ours(bars, 1, "serial", args.quiet_wait)
        foreign.append([f2, f1, fs])
        assert all(a.same_outcome(b) for a, b in zip(res2.trials, ress.trials, strict=True))
        assert all(a.same_outcome(b) for a, b in zip(res1.trials, ress.trials, strict=True))
        assert res2.best == ress.best == res1.best
        t2s.append(t2)
        t1s.append(t1)
        tss.append(ts)
        sizes.append(res2.batch_size)
        print(
            f"run: ray2 {t2:.3f}s ray1 {t1:.3f}s serial {ts:.3f}s (scaling {t1 / t2:.3f}); "
            f"foreign CPU-s {f2:.3f}/{f1:.3f}/{fs:.3f}, "
            f"waited {w2:.1f}/{w1:.1f}/{ws:.1f}s for a quiet machine"
        )
    # Memory in a run of its own: the sampler's /proc walks every 50 ms took CPU from the two
    # workers in the timed 2-CPU runs only (the 1-CPU runs had a core to spare for it).
    with PeakRss() as mem2:
        tm, resm, _, _ = run_ours(bars, 2, "ray", args.quiet_wait)
    assert all(a.same_outcome(b) for a, b in zip(resm.trials, ress.trials, strict=True))
    peaks.append(mem2.peak / 1e9)
    print(f"memory run (2 CPUs, not in the timings): {tm:.3f}s peak {mem2.peak / 1e9:.2f}GB")
    vb_bars = {k: v[: args.vbt_bars] for k, v in bars.items()}
    with PeakRss() as memv:
        tv = run_vectorbt(vb_bars)
    n = len(res2.trials)
    t2, t1, ts = _median(t2s), _median(t1s), _median(tss)
    ours_tps = n / t2
    vbt_tps_norm = n / tv * args.vbt_bars / args.bars  # per-bar normalised to args.bars
    scalings = [a / b for a, b in zip(t1s, t2s, strict=True)]
    overheads = [a / b - 1.0 for a, b in zip(t1s, tss, strict=True)]
    out.update(
        {
            "ray_2cpu_s": t2,
            "ray_1cpu_s": t1,
            "serial_s": ts,
            "ray_2cpu_s_all": t2s,
            "ray_1cpu_s_all": t1s,
            "serial_s_all": tss,
            "batch_size": sizes[-1],
            "trials_per_s": ours_tps,
            "trials_per_s_range": [n / max(t2s), n / min(t2s)],
            "peak_rss_gb": max(peaks),
            "vectorbt_bars": args.vbt_bars,
            "vectorbt_s": tv,
            "vectorbt_trials_per_s_normalised": vbt_tps_norm,
            "vectorbt_peak_rss_gb": memv.peak / 1e9,
            "ratio_vs_vectorbt": ours_tps / vbt_tps_norm,
            "scaling_1_to_2": _median(scalings),
            "scaling_1_to_2_range": [min(scalings), max(scalings)],
            "ray_overhead": _median(overheads),
            "ray_overhead_range": [min(overheads), max(overheads)],
            "foreign_cpu_s_ray2_ray1_serial": foreign,
            "load_avg_1m_at_end": os.getloadavg()[0],
            "best": res2.best,
        }
    )
    for k, v in out.items():
        if isinstance(v, float):
            print(f"{k:>34}: {v:.4g}")
        elif isinstance(v, list) and v and isinstance(v[0], float):
            print(f"{k:>34}: {', '.join(f'{x:.4g}' for x in v)}")
        else:
            print(f"{k:>34}: {v}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bars", type=int, default=1_000_000)
    ap.add_argument("--vbt-bars", type=int, default=100_000, help="bars vectorbt is timed on")
    ap.add_argument(
        "--trials",
        type=int,
        default=None,
        choices=[10_000],
        help="sweep 10,000 trials per strategy (vectorbt timed on --vbt-trials of them)",
    )
    ap.add_argument("--vbt-trials", type=int, default=100)
    ap.add_argument("--serial-trials", type=int, default=60, help="trials of the serial timing")
    ap.add_argument(
        "--kernel-trials", type=int, default=20, help="trials of the full vs stats-only kernel"
    )
    ap.add_argument("--strategies", nargs="*", default=None, help="default: every built-in")
    ap.add_argument("--scaling", action="store_true", help="also the SMA-cross scaling runs")
    ap.add_argument("--runs", type=int, default=3, help="runs of the scaling section")
    ap.add_argument(
        "--quiet-wait",
        type=float,
        default=QUIET_WAIT_S,
        help="before each timing, wait up to this long for the CPUs to be < 15%% busy",
    )
    args = ap.parse_args()
    path = Path(__file__).resolve().parent / "results" / "optimize.json"
    results: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    key = f"sweep_{args.trials}_trials_{args.bars}_bars" if args.trials else "strategies"
    # rows of strategies run before (say, with --strategies) are kept, those run now replaced
    results[key] = {**results.get(key, {}), "bars": args.bars, **run_strategies(args)}
    if args.scaling:
        results["sma_cross_scaling"] = run_scaling(args)
    results["load_avg_1m_at_end"] = os.getloadavg()[0]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=str))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
