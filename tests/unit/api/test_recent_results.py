"""The API's cache of costly reads that cannot change (a finished backtest's report)."""

from __future__ import annotations

import threading

import pytest

from cryptoorchestrator.api.context import RecentResults


def test_computes_once_per_key_and_forgets_the_least_recent() -> None:
    cache = RecentResults(size=2)
    calls: list[str] = []

    def compute(key: str) -> dict[str, str]:
        calls.append(key)
        return {"report": key}

    assert cache.get("a", lambda: compute("a")) == {"report": "a"}
    assert cache.get("a", lambda: compute("a")) is cache.get("a", lambda: compute("a"))
    cache.get("b", lambda: compute("b"))
    cache.get("a", lambda: compute("a"))  # a is now the most recent
    cache.get("c", lambda: compute("c"))  # b goes
    cache.get("b", lambda: compute("b"))
    assert calls == ["a", "b", "c", "b"]
    assert cache.hits == 3


def test_a_failed_computation_is_not_kept() -> None:
    cache = RecentResults()
    attempts = []

    def failing() -> None:
        attempts.append(1)
        raise RuntimeError("data store down")

    for _ in range(2):
        with pytest.raises(RuntimeError, match="data store down"):
            cache.get("x", failing)
    assert len(attempts) == 2
    assert cache.get("x", lambda: 5) == 5


def test_threads_share_it_safely() -> None:
    cache = RecentResults(size=4)
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(500):
                key = (n + i) % 8
                assert cache.get(key, lambda k=key: k * 10) == key * 10
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(cache._items) <= 4  # noqa: SLF001
