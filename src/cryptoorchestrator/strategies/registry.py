"""Find strategies by name: the built-ins, plus user strategies from a directory or a module.

Two doors, for two kinds of caller:

* :func:`registered_strategy` is the only lookup for names that come from tenants (API bodies,
  bot rows, run rows): it returns a built-in or an operator-registered strategy and refuses
  anything else with one fixed message, without touching the filesystem or ``importlib``.
* :func:`get_strategy` is the operator's (CLI, SDK, notebooks): besides a registered name or a
  ``Strategy`` class or instance it accepts a reference to user code, ``"package.module:Class"``,
  ``"package.module"`` or ``"path/to/file.py:ClassName"``, and imports it.

``load_strategies(path_or_module)`` registers every ``Strategy`` subclass with a ``name`` found
in a directory of ``*.py`` files or a module; :func:`load_strategy_paths` does so once per
process for the operator's ``strategy_paths`` setting (the API, bot actors and job workers call
it at start).  User files are imported inside the guard: an error there becomes a
``StrategyError``.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
import sys
import threading
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

from cryptoorchestrator.platform.errors import (
    ConfigError,
    CryptoOrchError,
    InvalidInputError,
    NotFoundError,
    StrategyError,
)
from cryptoorchestrator.platform.strategy.base import Strategy

_BUILTINS: dict[str, str] = {
    "sma_cross": "cryptoorchestrator.strategies.sma_cross:SmaCross",
    "ema_cross": "cryptoorchestrator.strategies.ema_cross:EmaCross",
    "rsi_reversion": "cryptoorchestrator.strategies.rsi_reversion:RsiReversion",
    "macd_trend": "cryptoorchestrator.strategies.macd_trend:MacdTrend",
    "bollinger_breakout": "cryptoorchestrator.strategies.bollinger_breakout:BollingerBreakout",
    "atr_stops": "cryptoorchestrator.strategies.atr_stops:AtrStops",
}
_USER: dict[str, type[Strategy]] = {}

#: The shape of a strategy name: what a tenant may send and what an operator may register.
NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,63}")

#: Package under which files of user strategies are imported (``sys.modules`` keys).
USER_MODULE_PREFIX = "cryptoorch_user_strategies."

#: Sources of ``strategy_paths`` already loaded by this process: importing a file runs its code.
_LOADED: set[str] = set()
_LOAD_LOCK = threading.Lock()


def _import_ref(ref: str) -> type[Strategy]:
    module_name, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module_name), attr)  # type: ignore[no-any-return]


def register(cls: type[Strategy]) -> type[Strategy]:
    """Register a ``Strategy`` subclass under its ``name`` (usable as a class decorator).

    Raises
    ------
    InvalidInputError
        If ``cls`` is not a named ``Strategy`` subclass or shadows a built-in.
    """
    if not (inspect.isclass(cls) and issubclass(cls, Strategy)) or not cls.name:
        raise InvalidInputError(
            "strategy",
            f"{cls!r} is not a Strategy subclass with a name",
            allowed="class MyStrategy(Strategy): name = 'my_strategy'",
        )
    if not isinstance(cls.name, str) or NAME_PATTERN.fullmatch(cls.name) is None:
        # Only names of this shape can be picked over the API (see registered_strategy).
        raise InvalidInputError(
            "strategy.name",
            f"{cls.name!r} is not a valid strategy name",
            allowed=f"a name matching {NAME_PATTERN.pattern}",
        )
    if cls.name in _BUILTINS and _import_ref(_BUILTINS[cls.name]) is not cls:
        raise InvalidInputError(
            "strategy.name",
            f"{cls.name!r} is a built-in strategy name",
            allowed="a name not in " + ", ".join(_BUILTINS),
        )
    _USER[cls.name] = cls
    return cls


def _strategies_in(module: ModuleType) -> list[type[Strategy]]:
    return [
        obj
        for obj in vars(module).values()
        if inspect.isclass(obj)
        and issubclass(obj, Strategy)
        and obj is not Strategy
        and obj.name
        and obj.__module__ == module.__name__
    ]


def _load_file(path: Path) -> ModuleType:
    module_name = f"{USER_MODULE_PREFIX}{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise NotFoundError(f"strategy: cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # user code: report it as the strategy's fault, with the file
        sys.modules.pop(module_name, None)
        raise StrategyError(str(path), {}, exc) from exc
    return module


def load_strategies(source: str | Path) -> list[str]:
    """Register the strategies of a directory of ``*.py`` files, a file, or a module path.

    Returns the names registered.

    Raises
    ------
    NotFoundError
        If the directory, file or module does not exist.
    StrategyError
        If importing user code raises.
    """
    path = Path(source)
    modules: list[ModuleType] = []
    if path.is_dir():
        modules = [_load_file(p) for p in sorted(path.glob("*.py")) if not p.name.startswith("_")]
    elif path.suffix == ".py":
        if not path.is_file():
            raise NotFoundError(f"strategy: file {path} does not exist")
        modules = [_load_file(path)]
    else:
        try:
            modules = [importlib.import_module(str(source))]
        except ModuleNotFoundError as exc:
            raise NotFoundError(f"strategy: no directory, file or module {source!r}") from exc
        except Exception as exc:  # user code
            raise StrategyError(str(source), {}, exc) from exc
    names = []
    for module in modules:
        for cls in _strategies_in(module):
            register(cls)
            names.append(cls.name)
    return names


def load_strategy_paths(sources: Iterable[str | Path]) -> list[str]:
    """Register the operator's strategy sources (``Settings.strategy_paths``) in this process.

    Each source is a directory of ``*.py`` files, a ``.py`` file or a module name, as for
    :func:`load_strategies`.  Registration is per process, so the API, every bot actor and
    every job worker call this at start with the settings they run under; a source already
    loaded here is not imported again.  Returns the names registered by this call.

    Raises
    ------
    ConfigError
        If a source does not exist or importing it raises: the setting itself is wrong.
    """
    names: list[str] = []
    with _LOAD_LOCK:
        for source in sources:
            key = str(Path(source).resolve()) if Path(source).exists() else str(source)
            if key in _LOADED:
                continue
            try:
                names.extend(load_strategies(source))
            except CryptoOrchError as exc:
                raise ConfigError(f"strategy_paths: cannot load {source}: {exc}") from exc
            _LOADED.add(key)
    return names


def registered_names() -> list[str]:
    """Return the sorted names of the built-in and registered strategies."""
    return sorted({*_BUILTINS, *_USER})


def registered_strategy(name: object) -> Strategy:
    """Return a new instance of the built-in or registered strategy called ``name``.

    The lookup for names from tenants (API bodies, bot and run rows): it never imports a
    module or reads a file for an unknown name, and every unknown name gets the same error,
    which neither echoes the name nor says why, so errors cannot probe which files or
    modules exist on the server.

    Raises
    ------
    InvalidInputError
        On field ``strategy`` for anything but a registered name; lists the registered names.
    """
    if isinstance(name, str) and NAME_PATTERN.fullmatch(name) is not None:
        user = _USER.get(name)
        if user is not None:
            return user()
        if name in _BUILTINS:
            return _import_ref(_BUILTINS[name])()
    raise InvalidInputError(
        "strategy", "unknown strategy (not a registered name)", allowed=registered_names()
    )


def list_strategies() -> dict[str, str]:
    """Return ``{name: first line of the docstring}`` of built-in and registered strategies."""
    out = {}
    for name in sorted({*_BUILTINS, *_USER}):
        cls = _USER.get(name) or _import_ref(_BUILTINS[name])
        doc = inspect.getdoc(cls) or ""
        out[name] = doc.splitlines()[0] if doc else ""
    return out


def get_strategy(strategy: str | type[Strategy] | Strategy) -> Strategy:
    """Return a strategy instance from a name, class, instance or user-code reference.

    For the operator's own code only (CLI, SDK): a reference imports and runs that code.  Names
    from tenants go through :func:`registered_strategy`.

    Raises
    ------
    NotFoundError
        If no strategy has that name; the message lists the names available.
    InvalidInputError
        If the object is not a strategy.
    """
    if isinstance(strategy, Strategy):
        return strategy
    if inspect.isclass(strategy):
        if not issubclass(strategy, Strategy):
            raise InvalidInputError(
                "strategy",
                f"{strategy!r} is not a Strategy subclass",
                allowed="a strategy name, class or instance",
            )
        return strategy()
    if not isinstance(strategy, str):
        if callable(getattr(strategy, "signals", None)):
            return strategy  # type: ignore[return-value]  # duck-typed strategy object
        raise InvalidInputError(
            "strategy",
            f"{strategy!r} is not a strategy",
            allowed="a strategy name, class or instance",
        )
    if strategy in _USER:
        return _USER[strategy]()
    if strategy in _BUILTINS:
        return _import_ref(_BUILTINS[strategy])()
    if ":" in strategy or strategy.endswith(".py") or "." in strategy:
        source, _, attr = strategy.rpartition(":") if ":" in strategy else (strategy, "", "")
        names = load_strategies(source)
        if attr:
            for name in names:
                if _USER[name].__name__ == attr or name == attr:
                    return _USER[name]()
            raise NotFoundError(
                f"strategy: {attr!r} not found in {source} (found: {', '.join(names) or 'none'})"
            )
        if len(names) == 1:
            return _USER[names[0]]()
        raise NotFoundError(
            f"strategy: {source} defines {len(names)} strategies "
            f"({', '.join(names)}); pick one with {source}:ClassName"
        )
    raise NotFoundError(
        f"strategy: unknown strategy {strategy!r} (allowed: "
        f"{', '.join(sorted({*_BUILTINS, *_USER}))})"
    )


def strategy_type(strategy: Any) -> type:
    """Return the class of a strategy given in any form ``get_strategy`` accepts."""
    return type(get_strategy(strategy))
