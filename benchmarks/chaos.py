"""Chaos runs: paper bots on Ray under injected faults, the books checked after every run.

One *world* is set up once: a local 2-CPU Ray, the exchange simulator on loopback (real
Binance BTC/USDT 1h candles, stepped one candle at a time; ccxt's real ``binance`` class talks
to it), a database (a PRIVATE PostgreSQL instance started with ``initdb``/``pg_ctl`` in a temp
dir on a free port, or SQLite), the risk actor, and two kinds of bots, every one trading on
every candle (a buy, then a sell), in two actor processes:

* ``paper`` bots (one paper account each): their exchange is the paper book in the database,
  prices from the simulator;
* ``account`` bots: two bots on ONE simulator account (credentials stored encrypted, orders
  sent through ccxt to the simulator), so exchange faults hit real order requests and the two
  bots must never adopt each other's orders.

Each scenario is repeated ``--runs`` times, with random timing; after every run the harness
waits until every bot processed the newest candle and has no order left unfinished, then checks
the invariants: the project's own integrity check (:func:`~cryptoorchestrator.platform.storage.
integrity.run_check`, what ``cryptoorch db check`` runs: positions equal a rebuild from fills,
balances, order fills, states, foreign keys), no client order id twice at the exchange, every
exchange fill has the bot's order and trade (no lost fills), no DB fill the exchange does not
know, no order adopted by another bot, and the simulator account's BTC equal to the sum of its
bots' positions.

Scenarios
---------
``sigkill``
    SIGKILL a bot process at a random instant (0-400 ms) after a candle closes: mid-decision,
    mid-submission, mid-booking.  Ray restarts it; the bot reconciles.  Recovery: kill -> every
    bot has processed the candle again.
``risk``
    The risk actor hangs (SIGSTOP) while a candle closes: every order of that candle must be
    denied (fail closed, none reaches an exchange); then it is SIGKILLed, Ray restarts it, and
    the next candle's orders must be approved again.  Recovery: kill -> next candle traded.
``db``
    The database is unavailable for ``--db-down`` seconds while a candle closes (PostgreSQL:
    the private instance is stopped with ``pg_ctl stop -m fast`` and started again; SQLite: an
    exclusive lock is held).  Recovery: database back -> every bot processed the candle.
``exchange``
    One exchange fault on the order route while a candle closes, chosen at random: 5xx, 429
    with ``Retry-After``, a request that hangs past ccxt's timeout (10 s), an order accepted
    and booked whose answer is lost (503 or connection closed).  Recovery: fault -> every bot
    processed the candle and settled its orders.
``two_bots``
    Both bots of the shared simulator account are SIGKILLed at random instants of one candle.

Usage::

    nice -n 10 .venv/bin/python benchmarks/chaos.py --runs 20            # every scenario
    nice -n 10 .venv/bin/python benchmarks/chaos.py --scenarios sigkill,db --runs 5 --db sqlite
    nice -n 10 .venv/bin/python benchmarks/chaos.py --soak 5 --bots 10   # see benchmarks/soak.py

Results go to ``benchmarks/results/chaos.json``; the exit status is 1 when any invariant broke.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

HOUR = 3_600_000
ROOT = Path(__file__).resolve().parents[1]
BUNDLED = (
    ROOT / "src/cryptoorchestrator/platform/data/bundled/binance_BTC-USDT_1h_2021-2022.parquet"
)
#: Candles of history before the first live one (the bots' window is 60).
HISTORY = 100
SCENARIOS = ("sigkill", "risk", "db", "exchange", "two_bots")
EXCHANGE_FAULTS = ("5xx", "429", "timeout", "drop_503", "drop_close")
PATIENT_S = 180.0  # deadlines for conditions: what is measured is whether, never how fast


def alternate(strategy: str, params: Any) -> Callable[[dict[str, np.ndarray]], Any]:
    """Return a signal function that buys on even candles and sells on odd ones."""

    def signals(bars: dict[str, np.ndarray]) -> tuple[bool, bool, bool, bool]:
        even = (int(bars["timestamp"][-1]) // HOUR) % 2 == 0
        return even, not even, False, False

    return signals


def pct(values: list[float], q: float) -> float | None:
    """Return the q-th percentile of ``values`` (None for none)."""
    return float(np.percentile(values, q)) if values else None


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = PATIENT_S) -> Any:
    """Poll ``predicate`` until it returns a true value; raise TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except Exception:  # an actor restarting, a database coming back
            value = None
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivatePostgres:
    """A PostgreSQL server of our own (``initdb`` + ``pg_ctl``) on a free port in a temp dir.

    The chaos runs stop and start it; the machine's shared server is never touched.  As root
    the server runs as the ``postgres`` user (PostgreSQL refuses to run as root).
    """

    def __init__(self) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        if not found:
            raise RuntimeError("no /usr/lib/postgresql/*/bin/pg_ctl: install PostgreSQL")
        self.bin = Path(found[-1]).parent
        self.dir = Path(tempfile.mkdtemp(prefix="chaos-pg-"))
        self.data = self.dir / "data"
        self.port = _free_port()
        self._as: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
            self._as = ["runuser", "-u", "postgres", "--"]
        self._pg(["initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync"])
        self.start()

    def _pg(self, argv: list[str]) -> None:
        cmd = [*self._as, str(self.bin / argv[0]), *argv[1:]]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)  # noqa: S603

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c full_page_writes=off -c max_connections=200 -c shared_buffers=64MB"
        )
        log = self.dir / "server.log"
        self._pg(["pg_ctl", "-D", str(self.data), "-o", options, "-l", str(log), "-w", "start"])

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: disconnect clients; ``immediate``: a crash)."""
        self._pg(["pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop"])

    def url(self, database: str = "postgres") -> str:
        """Return the SQLAlchemy URL of ``database`` on this server."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create ``name``; return its SQLAlchemy URL."""
        import psycopg

        admin = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def close(self) -> None:
        """Stop the server and remove its files."""
        try:
            self.stop("immediate")
        except Exception:  # noqa: S110 (already stopped)
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


