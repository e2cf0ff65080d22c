"""Parameter constraints and trial generation: grid, random and TPE (Optuna's ask/tell).

A :class:`TrialSource` proposes batches of new, valid, distinct parameter sets and is told the
outcome of each; grid and random search ignore the outcomes, TPE learns from them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import numpy as np

from cryptoorchestrator.platform.errors import InvalidInputError
from cryptoorchestrator.platform.optimize.expr import Expression
from cryptoorchestrator.platform.optimize.space import Params, SearchSpace, trial_key

Method = Literal["grid", "random", "tpe"]
#: The most points a grid study may enumerate.
MAX_GRID_POINTS = 1_000_000
METHODS: tuple[str, ...] = ("grid", "random", "tpe")
ConstraintSpec = str | Sequence[str] | Callable[[Params], bool] | None

# Points drawn to prove a random/TPE space has at least one point meeting the constraint.
_SATISFY_PROBES = 20_000


class ParamConstraint:
    """Constraints on parameters: safe expressions (all must hold) and/or a user predicate."""

    def __init__(self, spec: ConstraintSpec, names: Sequence[str]) -> None:
        self.func: Callable[[Params], bool] | None = None
        self.expressions: tuple[Expression, ...] = ()
        if spec is None:
            return
        if callable(spec):
            self.func = spec
        elif isinstance(spec, str):
            self.expressions = (Expression(spec, names),)
        else:
            self.expressions = tuple(Expression(s, names) for s in spec)

    def holds(self, params: Mapping[str, Any]) -> bool:
        """Return whether ``params`` meets every constraint."""
        if not all(e.holds(params) for e in self.expressions):
            return False
        return self.func is None or bool(self.func(dict(params)))

    def to_json(self) -> list[str]:
        """Return the constraint texts (a callable is named by its qualified name)."""
        texts = [e.text for e in self.expressions]
        if self.func is not None:
            texts.append(f"callable:{getattr(self.func, '__qualname__', repr(self.func))}")
        return texts

    def __bool__(self) -> bool:
        return bool(self.expressions) or self.func is not None


def _distribution(dim: Any) -> Any:
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    if dim.values is not None:
        vals = dim.values
        ints = all(isinstance(v, int) and not isinstance(v, bool) for v in vals)
        if ints and len(vals) > 1:
            steps = {b - a for a, b in zip(vals, vals[1:], strict=False)}
            if len(steps) == 1 and (step := steps.pop()) > 0:
                return IntDistribution(vals[0], vals[-1], step=step)
        if ints and len(vals) == 1:
            return IntDistribution(vals[0], vals[0])
        return CategoricalDistribution(list(vals))
    if dim.integer:
        return IntDistribution(int(dim.low), int(dim.high), log=dim.log)
    return FloatDistribution(float(dim.low), float(dim.high), log=dim.log)


class TrialSource:
    """Propose new trials for ``method`` over ``space`` under ``constraint``.

    Parameters
    ----------
    space, constraint
        The parsed space and parameter constraint.
    method
        ``"grid"`` (every valid point, in order), ``"random"`` (``n_trials`` distinct points drawn
        with ``seed``) or ``"tpe"`` (Optuna's TPE sampler with ``seed``, asked in batches).
    n_trials
        Number of distinct trials; ``None`` with grid means the whole grid.
    maximize
        Direction of the objective, for TPE.

    Raises
    ------
    InvalidInputError
        If the method is unknown, ``n_trials`` is missing or not positive, or no point of the space
        satisfies the constraint.
    """

    def __init__(
        self,
        space: SearchSpace,
        constraint: ParamConstraint,
        method: str,
        *,
        n_trials: int | None = None,
        seed: int | None = None,
        maximize: bool = True,
    ) -> None:
        if method not in METHODS:
            raise InvalidInputError("method", f"unknown method {method!r}", allowed=METHODS)
        if n_trials is not None and (not isinstance(n_trials, int) or n_trials < 1):
            raise InvalidInputError(
                "n_trials", f"must be a positive integer, got {n_trials!r}", allowed=">= 1"
            )
        if method != "grid" and n_trials is None:
            raise InvalidInputError("n_trials", f"method {method!r} needs n_trials", allowed=">= 1")
        self.space = space
        self.constraint = constraint
        self.method = method
        self.seed = seed
        self._seen: set[str] = set()
        self._queue: list[Params] = []
        self._asks = 0
        self._pending: dict[str, list[Any]] = {}
        self._known: dict[str, float | None] = {}
        if method == "grid":
            size = space.grid_size()
            if size is not None and size > MAX_GRID_POINTS:
                # Every point is enumerated (and checked against the constraint) up front: an
                # unbounded grid would hold a worker, or the API thread validating it, forever.
                raise InvalidInputError(
                    "space",
                    f"the grid has {size:,} points",
                    allowed=f"at most {MAX_GRID_POINTS:,} grid points; for more, method "
                    "'random' or 'tpe' with n_trials",
                )
            valid = [p for p in space.grid() if constraint.holds(p)]
            if not valid:
                raise InvalidInputError(
                    "constraint",
                    f"no point of the grid satisfies {constraint.to_json()}",
                    allowed="a constraint that some grid point meets",
                )
            self._queue = valid[:n_trials] if n_trials else valid
            self.n_trials = len(self._queue)
        else:
            self.n_trials = int(n_trials)  # type: ignore[arg-type]
            self._rng = np.random.default_rng(seed)
            self._check_satisfiable()
            size = space.grid_size()
            if size is not None:
                # A discrete space cannot give more distinct valid points than it holds.
                valid_count = (
                    sum(1 for p in space.grid() if constraint.holds(p))
                    if size <= 1_000_000
                    else size
                )
                self.n_trials = min(self.n_trials, valid_count)
            self._max_asks = 50 * self.n_trials + 1_000
        if method == "tpe":
            import optuna

            optuna.logging.set_verbosity(optuna.logging.WARNING)
            sampler = optuna.samplers.TPESampler(seed=seed)
            self._study = optuna.create_study(
                sampler=sampler, direction="maximize" if maximize else "minimize"
            )
            self._dists = {d.name: _distribution(d) for d in space.dimensions}
        self._proposed = 0

    def _check_satisfiable(self) -> None:
        rng = np.random.default_rng(0 if self.seed is None else self.seed + 1)
        size = self.space.grid_size()
        if size is not None and size <= _SATISFY_PROBES:
            points: Any = self.space.grid()
        else:
            points = (self.space.sample(rng) for _ in range(_SATISFY_PROBES))
        if not any(self.constraint.holds(p) for p in points):
            raise InvalidInputError(
                "constraint",
                f"no point of the space satisfies {self.constraint.to_json()}",
                allowed="a constraint that some point meets",
            )

    @property
    def exhausted(self) -> bool:
        """Whether no more trials will be proposed."""
        if self._proposed >= self.n_trials:
            return True
        return self.method != "grid" and self._asks >= self._max_asks

    def ask(self, k: int) -> list[Params]:
        """Return up to ``k`` new distinct valid parameter sets (fewer when exhausted)."""
        out: list[Params] = []
        while len(out) < k and not self.exhausted:
            params = self._next()
            if params is None:
                continue
            out.append(params)
            self._proposed += 1
        return out

    def _next(self) -> Params | None:
        if self.method == "grid":
            return self._queue[self._proposed]
        self._asks += 1
        if self.method == "random":
            params = self.space.sample(self._rng)
            key = trial_key(params)
            if key in self._seen or not self.constraint.holds(params):
                return None
            self._seen.add(key)
            return params
        return self._next_tpe()

    def _next_tpe(self) -> Params | None:
        from optuna.trial import TrialState

        trial = self._study.ask(self._dists)
        params = {name: trial.params[name] for name in self.space.names}
        key = trial_key(params)
        if not self.constraint.holds(params):
            self._study.tell(trial, state=TrialState.FAIL)
            return None
        if key in self._seen:
            # A repeat tells TPE what it already knows, without a new evaluation.
            known = self._known.get(key)
            if known is None or math.isnan(known):
                self._study.tell(trial, state=TrialState.FAIL)
            else:
                self._study.tell(trial, known)
            return None
        self._seen.add(key)
        self._pending.setdefault(key, []).append(trial)
        return params

    def tell(self, params: Mapping[str, Any], value: float | None) -> None:
        """Report the objective value of a proposed trial (None or NaN: failed or rejected)."""
        if self.method != "tpe":
            return
        from optuna.trial import TrialState

        key = trial_key(params)
        self._known[key] = value
        for trial in self._pending.pop(key, []):
            if value is None or math.isnan(value):
                self._study.tell(trial, state=TrialState.FAIL)
            else:
                self._study.tell(trial, value)
