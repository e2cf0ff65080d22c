"""The price path inside a candle, which every price the simulator shows follows.

A rising candle (close >= open) goes open -> low -> high -> close, a falling one open -> high ->
low -> close, each leg taking a third of the candle: the usual "OHLC path" assumption of
backtesters, which never invents a price outside the candle's range.  A partial candle, the
ticker, the order book and limit-order matching all read prices from it, so they agree with each
other and with the stored candle once it closes.
"""

from __future__ import annotations

#: Fractions of a candle at which the price path reaches its 2nd, 3rd and 4th point.
LEG = 1.0 / 3.0


def path_points(o: float, h: float, lo: float, c: float) -> tuple[float, float, float, float]:
    """Return the four prices the intra-candle path visits, in order."""
    return (o, lo, h, c) if c >= o else (o, h, lo, c)


def price_on_path(o: float, h: float, lo: float, c: float, frac: float) -> float:
    """Return the price at fraction ``frac`` (0..1) of the candle."""
    pts = path_points(o, h, lo, c)
    frac = min(max(frac, 0.0), 1.0)
    leg = min(int(frac / LEG), 2)
    t = (frac - leg * LEG) / LEG
    return pts[leg] + (pts[leg + 1] - pts[leg]) * t


def partial_ohlc(
    o: float, h: float, lo: float, c: float, frac: float
) -> tuple[float, float, float, float]:
    """Return the open/high/low/close seen when a fraction ``frac`` of the candle has passed."""
    if frac >= 1.0:
        return o, h, lo, c
    pts = path_points(o, h, lo, c)
    last = price_on_path(o, h, lo, c, frac)
    visited = [pts[k] for k in range(3) if k * LEG <= frac] + [last]
    return o, max(visited), min(visited), last


def first_touch(
    o: float, h: float, lo: float, c: float, f0: float, f1: float, price: float, *, buy: bool
) -> float | None:
    """Return the first fraction in ``[f0, f1]`` at which a limit order at ``price`` trades.

    A buy trades when the path is at or below ``price``, a sell when it is at or above.
    """
    if f1 < f0:
        return None

    def hit(p: float) -> bool:
        return p <= price if buy else p >= price

    if hit(price_on_path(o, h, lo, c, f0)):
        return f0
    # The path is linear on each leg and did not trade at the leg's start, so a leg whose end
    # trades is crossed exactly once, at the interpolated point.
    for leg in range(3):
        lo_f, hi_f = max(leg * LEG, f0), min((leg + 1) * LEG, f1)
        if lo_f > hi_f:
            continue
        p_a, p_b = price_on_path(o, h, lo, c, lo_f), price_on_path(o, h, lo, c, hi_f)
        if hit(p_b):
            if p_b == p_a:
                return lo_f
            t = min(max((price - p_a) / (p_b - p_a), 0.0), 1.0)
            return lo_f + (hi_f - lo_f) * t
    return None
