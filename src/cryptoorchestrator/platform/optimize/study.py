"""A study: what to optimise on which bars, validated once into a frozen :class:`StudySpec`.

:func:`build_study` turns the keywords of ``co.optimize`` into a spec, refusing bad input before
any batch runs; :meth:`StudySpec.key` is the study's identity (a re-run with the same key
resumes); :func:`open_study_run` records (or finds) the study's run in the database.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptoorchestrator.platform.backtest.engine import SimConfig
from cryptoorchestrator.platform.errors import InvalidInputError
from cryptoorchestrator.platform.model.fees import DEFAULT_FEE_BPS
from cryptoorchestrator.platform.model.timestamps import annualisation
from cryptoorchestrator.platform.optimize import store as study_store
from cryptoorchestrator.platform.optimize.objective import (
    Objective,
    ObjectiveFn,
    ResultFilter,
    parse_objective,
    parse_result_filter,
)
from cryptoorchestrator.platform.optimize.sampling import (
    ConstraintSpec,
    ParamConstraint,
    TrialSource,
)
from cryptoorchestrator.platform.optimize.space import SearchSpace, canonical_json, parse_space
from cryptoorchestrator.platform.optimize.trials import (
    BarArrays,
    TrialConfig,
    TrialResult,
    data_fingerprint,
    declared_params,
    param_domain,
    strategy_name,
)
from cryptoorchestrator.platform.settings import Settings
from cryptoorchestrator.platform.storage.db import upgrade
from cryptoorchestrator.platform.strategy.base import Strategy

#: Work per batch task.  Much shorter batches lose indicator reuse and pay more task overhead
#: (``benchmarks/optimize.py`` measures it); trials of one study cost about the same, so equal
#: batches (a multiple of the CPU count) still end together.
DEFAULT_BATCH_TARGET_S = 0.5

_UPGRADED: set[str] = set()


# The spec holds numpy arrays, which have no usable ``==``: specs compare by identity.
@dataclass(frozen=True, eq=False)
class StudySpec:
    """One validated study: the strategy, its bars, the space and how trials are judged and run.

    Build it with :func:`build_study`; derive variants (a walk-forward fold) with
    ``dataclasses.replace``.
    """

    strategy: Strategy
    #: All the bars; the study sees ``bars[window[0]:window[1]]`` when ``window`` is set.
    bars: BarArrays
    space: SearchSpace
    constraint: ParamConstraint
    objective: Objective
    #: The engine settings, annualisation, objective and result filter every trial shares.
    config: TrialConfig
    method: str = "grid"
    n_trials: int | None = None
    seed: int | None = None
    timeframe: str | None = None
    name: str = ""
    #: The training window of a walk-forward fold (part of the key); None for all the bars.
    window: tuple[int, int] | None = None
    batch_target_s: float = DEFAULT_BATCH_TARGET_S
    batch_size: int | None = None
    max_in_flight: int | None = None

    @property
    def arrays(self) -> BarArrays:
        """Return the bars the study's trials run on (the window's views, no copy)."""
        return self.bars.window(*self.window) if self.window is not None else self.bars

    @property
    def sim(self) -> SimConfig:
        """Return the engine settings of every trial."""
        return self.config.sim

    @property
    def result_filter(self) -> ResultFilter:
        """Return the filter that marks trials rejected (``min_trades``, result constraint)."""
        return self.config.result_filter

    @property
    def independent(self) -> bool:
        """Return whether proposals do not depend on results (grid, random; not TPE)."""
        return self.method in ("grid", "random")

    def trial_source(self) -> TrialSource:
        """Return a fresh source of the study's trials, in the order the method proposes them."""
        return TrialSource(
            self.space,
            self.constraint,
            self.method,
            n_trials=self.n_trials,
            seed=self.seed,
            maximize=self.objective.direction == "maximize",
        )

    def key(self) -> str:
        """Return the study's identity (strategy, data, space, objective, settings) as a hash."""
        doc: dict[str, Any] = {
            "strategy": strategy_name(self.strategy),
            "data": data_fingerprint(self.arrays),
            "space": self.space.to_json(),
            "constraint": self.constraint.to_json(),
            "objective": self.objective.to_json(),
            "method": self.method,
            "seed": self.seed,
            "config": self.config_json(),
        }
        if self.window is not None:
            doc["fold"] = list(self.window)
        if self.method == "grid":
            doc["n_trials"] = self.n_trials
        return hashlib.sha256(canonical_json(doc).encode()).hexdigest()

    def config_json(self) -> dict[str, Any]:
        """Return the trial settings as JSON (hashed into the key and stored with the run)."""
        sim = {
            k: getattr(self.sim, k) for k in self.sim.__dataclass_fields__ if not k.startswith("_")
        }
        return {
            "sim": sim,
            "periods_per_year": self.config.periods_per_year,
            "result_filter": self.result_filter.to_json(),
        }