@dataclass
class RunResult:
    """One run of one scenario."""

    scenario: str
    run: int
    faults: int
    violations: list[str]
    recovery_s: float | None
    detail: str = ""


@dataclass
class WorldConfig:
    """What a chaos world holds."""

    db: str = "postgres"  # or "sqlite"
    paper_bots: int = 2
    account_bots: int = 2  # on one simulator account
    grouped: bool = True  # the paper bots share one process, the account bots another
    candles: int = 1200
    poll_s: float = 0.05
    seed: int = 1


class World:
    """Ray, the simulator, a database and running bots; the invariants of their books."""

    def __init__(self, config: WorldConfig, pg: PrivatePostgres | None = None) -> None:
        self.config = config
        self.pg = pg
        self.tmp = Path(tempfile.mkdtemp(prefix="chaos-"))
        self.paper_ids: list[int] = []
        self.account_ids: list[int] = []
        self.sim_account_bots: list[int] = []
        self._own_ray = False
        self._stack: list[Callable[[], None]] = []
        self.index = HISTORY  # candles[index] is forming; candles[index - 1] the newest closed

    # ------------------------------------------------------------------ set-up and teardown

    def __enter__(self) -> World:
        try:
            self._setup()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _setup(self) -> None:  # noqa: PLR0915 (a linear set-up)
        import pyarrow.parquet as pq
        import ray
        from ray import cloudpickle

        from cryptoorchestrator.cluster.runtime import NAMESPACE, configure_ray_environment
        from cryptoorchestrator.platform.exchange.accounts import store_credentials
        from cryptoorchestrator.platform.exchange.sim import run_simulator_in_thread
        from cryptoorchestrator.platform.settings import Settings
        from cryptoorchestrator.platform.storage import db
        from cryptoorchestrator.platform.storage.models import Bot, ExchangeAccount, User

        cfg = self.config
        if __name__ != "__main__":  # imported (a test): workers cannot import this file
            cloudpickle.register_pickle_by_value(sys.modules[__name__])
        if cfg.db == "postgres":
            if self.pg is None:
                self.pg = PrivatePostgres()
                self._stack.append(self.pg.close)
            url = self.pg.create_database(f"chaos_{os.getpid()}_{int(time.time() * 1000)}")
        else:
            url = f"sqlite:///{self.tmp / 'chaos.db'}"
        self.candles = pq.read_table(BUNDLED).slice(0, cfg.candles)
        self.ts: list[int] = self.candles.column("timestamp").to_pylist()
        settings = Settings(
            database_url=url,
            var_dir=self.tmp / "var",
            log_dir=self.tmp / "logs",
            data_dir=self.tmp / "var" / "data",
            secret_key="chaos-secret-key-0123456789abcdef",
        )
        db.upgrade(settings)
        self._stack.append(db.dispose_engines)
        if not ray.is_initialized():
            configure_ray_environment()
            ray.init(
                num_cpus=2,
                include_dashboard=False,
                namespace=NAMESPACE,
                log_to_driver=False,
                configure_logging=False,
                object_store_memory=256 * 1024 * 1024,
            )
            self._own_ray = True
        sim_cm = run_simulator_in_thread(
            {"BTC/USDT": self.candles}, start_ms=self.ts[HISTORY] + 1, speed=0
        )
        self.sim = sim_cm.__enter__()
        self._stack.append(lambda: None if sim_cm.__exit__(None, None, None) else None)
        host = self.sim.base_url.split("://", 1)[1].rstrip("/")
        self.settings = settings.model_copy(update={"allowed_api_hosts": [host]})
        with db.session_scope(self.settings) as session:
            user = User(email="chaos@example.com", password_hash="x", role="admin")
            session.add(user)
            session.flush()
            live_account = store_credentials(
                session,
                self.settings,
                user_id=user.id,
                name="sim",
                exchange="binance",
                api_key=self.sim.api_key,
                api_secret=self.sim.api_secret,
                mode="live",
                api_url=self.sim.base_url,
            )
            self.live_account_id = live_account

            def add_bot(name: str, account_id: int, mode: str, group: str | None) -> int:
                bot = Bot(
                    user_id=user.id,
                    name=name,
                    trading_pair="BTC/USDT",
                    strategy="chaos",
                    timeframe="1h",
                    mode=mode,
                    risk_per_trade=Decimal(1),
                    max_position_size=Decimal(10),
                    starting_balance=Decimal(1000),
                    exchange_account_id=account_id,
                    actor_group=group if cfg.grouped else None,
                    desired_state="stopped",
                )
                session.add(bot)
                session.flush()
                return int(bot.id)

            for i in range(cfg.paper_bots):
                account = ExchangeAccount(
                    user_id=user.id,
                    name=f"paper{i}",
                    exchange="binance",
                    mode="paper",
                    api_url=self.sim.base_url,
                )
                session.add(account)
                session.flush()
                self.paper_ids.append(add_bot(f"p{i}", account.id, "paper", "chaos-paper"))
            for i in range(cfg.account_bots):
                self.account_ids.append(add_bot(f"a{i}", live_account, "live", "chaos-account"))
        from cryptoorchestrator.cluster.risk_actor import get_risk_actor

        self.risk = get_risk_actor(self.settings)
        ray.get(
            self.risk.set_limits.remote(
                {
                    "max_orders_per_minute": 10_000,
                    "max_open_orders_total": 100_000,
                    "max_total_exposure_pct": 1000,
                }
            ),
            timeout=PATIENT_S,
        )
        self._stack.append(self._stop_bots)
        from cryptoorchestrator.cluster.bots import start_bot

        for bot_id in self.bots:
            start_bot(self.settings, bot_id, self.options)
        self.wait_processed(timeout=900.0)  # N processes import ccxt, numba, ... on 2 cores
        self.settle()

    @property
    def bots(self) -> list[int]:
        """Every bot of the world."""
        return [*self.paper_ids, *self.account_ids]

    @property
    def options(self) -> dict[str, Any]:
        """The bot actors' options (tests' knobs: scripted signals, fast retries)."""
        return {
            "signal_factory": alternate,
            "poll_interval_s": self.config.poll_s,
            "window": 60,
            "retry_initial_s": 0.2,
            "retry_max_s": 1.0,
        }

    def _stop_bots(self) -> None:
        import ray

        from cryptoorchestrator.cluster.bots import stop_bot

        for bot_id in self.bots:
            try:
                asyncio.run(stop_bot(self.settings, bot_id))
            except Exception:  # noqa: S110 (best effort at teardown)
                pass
        try:
            ray.kill(self.risk, no_restart=True)
        except Exception:  # noqa: S110
            pass

    def close(self) -> None:
        """Stop the bots, the simulator, Ray (if ours) and the database; remove temp files."""
        while self._stack:
            undo = self._stack.pop()
            try:
                undo()
            except Exception as exc:  # keep tearing down
                print(f"teardown: {type(exc).__name__}: {exc}", file=sys.stderr)
        if self._own_ray:
            import ray

            ray.shutdown()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # ------------------------------------------------------------------------- observing

    @property
    def newest(self) -> int:
        """Open time (ms) of the newest closed candle."""
        return int(self.ts[self.index - 1])

    def advance(self) -> int:
        """Close the forming candle; return its open time (ms)."""
        if self.index + 1 >= len(self.ts):
            raise RuntimeError("out of candles: give the world more (WorldConfig.candles)")
        self.sim.set_time(self.ts[self.index + 1] + 1)
        self.index += 1
        return self.newest

    def handles(self) -> dict[Any, Any]:
        """One actor handle per bot process (a group answers for all its members)."""
        from cryptoorchestrator.cluster.handles import find_bot_actor

        procs: dict[Any, Any] = {}
        for bot_id in self.bots:
            handle = find_bot_actor(bot_id, self.settings)
            if handle is None:
                raise LookupError(f"no actor for bot {bot_id}")
            procs.setdefault(handle._actor_id, handle)  # noqa: SLF001
        return procs

    def statuses(self) -> dict[int, dict[str, Any]]:
        """Every bot's live status, by bot id."""
        import ray

        answers = ray.get([h.statuses.remote() for h in self.handles().values()], timeout=30)
        return {s["bot_id"]: s for answer in answers for s in answer}

    def pid_of(self, bot_id: int) -> int:
        """The pid of the process hosting ``bot_id``."""
        import ray

        from cryptoorchestrator.cluster.handles import find_bot_actor

        handle = find_bot_actor(bot_id, self.settings)
        if handle is None:
            raise LookupError(f"no actor for bot {bot_id}")
        return int(ray.get(handle.pid.remote(), timeout=30))

    def risk_pid(self) -> int:
        """The pid of the risk actor."""
        import ray

        return int(ray.get(self.risk.__ray_call__.remote(lambda _self: os.getpid()), timeout=60))

    def processed(self, candle: int | None = None, bots: list[int] | None = None) -> bool:
        """Whether every bot (of ``bots``) runs and has processed ``candle`` (default: newest)."""
        candle = self.newest if candle is None else candle
        states = self.statuses()
        return all(
            states.get(b, {}).get("last_candle_ms") == candle
            and states[b].get("status") == "Running"
            for b in (bots or self.bots)
        )

    def wait_processed(self, candle: int | None = None, timeout: float = PATIENT_S) -> float:
        """Wait until every bot processed ``candle``; return when (monotonic)."""
        wait_for(lambda: self.processed(candle), f"candle {candle or self.newest}", timeout)
        return time.monotonic()

    def unfinished(self) -> list[tuple[int, str, str]]:
        """The bots' orders not final: (bot, client order id, status)."""
        from sqlalchemy import select

        from cryptoorchestrator.platform.model.enums import OPEN_ORDER_STATUSES
        from cryptoorchestrator.platform.storage import db
        from cryptoorchestrator.platform.storage.models import Order

        with db.session_scope(self.settings) as session:
            rows = session.execute(
                select(Order.bot_id, Order.client_order_id, Order.status).where(
                    Order.bot_id.is_not(None), Order.status.in_(OPEN_ORDER_STATUSES)
                )
            ).all()
        return [(int(b or 0), c, s) for b, c, s in rows]

    def settle(self, timeout: float = PATIENT_S) -> float:
        """Wait until no bot has an unfinished order; return when (monotonic)."""
        wait_for(lambda: not self.unfinished(), "every order final", timeout)
        return time.monotonic()

    def orders_of_candle(self, candle: int) -> list[tuple[int, str, str, str | None]]:
        """The bots' orders decided on ``candle``: (bot, client order id, status, reason)."""
        from sqlalchemy import select

        from cryptoorchestrator.platform.storage import db
        from cryptoorchestrator.platform.storage.models import Order

        with db.session_scope(self.settings) as session:
            rows = session.execute(
                select(Order.bot_id, Order.client_order_id, Order.status, Order.status_reason)
                .where(Order.bot_id.is_not(None))
                .where(Order.client_order_id.like(f"co%-{candle}-%"))
            ).all()
        return [(int(b or 0), c, s, r) for b, c, s, r in rows]

    # ------------------------------------------------------------------------ invariants

    def check(self) -> list[str]:
        """Return every invariant the books break (empty: none)."""
        from cryptoorchestrator.platform.storage.integrity import run_check

        out = [
            f"integrity {f.kind} {f.table}#{f.row_id}: {f.reason}"
            for f in run_check(self.settings, record=False).findings
        ]
        out += self._exchange_violations()
        out += [f"unsettled order {c} of bot {b}: {s}" for b, c, s in self.unfinished()]
        return out

    def _exchange_violations(self) -> list[str]:  # noqa: PLR0912 (one rule after another)
        from sqlalchemy import func, select

        from cryptoorchestrator.platform.storage import db
        from cryptoorchestrator.platform.storage.models import Order, Position, Trade

        out: list[str] = []
        with db.session_scope(self.settings) as session:
            mine = {
                o.client_order_id: o
                for o in session.scalars(select(Order).where(Order.bot_id.is_not(None))).all()
            }
            traded = dict(
                session.execute(
                    select(Trade.order_id, func.sum(Trade.amount))
                    .where(Trade.bot_id.is_not(None))
                    .group_by(Trade.order_id)
                ).all()
            )
            book = session.scalars(select(Order).where(Order.bot_id.is_(None))).all()
            positions = {
                p.bot_id: p.amount
                for p in session.scalars(
                    select(Position).where(Position.bot_id.in_(self.account_ids))
                ).all()
            }
        # Orders adopted by the wrong bot: a client order id names its bot (co<bot>-...).
        for cid, order in mine.items():
            if not cid.startswith(f"co{order.bot_id}-"):
                out.append(f"order {cid} recorded under bot {order.bot_id}")
        # The exchanges' books: the paper book in the database, the simulator's account.
        at_exchange: dict[str, tuple[Decimal, int]] = {}  # cid -> (filled, times seen)
        counts: Counter[str] = Counter()
        for row in book:
            cid = row.client_order_id.split(":", 2)[2]
            counts[cid] += 1
            at_exchange[cid] = (row.filled, counts[cid])
        for sim_order in self.sim.orders():
            cid = sim_order["clientOrderId"]
            counts[cid] += 1
            at_exchange[cid] = (Decimal(sim_order["executedQty"]), counts[cid])
        out += [
            f"client order id {c} {n} times at the exchange" for c, n in counts.items() if n > 1
        ]
        for cid, (filled, _) in at_exchange.items():
            ours = mine.get(cid)
            if ours is None:
                if filled > 0:
                    out.append(f"lost fill: exchange order {cid} filled {filled}, no bot order")
                continue
            got = Decimal(traded.get(ours.id) or 0)
            if ours.filled != filled or got != filled:
                out.append(
                    f"lost fill: exchange order {cid} filled {filled}, bot order "
                    f"{ours.filled} with trades {got}"
                )
        for cid, order in mine.items():
            if order.filled > 0 and cid not in at_exchange:
                out.append(f"fill of {cid} ({order.filled}) unknown to the exchange")
        # The simulator account's BTC is its bots' positions (it started with none).
        held = sum(self.sim.balances().get("BTC", (Decimal(0), Decimal(0))), Decimal(0))
        booked = sum((positions.get(b, Decimal(0)) for b in self.account_ids), Decimal(0))
        if held != booked:
            out.append(f"simulator account holds {held} BTC, its bots' positions sum to {booked}")
        return out


