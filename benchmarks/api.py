"""Benchmark: the API head node under a bounded closed-loop load on loopback.

Three servers, each started as its own ``uvicorn`` process (1 worker, uvloop + httptools) on a free
port and stopped afterwards, are loaded from a separate client process (``wrk`` when installed,
else an async httpx client in a subprocess) at a fixed number of connections for a fixed time:

* ``bare``: a raw ASGI app answering a constant JSON, the ceiling of uvicorn on this machine;
* ``health``: ``GET /api/health`` on the full app (access log, HEAD, rate limits with a budget
  too large to answer 429, body limit), on PostgreSQL;
* ``trades``: ``GET /api/trades?limit=50`` authenticated, with 1,000,000 trades (and their
  orders) bulk-loaded with ``COPY`` into a dedicated database, dropped at the end.

Prints throughput, p50/p99 latency and errors, the ratios to the targets (health >= 70 % of the
bare app's throughput, trades p99 < 100 ms, zero errors) and writes
``benchmarks/results/api.json``.  Run: ``.venv/bin/python -m benchmarks.api [--duration 10]``;
``--only health`` runs the bare app and ``/api/health`` only (writes ``api-health.json``);
``--rounds N`` alternates the bare app and ``/api/health`` N times (each on a fresh server) and
reports the median ratio, so that a neighbour's load does not decide the comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "api.json"
PG_ADMIN = os.environ.get(
    "CRYPTOORCH_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
BENCH_DB = "cryptoorch_bench"
PASSWORD = "benchmark password"  # noqa: S105 (a throwaway user in a throwaway database)
_BODY = b'{"status":"ok"}'

_WRK_LUA = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,' ..
    '"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    latency.mean))
end
"""


async def bare_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answer every HTTP request with a constant JSON (the ceiling; no framework at all)."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"15")],
        }
    )
    await send({"type": "http.response.body", "body": _BODY})


def bare_fastapi() -> Any:
    """Return a FastAPI app with one route answering a constant JSON (the framework's own cost)."""
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/api/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


