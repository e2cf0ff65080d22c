"""Search spaces: parsing, validation, grid enumeration and deterministic trial keys.

A space maps each parameter name to one of:

- a ``range``, list, tuple or 1-D array: the discrete values to try (``range(5, 55, 5)``);
- a CLI string ``"low:high:step"`` (both ends inclusive: ``"5:50:5"`` is 5, 10, ..., 50) or
  ``"a,b,c"`` (choices);
- a mapping ``{"low": 0.01, "high": 0.1, "step": 0.01, "log": False}``: a numeric interval, sampled
  continuously by random search and TPE when ``step`` is absent (grid search needs a step).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cryptoorchestrator.platform.errors import InvalidInputError

Params = dict[str, Any]


def _py(value: Any) -> Any:
    """Return a plain Python scalar (numpy scalars pickle and hash differently)."""
    if isinstance(value, np.generic):
        return value.item()
    return value


def canonical_json(value: Any) -> str:
    """Return the canonical JSON text of ``value`` (sorted keys, no spaces) used for hashing."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def trial_key(params: Mapping[str, Any]) -> str:
    """Return the deterministic key of a parameter set (32 hex chars of a SHA-256).

    Integral floats hash like ints (``10.0`` and ``10`` are the same trial).
    """
    norm = {}
    for k, v in params.items():
        v = _py(v)
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        norm[str(k)] = v
    return hashlib.sha256(canonical_json(norm).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Dimension:
    """One parameter's domain: discrete ``values``, or an interval ``low``..``high``."""

    name: str
    values: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    integer: bool = False

    @property
    def discrete(self) -> bool:
        """Whether the dimension has a finite list of values."""
        return self.values is not None

    def grid(self) -> tuple[Any, ...]:
        """Return the values a grid search tries."""
        if self.values is None:
            raise InvalidInputError(
                f"space.{self.name}",
                "a continuous interval cannot be enumerated by grid search; give a step or a list",
                allowed="low:high:step, a list, a range",
            )
        return self.values

    def bounds(self) -> tuple[Any, Any]:
        """Return the smallest and largest value (for range checks)."""
        if self.values is not None:
            numeric = [
                v for v in self.values if isinstance(v, int | float) and not isinstance(v, bool)
            ]
            if len(numeric) == len(self.values):
                return min(numeric), max(numeric)
            return self.values[0], self.values[-1]
        return self.low, self.high

    def sample(self, rng: np.random.Generator) -> Any:
        """Draw one value uniformly (log-uniformly with ``log``)."""
        if self.values is not None:
            return self.values[int(rng.integers(len(self.values)))]
        low, high = float(self.low or 0.0), float(self.high or 0.0)
        if self.log:
            value = math.exp(rng.uniform(math.log(low), math.log(high)))
        else:
            value = float(rng.uniform(low, high))
        return int(round(value)) if self.integer else value

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-able description (stored with the run and hashed into the study key)."""
        if self.values is not None:
            return {"values": [_py(v) for v in self.values]}
        return {"low": self.low, "high": self.high, "log": self.log, "integer": self.integer}


def _number(text: str, field: str) -> int | float:
    text = text.strip()
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError as exc:
        raise InvalidInputError(field, f"{text!r} is not a number", allowed="numbers") from exc
    if not math.isfinite(value):
        raise InvalidInputError(field, f"{text!r} is not finite", allowed="finite numbers")
    return value


def _inclusive_range(low: float, high: float, step: float, field: str) -> tuple[Any, ...]:
    if step <= 0:
        raise InvalidInputError(field, f"step must be > 0, got {step!r}", allowed="step > 0")
    if high < low:
        raise InvalidInputError(field, f"high {high!r} is below low {low!r}", allowed="low <= high")
    if all(isinstance(v, int) for v in (low, high, step)):
        return tuple(range(int(low), int(high) + 1, int(step)))
    count = int(math.floor((high - low) / step + 1e-9)) + 1
    if count > 1_000_000:
        raise InvalidInputError(field, f"{count} values is too many", allowed="<= 1,000,000")
    # round() removes the float noise of low + i*step (0.1 + 2*0.1 -> 0.30000000000000004)
    return tuple(round(low + i * step, 12) for i in range(count))


def parse_dimension(name: str, spec: Any) -> Dimension:
    """Parse one entry of a space (see the module docstring)."""
    field = f"space.{name}"
    if isinstance(spec, str):
        text = spec.strip()
        if ":" in text:
            parts = text.split(":")
            if len(parts) not in (2, 3):
                raise InvalidInputError(field, f"cannot parse {spec!r}", allowed="low:high:step")
            low, high = _number(parts[0], field), _number(parts[1], field)
            if len(parts) == 2:
                integer = isinstance(low, int) and isinstance(high, int)
                return parse_dimension(name, {"low": low, "high": high, "integer": integer})
            return Dimension(
                name, values=_inclusive_range(low, high, _number(parts[2], field), field)
            )
        spec = [p for p in text.split(",") if p.strip()]
        values: list[Any] = []
        for p in spec:
            try:
                values.append(_number(p, field))
            except InvalidInputError:
                values.append(p.strip())  # a categorical choice such as "sma"
        spec = values
    if isinstance(spec, Mapping):
        unknown = set(spec) - {"low", "high", "step", "log", "integer"}
        if unknown or "low" not in spec or "high" not in spec:
            raise InvalidInputError(
                field, f"bad interval {dict(spec)!r}", allowed="keys low, high, step, log, integer"
            )
        low, high = spec["low"], spec["high"]
        if not all(isinstance(v, int | float) and math.isfinite(v) for v in (low, high)):
            raise InvalidInputError(field, "low and high must be finite numbers", allowed="numbers")
        if spec.get("step") is not None:
            return Dimension(name, values=_inclusive_range(low, high, spec["step"], field))
        if high < low:
            raise InvalidInputError(
                field, f"high {high!r} is below low {low!r}", allowed="low <= high"
            )
        log = bool(spec.get("log", False))
        if log and low <= 0:
            raise InvalidInputError(field, "a log interval needs low > 0", allowed="low > 0")
        integer = bool(spec.get("integer", isinstance(low, int) and isinstance(high, int)))
        return Dimension(name, low=low, high=high, log=log, integer=integer)
    if isinstance(spec, range | Sequence | np.ndarray) and not isinstance(spec, str | bytes):
        values_t = tuple(_py(v) for v in spec)
        if not values_t:
            raise InvalidInputError(field, "no values to try", allowed="at least one value")
        if len(set(values_t)) != len(values_t):
            raise InvalidInputError(field, "values repeat", allowed="distinct values")
        return Dimension(name, values=values_t)
    if isinstance(spec, int | float | bool):
        return Dimension(name, values=(_py(spec),))
    raise InvalidInputError(
        field,
        f"cannot use {type(spec).__name__} as a search dimension",
        allowed="range, list, 'low:high:step', {'low','high'}",
    )


@dataclass(frozen=True)
class SearchSpace:
    """An ordered set of dimensions (order = the order given = grid order, first slowest)."""

    dimensions: tuple[Dimension, ...]

    @property
    def names(self) -> tuple[str, ...]:
        """The parameter names, in order."""
        return tuple(d.name for d in self.dimensions)

    def grid_size(self) -> int | None:
        """Return the number of grid points, or None if a dimension is continuous."""
        if not all(d.discrete for d in self.dimensions):
            return None
        return math.prod(len(d.grid()) for d in self.dimensions)

    def grid(self) -> Iterator[Params]:
        """Yield every grid point in order (last dimension fastest)."""
        for combo in itertools.product(*(d.grid() for d in self.dimensions)):
            yield dict(zip(self.names, combo, strict=True))

    def sample(self, rng: np.random.Generator) -> Params:
        """Draw one point."""
        return {d.name: d.sample(rng) for d in self.dimensions}

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-able description (order preserved)."""
        return {d.name: d.to_json() for d in self.dimensions}


def parse_space(space: Mapping[str, Any] | Sequence[str] | SearchSpace) -> SearchSpace:
    """Parse a space mapping or CLI entries ``["fast=5:50:5", "slow=20:200:10"]``.

    Raises
    ------
    InvalidInputError
        If the space is empty or an entry cannot be parsed.
    """
    if isinstance(space, SearchSpace):
        dims = space.dimensions
    else:
        if not isinstance(space, Mapping):
            entries: dict[str, Any] = {}
            for item in space:
                name, sep, spec = str(item).partition("=")
                if not sep or not name.strip():
                    raise InvalidInputError(
                        "space",
                        f"cannot parse {item!r}",
                        allowed="name=low:high:step or name=a,b,c",
                    )
                if name.strip() in entries:
                    raise InvalidInputError(
                        "space", f"{name.strip()!r} given twice", allowed="each parameter once"
                    )
                entries[name.strip()] = spec
            space = entries
        dims = tuple(parse_dimension(str(name), spec) for name, spec in space.items())
    if not dims:
        raise InvalidInputError(
            "space",
            "the search space is empty",
            allowed="at least one parameter, e.g. {'fast': range(5, 50, 5)}",
        )
    return SearchSpace(dims)