# ---------------------------------------------------------------------------------- scenarios


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def run_sigkill(world: World, rng: random.Random) -> RunResult:
    """SIGKILL one bot process at a random instant after a candle closes."""
    victim = rng.choice(world.bots)
    pid = world.pid_of(victim)
    delay = rng.uniform(0.0, 0.4)
    candle = world.advance()
    time.sleep(delay)  # the random instant (what is measured is the books afterwards)
    _signal(pid, signal.SIGKILL)
    killed = time.monotonic()
    wait_for(lambda: world.pid_of(victim) != pid, "the bot process restarted")
    done = world.wait_processed(candle)
    world.settle()
    return RunResult("sigkill", 0, 1, world.check(), done - killed, f"+{delay * 1000:.0f} ms")


def run_risk(world: World, rng: random.Random) -> RunResult:
    """Hang the risk actor over a candle (orders denied), kill it, check trading resumes."""
    import ray

    pid = world.risk_pid()
    _signal(pid, signal.SIGSTOP)
    violations: list[str] = []
    try:
        candle = world.advance()
        world.wait_processed(candle)
        world.settle()
        for bot, cid, status, _reason in world.orders_of_candle(candle):
            if status != "denied":
                violations.append(f"{cid} of bot {bot} was {status} while risk was down")
        if not world.orders_of_candle(candle):
            violations.append(f"no order decided on candle {candle}: nothing was tested")
    finally:
        _signal(pid, signal.SIGKILL)
        _signal(pid, signal.SIGCONT)
    killed = time.monotonic()
    wait_for(lambda: world.risk_pid() != pid, "the risk actor restarted")
    ray.get(world.risk.ping.remote(), timeout=PATIENT_S)
    time.sleep(rng.uniform(0.0, 0.2))
    # The next two candles: a bot whose buy was denied has nothing to sell on the first one.
    done = None
    traded: set[int] = set()
    for _ in range(2):
        candle = world.advance()
        world.wait_processed(candle)
        world.settle()
        done = done or time.monotonic()
        for bot, cid, status, reason in world.orders_of_candle(candle):
            if status == "filled":
                traded.add(bot)
            else:
                violations.append(f"{cid} of bot {bot} {status} after the restart: {reason}")
    if traded != set(world.bots):
        violations.append(f"after the restart only bots {sorted(traded)} traded")
    assert done is not None
    return RunResult("risk", 0, 2, violations + world.check(), done - killed)


