"""``/api/strategies``: the strategies a backtest, a study or a bot may name.

Only registered names (the built-ins and the operator's ``CRYPTOORCH_STRATEGY_PATHS``), each with
its declared parameters: what a form needs to offer them and check them as the API will.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from cryptoorchestrator.api.deps import ContextDep, CurrentUser
from cryptoorchestrator.platform.strategy.base import Param
from cryptoorchestrator.strategies.registry import (
    list_strategies,
    load_strategy_paths,
    registered_strategy,
)

router = APIRouter(prefix="/api/strategies", tags=["strategies"])


def _param(p: Param) -> dict[str, Any]:
    """A declared parameter as JSON: what a form needs to offer and check it."""
    return {
        "name": p.name,
        "type": p.type,
        "default": p.default,
        "low": p.low,
        "high": p.high,
        "step": p.step,
        "choices": list(p.choices) if p.choices is not None else None,
        "doc": p.doc,
        "allowed": p.allowed,
    }


@router.get("")
def list_strategy_params(context: ContextDep, _user: CurrentUser) -> list[dict[str, Any]]:
    """The strategies runs, studies and bots may name, with their declared parameters."""
    load_strategy_paths(context.settings.strategy_paths)  # the operator's, as the workers do
    return [
        {
            "name": name,
            "summary": summary,
            "params": [_param(p) for p in registered_strategy(name).params],
        }
        for name, summary in list_strategies().items()
    ]
