"""run_trials: serial batch evaluation, indicator reuse, failures, storage and resume."""

from __future__ import annotations

import _strategy
import numpy as np
import pytest
from _strategy import Exploding, SmaCross, random_arrays, trial_config

from cryptoorchestrator import indicators as ci
from cryptoorchestrator.platform.backtest.engine import SimConfig, simulate
from cryptoorchestrator.platform.backtest.metrics import metrics_from_stats
from cryptoorchestrator.platform.optimize import store
from cryptoorchestrator.platform.optimize import trials as trials_mod
from cryptoorchestrator.platform.optimize.objective import parse_objective
from cryptoorchestrator.platform.optimize.space import trial_key
from cryptoorchestrator.platform.optimize.trials import (
    FAILED,
    OK,
    REJECTED,
    TrialResult,
    run_trials,
)
from cryptoorchestrator.platform.strategy import indicators as ta
from cryptoorchestrator.platform.strategy.memo import memoised

BATCH = [{"fast": f, "slow": s} for f in (5, 10, 15) for s in (20, 40, 60)]


@pytest.fixture(scope="module")
def bars() -> trials_mod.BarArrays:
    return random_arrays(5000, seed=3)


def test_batch_equals_one_backtest_per_trial(bars: trials_mod.BarArrays) -> None:
    strat = SmaCross()
    results = run_trials(BATCH, bars, strat, trial_config())
    assert [r.params for r in results] == BATCH
    for r in results:
        sig = strat.signals(bars, r.params)
        out = simulate(
            bars.open,
            bars.high,
            bars.low,
            bars.close,
            sig.long_entries,
            sig.long_exits,
            config=SimConfig(fee_bps=10),
        )
        expected = metrics_from_stats(out.stats, 10_000.0, 8760.0)
        assert r.status == OK
        assert r.metrics == pytest.approx(expected, nan_ok=True, rel=0, abs=0)
        assert r.value == expected["sharpe"]


