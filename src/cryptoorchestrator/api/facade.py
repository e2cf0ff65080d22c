"""The seam between the API and the Ray cluster (bots, risk actor, backtest and sweep jobs).

Routes call the :class:`ClusterFacade` of the app's context (``ClusterDep``); they never touch
Ray themselves.  An API served without a cluster gets :class:`UnavailableCluster`, which answers
every call with ``UnavailableError("not available: ...")``, rendered as a 503 in the one error
shape instead of pretending that a bot started or a backtest ran.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from cryptoorchestrator.platform.errors import UnavailableError


@runtime_checkable
class ClusterFacade(Protocol):
    """What the API needs from the cluster.  Every method may raise platform errors.

    Bot and risk methods are called after the API has checked that the user owns the bot; the
    facade persists nothing the API already persists (desired state, the status event of an
    accepted start/stop), but reports later transitions through the event hub and the database.
    """

    def ray_status(self) -> dict[str, Any]:
        """Return ``{"status": "healthy" | "unhealthy", ...}`` for the health routes."""
        ...

    def risk_status(self) -> dict[str, Any]:
        """Return the risk actor's health (``status``, and why when unhealthy)."""
        ...

    async def start_bot(self, bot_id: int) -> str:
        """Ask the cluster to start a bot; return the status it now has (e.g. "Starting")."""
        ...

    async def stop_bot(self, bot_id: int, reason: str) -> str:
        """Ask the cluster to stop a bot; return the status it now has (e.g. "Stopped")."""
        ...

    async def risk_utilisation(self, user_id: int, *, portfolio: bool = False) -> dict[str, Any]:
        """Return live exposure, P&L and limit utilisation for the user's bots only.

        ``portfolio`` (the API passes it for operators only) adds the whole portfolio's totals.
        """
        ...

    async def set_risk_limits(self, user_id: int, limits: dict[str, Any]) -> dict[str, Any]:
        """Apply and persist limits (items scoped ``portfolio`` or ``user``); return them.

        The API has already checked that the user may set each item's scope.
        """
        ...

    async def kill_switch(self, user_id: int, flatten: bool, scope: str = "user") -> dict[str, Any]:
        """Cancel open orders and stop the user's bots (``user``) or every bot (``global``)."""
        ...

    async def release_kill_switch(self, user_id: int, scope: str = "user") -> dict[str, Any]:
        """Release the user's own kill switch (``user``) or the global one (``global``)."""
        ...

    async def submit_backtest(self, user_id: int, spec: dict[str, Any]) -> str:
        """Submit a backtest run; return its id at once."""
        ...

    async def submit_optimization(self, user_id: int, spec: dict[str, Any]) -> str:
        """Submit an optimization run; return its id at once."""
        ...

    async def cancel_run(self, kind: str, run_id: str) -> None:
        """Cancel a running backtest or optimization."""
        ...


class UnavailableCluster:
    """The facade of an API served without a cluster: everything is "not available"."""

    reason = "the Ray cluster layer (bot actors, risk actor, job runner) is not wired"

    def _no(self, what: str) -> UnavailableError:
        return UnavailableError(f"not available: {what} ({self.reason})")

    def ray_status(self) -> dict[str, Any]:
        """Report Ray as unavailable (not unhealthy: nothing was configured to run)."""
        return {"status": "unavailable", "connected": False, "reason": self.reason}

    def risk_status(self) -> dict[str, Any]:
        """Report the risk actor as unavailable."""
        return {"status": "unavailable", "reason": self.reason}

    async def start_bot(self, bot_id: int) -> str:
        """Raise: bots cannot run without the cluster."""
        raise self._no("starting bots")

    async def stop_bot(self, bot_id: int, reason: str) -> str:
        """Raise: bots cannot run without the cluster."""
        raise self._no("stopping bots")

    async def risk_utilisation(self, user_id: int, *, portfolio: bool = False) -> dict[str, Any]:
        """Raise: live exposure lives in the risk actor."""
        raise self._no("live risk utilisation")

    async def set_risk_limits(self, user_id: int, limits: dict[str, Any]) -> dict[str, Any]:
        """Raise: limits must be applied by the risk actor."""
        raise self._no("editing risk limits")

    async def kill_switch(self, user_id: int, flatten: bool, scope: str = "user") -> dict[str, Any]:
        """Raise: the kill switch is the risk actor's."""
        raise self._no("the kill switch")

    async def release_kill_switch(self, user_id: int, scope: str = "user") -> dict[str, Any]:
        """Raise: the kill switch is the risk actor's."""
        raise self._no("the kill switch")

    async def submit_backtest(self, user_id: int, spec: dict[str, Any]) -> str:
        """Raise: backtests run as Ray jobs."""
        raise self._no("submitting backtests")

    async def submit_optimization(self, user_id: int, spec: dict[str, Any]) -> str:
        """Raise: optimizations run as Ray jobs."""
        raise self._no("submitting optimizations")

    async def cancel_run(self, kind: str, run_id: str) -> None:
        """Raise: only the job runner can cancel."""
        raise self._no(f"cancelling {kind} runs")
