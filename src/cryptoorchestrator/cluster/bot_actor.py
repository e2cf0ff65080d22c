"""Bots as Ray actors: a thin shell around ``platform.bots.runtime.BotRuntime``.

Each bot is a named, detached actor ``bot:<id>`` in the platform's namespace, restarted without
limit and with ``max_task_retries=0`` (a retried call would run its side effects twice).  The
constructor never raises, since an exception there during a restart kills the actor for good; it
only starts the trading loop on a thread of its own, so the loop comes back by itself after every
restart.  The loop loads the bot from the database, reconciles its orders with the exchange, and
only then trades; when anything fails it records ``Error`` with the reason and retries with
backoff while the user still wants the bot running.

All the bots of a process trade on one event loop, on one thread (:func:`bots_loop`): a group's
bots wake on the same candle, so their intents, risk approvals, submitted marks, snapshots,
reports and events go out in batches (``platform.batching``), and ten bots cost one
transaction or one actor call per step instead of ten.  A thread per bot made them contend for
the GIL instead, and each paid every round trip alone.

Control calls (``status``, ``stop``, ``halt``, ``running``, ``release``, ``logs``) run in
their own concurrency group, on their own event loop, so they answer in milliseconds while the
loop works on its thread.
Whatever they do to the runtime is handed to the bots' event loop, where its connections live.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

import ray
from sqlalchemy import select

from cryptoorchestrator.cluster.budget_actor import install_budget
from cryptoorchestrator.cluster.events import EventPublisher, get_event_bus
from cryptoorchestrator.cluster.handles import actor_name, group_actor_name, group_of
from cryptoorchestrator.cluster.metrics import RayTelemetry, process_telemetry
from cryptoorchestrator.cluster.risk_actor import (
    get_risk_actor,
    risk_client,
    settings_payload,
)
from cryptoorchestrator.cluster.runtime import BOT_NICENESS, NAMESPACE, lower_priority
from cryptoorchestrator.platform.bots.clients import candle_feed_for, execution_client_for
from cryptoorchestrator.platform.bots.process import BotProcess
from cryptoorchestrator.platform.bots.runtime import (
    BotRuntime,
    BotSettings,
    SignalSource,
)
from cryptoorchestrator.platform.bots.status import set_bot_status
from cryptoorchestrator.platform.logs import bot_logger, tail
from cryptoorchestrator.platform.model import BotStatus
from cryptoorchestrator.platform.notify.outbox import install_outbox
from cryptoorchestrator.platform.notify.system import install_exchange_alerts
from cryptoorchestrator.platform.risk.limits import OrderCheck, RiskDecision
from cryptoorchestrator.platform.settings import Settings
from cryptoorchestrator.platform.storage.db import session_scope
from cryptoorchestrator.platform.storage.models import Bot
from cryptoorchestrator.strategies.registry import load_strategy_paths

#: Builds the signal function of a strategy; replaced in tests, bound to the registry by default.
SignalFactory = Callable[[str, Mapping[str, Any]], SignalSource]


def registry_signals(strategy: str, params: Mapping[str, Any]) -> SignalSource:
    """Return a signal source over the strategy registry (the backtest's own code).

    ``strategy`` is a bot row's name: only a registered one resolves (see ``cluster.signals``).
    """
    from cryptoorchestrator.cluster.signals import last_bar_signals

    return last_bar_signals(strategy, params)


#: Connection pools of bot processes (unless the settings payload names one).  PostgreSQL allows
#: 100 connections by default, and the API's default pool (10 + 20 overflow) in each of 50
#: single-bot processes ran out of them ("too many clients") before the bots had started.  A
#: bot's loop and its control calls need one connection at a time.  A group's loop needs one,
#: its paper brokers one per executor thread: a pool that size keeps them, where a smaller
#: one closed each overflow connection after use and PostgreSQL forked a backend for the next.
BOT_DB_POOL: dict[str, Any] = {"pool_size": 1, "max_overflow": 3}
GROUP_DB_POOL: dict[str, Any] = {"pool_size": 6, "max_overflow": 6}

_loop_lock = threading.Lock()
_bots_loop: asyncio.AbstractEventLoop | None = None


def bots_loop() -> asyncio.AbstractEventLoop:
    """Return the event loop every bot of this process trades on, starting its thread once."""
    global _bots_loop  # noqa: PLW0603 (one loop per process, created on first use)
    with _loop_lock:
        if _bots_loop is None or _bots_loop.is_closed():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="bots-loop", daemon=True).start()
            _bots_loop = loop
        return _bots_loop


class BotSlot:
    """One bot inside an actor process: its trading loop on a thread, its control calls."""

    def __init__(
        self,
        bot_id: int,
        settings_data: dict[str, Any],
        options: dict[str, Any] | None = None,
        restarted: bool = False,
        process: BotProcess | None = None,
    ) -> None:
        # Never raise here: it runs in the actor's constructor during restarts.
        # ``process``: the actor's bot process, shared by its bots (None: one of the slot's own).
        install_outbox()  # fills and status changes are written with their notifications
        self.bot_id = bot_id
        self._opts = dict(options or {})
        self.state: dict[str, Any] = {
            "status": BotStatus.STARTING.value,
            "reason": None,
            "started_at": time.time(),
            "restarts": 0,
        }
        self._runtime: BotRuntime | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False
        self._settings: Settings | None = None
        self._process: BotProcess | None = process
        try:
            self._settings = Settings(**settings_data)
            # Breakers opening/closing and refused credentials: outbox rows, off the loop.
            install_exchange_alerts(self._settings)
            if self._process is None:
                self._process = BotProcess(self._settings)
            self._log = bot_logger(bot_id, self._settings.log_dir)
        except Exception as exc:  # degraded: run() reports it as an Error status
            self.state["reason"] = f"bad settings: {exc}"
            self._log = logging.getLogger(f"cryptoorchestrator.bot.{bot_id}")
        self.state["restarts"] = int(restarted)
        # The loop runs on the process's bots loop, not as a call to our own ``run`` method:
        # that would fail while Ray still marks the actor as restarting (no task retries).
        self._task = asyncio.run_coroutine_threadsafe(self._guarded(), bots_loop())

    # --------------------------------------------------------------------- trading loop

    async def _guarded(self) -> None:
        try:
            await self._trading_loop()
        except Exception as exc:  # never let the loop die silently
            self.state.update(status=BotStatus.ERROR.value, reason=f"loop crashed: {exc}")

    async def _trading_loop(self) -> None:
        """Load, reconcile and trade until stopped; report failures and retry with backoff."""
        self._loop = asyncio.get_running_loop()
        backoff = float(self._opts.get("retry_initial_s", 1.0))
        while not self._stopping:
            if self._settings is None:
                return
            if not self._wants_running():
                self._set_status(BotStatus.STOPPED, "desired state is stopped")
                return
            try:
                await self._trade()
                return  # a requested stop
            except Exception as exc:
                reason = f"{type(exc).__name__}: {exc}"
                self._log.exception("bot failed", extra={"event": "error"})
                self._set_status(BotStatus.ERROR, reason)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, float(self._opts.get("retry_max_s", 60.0)))
            finally:
                runtime, self._runtime = self._runtime, None
                if runtime is not None:
                    await runtime.close()

    def _window(self, strategy: str, params: Mapping[str, Any]) -> int:
        """Closed candles the bot evaluates its strategy on: the strategy's required window.

        A ``window`` option (tests) overrides it.
        """
        if self._opts.get("window") is not None:
            return int(self._opts["window"])
        from cryptoorchestrator.cluster.signals import required_window

        return required_window(strategy, params)

    async def _trade(self) -> None:
        assert self._settings is not None
        assert self._process is not None
        settings, process = self._settings, self._process
        self._set_status(BotStatus.STARTING, "loading and reconciling")
        # No connection may be held across an await: the process's bots share one event loop,
        # and a bot waiting for a connection blocks it, so with more bots than the pool holds,
        # bots holding one while awaiting their exchange client deadlocked the group.
        with session_scope(settings) as session:
            bot = session.get(Bot, self.bot_id)
            if bot is None:
                raise LookupError(f"bot {self.bot_id} does not exist")
            strategy, params = bot.strategy, dict(bot.params or {})
        # Registration is per process: this actor registers the operator's strategies itself.
        # A row naming anything else (a legacy path or module) fails here, before trading,
        # and the bot shows Error with the reason; nothing it names is imported.
        load_strategy_paths(settings.strategy_paths)
        factory: SignalFactory = self._opts.get("signal_factory") or registry_signals
        signals = factory(strategy, params)
        client, exchange = await execution_client_for(
            settings, self.bot_id, bookings=process.bookings
        )
        config = BotSettings.from_row(bot, exchange, self._window(strategy, params))
        risk = risk_client(get_risk_actor(settings))
        # Open the approval line now: the first order must not wait for its connection.
        await risk.open_line()
        timeout = float(self._opts.get("risk_timeout_s", 2.0))
        bus = _publisher()
        telemetry = process_telemetry()

        async def gate(check: OrderCheck) -> RiskDecision:
            return await risk.approve(check, timeout)

        async def on_equity(equity: Decimal) -> None:
            runtime = self._runtime
            assert runtime is not None
            # One call per candle: the position at mark (what the equity holds beyond cash,
            # spot: long only), the equity, and the orders whose risk slots can be released.
            breaches = await risk.report(
                self.bot_id,
                config.symbol,
                str(equity - runtime.ledger.cash),
                str(equity),
                runtime.drain_closed_orders(),
            )
            if any(b.get("bot_id") in (None, self.bot_id) for b in breaches):
                runtime.request_stop()
            _report_breakers(telemetry)

        async def publish(kind: str, payload: dict[str, Any]) -> None:
            await bus.publish({"type": kind, **payload})

        # Pushed candle closes (the exchange's kline stream) unless the bot is told to poll.
        feed = candle_feed_for(settings, self.bot_id) if self._opts.get("feed", True) else None
        self._runtime = BotRuntime(
            config,
            settings,
            client,
            signals,
            gate,
            process=process,
            events=publish,
            on_equity=on_equity,
            poll_interval_s=float(self._opts.get("poll_interval_s", 1.0)),
            logger=self._log,
            candles=process.candles,
            feed=feed,
            telemetry=telemetry,
        )
        await self._runtime.prepare()
        if self._stopping:
            # Halted (the kill switch, a stop) while starting: the halt found no runtime to
            # stop, so the orders reconciliation left open are cancelled here, and the bot
            # never reports Running after it.
            await self._runtime.cancel_open_orders()
            return
        await risk.handle.register_bot.remote(
            self.bot_id,
            str(self._runtime.ledger.equity(self._runtime.ledger.average_price)),
            str(config.max_position_pct),
            str(config.risk_per_trade_pct),
            {config.symbol: str(self._runtime.ledger.cost_basis)}
            if self._runtime.ledger.amount > 0
            else {},
        )
        self._set_status(BotStatus.RUNNING, "trading")
        await self._runtime.run()
        if not self._stopping and self.state["status"] != BotStatus.STOPPED.value:
            self._set_status(BotStatus.STOPPED, "risk limit breached")

    def _wants_running(self) -> bool:
        assert self._settings is not None
        try:
            with session_scope(self._settings) as session:
                bot = session.get(Bot, self.bot_id)
                return bot is not None and bot.desired_state == "running"
        except Exception:  # the database is down: keep trying as the user asked
            return True

    def _set_status(self, status: BotStatus, reason: str | None) -> None:
        if self._stopping and status in (BotStatus.STARTING, BotStatus.RUNNING):
            return  # a halt or a stop came first: no start is reported after it
        previous = self.state["status"]
        self.state.update(status=status.value, reason=reason, changed_at=time.time())
        if self._settings is None:
            return
        try:
            with session_scope(self._settings) as session:
                bot = session.get(Bot, self.bot_id)
                if bot is not None and (bot.status != status.value or bot.status_reason != reason):
                    set_bot_status(
                        session, self.bot_id, status, reason, log_dir=self._settings.log_dir
                    )
        except Exception:
            self._log.exception("could not persist status %s", status.value)
        if previous != status.value:
            try:
                get_event_bus().publish.remote(
                    {
                        "type": "status",
                        "botId": self.bot_id,
                        "status": status.value,
                        "reason": reason,
                    }
                )
            except Exception:  # noqa: S110 (events are best effort; the database has it)
                pass

    # -------------------------------------------------------------------------- control

    async def status(self) -> dict[str, Any]:
        """Return the bot's live status (answers while the loop works)."""
        runtime = self._runtime
        out = {"bot_id": self.bot_id, **self.state}
        if runtime is not None:
            out.update(
                last_candle_ms=runtime.state.last_candle_ms,
                last_decision_ms=runtime.state.last_decision_ms,
                orders_sent=runtime.state.orders_sent,
                position=str(runtime.ledger.amount),
                cash=str(runtime.ledger.cash),
            )
        return out

    async def stop(self, reason: str = "stopped by user") -> dict[str, Any]:
        """Stop trading after the current step; open orders stay on the exchange."""
        self._stopping = True
        await self._on_loop(self._request_stop)
        self._set_status(BotStatus.STOPPED, reason)
        return dict(self.state)

    async def halt(self, reason: str, flatten: bool = False) -> dict[str, Any]:
        """Stop now: cancel the bot's open orders and, if asked, sell its position."""
        self._stopping = True
        result: dict[str, Any] = {"cancelled": 0, "flattened": False}

        async def do() -> None:
            runtime = self._runtime
            if runtime is None:
                return
            # The loop keeps the exchange connection open until it stops: stop it last.  New
            # orders meanwhile are denied by the risk actor, which halts before it calls us.
            try:
                result["cancelled"] = await runtime.cancel_open_orders()
                if flatten:
                    result["flattened"] = await runtime.flatten()
            finally:
                runtime.request_stop()

        try:
            await self._on_loop(do)
        except Exception as exc:
            result["error"] = f"{type(exc).__name__}: {exc}"
        self._set_status(BotStatus.STOPPED, reason)
        return {**self.state, **result}

    def alive(self) -> bool:
        """Whether the trading loop still runs."""
        return not self._task.done()

    async def logs(self, lines: int = 100) -> list[str]:
        """Return the last lines of ``logs/bot_<id>.log``."""
        if self._settings is None:
            return []
        return tail(self._settings.log_dir / f"bot_{self.bot_id}.log", lines)

    async def latencies(self) -> dict[str, list[Any]]:
        """Return recent decision and risk-approval latencies (ms), candle-seen times and the
        time each step of recent decisions ended (s after the candle was seen)."""
        runtime = self._runtime
        if runtime is None:
            return {"decision_ms": [], "risk_ms": [], "seen_at": [], "steps": []}
        return {
            "decision_ms": list(runtime.state.decision_ms),
            "risk_ms": list(runtime.state.risk_ms),
            "seen_at": list(runtime.state.seen_at),
            "steps": list(runtime.state.steps),
        }

    def _request_stop(self) -> None:
        if self._runtime is not None:
            self._runtime.request_stop()

    async def _on_loop(self, fn: Callable[[], Any]) -> None:
        """Run ``fn`` (a function or coroutine function) on the trading loop's event loop."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        if asyncio.iscoroutinefunction(fn):
            future = asyncio.run_coroutine_threadsafe(fn(), loop)
            await asyncio.wait_for(asyncio.wrap_future(future), timeout=30)
        else:
            loop.call_soon_threadsafe(fn)


@ray.remote(  # type: ignore[call-overload]  # Ray's stubs omit concurrency_groups
    num_cpus=0,
    max_restarts=-1,
    max_task_retries=0,
    concurrency_groups={"control": 4},
)
class BotActor:
    """The process of one bot (``bot:<id>``) or of a group of bots (``botgroup:<name>``).

    A group's members are the bots whose ``actor_group`` is the group's name and whose desired
    state is running; the actor reads them from the database when it starts (so a restarted
    group brings every member back) and again on :meth:`refresh`.
    """

    def __init__(
        self,
        settings_data: dict[str, Any],
        bot_id: int | None = None,
        group: str | None = None,
        options: dict[str, Any] | None = None,
    ) -> None:
        # Never raise here: a constructor exception during a restart kills the actor for good.
        install_outbox()  # fills and status changes are written with their notifications
        self._settings_data = {
            "db": GROUP_DB_POOL if group is not None else BOT_DB_POOL,
            **settings_data,
        }
        self._group = group
        self._opts = dict(options or {})
        self._slots: dict[int, BotSlot] = {}
        self._lock = threading.Lock()
        # One bot process for every bot of this actor: their batches are shared.
        self._process: BotProcess | None = None
        try:
            self._process = BotProcess(Settings(**self._settings_data))
        except Exception:  # bad settings: each slot reports them as its Error status
            self._process = None
        try:
            # This process's ccxt clients share the cluster's request budget (budget_actor).
            if self._process is not None:
                install_budget(self._process.settings)
        except Exception:  # clients are then paced by ccxt alone; trading goes on
            logging.getLogger(__name__).warning("exchange budget not installed", exc_info=True)
        # Below the risk actor, above batch work (see cluster.runtime.BOT_NICENESS).
        lower_priority(int(self._opts.get("nice", BOT_NICENESS)))
        try:
            self._restarted = bool(ray.get_runtime_context().was_current_actor_reconstructed)
        except Exception:
            self._restarted = False
        members = [bot_id] if bot_id is not None else self._members()
        for member in members:
            self._add(member)

    def _members(self) -> list[int]:
        if self._group is None:
            return list(self._slots)
        try:
            settings = Settings(**self._settings_data)
            with session_scope(settings) as session:
                return list(
                    session.scalars(
                        select(Bot.id).where(
                            Bot.actor_group == self._group, Bot.desired_state == "running"
                        )
                    ).all()
                )
        except Exception:  # the database is down: refresh() tries again later
            return []

    def _add(self, bot_id: int) -> BotSlot:
        with self._lock:
            slot = self._slots.get(bot_id)
            if slot is None or not slot.alive():
                slot = BotSlot(
                    bot_id, self._settings_data, self._opts, self._restarted, self._process
                )
                self._slots[bot_id] = slot
            return slot

    def _slot(self, bot_id: int | None) -> BotSlot:
        with self._lock:
            if bot_id is None and len(self._slots) == 1:
                return next(iter(self._slots.values()))
            if bot_id is None or bot_id not in self._slots:
                raise KeyError(f"bot {bot_id} is not hosted by this actor")
            return self._slots[bot_id]

    @ray.method(concurrency_group="control")
    async def refresh(self) -> list[int]:
        """Start the loops of members that joined the group; return the hosted bot ids."""
        for member in self._members():
            self._add(member)
        with self._lock:
            return sorted(self._slots)

    @ray.method(concurrency_group="control")
    async def hosted(self) -> list[int]:
        """Return the ids of the bots this process runs."""
        with self._lock:
            return sorted(self._slots)

    @ray.method(concurrency_group="control")
    async def status(self, bot_id: int | None = None) -> dict[str, Any]:
        """Return a bot's live status (answers while the loops work)."""
        return await self._slot(bot_id).status()

    @ray.method(concurrency_group="control")
    async def statuses(self) -> list[dict[str, Any]]:
        """Return the live status of every bot this process runs (one call for a group)."""
        with self._lock:
            slots = list(self._slots.values())
        return [await slot.status() for slot in slots]

    @ray.method(concurrency_group="control")
    async def stop(
        self, reason: str = "stopped by user", bot_id: int | None = None
    ) -> dict[str, Any]:
        """Stop a bot after its current step; open orders stay on the exchange."""
        slot = self._slot(bot_id)
        out = await slot.stop(reason)
        if self._group is not None:
            with self._lock:
                self._slots.pop(slot.bot_id, None)
        return out

    @ray.method(concurrency_group="control")
    async def halt(
        self, reason: str, flatten: bool = False, bot_id: int | None = None
    ) -> dict[str, Any]:
        """Stop a bot now: cancel its open orders and, if asked, sell its position."""
        return await self._slot(bot_id).halt(reason, flatten)

    @ray.method(concurrency_group="control")
    async def running(self, bot_id: int | None = None) -> bool:
        """Return whether this process runs the bot's trading loop (False once it ended).

        A bot whose loop ended (halted, stopped) keeps its actor until it is removed; a start
        request must then replace the actor, since its constructor alone starts a loop.
        """
        try:
            return self._slot(bot_id).alive()
        except KeyError:
            return False

    @ray.method(concurrency_group="control")
    async def release(self, bot_id: int) -> list[int]:
        """Forget a halted bot of this process; return the ids of the bots it still hosts."""
        with self._lock:
            slot = self._slots.pop(bot_id, None)
        if slot is not None and slot.alive():
            await slot.stop("removed from its process")
        with self._lock:
            return sorted(self._slots)

    @ray.method(concurrency_group="control")
    async def logs(self, lines: int = 100, bot_id: int | None = None) -> list[str]:
        """Return the last lines of ``logs/bot_<id>.log``."""
        return await self._slot(bot_id).logs(lines)

    @ray.method(concurrency_group="control")
    async def latencies(self, bot_id: int | None = None) -> dict[str, list[Any]]:
        """Return a bot's recent decision and risk-approval latencies in milliseconds."""
        return await self._slot(bot_id).latencies()

    @ray.method(concurrency_group="control")
    async def circuit(self) -> dict[str, dict[str, Any]]:
        """Return the circuit breakers of this process (its exchange accounts)."""
        from cryptoorchestrator.platform.exchange.circuit import circuit_states

        return dict(circuit_states())

    @ray.method(concurrency_group="control")
    async def pid(self) -> int:
        """Return the actor's process id (tests kill it to prove crash safety)."""
        import os

        return os.getpid()


def _report_breakers(telemetry: RayTelemetry) -> None:
    """Set the breaker gauges of this process's exchange accounts (once per candle)."""
    from cryptoorchestrator.platform.exchange.circuit import circuit_states

    try:
        for key, state in circuit_states().items():
            telemetry.breaker(key, str(state.get("state", "")))
    except Exception:  # monitoring must never stop trading
        logging.getLogger(__name__).debug("breaker states unavailable", exc_info=True)


_publishers: list[EventPublisher] = []


def _publisher() -> EventPublisher:
    """Return the process's batching publisher to the event bus."""
    if not _publishers:
        _publishers.append(EventPublisher(get_event_bus()))
    return _publishers[0]


def start_bot_actor(settings: Settings, bot_id: int, options: dict[str, Any] | None = None) -> Any:
    """Create (or find) the detached actor running a bot; its constructor starts the loop.

    A bot with an ``actor_group`` runs in that group's shared process, created on first use and
    told to pick up its new member.
    """
    group = group_of(settings, bot_id)
    if group is None:
        return BotActor.options(  # type: ignore[attr-defined]
            name=actor_name(bot_id),
            namespace=NAMESPACE,
            lifetime="detached",
            get_if_exists=True,
        ).remote(settings_payload(settings), bot_id=bot_id, options=options)
    handle = BotActor.options(  # type: ignore[attr-defined]
        name=group_actor_name(group),
        namespace=NAMESPACE,
        lifetime="detached",
        get_if_exists=True,
    ).remote(settings_payload(settings), group=group, options=options)
    handle.refresh.remote()
    return handle


__all__ = [
    "BotActor",
    "BotSlot",
    "registry_signals",
    "start_bot_actor",
]
