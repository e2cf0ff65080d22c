"""``cryptoorch strategies``: built-ins, the operator's ``strategy_paths`` and ``--path``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cryptoorchestrator.cli.main import main
from cryptoorchestrator.platform.settings import Settings, get_settings
from cryptoorchestrator.strategies import registry

CODE = (
    "import numpy as np\n"
    "from cryptoorchestrator.platform.strategy.base import Param, Signals, Strategy\n"
    "class {cls}(Strategy):\n"
    "    '''{doc}\n\n    More words.'''\n"
    "    name = {name!r}\n"
    "    params = (Param('x', 'int', 1, low=0, high=5),)\n"
    "    def signals(self, bars, params):\n"
    "        n = len(bars.close)\n"
    "        return Signals(np.ones(n, bool), np.zeros(n, bool))\n"
)


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_lists_builtins_configured_and_extra_paths(
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(registry, "_USER", {})
    monkeypatch.setattr(registry, "_LOADED", set())
    configured, extra = tmp_path / "configured", tmp_path / "extra"
    for folder, cls, name in (
        (configured, "Conf", "cli_configured"),
        (extra, "Extra", "cli_extra"),
    ):
        folder.mkdir()
        (folder / f"{name}_file.py").write_text(
            CODE.format(cls=cls, doc=f"{cls} strategy.", name=name)
        )
    monkeypatch.setenv("CRYPTOORCH_STRATEGY_PATHS", json.dumps([str(configured)]))
    get_settings.cache_clear()
    code, out, err = _run(["strategies", "--path", str(extra), "--json"], capsys)
    assert code == 0, err
    rows = {row["name"]: row for row in json.loads(out)}
    assert {"sma_cross", "cli_configured", "cli_extra"} <= set(rows)
    assert rows["cli_configured"]["description"] == "Conf strategy."
    assert rows["cli_extra"]["params"] == ["x=1 [0..5]"]
    assert rows["sma_cross"]["params"] == ["fast=10 [2..500]", "slow=50 [3..2000]"]
    code, out, _ = _run(["strategies"], capsys)
    assert code == 0
    assert "sma_cross" in out
    assert "cli_configured" in out
