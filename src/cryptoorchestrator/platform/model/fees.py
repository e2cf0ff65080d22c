"""Trading-fee defaults shared by every entry point (SDK, CLI, API, Ray jobs, ``SimConfig``).

One definition, used by reference everywhere, so that the same backtest gives the same figures
whichever door it came through.
"""

from __future__ import annotations

#: Fee charged on each fill's notional when the caller gives none, in basis points: Binance
#: spot's base (VIP 0, no BNB discount) taker fee of 0.1 %.  A market order, which is what the
#: engine and the bots place, pays the taker fee; assuming no fee would flatter every strategy.
DEFAULT_FEE_BPS: float = 10.0