@contextmanager
def database_down(world: World, seconds: float) -> Iterator[None]:
    """Make the database unavailable for the block (at least ``seconds``)."""
    if world.pg is not None and world.config.db == "postgres":
        world.pg.stop("fast")
        started = time.monotonic()
        try:
            yield
            time.sleep(max(0.0, seconds - (time.monotonic() - started)))
        finally:
            world.pg.start()
        return
    path = str(world.settings.database_url).split("sqlite:///", 1)[1]
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    conn.execute("BEGIN EXCLUSIVE")
    started = time.monotonic()
    try:
        yield
        time.sleep(max(0.0, seconds - (time.monotonic() - started)))
    finally:
        conn.execute("ROLLBACK")
        conn.close()


def run_db(world: World, rng: random.Random, seconds: float = 5.0) -> RunResult:
    """Take the database away while a candle closes; the bots must resume when it is back."""
    with database_down(world, seconds):
        time.sleep(rng.uniform(0.0, 0.5))
        candle = world.advance()
    back = time.monotonic()
    done = world.wait_processed(candle)
    world.settle()
    return RunResult("db", 0, 1, world.check(), done - back, f"{seconds:.0f} s down")


def run_exchange(world: World, rng: random.Random, fault: str | None = None) -> RunResult:
    """One fault of the simulator's order route while a candle closes."""
    fault = fault or rng.choice(EXCHANGE_FAULTS)
    switches: dict[str, Any] = {"path_prefix": "/api/v3/order"}
    kinds: dict[str, dict[str, Any]] = {
        "5xx": {"fail_next": 1, "fail_status": rng.choice([500, 502, 503, 504])},
        "429": {"rate_limit_next": 1, "retry_after_s": 1},
        "timeout": {"timeout_next": 1, "hang_s": 11.0},
        "drop_503": {"drop_next_orders": 1, "drop_mode": "503"},
        "drop_close": {"drop_next_orders": 1, "drop_mode": "close"},
    }
    if fault not in kinds:
        raise ValueError(f"fault must be one of {', '.join(kinds)}, got {fault!r}")
    switches.update(kinds[fault])
    world.sim.set_faults(**switches)
    injected = time.monotonic()
    try:
        candle = world.advance()
        world.wait_processed(candle)
        # The fault must have been consumed by an order request before the books are judged.
        left = world.sim.faults
        if left.fail_next or left.rate_limit_next or left.timeout_next or left.drop_next_orders:
            raise RuntimeError(f"fault {fault} was not consumed on candle {candle}")
        done = world.settle()
        if fault == "timeout":  # the hung request is answered (late) after 11 s
            time.sleep(max(0.0, injected + 11.5 - time.monotonic()))
            world.settle()
    finally:
        world.sim.clear_faults()
    # One more candle: the bots go on trading through the same route.
    candle = world.advance()
    world.wait_processed(candle)
    world.settle()
    return RunResult("exchange", 0, 1, world.check(), done - injected, fault)


