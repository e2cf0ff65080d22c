"""Soak and load: N paper bots for M minutes at an accelerated candle pace, the books checked.

The chaos harness's world (:mod:`chaos`: Ray, the exchange simulator on loopback with ccxt, a
private PostgreSQL or SQLite, the risk actor) with ``--bots`` paper bots in groups of
``--group-size`` (and no bots on the simulator account), every bot trading on every candle.
A candle closes every ``--pace`` seconds (an hour of market time each).  Sampled every
``--sample`` seconds:

* RSS of every process that serves the bots (bot processes, the risk actor, the driver holding
  the simulator, PostgreSQL's processes together);
* database rows written per second (every table);
* decision latency, candle close -> order booked by the paper exchange (the book row's
  ``created_at``), p50/p99 per window.

At the end: RSS growth per process from the first sample after warm-up to the last, and the
invariants of :meth:`chaos.World.check` (zero violations expected).

Usage: ``nice -n 10 .venv/bin/python benchmarks/soak.py --minutes 3 --bots 10 --pace 2``
(or ``benchmarks/chaos.py --soak 3 --bots 10``); results in ``benchmarks/results/soak.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import chaos  # noqa: E402  (the harness beside this file)

ROOT = Path(__file__).resolve().parents[1]


def _rss_mib(pid: int) -> float:
    import psutil

    try:
        return float(psutil.Process(pid).memory_info().rss) / 2**20
    except Exception:  # gone (restarted)
        return float("nan")


def _postgres_rss_mib() -> float:
    import psutil

    total = 0.0
    for proc in psutil.process_iter(["name", "memory_info"]):
        if (proc.info["name"] or "").startswith("postgres") and proc.info["memory_info"]:
            total += proc.info["memory_info"].rss / 2**20
    return total


def _row_count(world: chaos.World) -> int:
    from sqlalchemy import func, select

    from cryptoorchestrator.platform.storage import db
    from cryptoorchestrator.platform.storage.models import Base

    with db.session_scope(world.settings) as session:
        return sum(
            int(session.scalar(select(func.count()).select_from(t)) or 0)
            for t in Base.metadata.sorted_tables
        )


def _latencies(world: chaos.World, closes: dict[int, float], since_id: int) -> tuple[list, int]:
    """Close -> booked (ms) of the paper book's orders after ``since_id``; the last id seen."""
    from sqlalchemy import select

    from cryptoorchestrator.platform.storage import db
    from cryptoorchestrator.platform.storage.models import Order

    with db.session_scope(world.settings) as session:
        rows = session.execute(
            select(Order.id, Order.client_order_id, Order.created_at)
            .where(Order.bot_id.is_(None), Order.id > since_id)
            .order_by(Order.id)
        ).all()
    out = []
    last = since_id
    for oid, cid, created in rows:
        last = max(last, int(oid))
        candle = int(cid.rsplit(":", 1)[1].split("-")[1])
        if candle in closes:
            out.append((created.replace(tzinfo=UTC).timestamp() - closes[candle]) * 1000)
    return out, last


