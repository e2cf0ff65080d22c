"""A real two-node Ray cluster on this machine: trials of one study run on both nodes."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
RAY = str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop_cluster(port: int, temp: Path) -> None:
    """Kill this test's Ray processes only, by pid.

    ``ray stop --force`` would kill every Ray on the machine, including the session's own local
    Ray and other users' clusters, so we match our cluster's GCS address or temp dir instead.
    """
    import psutil

    marks = (f":{port}", str(temp))
    victims = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if proc.pid == os.getpid():
            continue
        if any(m in cmd for m in marks) or _holds_files_in(proc, temp):
            victims.append(proc)
    for proc in victims:
        try:
            proc.kill()
        except psutil.Error:
            continue
    psutil.wait_procs(victims, timeout=30)


def _holds_files_in(proc: object, temp: Path) -> bool:
    # Ray's agents rename themselves ("ray::DashboardAgent"): find them by their open log files.
    import psutil

    try:
        return any(f.path.startswith(str(temp)) for f in proc.open_files())  # type: ignore[attr-defined]
    except psutil.Error:
        return False


DRIVER = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, {helpers!r})
    import ray
    from ray import cloudpickle
    import _strategy
    ray.init(address={address!r}, log_to_driver=False)
    cloudpickle.register_pickle_by_value(_strategy)
    from cryptoorchestrator.cluster.optimize import optimize
    res = optimize(_strategy.SmaCross(), _strategy.random_bars(20000, seed=2),
                   space={{"fast": range(5, 55, 5), "slow": range(20, 210, 10)}},
                   constraint="fast < slow", store=False, progress=False, batch_size=6)
    nodes = {{n["NodeID"]: n["Resources"] for n in ray.nodes() if n["Alive"]}}
    print(json.dumps({{"trial_nodes": sorted({{r.node for r in res.trials}}),
                       "nodes": nodes, "n": len(res.trials), "best": res.best}}))
    """
)


@pytest.mark.slow
def test_trials_run_on_both_nodes(tmp_path: Path) -> None:
    port = _free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    temp = Path("/tmp") / f"rmn{port}"  # Ray's socket paths must stay short
    address = f"127.0.0.1:{port}"
    try:
        subprocess.run(
            [
                RAY,
                "start",
                "--head",
                f"--port={port}",
                "--num-cpus=1",
                "--include-dashboard=false",
                '--resources={"head_node": 1}',
                f"--temp-dir={temp}",
                "--disable-usage-stats",
            ],
            env=env,
            check=True,
            capture_output=True,
            timeout=120,
        )
        subprocess.run(
            [
                RAY,
                "start",
                f"--address={address}",
                "--num-cpus=1",
                '--resources={"worker_node": 1}',
                "--disable-usage-stats",
            ],
            env=env,
            check=True,
            capture_output=True,
            timeout=120,
        )
        script = tmp_path / "driver.py"
        script.write_text(
            DRIVER.format(helpers=str(HERE.parent / "unit" / "optimize"), address=address)
        )
        out = subprocess.run(
            [sys.executable, str(script)],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            cwd=tmp_path,
        )
        assert out.returncode == 0, out.stderr[-3000:]
        report = json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        _stop_cluster(port, temp)
        shutil.rmtree(temp, ignore_errors=True)
    assert report["n"] == 174
    by_kind = {
        ("head" if "head_node" in res else "worker"): nid for nid, res in report["nodes"].items()
    }
    assert set(by_kind) == {"head", "worker"}
    assert set(report["trial_nodes"]) == set(by_kind.values())  # both nodes ran trials