def build_study(
    strategy: Strategy,
    bars: BarArrays,
    *,
    space: Mapping[str, Any] | Sequence[str] | SearchSpace,
    constraint: ConstraintSpec = None,
    objective: str | ObjectiveFn | Objective = "sharpe",
    minimize: bool | None = None,
    method: str = "grid",
    n_trials: int | None = None,
    seed: int | None = None,
    min_trades: int | None = None,
    result_constraint: str | None = None,
    fee_bps: float = DEFAULT_FEE_BPS,
    sim_config: SimConfig | None = None,
    timeframe: str | None = None,
    name: str | None = None,
    batch_target_s: float = DEFAULT_BATCH_TARGET_S,
    batch_size: int | None = None,
    max_in_flight: int | None = None,
) -> StudySpec:
    """Validate a study's arguments and return its spec (see ``co.optimize`` for each one).

    Raises
    ------
    InvalidInputError
        For a missing or wrong timeframe, an empty space, values outside the strategy's
        declared ranges, an unsatisfiable constraint, an unknown objective or method.
    """
    # The same rule as co.backtest: the timeframe (checked against the spacing) or the spacing
    # of ms-dated bars; with neither, InvalidInputError naming timeframe.
    periods_per_year = annualisation(bars.timestamp, timeframe)
    parsed = parse_space(space)
    check_space(strategy, parsed)
    cons = ParamConstraint(constraint, parsed.names)
    obj = parse_objective(objective, minimize=minimize)
    sim = sim_config if sim_config is not None else SimConfig(fee_bps=fee_bps)
    cfg = TrialConfig(
        sim, periods_per_year, obj, parse_result_filter(min_trades, result_constraint)
    )
    spec = StudySpec(
        strategy,
        bars,
        parsed,
        cons,
        obj,
        cfg,
        method=method,
        n_trials=n_trials,
        seed=seed,
        timeframe=timeframe,
        name=name or strategy_name(strategy),
        batch_target_s=batch_target_s,
        batch_size=batch_size,
        max_in_flight=max_in_flight,
    )
    # Builds the first proposals now, so an unsatisfiable constraint fails before any task.
    spec.trial_source()
    return spec


def check_space(strategy: Strategy, space: SearchSpace) -> None:
    """Refuse dimensions the strategy does not declare, or values outside its declared domain.

    Raises
    ------
    InvalidInputError
        Naming the field ``space.<name>`` of the first offending dimension.
    """
    declared = declared_params(strategy)
    if not declared:
        return
    for dim in space.dimensions:
        field_ = f"space.{dim.name}"
        if dim.name not in declared:
            raise InvalidInputError(
                field_,
                f"strategy {strategy_name(strategy)!r} has no parameter {dim.name!r}",
                allowed=sorted(declared),
            )
        low, high, choices = param_domain(declared[dim.name])
        values = dim.values if dim.values is not None else (dim.low, dim.high)
        for v in values:
            if choices is not None and v not in choices:
                raise InvalidInputError(field_, f"{v!r} is not a declared choice", allowed=choices)
            if isinstance(v, int | float) and not isinstance(v, bool):
                if (low is not None and v < low) or (high is not None and v > high):
                    raise InvalidInputError(
                        field_,
                        f"{v!r} is outside the declared range",
                        allowed=f"{low} <= {dim.name} <= {high}",
                    )


def open_study_run(
    spec: StudySpec, settings: Settings, key: str
) -> tuple[str, dict[str, TrialResult]]:
    """Record (or find) the run of the study ``key``; return its id and its finished trials.

    The database is migrated once per process, before its first study.
    """
    if settings.database_url not in _UPGRADED:
        upgrade(settings)
        _UPGRADED.add(settings.database_url)
    return study_store.open_run(
        settings,
        study_key=key,
        strategy=strategy_name(spec.strategy),
        method=spec.method,
        objective=spec.objective.name,
        space=spec.space.to_json(),
        config={
            **spec.config_json(),
            "constraint": spec.constraint.to_json(),
            "seed": spec.seed,
            "n_trials": spec.n_trials,
            "name": spec.name,
            "direction": spec.objective.direction,
        },
    )
