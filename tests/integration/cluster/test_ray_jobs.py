"""API-submitted runs as Ray jobs: listed under the run id, with metadata, stoppable.

The session's in-process Ray has no dashboard, and a process holds one Ray connection, so the
job path runs in a subprocess against a private head (its own temp dir and ports, so it never
joins the session's cluster or anyone else's) started once for the module.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cryptoorchestrator.cluster import jobs
from cryptoorchestrator.platform.settings import Settings

pytestmark = [pytest.mark.ray, pytest.mark.slow]

RAY = str(Path(sys.executable).with_name("ray"))
SECRET = "job-secret-key-never-in-a-job-0123456789"
#: The head's ports that default to fixed numbers (another Ray on the machine may hold them).
PORTS = (
    "port",
    "dashboard-port",
    "dashboard-agent-listen-port",
    "dashboard-agent-grpc-port",
    "ray-client-server-port",
    "metrics-export-port",
    "runtime-env-agent-port",
    "node-manager-port",
    "object-manager-port",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes], deadline: float) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"ray start exited with {proc.returncode}")
        with socket.socket() as s, contextlib.suppress(OSError):
            s.settimeout(1.0)
            s.connect(("127.0.0.1", port))
            return
        time.sleep(0.5)
    raise AssertionError(f"the private head never listened on port {port}")


def _kill_leftovers(temp: Path) -> None:
    """Kill, by pid, processes of this head still holding files in its temp dir."""
    import psutil

    mine = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if proc.pid == os.getpid():
            continue
        try:
            cmd = " ".join(proc.info["cmdline"] or [])
            if str(temp) in cmd or any(f.path.startswith(str(temp)) for f in proc.open_files()):
                mine.append(proc)
        except psutil.Error:
            continue
    for proc in mine:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(mine, timeout=30)


@pytest.fixture(scope="module")
def private_head() -> Iterator[dict[str, Any]]:
    """A one-CPU Ray head with the dashboard (the job server), on free ports."""
    temp = Path(tempfile.mkdtemp(prefix="rj", dir="/tmp"))  # Ray's socket paths stay short
    ports = {name: _free_port() for name in PORTS}
    env = {
        **os.environ,
        "RAY_TMPDIR": str(temp),
        "RAY_AUTH_MODE": "disabled",
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    env.pop("RAY_ADDRESS", None)
    args = [
        RAY, "start", "--head", "--block", f"--temp-dir={temp}", "--num-cpus=1",
        "--include-dashboard=true", "--dashboard-host=127.0.0.1",
        "--node-ip-address=127.0.0.1", "--disable-usage-stats",
        *(f"--{name}={port}" for name, port in ports.items()),
    ]  # fmt: skip
    with (temp / "ray_start.log").open("wb") as log_file:
        # --block: this process owns the head; ending it ends exactly this head (`ray stop`
        # would end every Ray on the machine, the session's own included).
        proc = subprocess.Popen(  # noqa: S603
            args, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 240
        _wait_port(ports["dashboard-port"], proc, deadline)
        _wait_port(ports["dashboard-agent-listen-port"], proc, deadline)
        yield {
            "address": f"127.0.0.1:{ports['port']}",
            "dashboard": f"http://127.0.0.1:{ports['dashboard-port']}",
            "env": env,
        }
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
        _kill_leftovers(temp)
        import shutil

        shutil.rmtree(temp, ignore_errors=True)


DRIVER = textwrap.dedent(
    """
    import json, sys, time

    import ray
    from ray.job_submission import JobSubmissionClient

    from cryptoorchestrator.cluster import jobs
    from cryptoorchestrator.cluster.runtime import ensure_ray
    from cryptoorchestrator.platform.settings import Settings
    from cryptoorchestrator.platform.storage import db
    from cryptoorchestrator.platform.storage.models import BacktestRun, OptimizationRun, User

    args = json.loads(sys.argv[1])
    settings = Settings(
        database_url=args["database_url"], var_dir=args["var_dir"], data_dir=args["data_dir"],
        log_dir=args["log_dir"], secret_key=args["secret"], ray_address=args["address"],
    )
    db.upgrade(settings)
    with db.session_scope(settings) as session:
        session.add(User(id=7, email="trader@example.com", password_hash="x"))
    ensure_ray(settings)
    client = JobSubmissionClient(args["dashboard"])
    out = {"kind": jobs.executor_kind()}

    def wait(predicate, what, timeout=240.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.5)
        raise SystemExit(f"timed out waiting for {what}")

    def row(model, run_id):
        with db.session_scope(settings) as session:
            run = session.get(model, run_id)
            metrics = getattr(run, "metrics", None)  # studies keep trials, not metrics
            return {"status": run.status, "error": run.error, "metrics": metrics}

    def finished(model, run_id):
        r = row(model, run_id)
        return r if r["status"] in ("succeeded", "failed", "cancelled") else None

    def job(run_id):
        info = client.get_job_info(run_id)
        return info if info.status.is_terminal() else None

    spec = {"exchange": "binance", "symbol": "BTC/USDT", "timeframe": "1h",
            "start": "2021-01-01", "end": "2021-04-01", "strategy": "sma_cross"}
    bt = jobs.submit_backtest(settings, 7, {**spec, "params": {"fast": 10, "slow": 50}})
    study = jobs.submit_optimization(
        settings, 7, {**spec, "space": {"fast": [5, 10], "slow": [40]}, "method": "grid"}
    )
    out["backtest_row"] = wait(lambda: finished(BacktestRun, bt), "the backtest row")
    out["study_row"] = wait(lambda: finished(OptimizationRun, study), "the study row")
    jobs_seen = {}
    for run_id in (bt, study):
        info = wait(lambda: job(run_id), "the job to end")
        jobs_seen[run_id] = {
            "status": str(info.status.value), "metadata": info.metadata,
            "entrypoint": info.entrypoint, "runtime_env": info.runtime_env,
        }
    listed = {j.submission_id: str(j.status.value) for j in client.list_jobs()}
    # The same study again is the same run, resumed in a new job named after it.
    out["resubmitted_id"] = jobs.submit_optimization(
        settings, 7, {**spec, "space": {"fast": [5, 10], "slow": [40]}, "method": "grid"}
    )
    again = wait(lambda: job(f"{study}-r2"), "the resumed study's job")
    out["study_again"] = {"status": str(again.status.value), "metadata": again.metadata}
    if again.status != "SUCCEEDED":
        out["study_again"]["logs"] = client.get_job_logs(f"{study}-r2")[-3000:]
    out["study_row_again"] = row(OptimizationRun, study)

    # Cancelling while the only CPU is held here: the backtest's job waits for it (it never
    # runs); the study's driver needs no CPU and runs, its batches wait.
    @ray.remote(num_cpus=1)
    class Hold:
        def ready(self):
            return True

    hold = Hold.remote()
    ray.get(hold.ready.remote())
    second = jobs.submit_backtest(settings, 7, {**spec, "params": {"fast": 12, "slow": 60}})
    stuck = jobs.submit_optimization(
        settings, 7, {**spec, "space": {"fast": [5, 10, 15], "slow": [30]}, "method": "grid"}
    )
    wait(lambda: client.get_job_status(stuck) == "RUNNING", "the study's driver to start")
    out["pending_status"] = str(client.get_job_status(second).value)
    jobs.cancel_run(settings, "backtest", second)
    jobs.cancel_run(settings, "optimization", stuck)
    out["cancelled_rows"] = [row(BacktestRun, second), row(OptimizationRun, stuck)]
    ray.kill(hold)
    out["cancelled_jobs"] = [
        str(wait(lambda: job(run_id), "the stopped job").status.value) for run_id in (second, stuck)
    ]
    out.update(backtest=bt, study=study, jobs=jobs_seen, listed=listed)
    print("RESULT " + json.dumps(out))
    """
)


def test_runs_are_ray_jobs_named_by_run_id(private_head: dict[str, Any], tmp_path: Path) -> None:
    args = {
        "database_url": f"sqlite:///{tmp_path / 'jobs.db'}",
        "var_dir": str(tmp_path / "var"),
        "data_dir": str(tmp_path / "var" / "data"),
        "log_dir": str(tmp_path / "logs"),
        "secret": SECRET,
        "address": private_head["address"],
        "dashboard": private_head["dashboard"],
    }
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    done = subprocess.run(  # noqa: S603
        [sys.executable, str(script), json.dumps(args)],
        env=private_head["env"],
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    lines = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert lines, done.stdout[-3000:]
    out = json.loads(lines[-1].removeprefix("RESULT "))
    assert out["kind"] == "job"
    bt, study = out["backtest"], out["study"]
    assert out["backtest_row"]["status"] == "succeeded", out["backtest_row"]["error"]
    assert out["backtest_row"]["metrics"]["trade_count"] > 0
    assert out["study_row"]["status"] == "succeeded", out["study_row"]["error"]
    # Listed by Ray under the run id, finished, with readable metadata.
    assert out["listed"][bt] == "SUCCEEDED"
    assert out["listed"][study] == "SUCCEEDED"
    backtest_job, study_job = out["jobs"][bt], out["jobs"][study]
    assert backtest_job["metadata"]["run_kind"] == "backtest"
    assert backtest_job["metadata"]["strategy"] == "sma_cross"
    assert backtest_job["metadata"]["user_id"] == "7"
    assert study_job["metadata"]["run_kind"] == "optimization"
    assert f"cryptoorchestrator.cluster.job_entry backtest {bt}" in backtest_job["entrypoint"]
    # The job's env and entrypoint are public (job lists): the secret key is in neither.
    assert SECRET not in json.dumps(out["jobs"])
    env = backtest_job["runtime_env"]["env_vars"]
    assert env["CRYPTOORCH_DATABASE_URL"] == args["database_url"]
    assert env["RAY_AUTH_MODE"] == "disabled"
    assert out["resubmitted_id"] == study
    assert out["study_again"]["status"] == "SUCCEEDED", out["study_again"].get("logs")
    assert out["study_again"]["metadata"]["run_id"] == study
    assert out["study_row_again"]["status"] == "succeeded"
    # Cancelled waiting for a CPU, or running: the rows say cancelled, the jobs are stopped.
    assert out["pending_status"] == "PENDING"
    assert [r["status"] for r in out["cancelled_rows"]] == ["cancelled", "cancelled"]
    assert out["cancelled_jobs"] == ["STOPPED", "STOPPED"]


def test_without_a_job_server_runs_go_to_tasks(ray_session: Any) -> None:
    # The session's Ray has no dashboard, as ray:// clients have none: tasks do the work.
    assert jobs.job_client() is None
    assert jobs.executor_kind() == "task"


def test_job_environment_carries_no_secret(tmp_path: Path) -> None:
    settings = Settings(
        database_url="postgresql+psycopg://trader:db-password-123@db.internal:5432/co",
        var_dir=tmp_path / "var",
        data_dir=tmp_path / "data",
        log_dir=tmp_path / "logs",
        secret_key=SECRET,
        strategy_paths=[str(tmp_path)],
    )
    env = jobs.job_runtime_env(settings)["env_vars"]
    text = json.dumps(env)
    assert SECRET not in text
    assert "db-password-123" not in text
    assert env["CRYPTOORCH_DATABASE_URL"] == "postgresql+psycopg://trader@db.internal:5432/co"
    assert json.loads(env["CRYPTOORCH_STRATEGY_PATHS"]) == [str(tmp_path)]


def test_a_resumed_study_gets_a_numbered_job() -> None:
    # Ray cannot safely reuse the submission id of a job that just ended: number the reruns.
    assert jobs.job_ids("abc", None) == []
    assert jobs.job_ids("abc", "abc") == ["abc"]
    assert jobs.job_ids("abc", "abc-r3") == ["abc", "abc-r2", "abc-r3"]
