"""The strategy API: declared parameters, vectorised signals, and the guard around user code.

A strategy is a class with a ``name``, declared :class:`Param` s and a vectorised
``signals(bars, params)`` that returns :class:`Signals` over the whole history.  The same
definition serves backtests, optimization (the optimizer builds its search space from
``params``) and live bots (which evaluate the signal of the last closed bar over a rolling
window), so backtest and live decisions cannot diverge.

>>> class MyCross(Strategy):
...     name = "my_cross"
...     params = (Param("fast", "int", 10, low=2, high=200),
...               Param("slow", "int", 50, low=3, high=500))
...     def signals(self, bars, params):
...         f, s = sma(bars.close, params["fast"]), sma(bars.close, params["slow"])
...         return Signals(crossed_above(f, s), crossed_below(f, s))
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, NamedTuple

import numpy as np

from cryptoorchestrator.platform.errors import InvalidInputError, StrategyError

ParamType = Literal["int", "float", "bool", "choice"]
_TYPES = ("int", "float", "bool", "choice")


def _show(value: Any, limit: int = 60) -> str:
    """Return a short ``repr`` of a user-supplied value for an error message."""
    try:
        text = repr(value)
    except ValueError:  # an int with more digits than Python will print
        return "a number too large to show"
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class Param:
    """One declared strategy parameter, used by validation and by the optimizer's search space.

    Parameters
    ----------
    name
        Parameter name as passed in ``params``.
    type
        ``"int"``, ``"float"``, ``"bool"`` or ``"choice"``.
    default
        Value used when the caller gives none.
    low, high
        Inclusive bounds for ``int`` and ``float``.
    step
        Grid step the optimizer uses (``int`` defaults to 1).
    choices
        Allowed values of a ``choice`` parameter.
    doc
        One line on what the parameter does.
    """

    name: str
    type: ParamType
    default: Any
    low: float | None = None
    high: float | None = None
    step: float | None = None
    choices: tuple[Any, ...] | None = None
    doc: str = ""

    def __post_init__(self) -> None:
        if self.type not in _TYPES:
            raise InvalidInputError(
                f"Param({self.name}).type", f"unknown type {self.type!r}", allowed=_TYPES
            )
        if self.type == "choice" and not self.choices:
            raise InvalidInputError(f"Param({self.name}).choices", "a choice needs choices")
        if self.type in ("int", "float") and (self.low is None or self.high is None):
            raise InvalidInputError(f"Param({self.name})", "numeric parameters need low and high")

    @property
    def allowed(self) -> str:
        """Return the allowed values in words, for error messages and help."""
        if self.type == "choice":
            return ", ".join(repr(c) for c in self.choices or ())
        if self.type == "bool":
            return "true, false"
        return f"{self.type} in [{self.low}, {self.high}]"

    def validate(self, value: Any, *, field: str | None = None) -> Any:
        """Return ``value`` converted to this parameter's type, or raise naming the field.

        Raises
        ------
        InvalidInputError
            If the value has the wrong type or lies outside the declared range or choices.
        """
        where = field or f"params.{self.name}"
        if self.type == "bool":
            if isinstance(value, bool | np.bool_):
                return bool(value)
            if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
                return value.lower() in ("true", "1")
            if isinstance(value, int | np.integer) and value in (0, 1):
                return bool(value)
            raise InvalidInputError(where, f"not a boolean: {_show(value)}", allowed=self.allowed)
        if self.type == "choice":
            for c in self.choices or ():
                if value == c or (isinstance(value, str) and str(c) == value):
                    return c
            raise InvalidInputError(where, f"{_show(value)} is not a choice", allowed=self.allowed)
        try:
            if isinstance(value, bool):
                raise ValueError("bool")
            if self.type == "int":
                if isinstance(value, int | np.integer):
                    out: float = int(value)  # exact: a float would round ints beyond 2**53
                else:
                    number = float(value)
                    if not number.is_integer():
                        raise ValueError("fractional")
                    out = int(number)
            else:
                out = float(value)
        # OverflowError: an int too large for a float (10**400) is out of range, not a crash.
        except (TypeError, ValueError, OverflowError):
            raise InvalidInputError(
                where, f"not a valid {self.type}: {_show(value)}", allowed=self.allowed
            ) from None
        if not (self.low <= out <= self.high) or not math.isfinite(out):  # type: ignore[operator]
            raise InvalidInputError(where, f"{_show(value)} out of range", allowed=self.allowed)
        return out


class Signals(NamedTuple):
    """Entry and exit signals as bool arrays over the bars (``None``: never)."""

    long_entries: np.ndarray | None
    long_exits: np.ndarray | None
    short_entries: np.ndarray | None = None
    short_exits: np.ndarray | None = None
    #: Optional per-bar stop distances (fractions of price; NaN: none), e.g. from ATR.
    stop_loss: np.ndarray | None = None
    take_profit: np.ndarray | None = None
    trailing_stop: np.ndarray | None = None


class Strategy:
    """Base class of every strategy: declare ``name`` and ``params``, implement ``signals``.

    Optional class attributes ``stop_loss``, ``take_profit`` and ``trailing_stop`` (fractions of
    the entry price) set default stops; the backtest's arguments override them.
    """

    name: ClassVar[str] = ""
    params: ClassVar[tuple[Param, ...]] = ()
    stop_loss: ClassVar[float | None] = None
    take_profit: ClassVar[float | None] = None
    trailing_stop: ClassVar[float | None] = None
    #: Bars of history a live bot must keep so the last bar's signal equals the backtest's,
    #: whatever the parameters; :meth:`required_window` refines it per parameter set.
    warmup: ClassVar[int] = 0
    #: Parameters an optimizer batch orders its trials by, outermost first: name first those
    #: that the costly indicators depend on (``("fast", "slow", "signal")`` for a MACD whose
    #: line depends on ``fast`` and ``slow``), so that trials sharing an indicator run one after
    #: the other and the batch's indicator cache computes it once.  Empty: the planner's order.
    sweep_order: ClassVar[tuple[str, ...]] = ()

    def signals(self, bars: Any, params: Mapping[str, Any]) -> Signals:
        """Return the signals over ``bars`` (anything with ``open``/``high``/``low``/``close``).

        Must be causal: the signal at bar t may only use bars up to t.
        """
        raise NotImplementedError

    def check_params(self, params: Mapping[str, Any]) -> None:
        """Raise :class:`InvalidInputError` if parameters are inconsistent together."""

    @classmethod
    def param_map(cls) -> dict[str, Param]:
        """Return the declared parameters by name."""
        return {p.name: p for p in cls.params}

    def defaults(self) -> dict[str, Any]:
        """Return the default parameters."""
        return {p.name: p.default for p in self.params}

    def validate_params(self, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Return ``params`` converted, range-checked and completed with defaults.

        Raises
        ------
        InvalidInputError
            On an unknown parameter, a wrong type or a value out of range; the error names the
            parameter and the allowed values.
        """
        given = dict(params or {})
        decl = self.param_map()
        unknown = sorted(set(given) - set(decl))
        if unknown:
            raise InvalidInputError(
                f"params.{unknown[0]}",
                f"unknown parameter for strategy {self.name!r}",
                allowed=tuple(decl) or "no parameters",
            )
        out = {
            name: p.validate(given[name]) if name in given else p.default
            for name, p in decl.items()
        }
        self.check_params(out)
        return out

    def required_window(self, params: Mapping[str, Any]) -> int:
        """Return how many closed bars a live bot evaluates ``signals`` on, for ``params``.

        The live decision on bar t is the signal at the last bar of the window ending at t; it
        equals the backtest's signal at t computed on the whole history when every indicator's
        value at t no longer depends on where the history starts.  Finite lookbacks (SMA, a
        rolling max) need ``period`` bars plus one for a cross; recursive indicators (EMA,
        Wilder's smoothing) forget their seed geometrically and need :func:`recursive_memory`
        bars more.  Override this with the exact figure of your indicators; the default is
        the declared ``warmup``, else 40 times the largest integer parameter (an EMA of
        period p forgets its seed below one part in 2**80 after about 28 p bars), at least
        :data:`MIN_LIVE_WINDOW`.

        ``params`` must already be validated (:meth:`validate_params`).
        """
        if self.warmup:
            return max(int(self.warmup) + 1, MIN_LIVE_WINDOW)
        ints = [int(v) for v in params.values() if isinstance(v, int) and not isinstance(v, bool)]
        return max(40 * max(ints, default=0) + 1, MIN_LIVE_WINDOW)

    def validate_live(
        self, params: Mapping[str, Any] | None = None, *, max_window: int | None = None
    ) -> dict[str, Any]:
        """Return ``params`` validated for a live bot: :meth:`validate_params` plus the window.

        Raises
        ------
        InvalidInputError
            As :meth:`validate_params`, or naming ``params.<name>`` (the parameter whose value
            sets the window) when the bot would need more than ``max_window`` bars of history
            (default :data:`MAX_LIVE_WINDOW`).
        """
        checked = self.validate_params(params)
        check_live_window(self, checked, max_window=max_window)
        return checked

    def __repr__(self) -> str:
        return f"<Strategy {self.name or type(self).__name__}>"


