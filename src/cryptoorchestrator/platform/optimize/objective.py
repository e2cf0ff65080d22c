"""Objectives (a metric maximised or minimised, or a user function) and result constraints."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from cryptoorchestrator.platform.backtest.metrics import METRIC_NAMES
from cryptoorchestrator.platform.errors import InvalidInputError
from cryptoorchestrator.platform.optimize.expr import Expression

Direction = Literal["maximize", "minimize"]
ObjectiveFn = Callable[[Mapping[str, float]], float]

#: Metrics where lower is better; they are minimised unless the caller says otherwise.
LOWER_IS_BETTER = frozenset(
    {"max_drawdown", "max_drawdown_duration", "volatility", "fees_paid", "skipped_orders"}
)


@dataclass(frozen=True)
class Objective:
    """What a study optimises: ``metric`` of the backtest metrics, or ``func(metrics)``."""

    name: str
    direction: Direction = "maximize"
    func: ObjectiveFn | None = None

    def value(self, metrics: Mapping[str, float]) -> float:
        """Return the objective value of one trial's metrics (NaN when undefined)."""
        raw = self.func(metrics) if self.func is not None else metrics[self.name]
        value = float(raw)
        return value if math.isfinite(value) else math.nan

    def is_better(self, a: float, b: float | None) -> bool:
        """Return whether value ``a`` beats ``b`` (NaN never wins; anything beats None/NaN)."""
        if math.isnan(a):
            return False
        if b is None or math.isnan(b):
            return True
        return a < b if self.direction == "minimize" else a > b

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-able description (hashed into the study key)."""
        name = self.name
        if self.func is not None:
            qual = getattr(self.func, "__qualname__", type(self.func).__name__)
            name = f"{getattr(self.func, '__module__', '?')}.{qual}"
        return {"name": name, "direction": self.direction}


def parse_objective(
    objective: str | ObjectiveFn | Objective, *, minimize: bool | None = None
) -> Objective:
    """Build an :class:`Objective` from a metric name or a callable.

    Parameters
    ----------
    objective
        A key of the backtest metrics (``"sharpe"``, ``"total_return"``, ...) or a function of
        the metrics dict returning a float.
    minimize
        Minimise instead of maximise; by default only :data:`LOWER_IS_BETTER` metrics are.

    Raises
    ------
    InvalidInputError
        If the metric is unknown.
    """
    if isinstance(objective, Objective):
        return objective
    if callable(objective):
        name = getattr(objective, "__name__", "custom")
        return Objective(name, "minimize" if minimize else "maximize", objective)
    if not isinstance(objective, str) or objective not in METRIC_NAMES:
        raise InvalidInputError(
            "objective", f"unknown objective {objective!r}", allowed=METRIC_NAMES
        )
    if minimize is None:
        minimize = objective in LOWER_IS_BETTER
    return Objective(objective, "minimize" if minimize else "maximize")


@dataclass(frozen=True)
class ResultFilter:
    """Conditions a trial's metrics must meet to count (e.g. at least 10 trades)."""

    min_trades: int = 0
    expression: Expression | None = None

    def reason(self, metrics: Mapping[str, float]) -> str | None:
        """Return why the metrics are rejected, or None when they pass."""
        if self.min_trades and metrics.get("trade_count", 0.0) < self.min_trades:
            return f"trade_count {metrics.get('trade_count', 0.0):g} < min_trades {self.min_trades}"
        if self.expression is not None and not self.expression.holds(metrics):
            return f"result constraint {self.expression.text!r} not met"
        return None

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-able description."""
        return {
            "min_trades": self.min_trades,
            "expression": self.expression.text if self.expression else None,
        }


def parse_result_filter(
    min_trades: int | None = None, expression: str | None = None
) -> ResultFilter:
    """Build a :class:`ResultFilter`; ``expression`` may use any metric name.

    Raises
    ------
    InvalidInputError
        If ``min_trades`` is negative or the expression is not valid.
    """
    if min_trades is not None and (not isinstance(min_trades, int) or min_trades < 0):
        raise InvalidInputError(
            "min_trades", f"must be an integer >= 0, got {min_trades!r}", allowed=">= 0"
        )
    expr = Expression(expression, METRIC_NAMES, field="result_constraint") if expression else None
    return ResultFilter(min_trades or 0, expr)
