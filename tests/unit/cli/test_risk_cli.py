"""``cryptoorch risk status`` and ``cryptoorch risk release``: what the operator sees and does.

The cluster calls are replaced: the Ray side is tested in ``tests/integration/cluster``.
"""

from __future__ import annotations

from typing import Any

import pytest

from cryptoorchestrator.cli.main import main
from cryptoorchestrator.cluster import facade


def test_status_says_how_to_release(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    state = {"global": True, "users": 1, "user_ids": [42], "ready": True}
    monkeypatch.setattr(facade, "kill_switch_status_local", lambda settings: state)
    main(["risk", "status"])
    out = capsys.readouterr().out
    assert '"global": true' in out
    assert "cryptoorch risk release" in out
    assert "cryptoorch risk release --user 42" in out


@pytest.mark.parametrize(("argv", "owner"), [([], None), (["--user", "42"], 42)])
def test_release_the_global_switch_or_a_users(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    owner: int | None,
) -> None:
    calls: list[Any] = []

    def release(settings: Any, owner_id: int | None = None) -> dict[str, Any]:
        calls.append(owner_id)
        return {"kill_switch": False, "scope": "global" if owner_id is None else "user"}

    monkeypatch.setattr(facade, "release_kill_switch_local", release)
    main(["risk", "release", *argv])
    assert calls == [owner]
    assert '"kill_switch": false' in capsys.readouterr().out
