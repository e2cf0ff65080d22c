"""The registry's strict lookup (names from tenants) and the operator's ``strategy_paths``."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

import pytest

from cryptoorchestrator.platform.errors import ConfigError, InvalidInputError
from cryptoorchestrator.platform.strategy.base import Strategy
from cryptoorchestrator.strategies import registry
from cryptoorchestrator.strategies.registry import (
    load_strategy_paths,
    register,
    registered_names,
    registered_strategy,
)

USER_CODE = (
    "from pathlib import Path\n"
    "import numpy as np\n"
    "from cryptoorchestrator.platform.strategy.base import Param, Signals, Strategy\n"
    "Path({marker!r}).open('a').write('imported\\n')\n"
    "class Mine(Strategy):\n"
    "    '''Always long: a user strategy of the tests.'''\n"
    "    name = {name!r}\n"
    "    params = (Param('x', 'int', 1, low=0, high=5),)\n"
    "    def signals(self, bars, params):\n"
    "        n = len(bars.close)\n"
    "        return Signals(np.ones(n, bool), np.zeros(n, bool))\n"
)


@pytest.fixture(autouse=True)
def _fresh_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with the built-ins only, as a fresh process does."""
    monkeypatch.setattr(registry, "_USER", {})
    monkeypatch.setattr(registry, "_LOADED", set())


def _user_file(folder: Path, stem: str, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem}.py"
    path.write_text(USER_CODE.format(marker=str(folder / f"{stem}.marker"), name=name))
    return path


def test_builtins_resolve_by_name() -> None:
    for name in ("sma_cross", "ema_cross", "atr_stops"):
        strategy = registered_strategy(name)
        assert isinstance(strategy, Strategy)
        assert strategy.name == name
    assert registered_names() == sorted(registry._BUILTINS)


@pytest.mark.parametrize(
    "name",
    [
        "nope",
        "os:system",
        "cryptoorchestrator.strategies.sma_cross:SmaCross",
        "cryptoorchestrator.strategies.sma_cross",
        "a.b",
        "/etc/passwd",
        "../strategies/evil.py",
        "evil.py:Evil",
        "SMA_CROSS",
        "sma_cross ",
        "sma_cross\n",
        "_sma",
        "",
        "a" * 65,
        None,
        42,
    ],
)
def test_anything_but_a_registered_name_is_unknown_with_one_message(name: object) -> None:
    with pytest.raises(InvalidInputError) as caught:
        registered_strategy(name)
    err = caught.value
    assert err.field == "strategy"
    assert err.reason == "unknown strategy (not a registered name)"
    assert err.allowed == ", ".join(registered_names())
    # The same text for every unknown name: it never echoes the input.
    assert err.to_dict() == {
        "code": "invalid_input",
        "message": "strategy: unknown strategy (not a registered name) "
        f"(allowed: {', '.join(registered_names())})",
        "details": [
            {
                "field": "strategy",
                "message": "unknown strategy (not a registered name)",
                "allowed": ", ".join(registered_names()),
            }
        ],
    }


def test_strict_lookup_never_imports_or_reads_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _user_file(tmp_path, "evil", "evil")
    touched: list[str] = []

    def refuse(*args: object, **kwargs: object) -> None:
        touched.append(str(args[0]) if args else "?")
        raise AssertionError("the strict lookup must not import anything")

    monkeypatch.setattr(importlib, "import_module", refuse)
    monkeypatch.setattr(importlib.util, "spec_from_file_location", refuse)
    messages = set()
    for name in (str(path), f"{path}:Mine", str(tmp_path), "os:system", "json.decoder"):
        with pytest.raises(InvalidInputError) as caught:
            registered_strategy(name)
        messages.add(str(caught.value))
    assert len(messages) == 1
    assert touched == []
    assert not (tmp_path / "evil.marker").exists()


def test_operator_strategy_paths_register_once_per_process(tmp_path: Path) -> None:
    folder = tmp_path / "strategies"
    _user_file(folder, "mine", "mine_always")
    assert load_strategy_paths([str(folder)]) == ["mine_always"]
    # Registration is per process and idempotent: the file's code ran once.
    assert load_strategy_paths([str(folder)]) == []
    assert (folder / "mine.marker").read_text() == "imported\n"
    strategy = registered_strategy("mine_always")
    assert strategy.validate_params({"x": 3}) == {"x": 3}
    assert "mine_always" in registered_names()


def test_a_missing_or_broken_strategy_path_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="strategy_paths"):
        load_strategy_paths([str(tmp_path / "missing.py")])
    with pytest.raises(ConfigError, match="strategy_paths"):
        load_strategy_paths(["no_such_module_of_strategies_xyz"])
    (tmp_path / "broken.py").write_text("raise RuntimeError('boom')\n")
    with pytest.raises(ConfigError, match="boom"):
        load_strategy_paths([str(tmp_path / "broken.py")])


def test_register_refuses_names_a_tenant_could_not_pick() -> None:
    for bad in ("Mine", "has-dash", "a.b", "x" * 65, "1st"):
        cls = type("Bad", (Strategy,), {"name": bad})
        with pytest.raises(InvalidInputError) as caught:
            register(cls)
        assert caught.value.field == "strategy.name"
    good = type("Good", (Strategy,), {"name": "good_one"})
    assert register(good) is good
    assert registered_strategy("good_one").name == "good_one"
