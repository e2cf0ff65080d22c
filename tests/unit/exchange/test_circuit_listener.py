"""A breaker's listener hears each open episode once (opened, then closed) and the first refused
credentials since the last success; a listener that fails never breaks a call."""

from __future__ import annotations

from typing import Any

from cryptoorchestrator.platform.errors import AuthenticationError, RetryableExchangeError
from cryptoorchestrator.platform.exchange.circuit import CircuitBreaker, CircuitRegistry

DOWN = RetryableExchangeError("unreachable")


def _breaker(told: list[tuple[str, str, dict[str, Any]]], now: list[float]) -> CircuitBreaker:
    return CircuitBreaker(
        "binance:7",
        failure_threshold=2,
        cooldown_s=10,
        clock=lambda: now[0],
        wall_clock=lambda: 1_000 + now[0],
        listener=lambda *a: told.append(a),
    )


def test_one_episode_is_told_once_however_many_probes_fail() -> None:
    told: list[tuple[str, str, dict[str, Any]]] = []
    now = [0.0]
    b = _breaker(told, now)
    b.record_failure(DOWN)
    assert told == []  # below the threshold
    b.record_failure(DOWN)
    for _ in range(3):  # failed probes after each cooldown
        now[0] += 11
        b.record_failure(DOWN)
    b.record_success()
    b.record_success()
    assert [(name, kind) for name, kind, _ in told] == [
        ("binance:7", "opened"),
        ("binance:7", "closed"),
    ]
    assert told[0][2]["opened_at"] == told[1][2]["opened_at"] == 1_000.0
    assert told[1][2]["failures"] == 5


def test_an_operators_reset_closes_the_episode() -> None:
    told: list[tuple[str, str, dict[str, Any]]] = []
    b = _breaker(told, [0.0])
    b.record_failure(DOWN)
    b.record_failure(DOWN)
    b.reset()
    assert [kind for _, kind, _ in told] == ["opened", "closed"]


def test_refused_credentials_are_told_once_until_a_success() -> None:
    told: list[tuple[str, str, dict[str, Any]]] = []
    b = _breaker(told, [0.0])
    refused = AuthenticationError("invalid key")
    b.record_failure(refused)
    b.record_failure(refused)
    b.record_success()
    b.record_failure(refused)
    assert [kind for _, kind, _ in told] == ["auth_failed", "auth_failed"]
    assert b.state.value == "closed"


def test_a_failing_listener_never_breaks_a_call_and_the_registry_sets_it_on_all() -> None:
    def boom(*_: Any) -> None:
        raise RuntimeError("database away")

    registry = CircuitRegistry()
    old = registry.get("binance:1", failure_threshold=1)
    registry.set_listener(boom)
    new = registry.get("binance:2", failure_threshold=1)
    assert old.listener is boom
    assert new.listener is boom
    for b in (old, new):
        b.record_failure(DOWN)  # told, and the listener's error swallowed
        assert b.state.value == "open"
    registry.set_listener(None)
    assert old.listener is None
    assert new.listener is None
