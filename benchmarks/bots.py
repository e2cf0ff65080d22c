"""Many paper bots on one node: memory per bot actor, decision and risk-approval latency.

N paper bots (default 50) run as Ray actors on a local 2-CPU Ray (one process each, or
``--group-size`` bots per process), trading through paper brokers on the exchange simulator
(real Binance BTC/USDT 1h candles, stepped one candle at a time), each bot on a paper account of
its own (``--shared-account``: all on one, whose balance rows then serialise every booking).
Every bot trades on every candle (buy, then sell), so each candle produces N orders, each
approved by the one shared risk actor.

Reported:

* memory per bot actor: RSS and USS (memory unique to the process) of the actor processes;
* decision latency as the issue defines it, candle close -> order at the exchange: from the
  moment the simulator's clock closes a candle to the moment the paper exchange inserts the
  bot's order.  Bots learn of the close from the simulator's kline stream (Binance's
  WebSocket protocol, through ccxt.pro); ``--no-feed`` makes them poll REST every ``--poll``
  seconds instead, and the figure then includes the wait for the next poll;
* in-bot candle time: from the bot seeing the closed candle to the end of its work on it
  (strategy, intent, risk approval, submission, fills, snapshot, report to the risk actor);
* risk approval round trip, bot -> risk actor -> bot;
* the machine's speed before and after (a fixed pure-Python loop): this VM's CPU speed varies
  by up to 1.7x from one minute to the next, and every figure above moves with it.

``--channels N`` (issue 23: notifying never slows trading) trades the candles a second time in
the same run, with the same bots, after subscribing N webhook channels to the bots' order
events (spread over as many owners as the per-user limit of channels takes), with the
notification dispatcher running in this process (as in the head node) and a receiver on
loopback that checks each signature and stamps each arrival.  It reports both runs side by
side, the event-to-receiver latency (outbox row written with the fill -> arrival) and the
notifications expected (fills x the owner's channels) against those delivered, duplicates
and losses counted per channel and event key.

Targets (issue 8): decision p99 < 50 ms, risk approval p99 < 5 ms.

Usage: ``python benchmarks/bots.py [--bots 50] [--group-size 10] [--candles 10] [--poll 0.05]
[--channels 50 [--notify-poll 2.0]]``
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# The exchange simulator and the notification receiver listen on loopback.
os.environ.setdefault("CRYPTOORCH_ALLOWED_API_HOSTS", '["127.0.0.1"]')

HOUR = 3_600_000
ROOT = Path(__file__).resolve().parents[1]
BUNDLED = (
    ROOT / "src/cryptoorchestrator/platform/data/bundled/binance_BTC-USDT_1h_2021-2022.parquet"
)


def alternate(strategy: str, params: Any) -> Callable[[dict[str, np.ndarray]], Any]:
    """A signal factory that buys on even candles and sells on odd ones: an order per candle."""

    def signals(bars: dict[str, np.ndarray]) -> tuple[bool, bool, bool, bool]:
        even = (int(bars["timestamp"][-1]) // HOUR) % 2 == 0
        return even, not even, False, False

    return signals


class SimulatorProcess:
    """The exchange simulator in a process of its own, stepped over its HTTP admin route.

    An exchange is another system: run in a thread of this script, the simulator shared a GIL
    with the driver (its polling of the bots, psutil) and answered some tickers 20 ms late,
    which no exchange's own load would explain.
    """

    def __init__(self, start_ms: int, candles: int) -> None:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve_simulator, args=(child, start_ms, candles))
        self._proc.start()
        self.base_url: str = self._conn.recv()
        self.pid: int | None = self._proc.pid

    def advance(self, ms: int) -> None:
        """Move the exchange's clock on by ``ms`` (closing candles)."""
        import urllib.request

        request = urllib.request.Request(  # noqa: S310 (the simulator, on loopback)
            f"{self.base_url}/_sim/clock",
            data=json.dumps({"advance": ms}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
            answer.read()

    def close(self) -> None:
        """Stop the simulator process."""
        self._conn.send("stop")
        self._proc.join(timeout=10)
        if self._proc.is_alive():
            self._proc.kill()


def _serve_simulator(conn: Any, start_ms: int, candles: int) -> None:
    import pyarrow.parquet as pq

    from cryptoorchestrator.platform.exchange.sim import run_simulator_in_thread

    table = pq.read_table(BUNDLED).slice(0, candles)
    with run_simulator_in_thread({"BTC/USDT": table}, start_ms=start_ms, speed=0) as sim:
        conn.send(sim.base_url)
        conn.recv()  # until the benchmark is done


class WebhookReceiver:
    """A webhook receiver on loopback, in a thread of the driver, stamping every arrival.

    It answers every POST with 200, checks the Standard Webhooks signature with the channel's
    secret (as a receiver would) and keeps, per request, the arrival time, the channel (its
    index in the path ``/hook/<index>``), the ``webhook-id`` and the ids of the events it
    carries.
    """

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from cryptoorchestrator.platform.notify import signing

        #: (arrived at, channel index, webhook-id, event ids, signature good)
        self.arrivals: list[tuple[float, int, str, list[str], bool]] = []
        #: Channel index -> its signing secret (set once the channels exist).
        self.secrets: dict[int, str] = {}
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                arrived = time.time()
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                channel = int(self.path.rsplit("/", 1)[1])
                try:
                    secret = receiver.secrets[channel]
                    signing.verify(secret, dict(self.headers.items()), body)
                    good = True
                except Exception:
                    good = False
                events = [str(e.get("id")) for e in json.loads(body).get("events", [])]
                with receiver._lock:  # noqa: SLF001 (the handler is part of the receiver)
                    receiver.arrivals.append(
                        (arrived, channel, self.headers.get("webhook-id", ""), events, good)
                    )
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def host(self) -> str:
        """``127.0.0.1:<port>``, for the operator's allowed notification hosts."""
        return f"127.0.0.1:{self.port}"

    def url(self, index: int) -> str:
        """The URL the channel of ``index`` posts to."""
        return f"http://127.0.0.1:{self.port}/hook/{index}"

    def snapshot(self) -> list[tuple[float, int, str, list[str], bool]]:
        """The arrivals so far."""
        with self._lock:
            return list(self.arrivals)

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


class DispatcherThread:
    """The head node's delivery task (:meth:`Dispatcher.run_forever`) on a thread of the driver.

    As in ``cryptoorch serve``, the dispatcher shares its process with other work (there the
    API, here the benchmark's driver) and has an event loop of its own here.
    """

    NAME = "notify-dispatcher"

    def __init__(self, dispatcher: Any) -> None:
        import asyncio
        import threading
        from concurrent.futures import ThreadPoolExecutor

        self._loop = asyncio.new_event_loop()
        # Its database steps and name lookups run on these threads: named, to count their CPU.
        self._loop.set_default_executor(ThreadPoolExecutor(thread_name_prefix=self.NAME))
        self._task: asyncio.Task[None] | None = None
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._task = self._loop.create_task(dispatcher.run_forever())
            started.set()
            try:
                self._loop.run_until_complete(self._task)
            except asyncio.CancelledError:
                pass
            finally:
                self._loop.run_until_complete(self._loop.shutdown_default_executor())
                self._loop.close()

        self._thread = threading.Thread(target=run, name=self.NAME, daemon=True)
        self._thread.start()
        started.wait(timeout=10)

    def cpu_s(self) -> float:
        """CPU seconds the dispatcher's threads (its loop and its executor) have used."""
        import threading

        import psutil

        mine = {t.native_id for t in threading.enumerate() if t.name.startswith(self.NAME)}
        return sum(t.user_time + t.system_time for t in psutil.Process().threads() if t.id in mine)

    def close(self) -> None:
        """Cancel the task and wait for the thread."""
        if self._task is not None:
            self._loop.call_soon_threadsafe(self._task.cancel)
        self._thread.join(timeout=30)


def speed_probe() -> float:
    """Seconds a fixed pure-Python loop takes here now (lower is faster; best of three)."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        total = 0
        for i in range(2_000_000):
            total += i
        best = min(best, time.perf_counter() - started)
    return best


def pct(values: list[float], q: float) -> float:
    """Return the q-th percentile (nan for no values)."""
    return float(np.percentile(values, q)) if values else float("nan")


def print_channels(results: dict[str, Any]) -> None:
    """Print the run without channels beside the run with them, and the deliveries."""
    plain, subscribed, sent = results, results["with_channels"], results["notifications"]
    print(
        f"\nwithout and with {sent['channels']} webhook channels (per owner "
        f"{sent['channels_per_owner']}) subscribed to order events, same bots, same run:"
    )
    print(f"{'measure (p50 / p99, ms)':<48}{'without':>18}{'with':>18}")
    for label, key in (
        ("decision: candle close -> order at exchange", "e2e_ms"),
        ("  of which: candle seen -> order at exchange", "react_ms"),
        ("in-bot: candle seen -> candle done", "decision_ms"),
        ("risk approval round trip", "risk_ms"),
    ):
        cells = [f"{r[key]['p50']:.1f} / {r[key]['p99']:.1f}" for r in (plain, subscribed)]
        print(f"{label:<48}{cells[0]:>18}{cells[1]:>18}")
    for label, key in (("bot actors", "bot actors"), ("driver (+ dispatcher)", "driver")):
        cells = [f"{r['cpu_ms_per_order'][key]:.2f}" for r in (plain, subscribed)]
        print(f"{'CPU per order, ' + label:<48}{cells[0]:>18}{cells[1]:>18}")
    cells = [f"{r['speed_before_s']:.2f} / {r['speed_after_s']:.2f}" for r in (plain, subscribed)]
    print(f"{'machine speed before / after (s)':<48}{cells[0]:>18}{cells[1]:>18}")
    latency = sent["event_to_receiver_ms"]
    print(
        f"event -> receiver (outbox row created -> arrival): p50 {latency['p50']:.0f} ms, "
        f"p99 {latency['p99']:.0f} ms, max {latency['max']:.0f} ms (dispatcher poll "
        f"{sent['dispatcher_poll_s']} s)"
    )
    print(
        f"notifications: {sent['facts']} order events x channels = {sent['expected']} expected, "
        f"{sent['outbox_rows']} outbox rows, {sent['delivered']} delivered "
        f"({sent['delivered_once']} exactly once, {sent['duplicates']} duplicates, "
        f"{sent['missing']} missing, {sent['unexpected']} unexpected) in {sent['messages']} "
        f"messages ({sent['messages_resent']} resent, {sent['bad_signatures']} bad signatures, "
        f"{sent['messages_during_measured_candles']} during the measured candles); drained "
        f"{sent['drain_s']:.1f} s after the last candle; the dispatcher's threads used "
        f"{sent['dispatcher_cpu_s']:.2f} s of CPU ({sent['dispatcher_cpu_ms_per_message']:.1f} "
        "ms a message)"
    )


def main() -> None:  # noqa: PLR0915 (a linear script)
    """Run the benchmark and print/write its results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bots", type=int, default=50)
    parser.add_argument("--candles", type=int, default=10)
    parser.add_argument(
        "--warmup",
        type=int,
        default=5,
        help="candles traded before measuring (connection pools, prepared statements, code "
        "paths warm up; their slowest orders are printed apart)",
    )
    parser.add_argument("--poll", type=float, default=0.05, help="bot poll interval (s)")
    parser.add_argument(
        "--no-feed",
        action="store_true",
        help="bots poll REST for closed candles instead of waking on the kline stream",
    )
    parser.add_argument(
        "--group-size", type=int, default=1, help="bots per actor process (1: one process each)"
    )
    parser.add_argument(
        "--shared-account",
        action="store_true",
        help="all bots trade one paper account (its balance rows serialise every booking)",
    )
    parser.add_argument(
        "--nice", type=int, default=None, help="bot processes' niceness (default: BOT_NICENESS)"
    )
    parser.add_argument(
        "--channels",
        type=int,
        default=0,
        help="also run the candles again with N webhook channels subscribed to the bots' order "
        "events, a dispatcher in this process sending them to a local receiver (0: no second run)",
    )
    parser.add_argument(
        "--notify-poll",
        type=float,
        default=None,
        help="the dispatcher's wait after a pass that found nothing (s; default: the setting's)",
    )
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks/results/bots.json")
    args = parser.parse_args()
    from cryptoorchestrator.platform.notify.channels import MAX_CHANNELS
    from cryptoorchestrator.platform.notify.config import NotifySettings

    runs = 2 if args.channels else 1
    if runs * (args.warmup + args.candles) >= 1000:
        parser.error(
            "--warmup + --candles (twice with --channels) must stay below 1000 (the bots keep "
            "1000 latencies)"
        )
    if args.channels < 0:
        parser.error("--channels must be 0 or more")
    # A user has at most MAX_CHANNELS channels: the bots get as many owners as that takes.
    n_owners = max(1, -(-args.channels // MAX_CHANNELS))
    if n_owners > 1 and (args.shared_account or args.bots < n_owners):
        parser.error(
            f"--channels {args.channels} needs {n_owners} owners (at most {MAX_CHANNELS} "
            f"channels a user): at least {n_owners} bots and no --shared-account"
        )
    if args.notify_poll is None:
        args.notify_poll = NotifySettings().poll_s

    import psutil
    import pyarrow.parquet as pq
    import ray

    from cryptoorchestrator.cluster.runtime import configure_ray_environment

    configure_ray_environment()  # as the platform starts Ray (workers' CPU priority included)
    from sqlalchemy import func, select

    from cryptoorchestrator.cluster.bots import start_bot, stop_bot
    from cryptoorchestrator.cluster.handles import find_bot_actor
    from cryptoorchestrator.cluster.risk_actor import get_risk_actor
    from cryptoorchestrator.cluster.runtime import NAMESPACE
    from cryptoorchestrator.platform.settings import Settings
    from cryptoorchestrator.platform.storage import db
    from cryptoorchestrator.platform.storage.models import Bot, ExchangeAccount, Order, User

    tmp = Path(tempfile.mkdtemp(prefix="bench-bots-"))
    pg_admin = os.environ.get("CRYPTOORCH_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
    database_url = f"sqlite:///{tmp / 'bots.db'}"
    pg_name = None
    try:
        import psycopg

        with psycopg.connect(pg_admin, autocommit=True, connect_timeout=3) as conn:
            pg_name = f"cryptoorch_bench_bots_{os.getpid()}"
            conn.execute(f'CREATE DATABASE "{pg_name}"')
        database_url = (
            pg_admin.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
            + f"/{pg_name}"
        )
    except Exception as exc:  # SQLite works too, with more lock contention
        print(f"PostgreSQL unavailable ({type(exc).__name__}); using SQLite")
    settings = Settings(
        database_url=database_url,
        var_dir=tmp / "var",
        log_dir=tmp / "logs",
        secret_key="bench-secret-key-0123456789abcdef",
    )
    db.upgrade(settings)
    candles = pq.read_table(BUNDLED).slice(0, 601 + runs * (args.warmup + args.candles))
    ts = candles.column("timestamp").to_pylist()
    results: dict[str, Any] = {
        "bots": args.bots,
        "group_size": args.group_size,
        "candles": args.candles,
        "poll_s": args.poll,
        "candle_feed": not args.no_feed,
        "database": "postgresql" if pg_name else "sqlite",
        "paper_accounts": "shared" if args.shared_account else "one per bot",
        "channels": args.channels,
        "owners": n_owners,
    }
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        namespace=NAMESPACE,
        log_to_driver=False,
        configure_logging=False,
    )
    try:
        sim = SimulatorProcess(start_ms=ts[600] + 1, candles=candles.num_rows)
        try:
            with db.session_scope(settings) as session:
                users = [
                    User(email=f"bench{j}@example.com", password_hash="x") for j in range(n_owners)
                ]
                session.add_all(users)
                session.flush()
                owners = [int(u.id) for u in users]
                accounts = []
                for i in range(1 if args.shared_account else args.bots):
                    account = ExchangeAccount(
                        user_id=owners[i % n_owners],
                        name=f"sim{i}",
                        exchange="binance",
                        mode="paper",
                        api_url=sim.base_url,
                    )
                    session.add(account)
                    accounts.append(account)
                session.flush()
                ids = []
                bot_owner: dict[int, int] = {}
                for i in range(args.bots):
                    account = accounts[0 if args.shared_account else i]
                    bot = Bot(
                        user_id=owners[i % n_owners],
                        name=f"b{i}",
                        trading_pair="BTC/USDT",
                        strategy="bench",
                        timeframe="1h",
                        risk_per_trade=Decimal(1),
                        max_position_size=Decimal(10),
                        starting_balance=Decimal(1000),
                        exchange_account_id=account.id,
                        actor_group=f"bench{i // args.group_size}" if args.group_size > 1 else None,
                    )
                    session.add(bot)
                    session.flush()
                    ids.append(bot.id)
                    bot_owner[bot.id] = owners[i % n_owners]
            risk = get_risk_actor(settings)
            ray.get(
                risk.set_limits.remote(
                    {
                        "max_orders_per_minute": 10_000,
                        "max_open_orders_total": 100_000,
                        "max_total_exposure_pct": 1000,
                    }
                )
            )
            options = {
                "signal_factory": alternate,
                "poll_interval_s": args.poll,
                "window": 60,
                "feed": not args.no_feed,
            }
            if args.nice is not None:
                options["nice"] = args.nice
            t0 = time.perf_counter()
            for bot_id in ids:
                start_bot(settings, bot_id, options)

            # Handles are looked up once: each lookup is a GCS call and a database query, and
            # looking up 50 bots every 50 ms took a third of a core from the bots under test.
            handles: dict[int, Any] = {}

            def actor(bot_id: int) -> Any:
                handle = handles.get(bot_id)
                if handle is None:
                    handle = find_bot_actor(bot_id, settings)
                    if handle is not None:
                        handles[bot_id] = handle
                return handle

            def statuses(bots: list[int] = ids) -> list[dict[str, Any]]:
                # One call per actor process (a group answers for all its bots): fifty calls
                # every 100 ms cost the bots under test a millisecond and a half per order.
                wanted = set(bots)
                procs: dict[Any, Any] = {}
                for b in bots:
                    handle = actor(b)
                    procs.setdefault(handle._actor_id, handle)  # noqa: SLF001
                answers = ray.get([h.statuses.remote() for h in procs.values()], timeout=30)
                return [s for answer in answers for s in answer if s["bot_id"] in wanted]

            def all_at(candle_ms: int, timeout: float = 120.0) -> None:
                deadline = time.monotonic() + timeout
                pending = list(ids)
                while time.monotonic() < deadline:
                    try:
                        # Ask only the bots not there yet, and not too often: the driver
                        # shares the two cores with the bots it measures.
                        pending = [
                            s["bot_id"]
                            for s in statuses(pending)
                            if s.get("last_candle_ms") != candle_ms
                        ]
                        if not pending:
                            return
                    except Exception:  # noqa: S110 (actors still starting)
                        pass
                    time.sleep(0.1)
                try:
                    late = [s for s in statuses() if s.get("last_candle_ms") != candle_ms]
                except Exception as exc:  # report what we can
                    late = [{"error": repr(exc)}]
                raise TimeoutError(
                    f"{len(late)} bots did not process candle {candle_ms}: {late[:3]}"
                )

            all_at(ts[599], timeout=900.0)  # N processes import ccxt, numba, ... on 2 cores
            results["startup_s"] = round(time.perf_counter() - t0, 2)
            probe = actor(ids[0])
            # CPU of every process that serves the bots (actors, the simulator process,
            # PostgreSQL) over the candles, per order: what the two cores have to give.
            actor_pids = sorted(set(ray.get([actor(b).pid.remote() for b in ids])))
            risk_pid = ray.get(risk.__ray_call__.remote(lambda self: os.getpid()))
            from cryptoorchestrator.cluster.events import get_event_bus

            bus_pid = ray.get(get_event_bus().__ray_call__.remote(lambda self: os.getpid()))
            # Ray's own processes on this node (raylet, GCS, dashboard and log agents).
            ray_root = psutil.Process(os.getpid())
            ray_system = {
                p.pid
                for p in ray_root.children(recursive=True)
                if p.pid not in {*actor_pids, risk_pid, bus_pid, sim.pid}
                and "default_worker" not in " ".join(p.cmdline())
            }

            def cpu_seconds() -> dict[str, float]:
                out: dict[str, float] = {
                    "bot actors": 0.0,
                    "risk actor": 0.0,
                    "postgres": 0.0,
                    "simulator": 0.0,
                    "event bus": 0.0,
                    "ray system": 0.0,
                }
                for proc in psutil.process_iter(["pid", "name", "cpu_times"]):
                    times = proc.info["cpu_times"]
                    if times is None:
                        continue
                    used = times.user + times.system
                    if proc.info["pid"] in actor_pids:
                        out["bot actors"] += used
                    elif proc.info["pid"] == risk_pid:
                        out["risk actor"] += used
                    elif proc.info["pid"] == sim.pid:
                        out["simulator"] += used
                    elif proc.info["pid"] == bus_pid:
                        out["event bus"] += used
                    elif proc.info["pid"] in ray_system:
                        out["ray system"] += used
                    elif (proc.info["name"] or "").startswith("postgres"):
                        out["postgres"] += used
                mine = psutil.Process().cpu_times()
                out["driver"] = mine.user + mine.system
                return out

            # Idle cost: the bots polling for a candle that does not come (3 s).
            idle_before = cpu_seconds()
            time.sleep(3.0)
            idle_after = cpu_seconds()
            results["idle_cores"] = {k: (idle_after[k] - idle_before[k]) / 3.0 for k in idle_after}

            # Notifications (--channels): the channels are spread over the bots' owners (a user
            # has at most MAX_CHANNELS); the dispatcher runs in this process, as in the head node.
            def subscribe(count: int) -> dict[str, Any]:
                """Subscribe ``count`` webhook channels to order events; start the delivery."""
                from cryptoorchestrator.platform.crypto import SecretBox
                from cryptoorchestrator.platform.notify.channels import ChannelService
                from cryptoorchestrator.platform.notify.dispatcher import Dispatcher
                from cryptoorchestrator.platform.notify.events import EventType
                from cryptoorchestrator.platform.notify.outbox import install_outbox
                from cryptoorchestrator.platform.storage.models import Trade

                receiver = WebhookReceiver()
                notify_settings = NotifySettings(
                    allowed_hosts=[receiver.host], poll_s=args.notify_poll
                )
                box = SecretBox(settings.resolved_secret_key())
                order_events = [e.value for e in EventType if e.value.startswith("order.")]
                channels: dict[int, int] = {}  # receiver path index -> channel id
                channel_owner: dict[int, int] = {}
                with db.session_scope(settings) as session:
                    # The bots are idle between candles: every fact after these ids is notified.
                    cutoff_trade = session.scalar(select(func.max(Trade.id))) or 0
                    cutoff_order = session.scalar(select(func.max(Order.id))) or 0
                    for i in range(count):
                        owner = owners[i % len(owners)]
                        row, config = ChannelService(session, box, notify_settings, owner).create(
                            f"bench{i}",
                            {"kind": "webhook", "url": receiver.url(i)},
                            events=order_events,
                        )
                        assert config.secret is not None
                        receiver.secrets[i] = config.secret
                        channels[i] = row.id
                        channel_owner[row.id] = owner
                install_outbox()  # as the head node does
                dispatcher = Dispatcher(db.session_factory(settings), box, notify_settings)
                return {
                    "receiver": receiver,
                    "dispatcher": DispatcherThread(dispatcher),
                    "channels": channels,
                    "channel_owner": channel_owner,
                    "cutoff_trade": cutoff_trade,
                    "cutoff_order": cutoff_order,
                }

            def drain(notify: dict[str, Any], timeout: float = 120.0) -> float:
                """Wait until no outbox row is left to send; return the seconds waited."""
                from cryptoorchestrator.platform.storage.models import Notification

                started = time.monotonic()
                deadline = started + timeout + 3 * args.notify_poll
                while time.monotonic() < deadline:
                    with db.session_scope(settings) as session:
                        left = session.scalar(
                            select(func.count())
                            .select_from(Notification)
                            .where(Notification.status.not_in(("sent", "dead")))
                        )
                    if not left:
                        break
                    time.sleep(0.2)
                return time.monotonic() - started

            def delivery(notify: dict[str, Any], phase: dict[str, Any]) -> dict[str, Any]:
                """Notifications expected (facts x channels) against what the receiver got."""
                from collections import Counter

                from cryptoorchestrator.platform.storage.models import Notification, Trade

                owner_channels: dict[int, list[int]] = {}
                for channel_id, owner in notify["channel_owner"].items():
                    owner_channels.setdefault(owner, []).append(channel_id)
                with db.session_scope(settings) as session:
                    trades = session.execute(
                        select(Trade.id, Trade.bot_id).where(
                            Trade.id > notify["cutoff_trade"], Trade.bot_id.in_(ids)
                        )
                    ).all()
                    orders = session.execute(
                        select(Order.id, Order.status, Order.bot_id).where(
                            Order.id > notify["cutoff_order"],
                            Order.bot_id.in_(ids),
                            Order.status.in_(("rejected", "canceled")),
                        )
                    ).all()
                    outbox = session.execute(
                        select(
                            Notification.channel_id,
                            Notification.event_key,
                            Notification.created_at,
                            Notification.status,
                        )
                    ).all()
                facts = [(bot, f"fill:{trade}") for trade, bot in trades]
                facts += [(bot, f"order:{order}:{status}") for order, status, bot in orders]
                expected = {
                    (channel_id, key)
                    for bot, key in facts
                    if bot is not None
                    for channel_id in owner_channels.get(bot_owner[bot], [])
                }
                created = {(c, key): at.timestamp() for c, key, at, _ in outbox}
                arrivals = notify["receiver"].snapshot()
                delivered: Counter[tuple[int, str]] = Counter()
                latency: list[float] = []
                for arrived, index, _, keys, _ in arrivals:
                    channel_id = notify["channels"][index]
                    for key in keys:
                        delivered[channel_id, key] += 1
                        if (channel_id, key) in created:
                            latency.append((arrived - created[channel_id, key]) * 1000)
                messages = Counter(webhook_id for _, _, webhook_id, _, _ in arrivals)
                return {
                    "channels": len(notify["channels"]),
                    "channels_per_owner": sorted(len(v) for v in owner_channels.values()),
                    "subscribed_to": "order events",
                    "dispatcher_poll_s": args.notify_poll,
                    "facts": len(facts),
                    "expected": len(expected),
                    "outbox_rows": len(outbox),
                    "outbox_by_status": dict(Counter(status for *_, status in outbox)),
                    "delivered": sum(delivered.values()),
                    "delivered_once": sum(1 for n in delivered.values() if n == 1),
                    "duplicates": sum(n - 1 for n in delivered.values() if n > 1),
                    "missing": len(expected - set(delivered)),
                    "unexpected": len(set(delivered) - expected),
                    "messages": len(arrivals),
                    "messages_resent": sum(n - 1 for n in messages.values() if n > 1),
                    "bad_signatures": sum(1 for *_, good in arrivals if not good),
                    "messages_during_measured_candles": sum(
                        1 for a in arrivals if phase["started"] <= a[0] <= phase["ended"]
                    ),
                    "event_to_receiver_ms": {
                        "p50": pct(latency, 50),
                        "p99": pct(latency, 99),
                        "max": max(latency, default=0.0),
                    },
                    "latency_from": "the outbox row's created_at (stamped at the fill's flush, "
                    "inside its transaction, just before the commit) to the receiver's arrival",
                    "drain_s": notify["drain_s"],
                    # Its loop and executor threads, from the channels' creation to the drain.
                    "dispatcher_cpu_s": notify["dispatcher_cpu_s"],
                    "dispatcher_cpu_ms_per_message": notify["dispatcher_cpu_s"]
                    * 1000
                    / max(len(arrivals), 1),
                }

            def trade(first: int, count: int, control: list[float] | None = None) -> dict:
                """Close candles ``first`` .. ``first + count - 1``; return close times."""
                closes: dict[int, float] = {}
                for k in range(first, first + count):
                    sim.advance(HOUR)
                    closes[ts[600 + k]] = time.time()
                    # Control calls while every bot works on the new candle.
                    for _ in range(5 if control is not None else 0):
                        t = time.perf_counter()
                        ray.get(probe.status.remote(bot_id=ids[0]))
                        if control is not None:
                            control.append((time.perf_counter() - t) * 1000)
                    all_at(ts[600 + k])
                return closes

            def history_lengths() -> dict[int, dict[str, int]]:
                answers = ray.get([actor(b).latencies.remote(bot_id=b) for b in ids])
                return {
                    b: {key: len(v) for key, v in item.items() if isinstance(v, list)}
                    for b, item in zip(ids, answers, strict=True)
                }

            def measure(first: int) -> dict[str, Any]:
                """Trade ``args.candles`` measured candles from ``first``; what summarise needs."""
                phase: dict[str, Any] = {"control": [], "lengths_before": history_lengths()}
                phase["speed_before_s"] = speed_probe()
                cpu_before = cpu_seconds()
                phase["started"] = time.time()
                phase["closes"] = trade(first, args.candles, phase["control"])
                phase["ended"] = time.time()
                cpu_after = cpu_seconds()
                phase["cpu_s"] = {k: cpu_after[k] - cpu_before[k] for k in cpu_after}
                phase["speed_after_s"] = speed_probe()
                phase["lengths_after"] = history_lengths()
                return phase

            # Warm-up: a bot trades for days; its first candles after a start also open pool
            # connections and prepare statements.  Traded and reported, not measured.
            k = 0
            warm = trade(k, args.warmup)
            k += args.warmup
            plain = measure(k)
            k += args.candles
            subscribed: dict[str, Any] | None = None
            notify: dict[str, Any] = {}
            if args.channels:
                notify = subscribe(args.channels)
                try:
                    # The first fills with channels import the outbox's insert path in each bot
                    # process: warmed up like the first run, and reported apart.
                    notify["warm"] = trade(k, args.warmup)
                    k += args.warmup
                    subscribed = measure(k)
                    k += args.candles
                    notify["drain_s"] = drain(notify)
                    notify["dispatcher_cpu_s"] = notify["dispatcher"].cpu_s()
                finally:
                    notify["dispatcher"].close()
                    notify["receiver"].close()
            # End to end: candle close (the clock step) -> order booked by the paper exchange.
            with db.session_scope(settings) as session:
                rows = session.execute(
                    select(Order.client_order_id, Order.created_at).where(Order.bot_id.is_(None))
                ).all()
                by_status = dict(
                    session.execute(
                        select(Order.status, func.count())
                        .where(Order.bot_id.is_not(None))
                        .group_by(Order.status)
                    ).all()
                )
                denials = dict(
                    session.execute(
                        select(Order.status_reason, func.count())
                        .where(Order.status == "denied")
                        .group_by(Order.status_reason)
                    ).all()
                )
            results["bot_orders_by_status"] = by_status
            results["denials"] = denials
            history = ray.get([actor(b).latencies.remote(bot_id=b) for b in ids])
            booked: list[tuple[int, int, float]] = []
            for cid, created in rows:
                # paper exchange ids: paper:<account>:co<bot>-<candle>-<tag>
                bot_part, candle_part = cid.rsplit(":", 1)[1].split("-")[:2]
                booked.append((int(bot_part[2:]), int(candle_part), created.timestamp()))

            def summarise(phase: dict[str, Any]) -> dict[str, Any]:
                """Latencies and CPU of one measured phase."""
                # The phase's part of each bot's history (oldest first).
                lat = [
                    {
                        key: v[
                            phase["lengths_before"][b].get(key, 0) : phase["lengths_after"][b][key]
                        ]
                        for key, v in item.items()
                        if isinstance(v, list)
                    }
                    for b, item in zip(ids, history, strict=True)
                ]
                seen = {
                    (bot_id, int(candle)): float(at)
                    for bot_id, item in zip(ids, lat, strict=True)
                    for candle, at in item["seen_at"]
                }
                closes = phase["closes"]
                e2e, react = [], []
                by_candle: dict[int, list[float]] = {}
                for bot_id, candle, created in booked:
                    if candle in closes:
                        e2e.append((created - closes[candle]) * 1000)
                        by_candle.setdefault(candle, []).append(e2e[-1])
                    if (bot_id, candle) in seen:
                        react.append((created - seen[bot_id, candle]) * 1000)
                decision = [v for item in lat for v in item["decision_ms"]]
                # Where the time from seeing the candle goes, step by step (ms after seen).
                steps: dict[str, list[float]] = {}
                for item in lat:
                    for record in item.get("steps", []):
                        for name, at in record.items():
                            steps.setdefault(name, []).append(at * 1000)
                risk_ms = [v for item in lat for v in item["risk_ms"]]
                control_ms = phase["control"]
                return {
                    "orders": len(e2e),
                    "e2e_ms": {
                        "p50": pct(e2e, 50),
                        "p99": pct(e2e, 99),
                        "max": max(e2e, default=0),
                    },
                    "react_ms": {"p50": pct(react, 50), "p99": pct(react, 99)},
                    "decision_ms": {"p50": pct(decision, 50), "p99": pct(decision, 99)},
                    "risk_ms": {"p50": pct(risk_ms, 50), "p99": pct(risk_ms, 99)},
                    "control_ms": {"p50": pct(control_ms, 50), "p99": pct(control_ms, 99)},
                    # The slowest order of each measured candle, in candle order.
                    "e2e_max_by_candle_ms": [max(by_candle[c]) for c in sorted(by_candle)],
                    "steps_ms": {
                        name: {"p50": pct(v, 50), "p99": pct(v, 99)} for name, v in steps.items()
                    },
                    "cpu_ms_per_order": {
                        k: v * 1000 / max(len(e2e), 1) for k, v in phase["cpu_s"].items()
                    },
                    "speed_before_s": phase["speed_before_s"],
                    "speed_after_s": phase["speed_after_s"],
                }

            def slowest(closes: dict[int, float]) -> list[float]:
                worst: dict[int, float] = {}
                for _, candle, created in booked:
                    if candle in closes:
                        ms = (created - closes[candle]) * 1000
                        worst[candle] = max(worst.get(candle, ms), ms)
                return [worst[c] for c in sorted(worst)]

            results.update(summarise(plain))
            results["warmup_max_by_candle_ms"] = slowest(warm)
            if subscribed is not None:
                results["with_channels"] = summarise(subscribed)
                results["with_channels"]["warmup_max_by_candle_ms"] = slowest(notify["warm"])
                results["notifications"] = delivery(notify, subscribed)
            pids = sorted(set(ray.get([actor(b).pid.remote() for b in ids])))
            rss = [psutil.Process(p).memory_info().rss / 2**20 for p in pids]
            uss = [psutil.Process(p).memory_full_info().uss / 2**20 for p in pids]
            results.update(
                processes=len(pids),
                rss_mb_per_bot=sum(rss) / len(ids),
                uss_mb_per_bot=sum(uss) / len(ids),
                rss_mb_total=sum(rss),
                uss_mb_total=sum(uss),
            )

            import asyncio

            for bot_id in ids:
                asyncio.run(stop_bot(settings, bot_id))
            ray.kill(risk, no_restart=True)
        finally:
            sim.close()
    finally:
        ray.shutdown()
        db.dispose_engines()
        if pg_name:
            import psycopg

            with psycopg.connect(pg_admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')

    print(
        f"\n{args.bots} paper bots ({args.group_size} per process), {args.candles} candles, "
        f"{'polling every ' + str(args.poll) + ' s' if args.no_feed else 'kline stream'}, "
        f"{results['database']}, started in {results['startup_s']} s"
    )
    print(f"{'measure':<48}{'p50':>10}{'p99':>10}{'target':>10}")
    measures = [
        ("decision: candle close -> order at exchange (ms)", "e2e_ms", "< 50"),
        ("  of which: candle seen -> order at exchange (ms)", "react_ms", ""),
        ("in-bot: candle seen -> candle done (ms)", "decision_ms", ""),
        ("risk approval round trip (ms)", "risk_ms", "< 5"),
        ("status call while trading (ms)", "control_ms", ""),
    ]
    for label, key, target in measures:
        print(f"{label:<48}{results[key]['p50']:>10.2f}{results[key]['p99']:>10.2f}{target:>10}")
    print(
        "steps, ms after the candle was seen (p50/p99): "
        + ", ".join(
            f"{k} {v['p50']:.1f}/{v['p99']:.1f}" for k, v in results.get("steps_ms", {}).items()
        )
    )
    print(
        f"slowest order of each candle (ms; warm-up: "
        f"{' '.join(f'{v:.0f}' for v in results['warmup_max_by_candle_ms'])}): "
        + " ".join(f"{v:.0f}" for v in results["e2e_max_by_candle_ms"])
    )
    print(
        f"memory: {results['processes']} actor processes; per bot RSS "
        f"{results['rss_mb_per_bot']:.0f} MiB, USS {results['uss_mb_per_bot']:.0f} MiB "
        f"(total USS {results['uss_mb_total']:.0f} MiB); {results['orders']} orders"
    )
    print(
        "idle, polling (cores): "
        + ", ".join(f"{k} {v:.3f}" for k, v in results["idle_cores"].items())
    )
    print(
        "CPU per order (ms): "
        + ", ".join(f"{k} {v:.2f}" for k, v in results["cpu_ms_per_order"].items())
    )
    print(f"bots' orders by status: {results['bot_orders_by_status']}")
    print(
        "machine speed (2M-step Python loop, s; lower is faster): "
        f"before {results['speed_before_s']:.3f}, after {results['speed_after_s']:.3f}"
    )
    if results["denials"]:
        print(f"denials: {results['denials']}")
    if "with_channels" in results:
        print_channels(results)
    results["measured_at"] = datetime.now(UTC).isoformat()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2, default=float))


if __name__ == "__main__":
    main()