def test_indicator_reuse_is_used_and_matches(
    bars: trials_mod.BarArrays, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real = ci.sma

    def counting(x: np.ndarray, period: int = 30) -> np.ndarray:
        calls.append(period)
        return real(x, period)

    monkeypatch.setattr(ta, "sma", memoised(counting))
    monkeypatch.setattr(_strategy, "sma", ta.sma)
    fast = run_trials(BATCH, bars, SmaCross(), trial_config())
    # one computation per distinct period of the batch (its first result waits in probation
    # and the next request keeps it), not two per trial
    assert sorted(calls) == sorted({v for q in BATCH for v in q.values()})
    monkeypatch.setattr(trials_mod, "REUSE_BYTES", 0)
    slow = run_trials(BATCH, bars, SmaCross(), trial_config())
    assert len(calls) == 6 + 2 * len(BATCH)
    assert all(a.same_outcome(b) for a, b in zip(fast, slow, strict=True))


def test_read_only_arrays_are_accepted(bars: trials_mod.BarArrays) -> None:
    ro = []
    for a in bars:
        v = a.copy()
        v.flags.writeable = False
        ro.append(v)
    res = run_trials(BATCH[:2], trials_mod.BarArrays(*ro), SmaCross(), trial_config())
    ref = run_trials(BATCH[:2], bars, SmaCross(), trial_config())
    assert all(a.same_outcome(b) for a, b in zip(res, ref, strict=True))


def test_failures_and_rejections_are_recorded_and_the_batch_goes_on(
    bars: trials_mod.BarArrays,
) -> None:
    batch = [{"fast": 10, "slow": 40}, {"fast": 5, "slow": 40}, {"fast": 1, "slow": 40}]
    res = run_trials(batch, bars, Exploding(), trial_config(min_trades=10**6))
    assert res[0].status == FAILED
    assert "ZeroDivisionError" in (res[0].error or "")
    assert res[1].status == REJECTED
    assert "min_trades" in (res[1].error or "")
    assert res[2].status == FAILED
    assert "params.fast" in (res[2].error or "")


def test_store_resume_skips_finished_and_retries_failed(
    bars: trials_mod.BarArrays, settings: object
) -> None:
    from cryptoorchestrator.platform.storage.db import upgrade

    upgrade(settings)  # type: ignore[arg-type]
    kw = {
        "study_key": "k" * 64,
        "strategy": "sma_cross",
        "method": "grid",
        "objective": "sharpe",
        "space": {},
        "config": {},
    }
    run_id, done = store.open_run(settings, **kw)  # type: ignore[arg-type]
    assert done == {}
    res = run_trials(
        [{"fast": 10, "slow": 40}, {"fast": 5, "slow": 40}], bars, Exploding(), trial_config()
    )
    store.record_trials(settings, run_id, res)  # type: ignore[arg-type]
    again, done = store.open_run(settings, **kw)  # type: ignore[arg-type]
    assert again == run_id
    assert set(done) == {res[1].trial_key}  # the failed one will be retried
    assert done[res[1].trial_key].same_outcome(res[1])
    assert store.request_cancel(settings, run_id)  # type: ignore[arg-type]
    assert store.cancel_requested(settings, run_id)  # type: ignore[arg-type]


def test_results_table_and_plots(bars: trials_mod.BarArrays, tmp_path: object) -> None:
    from pathlib import Path

    from cryptoorchestrator.platform.optimize.results import plot_results, results_table

    res = run_trials(BATCH, bars, SmaCross(), trial_config())
    table = results_table(res, ["fast", "slow"])
    df = table.to_pandas()
    assert len(df) == len(BATCH)
    assert np.allclose(df["sharpe"].to_numpy(), [r.metrics["sharpe"] for r in res], equal_nan=True)
    obj = parse_objective("sharpe")
    p2 = plot_results(res, ["fast", "slow"], obj, Path(str(tmp_path)) / "heat.png")
    p1 = plot_results(res, ["fast", "slow", "x"][:1], obj, Path(str(tmp_path)) / "pc.png")
    assert p2.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert p1.stat().st_size > 1000


def test_a_cache_too_small_for_the_batch_gives_the_same_results(
    bars: trials_mod.BarArrays, monkeypatch: pytest.MonkeyPatch
) -> None:
    grid = [{"fast": f, "slow": s} for f in (5, 10, 15, 20) for s in (30, 40, 50, 60, 70)]
    whole = run_trials(grid, bars, SmaCross(), trial_config())
    # room for two SMAs only: entries are evicted while trials still use them
    monkeypatch.setattr(trials_mod, "REUSE_BYTES", 2 * 8 * len(bars))
    small = run_trials(grid, bars, SmaCross(), trial_config())
    strat = SmaCross()
    for params, r in zip(grid, small, strict=True):
        alone = run_trials([params], bars, strat, trial_config())[0]
        assert r.same_outcome(alone)
    assert all(a.same_outcome(b) for a, b in zip(whole, small, strict=True))


def test_plan_batches_partitions_into_compact_equal_batches() -> None:
    grid = [{"fast": f, "slow": s} for f in range(5, 55, 5) for s in range(20, 210, 10) if f < s]
    for n in (1, 2, 3, 8, 10, 174, 500):
        batches = trials_mod.plan_batches(grid, n)
        assert len(batches) == min(n, len(grid))
        assert sorted(trial_key(p) for b in batches for p in b) == sorted(map(trial_key, grid))
        assert max(map(len, batches)) - min(map(len, batches)) <= 1

    def periods(bs: list[list[dict[str, int]]]) -> int:
        return sum(len({p["fast"] for p in b} | {p["slow"] for p in b}) for b in bs)

    in_order = [grid[i * 174 // 10 : (i + 1) * 174 // 10] for i in range(10)]
    assert periods(trials_mod.plan_batches(grid, 10)) < 0.7 * periods(in_order)
    assert trials_mod.plan_batches([], 4) == []
    mixed = [{"mode": m, "k": k} for m in ("a", "b", None) for k in (1, 2.5)]
    assert sum(map(len, trials_mod.plan_batches(mixed, 4))) == len(mixed)


def test_batches_cover_every_cpu_in_equal_rounds() -> None:
    from cryptoorchestrator.platform.optimize.plan import batch_size as _batch_size
    from cryptoorchestrator.platform.optimize.plan import n_batches as _n_batches

    assert _n_batches(0.001, 174, 2, 0.5) == 2  # tiny study: still one batch per CPU
    assert _n_batches(0.012, 174, 2, 0.5) == 6  # 2.1 s of work: 0.5 s batches, even count
    assert _n_batches(0.012, 174, 1, 0.5) == 5
    assert _n_batches(1.0, 3, 4, 0.5) == 3  # never more batches than trials
    assert _batch_size(0.012, 174, 2, 0.5) == 29


def test_last_round_is_cut_in_halving_pieces_for_several_cpus() -> None:
    from cryptoorchestrator.platform.optimize.plan import split_tail as _split_tail

    grid = [{"fast": f, "slow": s} for f in range(5, 55, 5) for s in range(20, 210, 10) if f < s]
    batches = trials_mod.plan_batches(grid, 4)
    split = _split_tail(batches, 2)
    # 43 trials each: 22, 11, 5, 5 of the third batch, 22, 11, 5, 5 of the fourth, largest first
    assert [len(b) for b in split] == [44, 44, 22, 22, 11, 11, 5, 5, 5, 5]
    assert sorted(trial_key(p) for b in split for p in b) == sorted(trial_key(p) for p in grid)
    third = [p for b in split[2::2] for p in b]
    assert sorted(map(trial_key, third)) == sorted(map(trial_key, batches[2]))  # neighbours
    assert _split_tail(batches, 1) == batches  # one CPU: nobody waits for a straggler
    assert _split_tail(batches[:1], 2) == batches[:1]  # fewer batches than CPUs
    assert _split_tail([[grid[0]], [grid[1]]], 2) == [[grid[0]], [grid[1]]]


def test_background_returns_or_raises_in_the_caller() -> None:
    from cryptoorchestrator.platform.optimize.executor import Background as _Background

    assert _Background(lambda: 42).result() == 42

    def boom() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        _Background(boom).result()


def test_probes_are_blocks_from_apart_and_the_rest_is_everything_else() -> None:
    from cryptoorchestrator.platform.optimize.plan import probe_trial_s as _probe_trial_s
    from cryptoorchestrator.platform.optimize.plan import probes as _probes

    grid = [{"fast": f, "slow": s} for f in range(5, 55, 5) for s in range(20, 210, 10) if f < s]
    found = _probes(grid, 2)
    assert found is not None
    probes, rest = found
    assert [len(p) for p in probes] == [8, 8]
    keys = [trial_key(p) for b in probes for p in b] + [trial_key(p) for p in rest]
    assert sorted(keys) == sorted(trial_key(p) for p in grid)  # each trial exactly once
    # one probe from each half of the Z-ordered space: short and long fast periods
    assert min(p["fast"] for p in probes[0]) < min(p["fast"] for p in probes[1])
    assert _probes(grid[:40], 2) is None  # a small study is timed in the driver instead
    timed = [TrialResult("k", {}, None, None, "succeeded", None, d) for d in (0.01, 0.03)]
    assert _probe_trial_s(timed) == pytest.approx(0.02)