#: Smallest window a live bot keeps, whatever the strategy declares.
MIN_LIVE_WINDOW = 200
#: Most closed bars a live bot fetches at start: 60 pages of Binance's 1,000 candles per call.
MAX_LIVE_WINDOW = 60_000
#: Seed weight below which a recursive indicator counts as converged: 2**-80, far below the
#: 2**-53 of a float64's last bit, so the seeded and the full-history values round alike.
_CONVERGED_BITS = 80


def recursive_memory(alpha: float, bits: int = _CONVERGED_BITS) -> int:
    """Return the bars after which a recursive filter ``y += alpha * (x - y)`` forgets its seed.

    The seed's weight after k bars is ``(1 - alpha) ** k``; this is the smallest k for which
    it falls below ``2 ** -bits`` (EMA of period p: ``alpha = 2 / (p + 1)``; Wilder's RSI and
    ATR: ``alpha = 1 / p``).

    Raises
    ------
    InvalidInputError
        If ``alpha`` is not in (0, 1].
    """
    if not 0.0 < alpha <= 1.0:
        raise InvalidInputError("alpha", f"{alpha!r} is not a smoothing factor", allowed="(0, 1]")
    if alpha == 1.0:
        return 1
    return math.ceil(bits * math.log(2.0) / -math.log1p(-alpha))


