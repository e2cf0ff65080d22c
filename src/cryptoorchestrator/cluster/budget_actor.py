"""The exchange budget actor: one named, detached Ray actor holding the shared request budgets.

A thin shell around :class:`~cryptoorchestrator.platform.exchange.budget.BudgetBank`: every bot
process of the cluster leases chunks of request weight from it (per exchange, API host and
egress IP, and orders per API key), so the processes on one IP together stay under the
exchange's limit (see :mod:`~cryptoorchestrator.platform.exchange.budget` for the bound and
:mod:`~cryptoorchestrator.platform.exchange.budget_client` for the process side).

Why an actor and not Redis: every bot process is already a Ray worker connected to the cluster,
so the actor costs no new service and no new failure mode, while Redis is optional in this
platform (``redis_url`` is unset on the local default).  Leases are chunks, so the actor sees
one call per chunk per process, not one per request.  Its state is soft: the exchange's own
``X-MBX-USED-WEIGHT-*`` corrects it, and an actor that Ray restarted starts its buckets empty,
which keeps the bound exact across the restart (it cannot know what it granted before).  While
it is unreachable, each process spends a small share of its own (never unlimited).

The actor does no I/O; like the risk actor it runs at the default priority, since every
process's next chunk waits for it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import ray

from cryptoorchestrator.cluster.runtime import NAMESPACE
from cryptoorchestrator.platform.exchange.budget import (
    BudgetBank,
    ExchangeBudgetSettings,
    Grant,
    LeaseAsk,
    Observation,
)
from cryptoorchestrator.platform.exchange.budget_client import RequestBudget, registry
from cryptoorchestrator.platform.settings import Settings

log = logging.getLogger("cryptoorchestrator.budget")

#: Name of the one budget actor (in :data:`~cryptoorchestrator.cluster.runtime.NAMESPACE`).
BUDGET_ACTOR_NAME = "exchange-budget"


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0)
class BudgetActor:
    """The cluster's shared request budgets (a detached, named actor restarted by Ray).

    A fresh actor starts its buckets full; one that Ray restarted starts them empty.
    """

    def __init__(self) -> None:
        # Never raise here: a constructor exception during a restart kills the actor for good.
        try:
            restarted = bool(ray.get_runtime_context().was_current_actor_reconstructed)
        except Exception:  # unknown: assume the worst, start empty
            restarted = True
        self._restarted = restarted
        self._bank = BudgetBank(full=not restarted)

    async def lease(
        self, asks: list[Sequence[Any]], observations: list[Sequence[Any]]
    ) -> list[tuple[float, float, float]]:
        """Apply ``observations``, then lease each ask (see :meth:`BudgetBank.lease`)."""
        self._bank.observe(Observation.from_wire(o) for o in observations)
        grants = self._bank.lease(LeaseAsk.from_wire(a) for a in asks)
        return [(g.granted, g.ttl_s, g.wait_s) for g in grants]

    async def observe(self, observations: list[Sequence[Any]]) -> None:
        """Apply what an exchange said (resyncs, and 429/418 blocks for every process)."""
        self._bank.observe(Observation.from_wire(o) for o in observations)

    async def snapshot(self) -> dict[str, Any]:
        """Return every bucket's state and whether this actor was restarted."""
        return {"restarted": self._restarted, "buckets": self._bank.snapshot()}

    async def pid(self) -> int:
        """Return the actor's process id (tests kill it to prove the fallback)."""
        return os.getpid()


def get_budget_actor() -> Any:
    """Return the handle of the budget actor, creating it (detached) if it does not exist."""
    return BudgetActor.options(  # type: ignore[attr-defined]
        name=BUDGET_ACTOR_NAME,
        namespace=NAMESPACE,
        lifetime="detached",
        get_if_exists=True,
    ).remote()


class RayBudgetSource:
    """A :class:`~cryptoorchestrator.platform.exchange.budget_client.BudgetSource` over the actor.

    Parameters
    ----------
    get_handle
        Returns the actor's handle (default :func:`get_budget_actor`); asked again after a
        failure, which recreates an actor that is gone for good.
    """

    def __init__(self, get_handle: Callable[[], Any] = get_budget_actor) -> None:
        self._get_handle = get_handle
        self._handle: Any | None = None

    def _actor(self) -> Any:
        if self._handle is None:
            self._handle = self._get_handle()
        return self._handle

    async def lease(
        self, asks: Sequence[LeaseAsk], observations: Sequence[Observation]
    ) -> list[Grant]:
        """Lease from the actor (the caller's timeout and fallback apply)."""
        try:
            answers = await self._actor().lease.remote(
                [a.to_wire() for a in asks], [o.to_wire() for o in observations]
            )
        except Exception:
            self._handle = None
            raise
        return [Grant(float(g), float(t), float(w)) for g, t, w in answers]

    async def observe(self, observations: Sequence[Observation]) -> None:
        """Tell the actor what an exchange said."""
        try:
            await self._actor().observe.remote([o.to_wire() for o in observations])
        except Exception:
            self._handle = None
            raise


def install_budget(
    settings: Settings | ExchangeBudgetSettings, *, replace: bool = False
) -> RequestBudget | None:
    """Share the cluster's budget with every ccxt client this process builds from now on.

    Bot processes call it once; later calls keep the first configuration unless ``replace``.
    Returns the process's budget (None when disabled in the settings).
    """
    config = settings.exchange_budget if isinstance(settings, Settings) else settings
    return registry.configure(config, RayBudgetSource(), replace=replace)


__all__ = [
    "BUDGET_ACTOR_NAME",
    "BudgetActor",
    "RayBudgetSource",
    "get_budget_actor",
    "install_budget",
]
