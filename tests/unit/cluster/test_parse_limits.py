"""Risk limits sent over the API are parsed without Ray: scopes, names, and values a money
column can hold."""

from __future__ import annotations

from decimal import Decimal

import pytest

from cryptoorchestrator.cluster.facade import parse_limits, split_limits
from cryptoorchestrator.platform.errors import InvalidInputError


def test_portfolio_values_become_decimals() -> None:
    assert parse_limits({"max_drawdown_pct": "15"}) == {"max_drawdown_pct": Decimal(15)}
    assert parse_limits([{"scope": "portfolio", "name": "kill_switch", "value": "true"}]) == {
        "kill_switch": True
    }


@pytest.mark.parametrize("value", ["1" + "0" * 39, "1e40", "NaN", "Infinity", "0." + "1" * 30])
def test_values_a_money_column_cannot_hold_are_refused(value: str) -> None:
    item = {"scope": "portfolio", "name": "max_drawdown_pct", "value": value}
    with pytest.raises(InvalidInputError) as err:
        parse_limits([item])
    assert err.value.field == "limits[0].value"
    with pytest.raises(InvalidInputError) as err:
        split_limits([{**item, "scope": "user"}, item])
    assert err.value.field == "limits[0].value"


def test_unknown_names_and_scopes_name_the_item() -> None:
    with pytest.raises(InvalidInputError) as err:
        parse_limits([{"scope": "portfolio", "name": "no_such_limit", "value": 1}])
    assert err.value.field == "limits[0].name"
    with pytest.raises(InvalidInputError) as err:
        split_limits([{"scope": "bot:1", "name": "max_drawdown_pct", "value": 1}])
    assert err.value.field == "limits[0].scope"


def test_user_scope_splits_from_portfolio_and_null_unsets() -> None:
    portfolio, user = split_limits(
        [
            {"scope": "portfolio", "name": "max_drawdown_pct", "value": 20},
            {"scope": "user", "name": "max_drawdown_pct", "value": None},
        ]
    )
    assert portfolio == {"max_drawdown_pct": Decimal(20)}
    assert user == {"max_drawdown_pct": None}


@pytest.mark.parametrize(
    ("name", "value", "allowed"),
    [
        ("max_drawdown_pct", "500", "> 0 and <= 100"),
        ("max_drawdown_pct", "0", "> 0 and <= 100"),
        ("max_open_orders", "0", ">= 1 and <= 1000"),
    ],
)
def test_values_out_of_the_limits_range_are_refused_with_the_range(
    name: str, value: str, allowed: str
) -> None:
    with pytest.raises(InvalidInputError) as err:
        parse_limits({name: value})
    assert err.value.field == "limits[0].value"
    assert err.value.allowed == allowed
    assert parse_limits({name: "15"}) == {name: Decimal(15)}
