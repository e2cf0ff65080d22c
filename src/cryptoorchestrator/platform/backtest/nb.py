"""Numba kernels of the backtest engine: one fused event loop over bars (numpy, numba, math only).

Callers import :func:`cryptoorchestrator.platform.backtest.engine.simulate`, the typed wrapper;
this module is its private back end.  Layout conventions:

- price and signal arrays are 2-D ``(n_bars, n_cols)`` C-contiguous, one column per symbol, all
  columns sharing one cash balance;
- stop arrays are ``(1, n_cols)`` (one value for the whole run) or ``(n_bars, n_cols)`` (the value
  of the signal bar is used when a position opens); NaN disables a stop;
- records are float64 2-D arrays whose columns are named by the ``O_*`` and ``T_*`` constants,
  statistics a float64 vector indexed by the ``S_*`` constants.

Kernels never write into their inputs (arrays from Ray's object store are read-only).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

# order record columns
O_BAR, O_COL, O_SIDE, O_QTY, O_PRICE, O_FEE, O_REASON = 0, 1, 2, 3, 4, 5, 6
N_ORDER_FIELDS = 7
# trade record columns
T_COL, T_DIR, T_ENTRY_BAR, T_EXIT_BAR, T_ENTRY_PRICE, T_EXIT_PRICE = 0, 1, 2, 3, 4, 5
T_QTY, T_PNL, T_RETURN, T_FEES, T_EXIT_REASON, T_OPEN = 6, 7, 8, 9, 10, 11
N_TRADE_FIELDS = 12
# reasons an order was sent
REASON_SIGNAL, REASON_STOP_LOSS, REASON_TAKE_PROFIT, REASON_TRAILING_STOP, REASON_END = (
    0,
    1,
    2,
    3,
    4,
)
REASON_LIQUIDATION = 5
# statistics vector
S_FINAL_EQUITY, S_SUM_RET, S_SUM_RET_SQ, S_SUM_DOWN_SQ, S_MAX_DD, S_MAX_DD_DURATION = (
    0,
    1,
    2,
    3,
    4,
    5,
)
S_EXPOSURE_BARS, S_ORDERS, S_TRADES, S_WINS, S_GROSS_PROFIT, S_GROSS_LOSS = 6, 7, 8, 9, 10, 11
S_SUM_TRADE_BARS, S_FEES, S_SKIPPED_SMALL, S_SKIPPED_LIMIT, S_OPEN_TRADES, S_BARS = (
    12,
    13,
    14,
    15,
    16,
    17,
)
# margin (see _avail_nb and _liquidate_nb): whether and at which bar the account was
# liquidated, and entries refused because the gross-exposure cap left no room
S_LIQUIDATED, S_LIQUIDATION_BAR, S_SKIPPED_MARGIN = 18, 19, 20
N_STATS = 21
# sizing modes
SIZE_FRACTION, SIZE_QUOTE, SIZE_RISK = 0, 1, 2
# margin defaults of the kernels: platform.risk.margin's (this module imports numpy and numba
# only; a test checks that they are equal), see docs/backtest.md
MAX_GROSS_LEVERAGE = 1.0
MAINTENANCE_MARGIN = 0.005

_REL_TOL = 1e-9
_ABS_TOL = 1e-12


@njit(cache=True, nogil=True, inline="always")
def _is_close_nb(a: float, b: float) -> bool:
    return abs(a - b) <= max(_REL_TOL * max(abs(a), abs(b)), _ABS_TOL)


@njit(cache=True, nogil=True, inline="always")
def _add_nb(a: float, b: float) -> float:
    # snap sums that are zero up to rounding to exactly zero, so "flat" means flat
    s = a + b
    if _is_close_nb(a, -b):
        return 0.0
    return s


@njit(cache=True, nogil=True)
def _grow_nb(rec: np.ndarray, used: int) -> np.ndarray:
    if used < rec.shape[0]:
        return rec
    bigger = np.empty((rec.shape[0] * 2, rec.shape[1]), dtype=np.float64)
    bigger[: rec.shape[0]] = rec
    return bigger


@njit(cache=True, nogil=True, inline="always")
def _bar_return_nb(equity: float, prev: float) -> float:
    """Return of one bar; after ruin (equity exactly 0) a flat bar returns 0, as in vectorbt.

    Fees can grind an account to exactly zero on a long sweep; the plain ratio then divided by
    zero, and the trial failed instead of reporting a -100 % run.  The branch is never taken
    otherwise, so it is free and the bits are unchanged.
    """
    if prev == 0.0:
        return 0.0 if equity == 0.0 else math.copysign(math.inf, equity)
    return equity / prev - 1.0


@njit(cache=True, nogil=True, inline="always")
def _tick_parts_nb(tick: float) -> tuple[float, float]:
    """Return ``(m, scale)`` with ``m / scale == tick`` exactly: ``m`` whole, ``scale = 10**d``.

    Exchange ticks are decimals (0.01, 0.00001, 0.5): ``m`` and ``scale`` are then exact
    integers in float64, and a tick level ``k x tick`` is written as ``(k x m) / scale``, one
    correctly rounded division, the float nearest the decimal the exchange quotes.  A tick that
    is no short decimal is taken as it is (``m = tick``, ``scale = 1``).
    """
    scale = 1.0
    for _ in range(16):
        m = math.floor(tick * scale + 0.5)
        if m >= 1.0 and m / scale == tick:
            return m, scale
        scale *= 10.0
    return tick, 1.0


@njit(cache=True, nogil=True, inline="always")
def _round_price_nb(price: float, tick: float, up: bool) -> float:
    """Return the tick level nearest ``price`` at or above it (``up``) or at or below it.

    Exact: the level is the float of the decimal ``k x tick`` (see :func:`_tick_parts_nb`), and
    ``k`` is the smallest (largest) whose level is at or above (at or below) the float
    ``price``, so a price already on the tick is returned unchanged and the same inputs give
    the same bits here, in Python (``stops.round_to_tick_nb``) and at the exchange's decimal.
    ``tick <= 0``: no tick, ``price`` unchanged.
    """
    if not (tick > 0.0):
        return price
    m, scale = _tick_parts_nb(tick)
    # a first guess from the float quotient, corrected by comparing the exact levels
    k = float(math.floor(price * scale / m))
    if up:
        while (k * m) / scale < price:
            k += 1.0
        while ((k - 1.0) * m) / scale >= price:
            k -= 1.0
    else:
        while (k * m) / scale > price:
            k -= 1.0
        while ((k + 1.0) * m) / scale <= price:
            k += 1.0
    return (k * m) / scale


@njit(cache=True, nogil=True, inline="always")
def _decide_nb(p: float, le: bool, lx: bool, se: bool, sx: bool) -> int:
    # 0 nothing, 1 go long, -1 go short, 2 close; an entry and an exit of one side cancel
    if le and lx:
        le = False
        lx = False
    if se and sx:
        se = False
        sx = False
    if p > 0.0:
        if se:
            return -1
        if lx:
            return 2
    elif p < 0.0:
        if le:
            return 1
        if sx:
            return 2
    elif le != se:
        return 1 if le else -1
    return 0


@njit(cache=True, nogil=True, inline="always")
def _exit_nb(
    p: float,
    base: float,
    slippage: float,
    tick: float,
    fee: float,
    cash: float,
    ep: float,
    efee: float,
) -> tuple[float, float, float, float]:
    """Close position ``p`` at ``base``; return ``(cash, fill_price, fee_paid, pnl)``."""
    qty = abs(p)
    if p > 0.0:
        px = _round_price_nb(base * (1.0 - slippage), tick, False)
        val = qty * px
        f = val * fee
        cash = cash + _add_nb(val, -f)
        pnl = qty * (px - ep) - efee - f
    else:
        px = _round_price_nb(base * (1.0 + slippage), tick, True)
        val = qty * px
        f = val * fee
        cash = _add_nb(cash, -(val + f))
        pnl = qty * (ep - px) - efee - f
    return cash, px, f, pnl


@njit(cache=True, nogil=True, inline="always")
def _entry_nb(
    a: int,
    base: float,
    budget: float,
    cash: float,
    avail: float,
    fee: float,
    slippage: float,
    tick: float,
    step: float,
    min_qty: float,
    min_notional: float,
) -> tuple[bool, float, float, float, float]:
    """Open a position of side ``a`` with ``budget``; return ``(ok, qty, px, fee, cash)``.

    At most ``avail`` (fees included, see :func:`_avail_nb`) is committed; it equals ``cash``
    for an unlevered account without shorts, and the arithmetic is then the former one.
    """
    one_plus_fee = 1.0 + fee
    if a == 1:
        px = _round_price_nb(base * (1.0 + slippage), tick, True)
    else:
        px = _round_price_nb(base * (1.0 - slippage), tick, False)
    all_in = budget >= avail or _is_close_nb(budget, avail)
    # same arithmetic as vectorbt's buy_nb so that all-in orders match it bit for bit
    req = avail / one_plus_fee if all_in else budget / one_plus_fee
    if not (req > 0.0):
        return False, 0.0, px, 0.0, cash
    qty = req / px
    if step > 0.0:
        units = math.floor(qty / step + 1e-9)
        if units * step * px * one_plus_fee > avail * (1.0 + 1e-12):
            units -= 1
        qty = units * step
    if qty <= 0.0 or qty < min_qty or qty * px < min_notional:
        return False, 0.0, px, 0.0, cash
    if all_in and step <= 0.0:
        f = avail - req
        val = req
    else:
        val = qty * px
        f = val * fee
    if a == 1:
        if all_in and step <= 0.0:
            # exactly 0.0 when avail is the whole cash, as vectorbt leaves it
            cash = _add_nb(cash, -avail)
        else:
            cash = _add_nb(cash, -(val + f))
        return True, qty, px, f, cash
    cash = cash + _add_nb(val, -f)
    return True, -qty, px, f, cash


@njit(cache=True, nogil=True, inline="always")
def _stop_nb(
    p: float,
    o: float,
    h: float,
    lo: float,
    ep: float,
    extreme: float,
    sl: float,
    tp: float,
    tsl: float,
    gap_possible: bool,
) -> tuple[int, float, float]:
    """Check the stops of position ``p`` in one bar without a price tick (see
    :func:`_stop_tick_nb`); return ``(reason, exit_base, extreme)``."""
    return _stop_tick_nb(p, o, h, lo, ep, extreme, sl, tp, tsl, gap_possible, 0.0)


@njit(cache=True, nogil=True, inline="always")
def _stop_tick_nb(
    p: float,
    o: float,
    h: float,
    lo: float,
    ep: float,
    extreme: float,
    sl: float,
    tp: float,
    tsl: float,
    gap_possible: bool,
    tick: float,
) -> tuple[int, float, float]:
    """Check the stops of position ``p`` in one bar; return ``(reason, exit_base, extreme)``.

    ``reason`` is -1 when nothing triggers.  A gap through a level fills at the open; when the
    stop and the take-profit could both trigger inside the bar, the stop wins (conservative);
    the trailing reference takes this bar's extreme only after the check.

    With a price tick (``tick > 0``) the levels are those an exchange can hold: the stop (the
    tighter of stop-loss and trailing stop, chosen on the exact levels) on the tick at or
    beyond it (below for a long, above for a short: never a better price than asked), the
    take-profit on the first tick it takes to reach it (above for a long, below for a short).
    For prices on the tick the same bars reach them; the exit is at the tick level.
    """
    reason = -1
    exit_base = 0.0
    if p > 0.0:
        stop_px = -np.inf
        stop_reason = REASON_STOP_LOSS
        if sl == sl:
            stop_px = ep * (1.0 - sl)
        if tsl == tsl:
            t = extreme * (1.0 - tsl)
            if t > stop_px:
                stop_px = t
                stop_reason = REASON_TRAILING_STOP
        tp_px = ep * (1.0 + tp) if tp == tp else np.inf
        if tick > 0.0:
            if stop_px > -np.inf:
                stop_px = _round_price_nb(stop_px, tick, False)
            if tp_px < np.inf:
                tp_px = _round_price_nb(tp_px, tick, True)
        if gap_possible and o <= stop_px:
            reason = stop_reason
            exit_base = o
        elif gap_possible and o >= tp_px:
            reason = REASON_TAKE_PROFIT
            exit_base = o
        elif lo <= stop_px:
            reason = stop_reason
            exit_base = stop_px
        elif h >= tp_px:
            reason = REASON_TAKE_PROFIT
            exit_base = tp_px
        if h > extreme:
            extreme = h
    else:
        stop_px = np.inf
        stop_reason = REASON_STOP_LOSS
        if sl == sl:
            stop_px = ep * (1.0 + sl)
        if tsl == tsl:
            t = extreme * (1.0 + tsl)
            if t < stop_px:
                stop_px = t
                stop_reason = REASON_TRAILING_STOP
        tp_px = ep * (1.0 - tp) if tp == tp else -np.inf
        if tick > 0.0:
            if stop_px < np.inf:
                stop_px = _round_price_nb(stop_px, tick, True)
            if tp_px > -np.inf:
                tp_px = _round_price_nb(tp_px, tick, False)
        if gap_possible and o >= stop_px:
            reason = stop_reason
            exit_base = o
        elif gap_possible and o <= tp_px:
            reason = REASON_TAKE_PROFIT
            exit_base = o
        elif h >= stop_px:
            reason = stop_reason
            exit_base = stop_px
        elif lo <= tp_px:
            reason = REASON_TAKE_PROFIT
            exit_base = tp_px
        if lo < extreme:
            extreme = lo
    return reason, exit_base, extreme


@njit(cache=True, nogil=True, inline="always")
def _push_order_nb(
    orders: np.ndarray,
    n: int,
    bar: int,
    col: int,
    side: float,
    qty: float,
    px: float,
    f: float,
    reason: int,
) -> None:
    orders[n, O_BAR] = bar
    orders[n, O_COL] = col
    orders[n, O_SIDE] = side
    orders[n, O_QTY] = qty
    orders[n, O_PRICE] = px
    orders[n, O_FEE] = f
    orders[n, O_REASON] = reason


@njit(cache=True, nogil=True, inline="always")
def _push_trade_nb(
    trades: np.ndarray,
    n: int,
    col: int,
    p: float,
    entry_bar: int,
    exit_bar: int,
    ep: float,
    px: float,
    pnl: float,
    fees: float,
    reason: int,
    is_open: bool,
) -> None:
    qty = abs(p)
    trades[n, T_COL] = col
    trades[n, T_DIR] = 1.0 if p > 0.0 else -1.0
    trades[n, T_ENTRY_BAR] = entry_bar
    trades[n, T_EXIT_BAR] = exit_bar
    trades[n, T_ENTRY_PRICE] = ep
    trades[n, T_EXIT_PRICE] = px
    trades[n, T_QTY] = qty
    trades[n, T_PNL] = pnl
    trades[n, T_RETURN] = pnl / (qty * ep)
    trades[n, T_FEES] = fees
    trades[n, T_EXIT_REASON] = reason
    trades[n, T_OPEN] = 1.0 if is_open else 0.0


@njit(cache=True, nogil=True, inline="always")
def _close_nb(  # noqa: PLR0913
    i: int,
    j: int,
    base: float,
    reason: int,
    pos: np.ndarray,
    entry_price: np.ndarray,
    entry_bar: np.ndarray,
    entry_fee: np.ndarray,
    price_tick: np.ndarray,
    fee: float,
    slippage: float,
    acct: np.ndarray,
    orders: np.ndarray,
    trades: np.ndarray,
) -> None:
    """Close column ``j``'s whole position in bar ``i`` at ``base`` (before slippage) and
    record the order and the trade with ``reason`` (signal, stop or liquidation exits)."""
    p = pos[j]
    cash, px, f, pnl = _exit_nb(
        p, base, slippage, price_tick[j], fee, acct[A_CASH], entry_price[j], entry_fee[j]
    )
    acct[A_CASH] = cash
    _push_order_nb(
        orders, int(acct[A_ORDERS]), i, j, -1.0 if p > 0.0 else 1.0, abs(p), px, f, reason
    )
    acct[A_ORDERS] += 1
    _push_trade_nb(
        trades,
        int(acct[A_TRADES]),
        j,
        p,
        entry_bar[j],
        i,
        entry_price[j],
        px,
        pnl,
        entry_fee[j] + f,
        reason,
        False,
    )
    acct[A_TRADES] += 1
    acct[A_FEES] += f
    acct[A_OPEN] -= 1
    pos[j] = 0.0


@njit(cache=True, nogil=True)
def _trade_stats_nb(trades: np.ndarray, stats: np.ndarray) -> None:
    closed = 0
    wins = 0
    gross_profit = 0.0
    gross_loss = 0.0
    trade_bars = 0.0
    n_open = 0
    for t in range(trades.shape[0]):
        if trades[t, T_OPEN] != 0.0:
            n_open += 1
            continue
        closed += 1
        pnl = trades[t, T_PNL]
        if pnl > 0.0:
            wins += 1
            gross_profit += pnl
        else:
            gross_loss -= pnl
        trade_bars += trades[t, T_EXIT_BAR] - trades[t, T_ENTRY_BAR]
    stats[S_TRADES] = closed
    stats[S_WINS] = wins
    stats[S_GROSS_PROFIT] = gross_profit
    stats[S_GROSS_LOSS] = gross_loss
    stats[S_SUM_TRADE_BARS] = trade_bars
    stats[S_OPEN_TRADES] = n_open


# account scalars of the multi-symbol kernel, kept in one small array so helpers can update them
A_CASH, A_ORDERS, A_TRADES, A_OPEN, A_FEES, A_SKIP_SMALL, A_SKIP_LIMIT = 0, 1, 2, 3, 4, 5, 6
A_SKIP_MARGIN, A_LIQ_BAR = 7, 8  # A_LIQ_BAR is -1 until the account is liquidated
N_ACCT = 9


@njit(cache=True, nogil=True, inline="always")
def _risk_distance_nb(sl: float, tsl: float) -> float:
    # the stop nearest to the entry sets the risk: a trailing stop starts at its full distance
    if tsl == tsl and not (sl <= tsl):
        return tsl
    return sl


@njit(cache=True, nogil=True, inline="always")
def _budget_nb(
    size_mode: int, size: float, equity: float, sl: float, fee: float, max_position: float
) -> float:
    if size_mode == SIZE_FRACTION:
        budget = equity * size
    elif size_mode == SIZE_QUOTE:
        budget = size
    elif sl > 0.0:
        budget = equity * size / sl * (1.0 + fee)
    else:
        return np.nan  # risk sizing without a stop-loss: nothing to size against
    cap = equity * max_position * (1.0 + fee)
    return cap if budget > cap else budget


@njit(cache=True, nogil=True, inline="always")
def _avail_nb(
    cash: float, equity: float, short_value: float, max_gross: float, fee: float
) -> float:
    """Return what an entry may commit, fees included, under the gross-exposure cap.

    The notional room is ``(max_gross * equity - gross) / (1 + max_gross * fee)`` (the fee
    lowers equity, and the cap must hold after it: ``platform.risk.margin.entry_room``), and
    ``max_gross * equity - gross`` is written ``(max_gross - 1) * equity + (cash + 2 *
    short_value)`` (``short_value``: the signed, negative value of the shorts).  Equal in exact
    arithmetic, this is exactly ``cash`` for an unlevered long-only account, so those runs keep
    their bits.  Short proceeds sit in cash but are not free: ``2 * short_value`` takes them
    out and reserves the shorts' own margin.  An unlevered account never commits more than its
    cash.
    """
    room = (max_gross - 1.0) * equity + (cash + 2.0 * short_value)
    avail = room * ((1.0 + fee) / (1.0 + max_gross * fee))
    if max_gross <= 1.0 and avail > cash:
        return cash
    return avail


@njit(cache=True, nogil=True, inline="always")
def _close_value_nb(p: float, base: float, slippage: float, fee: float) -> float:
    """Cash that closing ``p`` at ``base`` brings (negative for a short), tick rounding aside."""
    if p > 0.0:
        return p * (base * (1.0 - slippage)) * (1.0 - fee)
    return p * (base * (1.0 + slippage)) * (1.0 + fee)


@njit(cache=True, nogil=True, inline="always")
def _long_safe_nb(maintenance: float, fee: float, slippage: float) -> bool:
    """Whether a long paid in cash keeps its liquidation value above the maintenance margin.

    Closing ``q`` at ``P`` brings ``q P (1 - s)(1 - f)``; above ``maintenance * q P`` at any
    price when the factor exceeds ``maintenance`` (a relative margin of 1e-9 absorbs rounding).
    """
    return maintenance < (1.0 - slippage) * (1.0 - fee) * (1.0 - 1e-9)


@njit(cache=True, nogil=True, inline="always")
def _liq_trigger_nb(
    p: float, cash: float, fee: float, slippage: float, maintenance: float, liquidate: bool
) -> float:
    """Price past which the single-symbol kernel tests a lone position ``p`` for a call.

    A short is tested when the bar's high reaches it, a long when the low falls to it.  It is
    the position's liquidation price (``platform.risk.margin.liquidation_price``) widened by
    1e-6 so that rounding never skips a call; the exact test, the one of :func:`_liquidate_nb`,
    then decides.  +-inf when there is nothing to test.
    """
    if p < 0.0:
        if not liquidate:
            return np.inf
        return cash / (-p * ((1.0 + slippage) * (1.0 + fee) + maintenance)) * (1.0 - 1e-6)
    if not liquidate or p == 0.0:
        return -np.inf
    keep = (1.0 - slippage) * (1.0 - fee) - maintenance
    if keep <= 0.0:
        return np.inf
    return -cash / (p * keep) * (1.0 + 1e-6)


@njit(cache=True, nogil=True, inline="always")
def _liquidation_lambda_nb(d_open: float, d_worst: float) -> float:
    """Where between the open (0) and the adverse extremes (1) the margin runs out.

    ``d_*`` are the liquidation value less the maintenance requirement at either end; both are
    linear in the prices, so the root of the straight line is exact.  A gap (``d_open <= 0``)
    liquidates at the open.
    """
    if d_open <= 0.0:
        return 0.0
    return d_open / (d_open - d_worst)


@njit(cache=True, nogil=True)
def _execute_nb(  # noqa: PLR0913
    i: int,
    sig_row: int,
    action: np.ndarray,
    last_price: np.ndarray,
    pos: np.ndarray,
    entry_price: np.ndarray,
    entry_bar: np.ndarray,
    entry_fee: np.ndarray,
    extreme: np.ndarray,
    pos_sl: np.ndarray,
    pos_tp: np.ndarray,
    pos_tsl: np.ndarray,
    sl_stop: np.ndarray,
    tp_stop: np.ndarray,
    tsl_stop: np.ndarray,
    qty_step: np.ndarray,
    min_qty: np.ndarray,
    min_notional: np.ndarray,
    price_tick: np.ndarray,
    fee: float,
    slippage: float,
    size_mode: int,
    size: float,
    max_position: float,
    max_open: int,
    max_gross: float,
    acct: np.ndarray,
    orders: np.ndarray,
    trades: np.ndarray,
) -> None:
    k = pos.shape[0]
    # exits (and the closing half of reversals) first, so their cash funds the entries
    for j in range(k):
        a = action[j]
        p = pos[j]
        if p == 0.0 or a == 0 or (a == 1 and p > 0.0) or (a == -1 and p < 0.0):
            continue
        _close_nb(
            i,
            j,
            last_price[j],
            REASON_SIGNAL,
            pos,
            entry_price,
            entry_bar,
            entry_fee,
            price_tick,
            fee,
            slippage,
            acct,
            orders,
            trades,
        )
        if a == 2:
            action[j] = 0
    for j in range(k):
        a = action[j]
        if a != 1 and a != -1:
            continue
        action[j] = 0
        if pos[j] != 0.0:
            continue
        if acct[A_OPEN] >= max_open:
            acct[A_SKIP_LIMIT] += 1
            continue
        sl_f = sl_stop[sig_row if sl_stop.shape[0] > 1 else 0, j]
        tsl_f = tsl_stop[sig_row if tsl_stop.shape[0] > 1 else 0, j]
        equity = acct[A_CASH]
        short_value = 0.0
        for jj in range(k):
            v = pos[jj] * last_price[jj]
            equity += v
            if v < 0.0:
                short_value += v
        avail = _avail_nb(acct[A_CASH], equity, short_value, max_gross, fee)
        if not (avail > _REL_TOL * abs(equity)):
            # no room (up to rounding, or dust orders would follow): with cash in hand, it is
            # short proceeds or the cap is reached; without, there is nothing to spend
            if acct[A_CASH] > 0.0:
                acct[A_SKIP_MARGIN] += 1
            else:
                acct[A_SKIP_SMALL] += 1
            continue
        budget = _budget_nb(
            size_mode, size, equity, _risk_distance_nb(sl_f, tsl_f), fee, max_position
        )
        ok = False
        if budget == budget:
            ok, qty, px, f, cash = _entry_nb(
                a,
                last_price[j],
                budget,
                acct[A_CASH],
                avail,
                fee,
                slippage,
                price_tick[j],
                qty_step[j],
                min_qty[j],
                min_notional[j],
            )
        if not ok:
            acct[A_SKIP_SMALL] += 1
            continue
        acct[A_CASH] = cash
        _push_order_nb(orders, int(acct[A_ORDERS]), i, j, float(a), abs(qty), px, f, REASON_SIGNAL)
        acct[A_ORDERS] += 1
        acct[A_FEES] += f
        acct[A_OPEN] += 1
        pos[j] = qty
        entry_price[j] = px
        entry_bar[j] = i
        entry_fee[j] = f
        extreme[j] = px
        pos_sl[j] = sl_f
        pos_tp[j] = tp_stop[sig_row if tp_stop.shape[0] > 1 else 0, j]
        pos_tsl[j] = tsl_f


@njit(cache=True, nogil=True)
def _liquidate_nb(  # noqa: PLR0913
    i: int,
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    pos: np.ndarray,
    entry_price: np.ndarray,
    entry_bar: np.ndarray,
    entry_fee: np.ndarray,
    price_tick: np.ndarray,
    fee: float,
    slippage: float,
    maintenance: float,
    long_safe: bool,
    acct: np.ndarray,
    orders: np.ndarray,
    trades: np.ndarray,
) -> None:
    """Liquidate every position in bar ``i`` if the margin runs out inside it.

    The liquidation value (cash plus what closing every position would bring, fees and
    slippage included) is taken at the adverse extremes (longs at the low, shorts at the high)
    and compared with ``maintenance`` x gross exposure there.  If it is not above, all prices
    are moved together from the open towards those extremes to where the two are equal
    (:func:`_liquidation_lambda_nb`) and every position is closed there, so equity ends at the
    maintenance requirement, tick rounding aside; a gap through it closes them at the open.
    Long positions paid in cash (``cash >= 0``, no shorts, ``long_safe``) cannot run out of
    margin and are not checked, so unlevered long-only runs are unchanged.
    """
    k = pos.shape[0]
    cash = acct[A_CASH]
    risky = cash < 0.0 or not long_safe
    v_open = cash
    v_worst = cash
    g_open = 0.0
    g_worst = 0.0
    for j in range(k):
        p = pos[j]
        if p == 0.0:
            continue
        if p < 0.0:
            risky = True
            adverse = high[i, j]
        else:
            adverse = low[i, j]
        o = open_[i, j]
        v_open += _close_value_nb(p, o, slippage, fee)
        v_worst += _close_value_nb(p, adverse, slippage, fee)
        g_open += abs(p) * o
        g_worst += abs(p) * adverse
    if not risky:
        return
    d_worst = v_worst - maintenance * g_worst
    if not (d_worst <= 0.0):
        return
    lam = _liquidation_lambda_nb(v_open - maintenance * g_open, d_worst)
    for j in range(k):
        p = pos[j]
        if p == 0.0:
            continue
        o = open_[i, j]
        adverse = high[i, j] if p < 0.0 else low[i, j]
        _close_nb(
            i,
            j,
            o + lam * (adverse - o),
            REASON_LIQUIDATION,
            pos,
            entry_price,
            entry_bar,
            entry_fee,
            price_tick,
            fee,
            slippage,
            acct,
            orders,
            trades,
        )
    acct[A_LIQ_BAR] = i


# running equity statistics carried between _loop_nb calls
R_PREV, R_PEAK, R_MAX_DD, R_DD_BARS, R_MAX_DD_BARS, R_SUM, R_SUM_SQ, R_DOWN_SQ, R_EXPOSURE = (
    0,
    1,
    2,
    3,
    4,
    5,
    6,
    7,
    8,
)
R_PENDING = 9


@njit(cache=True, nogil=True)
def _loop_nb(  # noqa: PLR0913, C901
    i0: int,
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
    fee: float,
    slippage: float,
    fill_at_close: bool,
    size_mode: int,
    size: float,
    max_position: float,
    max_open: int,
    use_stops: bool,
    max_gross: float,
    maintenance: float,
    liquidate: bool,
    equity_out: np.ndarray,
    state: tuple[np.ndarray, ...],
    acct: np.ndarray,
    run: np.ndarray,
    orders: np.ndarray,
    trades: np.ndarray,
) -> int:
    # Runs bars from i0 until the end or until the record buffers could overflow, and returns
    # the next bar.  Growing buffers inside the loop would make numba reference-count them on
    # every bar, which costs far more than the work itself, so the caller grows them between calls.
    n, k = close.shape
    write_equity = equity_out.shape[0] == n
    pos, entry_price, entry_bar_f, entry_fee, extreme, pos_sl, pos_tp, pos_tsl = state[:8]
    last_price, pending_f, action_f = state[8:11]
    entry_bar = entry_bar_f.view(np.int64)
    pending = pending_f.view(np.int64)
    action = action_f.view(np.int64)
    prev_equity = run[R_PREV]
    peak_equity = run[R_PEAK]
    max_dd = run[R_MAX_DD]
    dd_bars = int(run[R_DD_BARS])
    max_dd_bars = int(run[R_MAX_DD_BARS])
    sum_ret = run[R_SUM]
    sum_ret_sq = run[R_SUM_SQ]
    sum_down_sq = run[R_DOWN_SQ]
    exposure = int(run[R_EXPOSURE])
    long_safe = _long_safe_nb(maintenance, fee, slippage)
    i = i0
    while i < n:
        if acct[A_ORDERS] + 3 * k > orders.shape[0] or acct[A_TRADES] + 2 * k > trades.shape[0]:
            break
        if not fill_at_close and i > 0:
            any_pending = False
            for j in range(k):
                last_price[j] = open_[i, j]
                action[j] = pending[j]
                pending[j] = 0
                if action[j] != 0:
                    any_pending = True
            if any_pending:
                _execute_nb(
                    i,
                    i - 1,
                    action,
                    last_price,
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
                    qty_step,
                    min_qty,
                    min_notional,
                    price_tick,
                    fee,
                    slippage,
                    size_mode,
                    size,
                    max_position,
                    max_open,
                    max_gross,
                    acct,
                    orders,
                    trades,
                )
        if use_stops and acct[A_OPEN] > 0:
            for j in range(k):
                p = pos[j]
                if p == 0.0:
                    continue
                reason, exit_base, extreme[j] = _stop_tick_nb(
                    p,
                    open_[i, j],
                    high[i, j],
                    low[i, j],
                    entry_price[j],
                    extreme[j],
                    pos_sl[j],
                    pos_tp[j],
                    pos_tsl[j],
                    entry_bar[j] < i,
                    price_tick[j],
                )
                if reason < 0:
                    continue
                _close_nb(
                    i,
                    j,
                    exit_base,
                    reason,
                    pos,
                    entry_price,
                    entry_bar,
                    entry_fee,
                    price_tick,
                    fee,
                    slippage,
                    acct,
                    orders,
                    trades,
                )
        if liquidate and acct[A_OPEN] > 0 and acct[A_LIQ_BAR] < 0:
            _liquidate_nb(
                i,
                open_,
                high,
                low,
                pos,
                entry_price,
                entry_bar,
                entry_fee,
                price_tick,
                fee,
                slippage,
                maintenance,
                long_safe,
                acct,
                orders,
                trades,
            )
        # a liquidated account stops trading: no new decisions, so nothing is queued either
        if (fill_at_close or i + 1 < n) and acct[A_LIQ_BAR] < 0:
            any_action = False
            for j in range(k):
                a = _decide_nb(
                    pos[j],
                    long_entries[i, j],
                    long_exits[i, j],
                    short_entries[i, j],
                    short_exits[i, j],
                )
                if fill_at_close:
                    action[j] = a
                    last_price[j] = close[i, j]
                    if a != 0:
                        any_action = True
                else:
                    pending[j] = a
            if any_action:
                _execute_nb(
                    i,
                    i,
                    action,
                    last_price,
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
                    qty_step,
                    min_qty,
                    min_notional,
                    price_tick,
                    fee,
                    slippage,
                    size_mode,
                    size,
                    max_position,
                    max_open,
                    max_gross,
                    acct,
                    orders,
                    trades,
                )
        equity = acct[A_CASH]
        for j in range(k):
            last_price[j] = close[i, j]
            if pos[j] != 0.0:
                equity += pos[j] * close[i, j]
        if acct[A_OPEN] > 0:
            exposure += 1
        if write_equity:
            equity_out[i] = equity
        # branch-free on purpose: equity moves are unpredictable, mispredictions dominated
        ret = _bar_return_nb(equity, prev_equity)
        sum_ret += ret
        sum_ret_sq += ret * ret
        down = min(ret, 0.0)
        sum_down_sq += down * down
        prev_equity = equity
        peak_equity = max(peak_equity, equity)
        dd_bars = dd_bars + 1 if equity < peak_equity else 0
        max_dd = max(max_dd, 1.0 - equity / peak_equity)
        max_dd_bars = max(max_dd_bars, dd_bars)
        i += 1
    run[R_PREV] = prev_equity
    run[R_PEAK] = peak_equity
    run[R_MAX_DD] = max_dd
    run[R_DD_BARS] = dd_bars
    run[R_MAX_DD_BARS] = max_dd_bars
    run[R_SUM] = sum_ret
    run[R_SUM_SQ] = sum_ret_sq
    run[R_DOWN_SQ] = sum_down_sq
    run[R_EXPOSURE] = exposure
    return i


@njit(cache=True, nogil=True)
def simulate_nb(  # noqa: PLR0913, C901
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
    equity_out: np.ndarray,
    max_gross: float = MAX_GROSS_LEVERAGE,
    maintenance: float = MAINTENANCE_MARGIN,
    liquidate: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run the event loop over ``(n_bars, n_cols)`` arrays sharing one cash balance.

    Return ``(orders, trades, stats)`` and fill ``equity_out`` when it has ``n_bars`` slots.
    Per bar: (1) in next-open mode, orders decided on the previous bar fill at this open, exits
    before entries, columns in order; (2) stops trigger intra-bar from high/low (see
    :func:`_stop_tick_nb`, levels on the price tick; a position opened at this open can stop
    out in this bar, one opened at a close only from the next bar); (3) in close mode this
    bar's signals fill at its close, otherwise they are queued for the next open; (4) the
    account is marked to market at the close.
    Margin: entries never take gross exposure above ``max_gross`` x equity (:func:`_avail_nb`);
    with ``liquidate``, after (2) the account is liquidated if its margin runs out inside the bar
    (:func:`_liquidate_nb`) and then stops trading (``stats[S_LIQUIDATED]``,
    ``stats[S_LIQUIDATION_BAR]``).
    """
    n, k = close.shape
    write_equity = equity_out.shape[0] == n
    orders = np.empty((max(64, min(n * k // 8, 4096)), N_ORDER_FIELDS), dtype=np.float64)
    trades = np.empty((max(64, min(n * k // 16, 2048)), N_TRADE_FIELDS), dtype=np.float64)
    stats = np.zeros(N_STATS, dtype=np.float64)
    acct = np.zeros(N_ACCT, dtype=np.float64)
    acct[A_CASH] = init_cash
    acct[A_LIQ_BAR] = -1.0
    # per-column state; int columns live in float64 slots viewed as int64 (same width)
    pos = np.zeros(k, dtype=np.float64)
    entry_price = np.zeros(k, dtype=np.float64)
    entry_bar_f = np.zeros(k, dtype=np.float64)
    entry_fee = np.zeros(k, dtype=np.float64)
    extreme = np.zeros(k, dtype=np.float64)
    pos_sl = np.full(k, np.nan)
    pos_tp = np.full(k, np.nan)
    pos_tsl = np.full(k, np.nan)
    last_price = np.zeros(k, dtype=np.float64)
    pending_f = np.zeros(k, dtype=np.float64)
    action_f = np.zeros(k, dtype=np.float64)
    state = (
        pos,
        entry_price,
        entry_bar_f,
        entry_fee,
        extreme,
        pos_sl,
        pos_tp,
        pos_tsl,
        last_price,
        pending_f,
        action_f,
    )
    entry_bar = entry_bar_f.view(np.int64)
    run = np.zeros(10, dtype=np.float64)
    run[R_PREV] = init_cash
    run[R_PEAK] = init_cash
    i = 0
    while True:
        i = _loop_nb(
            i,
            open_,
            high,
            low,
            close,
            long_entries,
            long_exits,
            short_entries,
            short_exits,
            sl_stop,
            tp_stop,
            tsl_stop,
            qty_step,
            min_qty,
            min_notional,
            price_tick,
            fee,
            slippage,
            fill_at_close,
            size_mode,
            size,
            max_position,
            max_open,
            use_stops,
            max_gross,
            maintenance,
            liquidate,
            equity_out,
            state,
            acct,
            run,
            orders,
            trades,
        )
        if i >= n:
            break
        orders = _grow_nb(orders, orders.shape[0])
        trades = _grow_nb(trades, trades.shape[0])
    prev_equity = run[R_PREV]
    orders = _grow_nb(orders, orders.shape[0]) if acct[A_ORDERS] + k > orders.shape[0] else orders
    trades = _grow_nb(trades, trades.shape[0]) if acct[A_TRADES] + k > trades.shape[0] else trades

    # positions still open at the end: closed at the last close, or reported as open trades
    final_equity = prev_equity
    for j in range(k):
        p = pos[j]
        if p == 0.0:
            continue
        cash, px, f, pnl = _exit_nb(
            p,
            close[n - 1, j],
            slippage,
            price_tick[j],
            fee if close_at_end else 0.0,
            acct[A_CASH],
            entry_price[j],
            entry_fee[j],
        )
        if close_at_end:
            acct[A_CASH] = cash
            _push_order_nb(
                orders,
                int(acct[A_ORDERS]),
                n - 1,
                j,
                -1.0 if p > 0.0 else 1.0,
                abs(p),
                px,
                f,
                REASON_END,
            )
            acct[A_ORDERS] += 1
            acct[A_FEES] += f
            pos[j] = 0.0
        _push_trade_nb(
            trades,
            int(acct[A_TRADES]),
            j,
            p,
            entry_bar[j],
            n - 1,
            entry_price[j],
            px,
            pnl,
            entry_fee[j] + f,
            REASON_END,
            not close_at_end,
        )
        acct[A_TRADES] += 1
    if close_at_end:
        final_equity = acct[A_CASH]
        if write_equity:
            equity_out[n - 1] = final_equity
    trades = trades[: int(acct[A_TRADES])]
    _trade_stats_nb(trades, stats)
    stats[S_FINAL_EQUITY] = final_equity
    stats[S_SUM_RET] = run[R_SUM]
    stats[S_SUM_RET_SQ] = run[R_SUM_SQ]
    stats[S_SUM_DOWN_SQ] = run[R_DOWN_SQ]
    stats[S_MAX_DD] = run[R_MAX_DD]
    stats[S_MAX_DD_DURATION] = run[R_MAX_DD_BARS]
    stats[S_EXPOSURE_BARS] = run[R_EXPOSURE]
    stats[S_ORDERS] = acct[A_ORDERS]
    stats[S_FEES] = acct[A_FEES]
    stats[S_SKIPPED_SMALL] = acct[A_SKIP_SMALL]
    stats[S_SKIPPED_LIMIT] = acct[A_SKIP_LIMIT]
    stats[S_SKIPPED_MARGIN] = acct[A_SKIP_MARGIN]
    if acct[A_LIQ_BAR] >= 0.0:
        stats[S_LIQUIDATED] = 1.0
        stats[S_LIQUIDATION_BAR] = acct[A_LIQ_BAR]
    stats[S_BARS] = n
    return orders[: int(acct[A_ORDERS])], trades, stats


@njit(cache=True, nogil=True)
def equity_stats_nb(equity: np.ndarray, init_cash: float) -> np.ndarray:
    """Return the equity-curve part of the statistics vector (``S_*`` layout) for ``equity``."""
    stats = np.zeros(N_STATS, dtype=np.float64)
    prev = init_cash
    peak = init_cash
    max_dd = 0.0
    dd_bars = 0
    max_dd_bars = 0
    sum_ret = 0.0
    sum_sq = 0.0
    down_sq = 0.0
    for i in range(equity.shape[0]):
        e = equity[i]
        r = _bar_return_nb(e, prev)
        sum_ret += r
        sum_sq += r * r
        down = min(r, 0.0)
        down_sq += down * down
        prev = e
        peak = max(peak, e)
        dd_bars = dd_bars + 1 if e < peak else 0
        max_dd = max(max_dd, 1.0 - e / peak)
        max_dd_bars = max(max_dd_bars, dd_bars)
    stats[S_FINAL_EQUITY] = prev
    stats[S_SUM_RET] = sum_ret
    stats[S_SUM_RET_SQ] = sum_sq
    stats[S_SUM_DOWN_SQ] = down_sq
    stats[S_MAX_DD] = max_dd
    stats[S_MAX_DD_DURATION] = max_dd_bars
    stats[S_BARS] = equity.shape[0]
    return stats


# state slots of the single-symbol kernel (one float64 vector, so rare paths can be functions)
(
    X_CASH,
    X_POS,
    X_ENTRY_PRICE,
    X_ENTRY_BAR,
    X_ENTRY_FEE,
    X_EXTREME,
    X_SL,
    X_TP,
    X_TSL,
    X_ORDERS,
    X_TRADES,
    X_FEES,
    X_SKIP_SMALL,
    X_SKIP_LIMIT,
) = range(14)
# X_LIQ_BAR is -1 until the account is liquidated; X_LIQ_PX: see _liq_trigger_nb
X_SKIP_MARGIN, X_LIQ_BAR, X_LIQ_PX = 14, 15, 16
N_X = 17


@njit(cache=True, nogil=True, inline="always")
def _exit_1d_nb(
    i: int,
    base: float,
    reason: int,
    x: np.ndarray,
    fee: float,
    slippage: float,
    tick: float,
    orders: np.ndarray,
    trades: np.ndarray,
) -> None:
    p = x[X_POS]
    cash, px, f, pnl = _exit_nb(
        p, base, slippage, tick, fee, x[X_CASH], x[X_ENTRY_PRICE], x[X_ENTRY_FEE]
    )
    x[X_CASH] = cash
    _push_order_nb(orders, int(x[X_ORDERS]), i, 0, -1.0 if p > 0.0 else 1.0, abs(p), px, f, reason)
    x[X_ORDERS] += 1
    _push_trade_nb(
        trades,
        int(x[X_TRADES]),
        0,
        p,
        int(x[X_ENTRY_BAR]),
        i,
        x[X_ENTRY_PRICE],
        px,
        pnl,
        x[X_ENTRY_FEE] + f,
        reason,
        False,
    )
    x[X_TRADES] += 1
    x[X_FEES] += f
    x[X_POS] = 0.0


@njit(cache=True, nogil=True)
def _liquidate_1d_nb(
    i: int,
    n: int,
    o: float,
    adverse: float,
    x: np.ndarray,
    fee: float,
    slippage: float,
    tick: float,
    maintenance: float,
    equity_out: np.ndarray,
    run: np.ndarray,
    orders: np.ndarray,
    trades: np.ndarray,
) -> None:
    """Close the lone position of ``x``, called in bar ``i``, and finish the run flat.

    :func:`_liquidate_nb`'s arithmetic, so both kernels agree bit for bit; then the account
    stops trading: bars ``i`` to ``n - 1`` are marked at the cash left, with the bar loop's
    arithmetic for the running statistics.
    """
    pos = x[X_POS]
    cash = x[X_CASH]
    d_worst = (cash + _close_value_nb(pos, adverse, slippage, fee)) - maintenance * (
        abs(pos) * adverse
    )
    lam = _liquidation_lambda_nb(
        (cash + _close_value_nb(pos, o, slippage, fee)) - maintenance * (abs(pos) * o), d_worst
    )
    _exit_1d_nb(
        i, o + lam * (adverse - o), REASON_LIQUIDATION, x, fee, slippage, tick, orders, trades
    )
    equity = x[X_CASH]
    write_equity = equity_out.shape[0] == n
    prev_equity = run[R_PREV]
    peak_equity = run[R_PEAK]
    max_dd = run[R_MAX_DD]
    dd_bars = int(run[R_DD_BARS])
    max_dd_bars = int(run[R_MAX_DD_BARS])
    sum_ret = run[R_SUM]
    sum_ret_sq = run[R_SUM_SQ]
    sum_down_sq = run[R_DOWN_SQ]
    for j in range(i, n):
        if write_equity:
            equity_out[j] = equity
        ret = _bar_return_nb(equity, prev_equity)
        sum_ret += ret
        sum_ret_sq += ret * ret
        down = min(ret, 0.0)
        sum_down_sq += down * down
        prev_equity = equity
        peak_equity = max(peak_equity, equity)
        dd_bars = dd_bars + 1 if equity < peak_equity else 0
        max_dd = max(max_dd, 1.0 - equity / peak_equity)
        max_dd_bars = max(max_dd_bars, dd_bars)
    run[R_PREV] = prev_equity
    run[R_PEAK] = peak_equity
    run[R_MAX_DD] = max_dd
    run[R_DD_BARS] = dd_bars
    run[R_MAX_DD_BARS] = max_dd_bars
    run[R_SUM] = sum_ret
    run[R_SUM_SQ] = sum_ret_sq
    run[R_DOWN_SQ] = sum_down_sq


@njit(cache=True, nogil=True, inline="always")
def _execute_1d_nb(
    a: int,
    i: int,
    sig_row: int,
    base: float,
    x: np.ndarray,
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
    orders: np.ndarray,
    trades: np.ndarray,
) -> None:
    # the same rules as _execute_nb for one column; kept apart so the bar loop stays lean
    p = x[X_POS]
    if p != 0.0 and (a == 2 or (a == 1 and p < 0.0) or (a == -1 and p > 0.0)):
        _exit_1d_nb(i, base, REASON_SIGNAL, x, fee, slippage, tick, orders, trades)
    if (a != 1 and a != -1) or x[X_POS] != 0.0:
        return
    sl_f = sl_stop[sig_row if sl_stop.shape[0] > 1 else 0, 0]
    tsl_f = tsl_stop[sig_row if tsl_stop.shape[0] > 1 else 0, 0]
    # flat here, so equity is cash and there are no shorts
    avail = _avail_nb(x[X_CASH], x[X_CASH], 0.0, max_gross, fee)
    if not (avail > _REL_TOL * abs(x[X_CASH])):
        if x[X_CASH] > 0.0:
            x[X_SKIP_MARGIN] += 1
        else:
            x[X_SKIP_SMALL] += 1
        return
    budget = _budget_nb(
        size_mode, size, x[X_CASH], _risk_distance_nb(sl_f, tsl_f), fee, max_position
    )
    ok = False
    if budget == budget:
        ok, qty, px, f, cash = _entry_nb(
            a,
            base,
            budget,
            x[X_CASH],
            avail,
            fee,
            slippage,
            tick,
            qty_step,
            min_qty,
            min_notional,
        )
    if not ok:
        x[X_SKIP_SMALL] += 1
        return
    x[X_CASH] = cash
    _push_order_nb(orders, int(x[X_ORDERS]), i, 0, float(a), abs(qty), px, f, REASON_SIGNAL)
    x[X_ORDERS] += 1
    x[X_FEES] += f
    x[X_POS] = qty
    x[X_ENTRY_PRICE] = px
    x[X_ENTRY_BAR] = i
    x[X_ENTRY_FEE] = f
    x[X_EXTREME] = px
    x[X_SL] = sl_f
    x[X_TP] = tp_stop[sig_row if tp_stop.shape[0] > 1 else 0, 0]
    x[X_TSL] = tsl_f


@njit(cache=True, nogil=True)
def _loop_1d_nb(  # noqa: PLR0913, C901
    i0: int,
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
    qty_step: float,
    min_qty: float,
    min_notional: float,
    tick: float,
    fee: float,
    slippage: float,
    fill_at_close: bool,
    size_mode: int,
    size: float,
    max_position: float,
    use_stops: bool,
    max_gross: float,
    maintenance: float,
    liquidate: bool,
    equity_out: np.ndarray,
    x: np.ndarray,
    run: np.ndarray,
    orders: np.ndarray,
    trades: np.ndarray,
) -> int:
    n = close.shape[0]
    write_equity = equity_out.shape[0] == n
    cap_o = orders.shape[0] - 3
    cap_t = trades.shape[0] - 2
    pos = x[X_POS]
    cash = x[X_CASH]
    pending = 0 if i0 == 0 else int(run[R_PENDING])
    prev_equity = run[R_PREV]
    peak_equity = run[R_PEAK]
    max_dd = run[R_MAX_DD]
    dd_bars = int(run[R_DD_BARS])
    max_dd_bars = int(run[R_MAX_DD_BARS])
    sum_ret = run[R_SUM]
    sum_ret_sq = run[R_SUM_SQ]
    sum_down_sq = run[R_DOWN_SQ]
    exposure = int(run[R_EXPOSURE])
    long_safe = _long_safe_nb(maintenance, fee, slippage)
    # Cash and position are constant while a position is open, so its liquidation price is
    # too: a comparison per bar instead of the liquidation value.  It and the halt flag live
    # in x, not in locals: extra loop-carried locals cost a long-only sweep about a fifth.
    x[X_LIQ_PX] = _liq_trigger_nb(pos, cash, fee, slippage, maintenance, liquidate)
    i = i0
    while i < n:
        if x[X_ORDERS] > cap_o or x[X_TRADES] > cap_t:
            break
        if pending != 0:
            x[X_POS] = pos
            x[X_CASH] = cash
            _execute_1d_nb(
                pending,
                i,
                i - 1,
                open_[i, 0],
                x,
                sl_stop,
                tp_stop,
                tsl_stop,
                qty_step,
                min_qty,
                min_notional,
                tick,
                fee,
                slippage,
                size_mode,
                size,
                max_position,
                max_gross,
                orders,
                trades,
            )
            pending = 0
            pos = x[X_POS]
            cash = x[X_CASH]
            x[X_LIQ_PX] = _liq_trigger_nb(pos, cash, fee, slippage, maintenance, liquidate)
        if use_stops and pos != 0.0:
            reason, exit_base, x[X_EXTREME] = _stop_tick_nb(
                pos,
                open_[i, 0],
                high[i, 0],
                low[i, 0],
                x[X_ENTRY_PRICE],
                x[X_EXTREME],
                x[X_SL],
                x[X_TP],
                x[X_TSL],
                x[X_ENTRY_BAR] < i,
                tick,
            )
            if reason >= 0:
                x[X_POS] = pos
                x[X_CASH] = cash
                _exit_1d_nb(i, exit_base, reason, x, fee, slippage, tick, orders, trades)
                pos = x[X_POS]
                cash = x[X_CASH]
        # Register tests first: a long paid in cash never loads the lows.  A call leaves the
        # loop (the caller liquidates and ends the run): a call site in here would cost every
        # bar of every sweep.
        if (
            pos != 0.0
            and (pos < 0.0 or cash < 0.0 or not long_safe)
            and (high[i, 0] >= x[X_LIQ_PX] if pos < 0.0 else low[i, 0] <= x[X_LIQ_PX])
        ):
            adverse = high[i, 0] if pos < 0.0 else low[i, 0]
            if (cash + _close_value_nb(pos, adverse, slippage, fee)) - maintenance * (
                abs(pos) * adverse
            ) <= 0.0:
                x[X_LIQ_BAR] = i
                break
        c = close[i, 0]
        a = _decide_nb(
            pos, long_entries[i, 0], long_exits[i, 0], short_entries[i, 0], short_exits[i, 0]
        )
        if a != 0:
            if fill_at_close:
                x[X_POS] = pos
                x[X_CASH] = cash
                _execute_1d_nb(
                    a,
                    i,
                    i,
                    c,
                    x,
                    sl_stop,
                    tp_stop,
                    tsl_stop,
                    qty_step,
                    min_qty,
                    min_notional,
                    tick,
                    fee,
                    slippage,
                    size_mode,
                    size,
                    max_position,
                    max_gross,
                    orders,
                    trades,
                )
                pos = x[X_POS]
                cash = x[X_CASH]
                x[X_LIQ_PX] = _liq_trigger_nb(pos, cash, fee, slippage, maintenance, liquidate)
            elif i + 1 < n:
                pending = a
        equity = cash + pos * c
        if pos != 0.0:
            exposure += 1
        if write_equity:
            equity_out[i] = equity
        # branch-free on purpose: equity moves are unpredictable, mispredictions dominated
        ret = _bar_return_nb(equity, prev_equity)
        sum_ret += ret
        sum_ret_sq += ret * ret
        down = min(ret, 0.0)
        sum_down_sq += down * down
        prev_equity = equity
        peak_equity = max(peak_equity, equity)
        dd_bars = dd_bars + 1 if equity < peak_equity else 0
        max_dd = max(max_dd, 1.0 - equity / peak_equity)
        max_dd_bars = max(max_dd_bars, dd_bars)
        i += 1
        if pos == 0.0 and pending == 0 and 0.0 < abs(cash) < np.inf:
            # Flat with nothing pending (about half the bars of a long-only sweep): until an
            # entry signal, equity stays at cash, which it already equals, so every return is
            # exactly cash / cash - 1 == 0 and the sums, peak and max drawdown cannot move; only
            # the drawdown duration grows.  Skipping those bars gives the same bits.  Zero or
            # non-finite cash takes the full path, which raises or propagates NaN as before.
            j = i
            while j < n and not (long_entries[j, 0] | short_entries[j, 0]):
                j += 1
            if j > i:
                if write_equity:
                    equity_out[i:j] = cash
                if cash < peak_equity:
                    dd_bars += j - i
                    max_dd_bars = max(max_dd_bars, dd_bars)
                else:
                    dd_bars = 0
                i = j
    x[X_POS] = pos
    x[X_CASH] = cash
    run[R_PENDING] = pending
    run[R_PREV] = prev_equity
    run[R_PEAK] = peak_equity
    run[R_MAX_DD] = max_dd
    run[R_DD_BARS] = dd_bars
    run[R_MAX_DD_BARS] = max_dd_bars
    run[R_SUM] = sum_ret
    run[R_SUM_SQ] = sum_ret_sq
    run[R_DOWN_SQ] = sum_down_sq
    run[R_EXPOSURE] = exposure
    return i


@njit(cache=True, nogil=True)
def simulate_1d_nb(  # noqa: PLR0913
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
    equity_out: np.ndarray,
    max_gross: float = MAX_GROSS_LEVERAGE,
    maintenance: float = MAINTENANCE_MARGIN,
    liquidate: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Single-symbol twin of :func:`simulate_nb` (same arguments, same results, less work per bar).

    Keeps the account in registers through the bar loop; tests check it against
    :func:`simulate_nb` order for order.
    """
    n = close.shape[0]
    orders = np.empty((max(64, min(n // 8, 4096)), N_ORDER_FIELDS), dtype=np.float64)
    trades = np.empty((max(64, min(n // 16, 2048)), N_TRADE_FIELDS), dtype=np.float64)
    x = np.zeros(N_X, dtype=np.float64)
    x[X_CASH] = init_cash
    x[X_LIQ_BAR] = -1.0
    x[X_SL] = np.nan
    x[X_TP] = np.nan
    x[X_TSL] = np.nan
    run = np.zeros(10, dtype=np.float64)
    run[R_PREV] = init_cash
    run[R_PEAK] = init_cash
    i = 0
    while True:
        i = _loop_1d_nb(
            i,
            open_,
            high,
            low,
            close,
            long_entries,
            long_exits,
            short_entries,
            short_exits,
            sl_stop,
            tp_stop,
            tsl_stop,
            qty_step[0],
            min_qty[0],
            min_notional[0],
            price_tick[0],
            fee,
            slippage,
            fill_at_close,
            size_mode,
            size,
            max_position,
            use_stops,
            max_gross,
            maintenance,
            liquidate,
            equity_out,
            x,
            run,
            orders,
            trades,
        )
        if x[X_LIQ_BAR] >= 0.0:
            _liquidate_1d_nb(
                i,
                n,
                open_[i, 0],
                high[i, 0] if x[X_POS] < 0.0 else low[i, 0],
                x,
                fee,
                slippage,
                price_tick[0],
                maintenance,
                equity_out,
                run,
                orders,
                trades,
            )
            break
        if i >= n:
            break
        orders = _grow_nb(orders, orders.shape[0])
        trades = _grow_nb(trades, trades.shape[0])
    stats = np.zeros(N_STATS, dtype=np.float64)
    final_equity = run[R_PREV]
    p = x[X_POS]
    if p != 0.0:
        if close_at_end:
            _exit_1d_nb(
                n - 1, close[n - 1, 0], REASON_END, x, fee, slippage, price_tick[0], orders, trades
            )
            final_equity = x[X_CASH]
            if equity_out.shape[0] == n:
                equity_out[n - 1] = final_equity
        else:
            _, px, f, pnl = _exit_nb(
                p,
                close[n - 1, 0],
                slippage,
                price_tick[0],
                0.0,
                x[X_CASH],
                x[X_ENTRY_PRICE],
                x[X_ENTRY_FEE],
            )
            _push_trade_nb(
                trades,
                int(x[X_TRADES]),
                0,
                p,
                int(x[X_ENTRY_BAR]),
                n - 1,
                x[X_ENTRY_PRICE],
                px,
                pnl,
                x[X_ENTRY_FEE],
                REASON_END,
                True,
            )
            x[X_TRADES] += 1
    trades = trades[: int(x[X_TRADES])]
    _trade_stats_nb(trades, stats)
    stats[S_FINAL_EQUITY] = final_equity
    stats[S_SUM_RET] = run[R_SUM]
    stats[S_SUM_RET_SQ] = run[R_SUM_SQ]
    stats[S_SUM_DOWN_SQ] = run[R_DOWN_SQ]
    stats[S_MAX_DD] = run[R_MAX_DD]
    stats[S_MAX_DD_DURATION] = run[R_MAX_DD_BARS]
    stats[S_EXPOSURE_BARS] = run[R_EXPOSURE]
    stats[S_ORDERS] = x[X_ORDERS]
    stats[S_FEES] = x[X_FEES]
    stats[S_SKIPPED_SMALL] = x[X_SKIP_SMALL]
    stats[S_SKIPPED_LIMIT] = x[X_SKIP_LIMIT]
    stats[S_SKIPPED_MARGIN] = x[X_SKIP_MARGIN]
    if x[X_LIQ_BAR] >= 0.0:
        stats[S_LIQUIDATED] = 1.0
        stats[S_LIQUIDATION_BAR] = x[X_LIQ_BAR]
    stats[S_BARS] = n
    return orders[: int(x[X_ORDERS])], trades, stats
