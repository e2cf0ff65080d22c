"""Binance's signed spot endpoints: an authenticated account's balances, orders and trades.

Each handler takes the account the request was signed by, its parameters and the simulated time
(resting orders already matched up to it) and returns the JSON answer.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from cryptoorchestrator.platform.exchange.sim.accounts import SimAccount, select_orders
from cryptoorchestrator.platform.exchange.sim.matching import MatchingEngine
from cryptoorchestrator.platform.exchange.sim.wire import fmt, int_param, opt_int


class SignedEndpoints:
    """The handlers of Binance's signed REST endpoints over the matching engine's accounts."""

    def __init__(self, engine: MatchingEngine) -> None:
        self.engine = engine

    def account(self, account: SimAccount, params: dict[str, str], now: int) -> dict[str, Any]:
        """Answer ``GET /api/v3/account``: commissions and balances."""
        rate = self.engine.fee_rate
        bps = int(rate * 10_000)
        omit_zero = params.get("omitZeroBalances", "false").lower() == "true"
        balances = []
        for asset in sorted(set(account.free) | set(account.locked)):
            free, locked = account.balance(asset)
            if omit_zero and free == 0 and locked == 0:
                continue
            balances.append({"asset": asset, "free": fmt(free), "locked": fmt(locked)})
        return {
            "makerCommission": bps,
            "takerCommission": bps,
            "buyerCommission": 0,
            "sellerCommission": 0,
            "commissionRates": {
                "maker": fmt(rate),
                "taker": fmt(rate),
                "buyer": fmt(Decimal(0)),
                "seller": fmt(Decimal(0)),
            },
            "canTrade": True,
            "canWithdraw": False,
            "canDeposit": False,
            "brokered": False,
            "requireSelfTradePrevention": False,
            "preventSor": False,
            "updateTime": account.update_time,
            "accountType": "SPOT",
            "balances": balances,
            "permissions": ["SPOT"],
            "uid": abs(hash(account.api_key)) % 10**9,
        }

    def new_order(self, account: SimAccount, params: dict[str, str], now: int) -> dict[str, Any]:
        """Answer ``POST /api/v3/order``: place the order, in the asked response type."""
        order = self.engine.place_order(account, params, now)
        resp_type = (params.get("newOrderRespType") or "FULL").upper()
        return order.to_new_order_response(resp_type)

    def test_order(self, account: SimAccount, params: dict[str, str], now: int) -> dict[str, Any]:
        """Answer ``POST /api/v3/order/test``: check the symbol only."""
        self.engine.market(params.get("symbol"))
        return {}

    def get_order(self, account: SimAccount, params: dict[str, str], now: int) -> dict[str, Any]:
        """Answer ``GET /api/v3/order`` by ``orderId`` or ``origClientOrderId``."""
        market = self.engine.market(params.get("symbol"))
        order = self.engine.find_order(
            account, market.spec.market_id, params.get("orderId"), params.get("origClientOrderId")
        )
        return order.to_wire()

    def cancel_order(self, account: SimAccount, params: dict[str, str], now: int) -> dict[str, Any]:
        """Answer ``DELETE /api/v3/order``: cancel one open order."""
        market = self.engine.market(params.get("symbol"))
        order = self.engine.cancel_order(
            account,
            market.spec.market_id,
            params.get("orderId"),
            params.get("origClientOrderId"),
            now,
        )
        return order.to_cancel_response(params.get("newClientOrderId"), now)

    def cancel_all(
        self, account: SimAccount, params: dict[str, str], now: int
    ) -> list[dict[str, Any]]:
        """Answer ``DELETE /api/v3/openOrders``: cancel every open order of a pair."""
        market = self.engine.market(params.get("symbol"))
        out = []
        for order in select_orders(
            account.orders.values(), market_id=market.spec.market_id, open_only=True
        ):
            self.engine.cancel_order(account, market.spec.market_id, str(order.order_id), None, now)
            out.append(order.to_cancel_response(None, now))
        return out

    def open_orders(
        self, account: SimAccount, params: dict[str, str], now: int
    ) -> list[dict[str, Any]]:
        """Answer ``GET /api/v3/openOrders`` for one pair or all."""
        market_id = None
        if params.get("symbol"):
            market_id = self.engine.market(params.get("symbol")).spec.market_id
        return [
            o.to_wire()
            for o in select_orders(account.orders.values(), market_id=market_id, open_only=True)
        ]

    def all_orders(
        self, account: SimAccount, params: dict[str, str], now: int
    ) -> list[dict[str, Any]]:
        """Answer ``GET /api/v3/allOrders`` of a pair, paged like Binance."""
        market = self.engine.market(params.get("symbol"))
        limit = int_param(params, "limit", 500, 1, 1000)
        from_id = opt_int(params, "orderId")
        start, end = opt_int(params, "startTime"), opt_int(params, "endTime")
        rows = []
        for o in select_orders(account.orders.values(), market_id=market.spec.market_id):
            if from_id is not None and o.order_id < from_id:
                continue
            if start is not None and o.time < start:
                continue
            if end is not None and o.time > end:
                continue
            rows.append(o.to_wire())
        return rows[:limit] if (from_id is not None or start is not None) else rows[-limit:]

    def my_trades(
        self, account: SimAccount, params: dict[str, str], now: int
    ) -> list[dict[str, Any]]:
        """Answer ``GET /api/v3/myTrades`` of a pair, paged like Binance."""
        market = self.engine.market(params.get("symbol"))
        limit = int_param(params, "limit", 500, 1, 1000)
        order_id = opt_int(params, "orderId")
        from_id = opt_int(params, "fromId")
        start, end = opt_int(params, "startTime"), opt_int(params, "endTime")
        rows = []
        for fill in account.trades:
            if fill.market_id != market.spec.market_id:
                continue
            if order_id is not None and fill.order_id != order_id:
                continue
            if from_id is not None and fill.trade_id < from_id:
                continue
            if start is not None and fill.time < start:
                continue
            if end is not None and fill.time > end:
                continue
            rows.append(fill.to_wire())
        return rows[:limit] if (from_id is not None or start is not None) else rows[-limit:]
