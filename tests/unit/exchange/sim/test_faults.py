"""Fault switches of the exchange simulator: parsing and validation."""

from __future__ import annotations

import pytest

from cryptoorchestrator.platform.errors import InvalidInputError
from cryptoorchestrator.platform.exchange.sim.faults import FaultState, parse_fault_args


def test_update_converts_cli_strings_and_keeps_other_switches() -> None:
    state = FaultState()
    state.update(parse_fault_args(["latency_ms=250", "drop_mode=close", "hang_s=1.5"]))
    assert state.latency_ms == 250
    assert state.drop_mode == "close"
    assert state.hang_s == 1.5
    assert state.fail_next == 0
    assert state.to_dict()["latency_ms"] == 250


@pytest.mark.parametrize(
    "changes",
    [
        {"nope": 1},
        {"latency_ms": "fast"},
        {"fail_next": -1},
        {"fail_status": 404},
        {"drop_mode": "sometimes"},
    ],
)
def test_bad_switches_are_refused_without_partial_update(changes: dict[str, object]) -> None:
    state = FaultState()
    with pytest.raises(InvalidInputError):
        state.update({"latency_ms": 10, **changes})
    assert state.latency_ms == 0


def test_path_prefix_limits_where_faults_apply() -> None:
    state = FaultState(path_prefix="/api/v3/order")
    assert state.applies_to("/api/v3/order")
    assert not state.applies_to("/api/v3/klines")
    assert FaultState().applies_to("/api/v3/klines")


def test_fault_words_must_be_key_value() -> None:
    with pytest.raises(InvalidInputError):
        parse_fault_args(["latency_ms"])