# --------------------------------------------------------------------------------- servers
_PIDS: dict[str, int] = {}  # base URL -> server process, for its CPU time


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (all its threads) so far, from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """Return a TCP port that is free on loopback now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def uvicorn_server(app: str, env: dict[str, str], *, factory: bool = False) -> Iterator[str]:
    """Run ``app`` under uvicorn (1 worker) in a subprocess; yield its base URL; stop it."""
    port = free_port()
    cmd = [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port)]
    # The same server settings for every app (like for like): uvloop and httptools named, not
    # left to "auto" (which silently falls back to asyncio and h11 when they are missing).
    cmd += ["--workers", "1", "--loop", "uvloop", "--http", "httptools", "--no-access-log"]
    cmd += ["--log-level", "warning", "--app-dir", str(ROOT)]
    cmd += ["--factory"] if factory else []
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT)  # noqa: S603
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server {app} exited with {proc.returncode}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"server {app} did not listen within 60 s")
            time.sleep(0.1)
        _PIDS[f"http://127.0.0.1:{port}"] = proc.pid
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------------------------- clients
def run_load(
    url: str, *, seconds: float, connections: int, headers: dict[str, str], client: str
) -> dict[str, Any]:
    """Load ``url`` from a separate process; return requests/s, latency percentiles, errors."""
    if client == "wrk":
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
            f.write(_WRK_LUA)
        try:
            cmd = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "-s", f.name]
            for k, v in headers.items():
                cmd += ["-H", f"{k}: {v}"]
            out = subprocess.run(  # noqa: S603
                [*cmd, url], capture_output=True, text=True, check=True, timeout=seconds + 60
            ).stdout
        finally:
            os.unlink(f.name)
        raw = json.loads(out.strip().splitlines()[-1])
        errors = sum(raw[k] for k in ("connect", "read", "write", "status", "timeout"))
        return {
            "client": "wrk",
            "requests": raw["requests"],
            "seconds": raw["duration_us"] / 1e6,
            "rps": raw["requests"] / (raw["duration_us"] / 1e6),
            "p50_ms": raw["p50_us"] / 1000,
            "p90_ms": raw["p90_us"] / 1000,
            "p99_ms": raw["p99_us"] / 1000,
            "max_ms": raw["max_us"] / 1000,
            "errors": errors,
            "error_kinds": {k: raw[k] for k in ("connect", "read", "write", "status", "timeout")},
        }
    spec = json.dumps({"url": url, "seconds": seconds, "connections": connections, "h": headers})
    out = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "benchmarks.api", "--client-worker", spec],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        timeout=seconds + 60,
    ).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


async def _httpx_load(
    url: str, seconds: float, connections: int, headers: dict[str, str]
) -> dict[str, Any]:
    import httpx

    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(limits=limits, headers=headers, timeout=10.0) as client:
        started = time.perf_counter()
        deadline = started + seconds

        async def worker() -> None:
            nonlocal errors
            while (t0 := time.perf_counter()) < deadline:
                try:
                    r = await client.get(url)
                    await r.aread()
                    if r.status_code >= 400:
                        errors += 1
                except httpx.HTTPError:
                    errors += 1
                latencies.append(time.perf_counter() - t0)

        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - started
    latencies.sort()

    def pct(p: float) -> float:
        return (
            latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies else 0
        )

    return {
        "client": "httpx",
        "requests": len(latencies),
        "seconds": elapsed,
        "rps": len(latencies) / elapsed,
        "p50_ms": pct(0.50),
        "p90_ms": pct(0.90),
        "p99_ms": pct(0.99),
        "max_ms": latencies[-1] * 1000 if latencies else 0,
        "errors": errors,
    }


# --------------------------------------------------------------------------------- database
def _pg(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def create_bench_db() -> str:
    """Create (afresh) the benchmark database; return its SQLAlchemy URL."""
    import psycopg

    with psycopg.connect(_pg(PG_ADMIN), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{BENCH_DB}"')
    return PG_ADMIN.rsplit("/", 1)[0] + "/" + BENCH_DB


def drop_bench_db() -> None:
    """Drop the benchmark database."""
    import psycopg

    with psycopg.connect(_pg(PG_ADMIN), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')


def bulk_load(db_url: str, user_id: int, n_trades: int, n_bots: int = 5) -> dict[str, float]:
    """COPY ``n_bots`` bots of ``user_id`` and ``n_trades`` orders with one fill each."""
    import psycopg

    t0 = time.perf_counter()
    start = datetime(2021, 1, 1, tzinfo=UTC)
    chunk = 100_000
    with psycopg.connect(_pg(db_url)) as conn:
        now = datetime.now(UTC).isoformat()
        with conn.cursor() as cur:
            with cur.copy(
                "COPY bots (id, user_id, name, trading_pair, strategy, params, timeframe, mode, "
                "risk_per_trade, max_position_size, starting_balance, desired_state, status, "
                "created_at, updated_at) FROM STDIN"
            ) as copy:
                for b in range(1, n_bots + 1):
                    copy.write(
                        f"{b}\t{user_id}\tbench-{b}\tBTC/USDT\tsma_cross\t{{}}\t1h\tpaper\t1\t10\t"
                        f"10000\tstopped\tStopped\t{now}\t{now}\n"
                    )
            for table, cols in (
                (
                    "orders",
                    "id, bot_id, client_order_id, exchange, symbol, side, type, price, amount, "
                    "filled, average_price, status, submitted_at, closed_at, created_at, "
                    "updated_at",
                ),
                (
                    "trades",
                    "id, bot_id, order_id, exchange_trade_id, symbol, side, price, amount, fee, "
                    "fee_currency, realized_pnl, timestamp",
                ),
            ):
                with cur.copy(f"COPY {table} ({cols}) FROM STDIN") as copy:
                    for lo in range(1, n_trades + 1, chunk):
                        lines = []
                        for i in range(lo, min(lo + chunk, n_trades + 1)):
                            ts = (start + timedelta(seconds=30 * i)).isoformat()
                            bot = i % n_bots + 1
                            side = "buy" if i % 2 else "sell"
                            price = f"{40000 + i % 5000}.{i % 100:02d}"
                            if table == "orders":
                                lines.append(
                                    f"{i}\t{bot}\tbench-{i}\tbinance\tBTC/USDT\t{side}\tmarket\t"
                                    f"{price}\t0.001\t0.001\t{price}\tfilled\t{ts}\t{ts}\t{ts}\t"
                                    f"{ts}\n"
                                )
                            else:
                                pnl = "\\N" if side == "buy" else f"{(i % 7) - 3}.125"
                                lines.append(
                                    f"{i}\t{bot}\t{i}\tx{i}\tBTC/USDT\t{side}\t{price}\t0.001\t"
                                    f"0.04\tUSDT\t{pnl}\t{ts}\n"
                                )
                        copy.write("".join(lines))
            for table in ("bots", "orders", "trades"):
                cur.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "  # noqa: S608
                    f"(SELECT max(id) FROM {table}))"
                )
        conn.commit()
    t1 = time.perf_counter()
    with psycopg.connect(_pg(db_url), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE bots, orders, trades")
        # Write the load back now, not while the API is being measured.
        conn.execute("CHECKPOINT")
    return {"copy_s": round(t1 - t0, 2), "analyze_s": round(time.perf_counter() - t1, 2)}


# ------------------------------------------------------------------------------------- main
def _app_env(db_url: str, tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRYPTOORCH_")}
    env.update(
        {
            "CRYPTOORCH_DATABASE_URL": db_url,
            "CRYPTOORCH_LOG_DIR": str(tmp / "logs"),
            "CRYPTOORCH_VAR_DIR": str(tmp / "var"),
            "CRYPTOORCH_DATA_DIR": str(tmp / "var" / "data"),
            "CRYPTOORCH_SECRET_KEY": "benchmark-secret-key-0123456789abcdef",
            "CRYPTOORCH_API_RATE_LIMIT": "10000000",
            "CRYPTOORCH_API_RATE_LIMIT_AUTH": "1000",
            "CRYPTOORCH_API_RATE_LIMIT_BACKEND": "memory",
            "PYTHONPATH": str(ROOT),
        }
    )
    return env


def _login(base: str) -> tuple[int, str]:
    import httpx

    with httpx.Client(base_url=base, timeout=30) as c:
        body = {"email": "bench@example.com", "password": PASSWORD}
        r = c.post("/api/auth/register", json=body)
        r.raise_for_status()
        user_id = int(r.json()["id"])
        r = c.post("/api/auth/login", json=body)
        r.raise_for_status()
        return user_id, r.json()["accessToken"]


def _check(base: str, path: str, headers: dict[str, str], items: int | None = None) -> None:
    import httpx

    r = httpx.get(base + path, headers=headers, timeout=30)
    if r.status_code != 200:
        raise RuntimeError(f"{path}: {r.status_code} {r.text[:200]}")
    if items is not None and len(r.json()["items"]) != items:
        raise RuntimeError(f"{path}: expected {items} items, got {len(r.json()['items'])}")


def measure(
    url: str, args: argparse.Namespace, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    """Warm ``url`` up for a moment, then run the measured load."""
    kw = {"connections": args.connections, "headers": headers or {}, "client": args.client}
    run_load(url, seconds=args.warmup, **kw)
    pid = _PIDS.get("/".join(url.split("/", 3)[:3]))
    cpu0 = cpu_seconds(pid) if pid else float("nan")
    result = run_load(url, seconds=args.duration, **kw)
    # The server's CPU time per request: less sensitive than req/s to neighbours' load on a
    # shared machine (it does not count the time the server waited for a CPU).
    cpu = cpu_seconds(pid) - cpu0 if pid else float("nan")
    result["server_cpu_us_per_request"] = round(cpu / max(1, result["requests"]) * 1e6, 2)
    return result


def main(argv: list[str] | None = None) -> int:
    """Run the three loads, print the table and ratios, write the JSON results."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--duration", type=float, default=10.0, help="seconds per measured run")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per run")
    p.add_argument("--connections", type=int, default=50)
    p.add_argument("--trades", type=int, default=1_000_000)
    p.add_argument("--client", choices=["auto", "wrk", "httpx"], default="auto")
    p.add_argument(
        "--only",
        choices=["all", "health"],
        default="all",
        help="health: only the bare app and /api/health (no fastapi context, no 1M trades)",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="bare/health pairs measured alternately; the median ratio is reported",
    )
    p.add_argument("--client-worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.client_worker:
        spec = json.loads(args.client_worker)
        result = asyncio.run(
            _httpx_load(spec["url"], spec["seconds"], spec["connections"], spec["h"])
        )
        print(json.dumps(result))
        return 0
    if args.client == "auto":
        args.client = "wrk" if shutil.which("wrk") else "httpx"

    load_before = os.getloadavg()[0]
    rows: dict[str, dict[str, Any]] = {}
    rounds: list[dict[str, float]] = []
    all_runs: list[dict[str, Any]] = []
    setup: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="cryptoorch-bench-") as tmp_name:
        tmp = Path(tmp_name)
        bare_env = _app_env("", tmp)
        if args.only == "all":
            with uvicorn_server("benchmarks.api:bare_fastapi", bare_env, factory=True) as base:
                rows["fastapi"] = measure(base + "/api/health", args)
                all_runs.append(rows["fastapi"])
        db_url = create_bench_db()
        try:
            env = _app_env(db_url, tmp)
            from cryptoorchestrator.platform.settings import Settings
            from cryptoorchestrator.platform.storage.db import dispose_engines, upgrade

            t0 = time.perf_counter()
            upgrade(Settings(database_url=db_url, var_dir=tmp / "var", log_dir=tmp / "logs"))
            dispose_engines()
            setup["migrate_s"] = round(time.perf_counter() - t0, 2)
            # Bare app and /api/health alternate, one server at a time, so that a change in the
            # machine's background load hits both sides of the ratio alike.
            bare_runs: list[dict[str, Any]] = []
            health_runs: list[dict[str, Any]] = []
            for _ in range(args.rounds):
                with uvicorn_server("benchmarks.api:bare_app", bare_env) as base:
                    bare_runs.append(measure(base + "/", args))
                with uvicorn_server(
                    "cryptoorchestrator.api.app:create_app", env, factory=True
                ) as base:
                    _check(base, "/api/health", {})
                    health_runs.append(measure(base + "/api/health", args))
                b, h = bare_runs[-1], health_runs[-1]
                rounds.append(
                    {
                        "bare_rps": round(b["rps"]),
                        "health_rps": round(h["rps"]),
                        "ratio": round(h["rps"] / b["rps"], 3),
                        "bare_cpu_us": b["server_cpu_us_per_request"],
                        "health_cpu_us": h["server_cpu_us_per_request"],
                        "cpu_ratio": round(
                            b["server_cpu_us_per_request"] / h["server_cpu_us_per_request"], 3
                        ),
                    }
                )
            all_runs += bare_runs + health_runs
            rows["bare"] = sorted(bare_runs, key=lambda r: r["rps"])[len(bare_runs) // 2]
            rows["health"] = sorted(health_runs, key=lambda r: r["rps"])[len(health_runs) // 2]
            if args.only == "all":
                with uvicorn_server(
                    "cryptoorchestrator.api.app:create_app", env, factory=True
                ) as base:
                    user_id, token = _login(base)
                    setup.update(bulk_load(db_url, user_id, args.trades))
                    setup["trades"] = args.trades
                    auth = {"Authorization": f"Bearer {token}"}
                    _check(base, "/api/trades?limit=50", auth, items=50)
                    rows["trades"] = measure(base + "/api/trades?limit=50", args, auth)
                    all_runs.append(rows["trades"])
        finally:
            drop_bench_db()

    # The median of the rounds' ratios (each round measured both apps back to back).
    ratio = sorted(r["ratio"] for r in rounds)[len(rounds) // 2]
    errors = sum(r["errors"] for r in all_runs)
    targets: dict[str, dict[str, Any]] = {
        "health_vs_bare": {"value": round(ratio, 3), "target": ">= 0.70", "met": ratio >= 0.70},
    }
    # Context: the same ratio from the servers' CPU time per request (bare / health).
    cpu_ratio = sorted(r["cpu_ratio"] for r in rounds)[len(rounds) // 2]
    targets["health_vs_bare_cpu"] = {"value": cpu_ratio, "target": "(context)", "met": None}
    if "fastapi" in rows:
        targets["health_vs_bare_fastapi"] = {
            "value": round(rows["health"]["rps"] / rows["fastapi"]["rps"], 3),
            "target": "(context)",
            "met": None,
        }
    if "trades" in rows:
        targets["trades_p99_ms"] = {
            "value": round(rows["trades"]["p99_ms"], 2),
            "target": "< 100",
            "met": rows["trades"]["p99_ms"] < 100,
        }
    targets["errors"] = {"value": errors, "target": "0", "met": errors == 0}
    names = {
        "bare": "bare ASGI app (ceiling)",
        "fastapi": "bare FastAPI, one route (context)",
        "health": "/api/health, full app",
        "trades": f"/api/trades?limit=50 ({args.trades:,} trades)",
    }
    print(f"\n{args.connections} connections, {args.duration:g} s each, client {args.client}")
    print(
        f"{'run':<38}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'errors':>8}"
        f"{'CPU us/req':>12}"
    )
    for key, row in rows.items():
        print(
            f"{names[key]:<38}{row['rps']:>10.0f}{row['p50_ms']:>9.2f}{row['p99_ms']:>9.2f}"
            f"{row['max_ms']:>9.1f}{row['errors']:>8d}{row['server_cpu_us_per_request']:>12.2f}"
        )
    if len(rounds) > 1:
        for i, r in enumerate(rounds, 1):
            print(
                f"round {i}: bare {r['bare_rps']}, health {r['health_rps']} req/s, ratio "
                f"{r['ratio']}; server CPU/request bare {r['bare_cpu_us']} us, health "
                f"{r['health_cpu_us']} us, ratio {r['cpu_ratio']}"
            )
    for key, t in targets.items():
        print(
            f"{key:<24}{t['value']!s:>10}  target {t['target']:<10}"
            f"{'' if t['met'] is None else 'met' if t['met'] else 'MISSED'}"
        )
    out = {
        "benchmark": "api",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "load_avg_1m_before": load_before,
            "load_avg_1m_after": os.getloadavg()[0],
            "python": platform.python_version(),
        },
        "connections": args.connections,
        "duration_s": args.duration,
        "client": args.client,
        "only": args.only,
        "setup": setup,
        "runs": {k: {"name": names[k], **v} for k, v in rows.items()},
        "rounds": rounds,
        "targets": targets,
    }
    # A partial run does not overwrite the full run's results.
    results = RESULTS if args.only == "all" else RESULTS.with_name(f"api-{args.only}.json")
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {results.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