def _restarted(world: World, bot: int, pid: int) -> Callable[[], bool]:
    return lambda: world.pid_of(bot) != pid


def run_two_bots(world: World, rng: random.Random) -> RunResult:
    """Kill the process of the two bots of one simulator account at random instants."""
    first, second = world.account_ids[:2]
    faults = 0
    candle = world.advance()
    killed = time.monotonic()
    for bot in (first, second):
        pid = world.pid_of(bot)
        time.sleep(rng.uniform(0.0, 0.3))
        _signal(pid, signal.SIGKILL)
        faults += 1
        wait_for(_restarted(world, bot, pid), "the bots' process back")
    done = world.wait_processed(candle)
    world.settle()
    return RunResult("two_bots", 0, faults, world.check(), done - killed)


RUNNERS: dict[str, Callable[..., RunResult]] = {
    "sigkill": run_sigkill,
    "risk": run_risk,
    "db": run_db,
    "exchange": run_exchange,
    "two_bots": run_two_bots,
}


def run_scenario(
    world: World, name: str, runs: int, rng: random.Random, **kwargs: Any
) -> list[RunResult]:
    """Run scenario ``name`` ``runs`` times on ``world``; return every run's result."""
    if name not in RUNNERS:
        raise ValueError(f"scenario must be one of {', '.join(RUNNERS)}, got {name!r}")
    out = []
    for i in range(runs):
        try:
            result = RUNNERS[name](world, rng, **kwargs)
        except Exception as exc:  # a run that never recovered is a violation, not a crash
            result = RunResult(name, i, 1, [f"run failed: {type(exc).__name__}: {exc}"], None)
            try:  # what is stuck, by name (an order left unfinished is one of the invariants)
                result.violations += world.check()
            except Exception as again:
                result.violations.append(f"check failed: {type(again).__name__}: {again}")
            try:  # a new candle, and a restart of the bots with a stuck order, lapse it
                world.advance()
                for pid in {world.pid_of(bot) for bot, _, _ in world.unfinished()}:
                    _signal(pid, signal.SIGKILL)
                world.wait_processed()
                world.settle()
            except Exception as again:
                result.violations.append(f"world did not recover: {again}")
                out.append(result)
                break
        result.run = i
        out.append(result)
        flag = "ok" if not result.violations else f"{len(result.violations)} VIOLATIONS"
        rec = "-" if result.recovery_s is None else f"{result.recovery_s:.2f} s"
        print(f"  {name} #{i}: {flag}, recovery {rec} {result.detail}", flush=True)
        for v in result.violations[:5]:
            print(f"    {v}", flush=True)
    return out