def main(argv: list[str] | None = None) -> None:  # noqa: PLR0915 (a linear script)
    """Run the soak and print/write its results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--bots", type=int, default=10)
    parser.add_argument("--group-size", type=int, default=5)
    parser.add_argument("--pace", type=float, default=2.0, help="seconds between candle closes")
    parser.add_argument("--sample", type=float, default=30.0, help="seconds between samples")
    parser.add_argument("--warmup", type=int, default=5, help="candles before measuring")
    parser.add_argument("--db", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks/results/soak.json")
    args = parser.parse_args(argv)
    if args.bots < 1 or args.group_size < 1 or args.pace <= 0 or args.minutes <= 0:
        parser.error("--bots, --group-size, --pace and --minutes must be positive")
    candles = chaos.HISTORY + args.warmup + int(args.minutes * 60 / args.pace) + 20
    config = chaos.WorldConfig(
        db=args.db, paper_bots=args.bots, account_bots=0, grouped=True, candles=candles
    )
    # Groups of --group-size: the world puts paper bots in one group; split them here.
    started = time.monotonic()
    with _grouped_world(config, args.group_size) as world:
        setup_s = time.monotonic() - started
        print(f"{args.bots} bots up in {setup_s:.1f} s ({args.db})", flush=True)
        import ray

        closes: dict[int, float] = {}
        for _ in range(args.warmup):
            candle = world.advance()
            closes[candle] = time.time()
            world.wait_processed(candle)
        _, last_id = _latencies(world, closes, 0)
        pids = sorted({world.pid_of(b) for b in world.bots})
        risk_pid = world.risk_pid()
        procs = {
            **{f"bots pid {p}": p for p in pids},
            "risk actor": risk_pid,
            "driver": os.getpid(),
        }
        samples: list[dict[str, Any]] = []
        rows0, t0 = _row_count(world), time.monotonic()
        window: list[float] = []
        all_lat: list[float] = []
        late = 0
        next_sample = t0
        end = t0 + args.minutes * 60
        next_close = t0
        while True:
            now = time.monotonic()
            if now >= next_sample:
                fresh, last_id = _latencies(world, closes, last_id)
                window += fresh
                all_lat += fresh
                rows = _row_count(world)
                sample = {
                    "t_s": round(now - t0, 1),
                    "rss_mib": {k: round(_rss_mib(p), 1) for k, p in procs.items()},
                    "postgres_rss_mib": round(_postgres_rss_mib(), 1)
                    if args.db == "postgres"
                    else None,
                    "rows": rows,
                    "rows_per_s": round((rows - rows0) / max(now - t0, 1e-9), 1),
                    "decision_ms_p50": chaos.pct(window, 50),
                    "decision_ms_p99": chaos.pct(window, 99),
                    "orders": len(window),
                }
                samples.append(sample)
                print(
                    f"t={sample['t_s']:>6.0f}s rows/s {sample['rows_per_s']:>7.1f} "
                    f"close->order p50 {sample['decision_ms_p50'] or 0:.0f} ms "
                    f"p99 {sample['decision_ms_p99'] or 0:.0f} ms ({len(window)} orders) "
                    f"RSS {sample['rss_mib']}",
                    flush=True,
                )
                window = []
                next_sample += args.sample
            if now >= end:
                break
            if now >= next_close:
                candle = world.advance()
                closes[candle] = time.time()
                next_close += args.pace
                if next_close < time.monotonic():  # the bots fell behind the pace
                    late += 1
                    next_close = time.monotonic() + args.pace
            time.sleep(max(0.0, min(next_close, next_sample, end) - time.monotonic()))
        world.wait_processed()
        world.settle()
        fresh, last_id = _latencies(world, closes, last_id)
        all_lat += fresh
        violations = world.check()
        elapsed = time.monotonic() - t0
        rows_total = _row_count(world) - rows0
        ray.get(world.risk.ping.remote(), timeout=60)
    first, final = samples[0]["rss_mib"], samples[-1]["rss_mib"]
    growth = {k: round(final[k] - first[k], 1) for k in first}
    results = {
        "measured_at": datetime.now(UTC).isoformat(),
        "database": args.db,
        "bots": args.bots,
        "group_size": args.group_size,
        "minutes": args.minutes,
        "pace_s": args.pace,
        "candles": len(closes) - args.warmup,
        "orders": len(all_lat),
        "setup_s": round(setup_s, 1),
        "rows_per_s": round(rows_total / elapsed, 1),
        "decision_ms": {"p50": chaos.pct(all_lat, 50), "p99": chaos.pct(all_lat, 99)},
        "rss_growth_mib": growth,
        "rss_first_mib": first,
        "rss_last_mib": final,
        "pace_missed": late,
        "violations": violations,
        "samples": samples,
    }
    print(
        f"\n{args.bots} bots, {args.minutes} min, a candle every {args.pace} s: "
        f"{results['candles']} candles, {results['orders']} orders, "
        f"{results['rows_per_s']} rows/s; close->order p50 {results['decision_ms']['p50']:.0f} "
        f"ms, p99 {results['decision_ms']['p99']:.0f} ms; RSS growth (MiB) {growth}; "
        f"violations {len(violations)}"
    )
    for v in violations[:10]:
        print(f"  {v}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2, default=float))
    print(f"written {args.json}")
    if violations:
        sys.exit(1)


class _grouped_world(chaos.World):  # noqa: N801 (used as a context manager)
    """A world whose paper bots are split into groups of ``group_size``."""

    def __init__(self, config: chaos.WorldConfig, group_size: int) -> None:
        super().__init__(config)
        self.group_size = group_size
        self.rng = random.Random(config.seed)

    def _setup(self) -> None:
        from sqlalchemy import update

        from cryptoorchestrator.platform.storage import db
        from cryptoorchestrator.platform.storage.models import Bot

        original = chaos.World.bots
        # Create the bots stopped (no bot listed), regroup them, then start them.
        chaos.World.bots = property(lambda self: [])  # type: ignore[method-assign,assignment]
        try:
            super()._setup()
        finally:
            chaos.World.bots = original  # type: ignore[method-assign]
        with db.session_scope(self.settings) as session:
            for i, bot_id in enumerate(self.paper_ids):
                session.execute(
                    update(Bot)
                    .where(Bot.id == bot_id)
                    .values(actor_group=f"soak{i // self.group_size}")
                )
        from cryptoorchestrator.cluster.bots import start_bot

        for bot_id in self.bots:
            start_bot(self.settings, bot_id, self.options)
        self.wait_processed(timeout=900.0)
        self.settle()


if __name__ == "__main__":
    main()
