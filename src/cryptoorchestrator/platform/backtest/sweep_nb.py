"""Stats-only twin of the single-symbol backtest kernel, for optimizer trials.

A sweep needs each trial's statistics vector and nothing else: :func:`sweep_stats_1d_nb` runs
the event loop of :func:`~cryptoorchestrator.platform.backtest.nb.simulate_1d_nb` with the
same arguments (less ``equity_out``) and returns the same ``stats`` vector, bit for bit, without
order or trade records and without an equity curve.  What the records fed into the statistics
(order count, fees, closed trades, wins, gross profit and loss, bars in trades) is accumulated
in event order, the order in which :func:`~cryptoorchestrator.platform.backtest.nb._trade_stats_nb`
sums the records, so every float is the same.

The arithmetic of every fill, stop and margin test is not repeated here: it is the inline
helpers of :mod:`cryptoorchestrator.platform.backtest.nb` (``_entry_nb``, ``_exit_nb``,
``_stop_tick_nb``, ``_decide_nb``, ``_avail_nb``, ``_budget_nb``, ``_liq_trigger_nb`` ...), so a
change there reaches both kernels.  Only the control flow of ``_loop_1d_nb`` and
``_execute_1d_nb`` is mirrored; ``tests/unit/backtest/test_sweep_kernel.py`` checks the two
kernels against each other over random configurations.

Why it is faster: the account lives in local variables (registers) instead of a state vector,
nothing is allocated per bar or per trade, the maximum drawdown divides only on bars that can
move it (:func:`_max_dd_nb`), and while a long paid in cash is held (no margin call can reach
it), a tight loop runs the bars until a stop or a signal acts: the stop test, the decision and
the running statistics only.

The module imports numpy, numba and ``nb.py``'s helpers and enums; ``os`` only keys numba's
cache on ``nb.py`` too (:func:`_key_cache_on_helpers`).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from numba import njit

from cryptoorchestrator.platform.backtest import nb
from cryptoorchestrator.platform.backtest.nb import (
    _REL_TOL,
    MAINTENANCE_MARGIN,
    MAX_GROSS_LEVERAGE,
    N_STATS,
    S_BARS,
    S_EXPOSURE_BARS,
    S_FEES,
    S_FINAL_EQUITY,
    S_GROSS_LOSS,
    S_GROSS_PROFIT,
    S_LIQUIDATED,
    S_LIQUIDATION_BAR,
    S_MAX_DD,
    S_MAX_DD_DURATION,
    S_OPEN_TRADES,
    S_ORDERS,
    S_SKIPPED_MARGIN,
    S_SKIPPED_SMALL,
    S_SUM_DOWN_SQ,
    S_SUM_RET,
    S_SUM_RET_SQ,
    S_SUM_TRADE_BARS,
    S_TRADES,
    S_WINS,
    _avail_nb,
    _bar_return_nb,
    _budget_nb,
    _close_value_nb,
    _decide_nb,
    _entry_nb,
    _exit_nb,
    _liq_trigger_nb,
    _liquidation_lambda_nb,
    _long_safe_nb,
    _risk_distance_nb,
    _stop_tick_nb,
)


@njit(cache=True, nogil=True, inline="always")
def _max_dd_nb(max_dd: float, equity: float, peak: float) -> float:
    """Return ``max(max_dd, 1.0 - equity / peak)``, the same float, mostly without dividing.

    The drawdown ``1 - equity / peak`` can only exceed ``max_dd`` where ``equity`` is at most
    ``peak * (1 - max_dd)``.  Above that level plus a margin (1e-9 relative) that is millions
    of times the rounding of either side, the division cannot change ``max_dd``, so it is
    skipped: one division per bar fewer, which is about a third of a held bar's work.  NaN or
    a non-positive peak takes the division, as before.
    """
    floor = 1.0 - max_dd
    if peak > 0.0 and equity > peak * (floor + 1e-9 * max(1.0, abs(floor))):
        return max_dd
    return max(max_dd, 1.0 - equity / peak)


@njit(cache=True, nogil=True, inline="always")
def _close_trade_nb(
    i: int,
    base: float,
    pos: float,
    cash: float,
    entry_price: float,
    entry_bar: int,
    entry_fee: float,
    fee: float,
    slippage: float,
    tick: float,
    stats: np.ndarray,
) -> float:
    """Close ``pos`` at ``base`` in bar ``i``; count the order and the closed trade; return cash.

    The counts are those ``_exit_1d_nb``'s records give ``_trade_stats_nb``: one order, its
    fee, one closed trade with its pnl (a win above zero) and its bars.
    """
    cash, _, f, pnl = _exit_nb(pos, base, slippage, tick, fee, cash, entry_price, entry_fee)
    stats[S_ORDERS] += 1.0
    stats[S_FEES] += f
    stats[S_TRADES] += 1.0
    if pnl > 0.0:
        stats[S_WINS] += 1.0
        stats[S_GROSS_PROFIT] += pnl
    else:
        stats[S_GROSS_LOSS] -= pnl
    # the records hold both bars as floats and the stats sum their difference
    stats[S_SUM_TRADE_BARS] += float(i) - float(entry_bar)
    return cash


@njit(cache=True, nogil=True, inline="always")
def _act_nb(  # noqa: PLR0913
    a: int,
    i: int,
    sig_row: int,
    base: float,
    cash: float,
    pos: float,
    entry_price: float,
    entry_bar: int,
    entry_fee: float,
    extreme: float,
    pos_sl: float,
    pos_tp: float,
    pos_tsl: float,
    sl_stop: np.ndarray,
    tp_stop: np.ndarray,
    tsl_stop: np.ndarray,
    qty_step: float,
    min_qty: float,
    min_notional: float,
    tick: float,
    fee: float,
    slippage: float,
    size_mode: int,
    size: float,
    max_position: float,
    max_gross: float,
    stats: np.ndarray,
) -> tuple[float, float, float, int, float, float, float, float, float]:
    """Act on decision ``a`` at ``base``: ``_execute_1d_nb``'s rules, counted instead of recorded.

    Returns the account ``(cash, pos, entry_price, entry_bar, entry_fee, extreme, sl, tp, tsl)``.
    """
    if pos != 0.0 and (a == 2 or (a == 1 and pos < 0.0) or (a == -1 and pos > 0.0)):
        cash = _close_trade_nb(
            i, base, pos, cash, entry_price, entry_bar, entry_fee, fee, slippage, tick, stats
        )
        pos = 0.0
    if (a != 1 and a != -1) or pos != 0.0:
        return cash, pos, entry_price, entry_bar, entry_fee, extreme, pos_sl, pos_tp, pos_tsl
    sl_f = sl_stop[sig_row if sl_stop.shape[0] > 1 else 0, 0]
    tsl_f = tsl_stop[sig_row if tsl_stop.shape[0] > 1 else 0, 0]
    # flat here, so equity is cash and there are no shorts
    avail = _avail_nb(cash, cash, 0.0, max_gross, fee)
    if not (avail > _REL_TOL * abs(cash)):
        if cash > 0.0:
            stats[S_SKIPPED_MARGIN] += 1.0
        else:
            stats[S_SKIPPED_SMALL] += 1.0
        return cash, pos, entry_price, entry_bar, entry_fee, extreme, pos_sl, pos_tp, pos_tsl
    budget = _budget_nb(size_mode, size, cash, _risk_distance_nb(sl_f, tsl_f), fee, max_position)
    ok = False
    qty = 0.0
    px = 0.0
    f = 0.0
    new_cash = cash
    if budget == budget:
        ok, qty, px, f, new_cash = _entry_nb(
            a, base, budget, cash, avail, fee, slippage, tick, qty_step, min_qty, min_notional
        )
    if not ok:
        stats[S_SKIPPED_SMALL] += 1.0
        return cash, pos, entry_price, entry_bar, entry_fee, extreme, pos_sl, pos_tp, pos_tsl
    stats[S_ORDERS] += 1.0
    stats[S_FEES] += f
    tp_f = tp_stop[sig_row if tp_stop.shape[0] > 1 else 0, 0]
    return new_cash, qty, px, i, f, px, sl_f, tp_f, tsl_f


@njit(cache=True, nogil=True)
def sweep_stats_1d_nb(  # noqa: PLR0913, PLR0915, C901
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    long_entries: np.ndarray,
    long_exits: np.ndarray,
    short_entries: np.ndarray,
    short_exits: np.ndarray,
    sl_stop: np.ndarray,
    tp_stop: np.ndarray,
    tsl_stop: np.ndarray,
    qty_step: np.ndarray,
    min_qty: np.ndarray,
    min_notional: np.ndarray,
    price_tick: np.ndarray,
    init_cash: float,
    fee: float,
    slippage: float,
    fill_at_close: bool,
    size_mode: int,
    size: float,
    max_position: float,
    max_open: int,
    close_at_end: bool,
    use_stops: bool,
    max_gross: float = MAX_GROSS_LEVERAGE,
    maintenance: float = MAINTENANCE_MARGIN,
    liquidate: bool = True,
) -> np.ndarray:
    """Return the statistics vector of ``simulate_1d_nb`` with the same arguments, bit for bit.

    The arguments are :func:`~cryptoorchestrator.platform.backtest.nb.simulate_1d_nb`'s less
    ``equity_out`` (``(n_bars, 1)`` arrays, ``(1, 1)`` or ``(n_bars, 1)`` stops, one-element
    precision arrays); ``max_open`` is ignored there too (one symbol holds one position).
    """
    n = close.shape[0]
    step = qty_step[0]
    mq = min_qty[0]
    mn = min_notional[0]
    tick = price_tick[0]
    stats = np.zeros(N_STATS, dtype=np.float64)
    cash = init_cash
    pos = 0.0
    entry_price = 0.0
    entry_bar = 0
    entry_fee = 0.0
    extreme = 0.0
    pos_sl = np.nan
    pos_tp = np.nan
    pos_tsl = np.nan
    pending = 0
    liq_bar = -1
    prev_equity = init_cash
    peak_equity = init_cash
    max_dd = 0.0
    dd_bars = 0
    max_dd_bars = 0
    sum_ret = 0.0
    sum_ret_sq = 0.0
    sum_down_sq = 0.0
    exposure = 0
    long_safe = _long_safe_nb(maintenance, fee, slippage)
    liq_px = _liq_trigger_nb(pos, cash, fee, slippage, maintenance, liquidate)
    i = 0
    while i < n:
        if pending != 0:
            (
                cash,
                pos,
                entry_price,
                entry_bar,
                entry_fee,
                extreme,
                pos_sl,
                pos_tp,
                pos_tsl,
            ) = _act_nb(
                pending,
                i,
                i - 1,
                open_[i, 0],
                cash,
                pos,
                entry_price,
                entry_bar,
                entry_fee,
                extreme,
                pos_sl,
                pos_tp,
                pos_tsl,
                sl_stop,
                tp_stop,
                tsl_stop,
                step,
                mq,
                mn,
                tick,
                fee,
                slippage,
                size_mode,
                size,
                max_position,
                max_gross,
                stats,
            )
            pending = 0
            liq_px = _liq_trigger_nb(pos, cash, fee, slippage, maintenance, liquidate)
        if use_stops and pos != 0.0:
            reason, exit_base, extreme = _stop_tick_nb(
                pos,
                open_[i, 0],
                high[i, 0],
                low[i, 0],
                entry_price,
                extreme,
                pos_sl,
                pos_tp,
                pos_tsl,
                entry_bar < i,
                tick,
            )
            if reason >= 0:
                cash = _close_trade_nb(
                    i,
                    exit_base,
                    pos,
                    cash,
                    entry_price,
                    entry_bar,
                    entry_fee,
                    fee,
                    slippage,
                    tick,
                    stats,
                )
                pos = 0.0
        if (
            pos != 0.0
            and (pos < 0.0 or cash < 0.0 or not long_safe)
            and (high[i, 0] >= liq_px if pos < 0.0 else low[i, 0] <= liq_px)
        ):
            adverse = high[i, 0] if pos < 0.0 else low[i, 0]
            if (cash + _close_value_nb(pos, adverse, slippage, fee)) - maintenance * (
                abs(pos) * adverse
            ) <= 0.0:
                liq_bar = i
                break
        c = close[i, 0]
        a = _decide_nb(
            pos, long_entries[i, 0], long_exits[i, 0], short_entries[i, 0], short_exits[i, 0]
        )
        if a != 0:
            if fill_at_close:
                (
                    cash,
                    pos,
                    entry_price,
                    entry_bar,
                    entry_fee,
                    extreme,
                    pos_sl,
                    pos_tp,
                    pos_tsl,
                ) = _act_nb(
                    a,
                    i,
                    i,
                    c,
                    cash,
                    pos,
                    entry_price,
                    entry_bar,
                    entry_fee,
                    extreme,
                    pos_sl,
                    pos_tp,
                    pos_tsl,
                    sl_stop,
                    tp_stop,
                    tsl_stop,
                    step,
                    mq,
                    mn,
                    tick,
                    fee,
                    slippage,
                    size_mode,
                    size,
                    max_position,
                    max_gross,
                    stats,
                )
                liq_px = _liq_trigger_nb(pos, cash, fee, slippage, maintenance, liquidate)
            elif i + 1 < n:
                pending = a
        equity = cash + pos * c
        if pos != 0.0:
            exposure += 1
        ret = _bar_return_nb(equity, prev_equity)
        sum_ret += ret
        sum_ret_sq += ret * ret
        down = min(ret, 0.0)
        sum_down_sq += down * down
        prev_equity = equity
        peak_equity = max(peak_equity, equity)
        dd_bars = dd_bars + 1 if equity < peak_equity else 0
        max_dd = _max_dd_nb(max_dd, equity, peak_equity)
        max_dd_bars = max(max_dd_bars, dd_bars)
        i += 1
        if pending != 0:
            continue
        if pos == 0.0:
            if 0.0 < abs(cash) < np.inf:
                # Flat: equity stays at cash until an entry signal, so every return is exactly
                # 0 and only the drawdown duration moves (simulate_1d_nb skips the same way).
                j = i
                while j < n and not (long_entries[j, 0] | short_entries[j, 0]):
                    j += 1
                if j > i:
                    if cash < peak_equity:
                        dd_bars += j - i
                        max_dd_bars = max(max_dd_bars, dd_bars)
                    else:
                        dd_bars = 0
                    i = j
        elif pos > 0.0 and cash >= 0.0 and long_safe:
            # A long paid in cash: no margin call can reach it, only its stops and a signal.
            # Until one acts, a bar is the stop test, the decision and the statistics alone;
            # the bar where one acts goes through the loop above, from its start (the
            # trailing reference is only taken here once nothing acted).
            while i < n:
                ext = extreme
                if use_stops:
                    reason, _, ext = _stop_tick_nb(
                        pos,
                        open_[i, 0],
                        high[i, 0],
                        low[i, 0],
                        entry_price,
                        extreme,
                        pos_sl,
                        pos_tp,
                        pos_tsl,
                        entry_bar < i,
                        tick,
                    )
                    if reason >= 0:
                        break
                if _decide_nb(
                    pos,
                    long_entries[i, 0],
                    long_exits[i, 0],
                    short_entries[i, 0],
                    short_exits[i, 0],
                ):
                    break
                extreme = ext
                equity = cash + pos * close[i, 0]
                exposure += 1
                ret = _bar_return_nb(equity, prev_equity)
                sum_ret += ret
                sum_ret_sq += ret * ret
                down = min(ret, 0.0)
                sum_down_sq += down * down
                prev_equity = equity
                peak_equity = max(peak_equity, equity)
                dd_bars = dd_bars + 1 if equity < peak_equity else 0
                max_dd = _max_dd_nb(max_dd, equity, peak_equity)
                max_dd_bars = max(max_dd_bars, dd_bars)
                i += 1
    if liq_bar >= 0:
        # _liquidate_1d_nb: close at the price where the margin runs out, then mark the rest
        # of the run at the cash left
        o = open_[liq_bar, 0]
        adverse = high[liq_bar, 0] if pos < 0.0 else low[liq_bar, 0]
        d_worst = (cash + _close_value_nb(pos, adverse, slippage, fee)) - maintenance * (
            abs(pos) * adverse
        )
        lam = _liquidation_lambda_nb(
            (cash + _close_value_nb(pos, o, slippage, fee)) - maintenance * (abs(pos) * o),
            d_worst,
        )
        cash = _close_trade_nb(
            liq_bar,
            o + lam * (adverse - o),
            pos,
            cash,
            entry_price,
            entry_bar,
            entry_fee,
            fee,
            slippage,
            tick,
            stats,
        )
        pos = 0.0
        equity = cash
        for _ in range(liq_bar, n):
            ret = _bar_return_nb(equity, prev_equity)
            sum_ret += ret
            sum_ret_sq += ret * ret
            down = min(ret, 0.0)
            sum_down_sq += down * down
            prev_equity = equity
            peak_equity = max(peak_equity, equity)
            dd_bars = dd_bars + 1 if equity < peak_equity else 0
            max_dd = _max_dd_nb(max_dd, equity, peak_equity)
            max_dd_bars = max(max_dd_bars, dd_bars)
        stats[S_LIQUIDATED] = 1.0
        stats[S_LIQUIDATION_BAR] = liq_bar
    final_equity = prev_equity
    if pos != 0.0:
        if close_at_end:
            cash = _close_trade_nb(
                n - 1,
                close[n - 1, 0],
                pos,
                cash,
                entry_price,
                entry_bar,
                entry_fee,
                fee,
                slippage,
                tick,
                stats,
            )
            final_equity = cash
        else:
            stats[S_OPEN_TRADES] = 1.0
    stats[S_FINAL_EQUITY] = final_equity
    stats[S_SUM_RET] = sum_ret
    stats[S_SUM_RET_SQ] = sum_ret_sq
    stats[S_SUM_DOWN_SQ] = sum_down_sq
    stats[S_MAX_DD] = max_dd
    stats[S_MAX_DD_DURATION] = max_dd_bars
    stats[S_EXPOSURE_BARS] = exposure
    stats[S_BARS] = n
    return stats


def _key_cache_on_helpers(dispatcher: Any, *paths: str) -> None:
    """Make numba's on-disk cache of ``dispatcher`` stale when a file in ``paths`` changes.

    numba reuses a cached kernel while the kernel's own file is unchanged; changes to helpers
    compiled into it from other files go unnoticed (a documented limitation of its cache).  The
    kernel inlines ``nb.py``'s fill and stop arithmetic, so an edit there would leave a stale
    sweep kernel that no longer agrees with the backtest.  The cache index records a source
    stamp and is discarded when it differs: the helpers' file stamps are added to it.  Without
    a cache (or with a numba whose cache has no such stamp), nothing is done.
    """
    cache_file = getattr(getattr(dispatcher, "_cache", None), "_cache_file", None)
    stamp = getattr(cache_file, "_source_stamp", None)
    if cache_file is None or stamp is None:
        return
    extra = []
    for path in paths:
        st = os.stat(path)
        extra.append((st.st_mtime, st.st_size))
    cache_file._source_stamp = (stamp, tuple(extra))


_key_cache_on_helpers(sweep_stats_1d_nb, nb.__file__)
