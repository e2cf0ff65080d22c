"""The supervisor task tells the head node when its first pass is over."""

from __future__ import annotations

import asyncio

import pytest

from cryptoorchestrator.cluster import bots
from cryptoorchestrator.platform.settings import Settings


def test_first_pass_callback_fires_once_after_a_pass_completes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    passes: list[str] = []
    outcomes = iter(["fails", "completes", "completes", "stop"])

    def one_pass(_settings: Settings) -> None:
        outcome = next(outcomes)
        passes.append(outcome)
        if outcome == "fails":
            raise ConnectionError("cluster not up yet")
        if outcome == "stop":
            raise asyncio.CancelledError

    monkeypatch.setattr(bots, "supervise_once", one_pass)
    ready: list[int] = []

    def first_pass() -> None:
        ready.append(len(passes))

    async def main() -> None:
        with pytest.raises(asyncio.CancelledError):
            await bots.supervise(Settings(), 0.0, first_pass)

    asyncio.run(main())
    assert passes == ["fails", "completes", "completes", "stop"]
    assert ready == [2]  # after the first pass that completed, not the failed one; only once