def summarize(results: list[RunResult]) -> list[dict[str, Any]]:
    """One row per scenario: runs, faults injected, violations, recovery p50/max."""
    rows = []
    for name in dict.fromkeys(r.scenario for r in results):
        mine = [r for r in results if r.scenario == name]
        rec = [r.recovery_s for r in mine if r.recovery_s is not None]
        rows.append(
            {
                "scenario": name,
                "runs": len(mine),
                "faults": sum(r.faults for r in mine),
                "violations": sum(len(r.violations) for r in mine),
                "recovery_p50_s": pct(rec, 50),
                "recovery_p99_s": pct(rec, 99),
                "recovery_max_s": max(rec) if rec else None,
            }
        )
        if name == "exchange":  # each fault kind recovers differently: say how
            kinds = {r.detail for r in mine}
            rows[-1]["by_fault"] = {
                k: {
                    "runs": sum(r.detail == k for r in mine),
                    "recovery_max_s": max(
                        (r.recovery_s for r in mine if r.detail == k and r.recovery_s),
                        default=None,
                    ),
                }
                for k in sorted(kinds)
            }
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    """Print the summary table."""
    print(f"\n{'scenario':<10}{'runs':>6}{'faults':>8}{'violations':>12}{'recovery p50 / max':>22}")

    def s(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"

    for r in rows:
        rec = f"{s(r['recovery_p50_s'])} / {s(r['recovery_max_s'])} s"
        print(f"{r['scenario']:<10}{r['runs']:>6}{r['faults']:>8}{r['violations']:>12}{rec:>22}")


def main() -> None:
    """Run the chaos scenarios (or the soak) and print/write the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="runs of each scenario")
    parser.add_argument(
        "--scenarios", default=",".join(SCENARIOS), help=f"comma-separated: {','.join(SCENARIOS)}"
    )
    parser.add_argument("--db", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--db-down", type=float, default=5.0, help="seconds the database is away")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks/results/chaos.json")
    parser.add_argument(
        "--soak", type=float, default=None, metavar="MINUTES", help="soak mode: see soak.py"
    )
    # --soak hands every other argument to the soak (its own --db, --json, --bots, ...).
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("--soak", type=float, default=None)
    soaking, rest = early.parse_known_args()
    if soaking.soak is not None:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import soak

        soak.main(["--minutes", str(soaking.soak), *rest])
        return
    args = parser.parse_args()
    names = [n.strip() for n in args.scenarios.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        parser.error(f"--scenarios: unknown {unknown}; allowed: {', '.join(SCENARIOS)}")
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    rng = random.Random(seed)
    # Each run uses 1-2 candles; the exchange scenario 2.
    needed = HISTORY + 10 + 3 * args.runs * len(names)
    config = WorldConfig(db=args.db, candles=needed, seed=seed)
    results: list[RunResult] = []
    started = time.monotonic()
    with World(config) as world:
        setup_s = time.monotonic() - started
        print(f"world up in {setup_s:.1f} s ({args.db}, bots {world.bots}); seed {seed}")
        for name in names:
            kwargs = {"seconds": args.db_down} if name == "db" else {}
            results += run_scenario(world, name, args.runs, rng, **kwargs)
    rows = summarize(results)
    print_table(rows)
    out = {
        "measured_at": datetime.now(UTC).isoformat(),
        "database": args.db,
        "seed": seed,
        "bots": {"paper": config.paper_bots, "on_one_simulator_account": config.account_bots},
        "setup_s": round(setup_s, 1),
        "wall_s": round(time.monotonic() - started, 1),
        "db_down_s": args.db_down,
        "scenarios": rows,
        "runs": [asdict(r) for r in results],
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2))
    print(f"written {args.json}")
    sys.exit(1 if any(r["violations"] for r in rows) else 0)


if __name__ == "__main__":
    main()