def check_live_window(
    strategy: Strategy, params: Mapping[str, Any], *, max_window: int | None = None
) -> int:
    """Return ``strategy.required_window(params)``, or raise if it exceeds ``max_window``.

    Raises
    ------
    InvalidInputError
        Naming ``params.<name>``: the declared parameter whose lowest value shrinks the window
        most (the one to lower), with the largest value of it that fits when one can be found.
    """
    limit = MAX_LIVE_WINDOW if max_window is None else int(max_window)
    need = int(strategy.required_window(params))
    if need <= limit:
        return need
    best: tuple[int, Param] | None = None
    for p in strategy.params:
        if p.type not in ("int", "float") or p.low is None:
            continue
        trial = {**params, p.name: int(p.low) if p.type == "int" else float(p.low)}
        try:
            smaller = int(strategy.required_window(trial))
        except Exception:  # noqa: S112 (a trial outside check_params' rules tells nothing)
            continue
        if smaller < need and (best is None or smaller < best[0]):
            best = (smaller, p)
    field = f"params.{best[1].name}" if best is not None else "params"
    raise InvalidInputError(
        field,
        f"needs {need} bars of history live, more than the {limit} a bot may fetch",
        allowed=f"a window of at most {limit} bars ({strategy.name}.required_window)",
    )


def _as_bool(arr: Any, n: int, field: str) -> np.ndarray | None:
    if arr is None:
        return None
    a = np.asarray(arr)
    if a.dtype != np.bool_:
        if a.dtype.kind not in "biu":
            raise InvalidInputError(
                field, f"must be a bool array, got dtype {a.dtype}", allowed="bool"
            )
        a = a.astype(np.bool_)
    if a.shape != (n,):
        raise InvalidInputError(
            field, f"has shape {a.shape}, expected ({n},)", allowed=f"one value per bar ({n})"
        )
    return a


def _as_stop(arr: Any, n: int, field: str) -> np.ndarray | None:
    if arr is None:
        return None
    a = np.ascontiguousarray(arr, dtype=np.float64)
    if a.shape != (n,):
        raise InvalidInputError(
            field, f"has shape {a.shape}, expected ({n},)", allowed=f"one value per bar ({n})"
        )
    return a


def run_signals(strategy: Strategy, bars: Any, params: Mapping[str, Any]) -> Signals:
    """Run ``strategy.signals`` inside the guard and check what it returns.

    Raises
    ------
    StrategyError
        If the strategy raises or returns something that is not one signal per bar; the error
        names the strategy and the parameters, so one bad strategy cannot take a sweep down.
    """
    name = strategy.name or type(strategy).__name__
    n = len(bars.close)
    try:
        out = strategy.signals(bars, params)
        if not isinstance(out, Signals):
            out = Signals(*out)
        return Signals(
            _as_bool(out.long_entries, n, "signals.long_entries"),
            _as_bool(out.long_exits, n, "signals.long_exits"),
            _as_bool(out.short_entries, n, "signals.short_entries"),
            _as_bool(out.short_exits, n, "signals.short_exits"),
            _as_stop(out.stop_loss, n, "signals.stop_loss"),
            _as_stop(out.take_profit, n, "signals.take_profit"),
            _as_stop(out.trailing_stop, n, "signals.trailing_stop"),
        )
    except StrategyError:
        raise
    except Exception as exc:  # user code: anything it raises becomes one StrategyError
        raise StrategyError(name, params, exc) from exc
