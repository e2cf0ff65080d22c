"""CPU priorities of the platform's processes (in subprocesses: a lowered priority is for good)."""

from __future__ import annotations

import subprocess
import sys


def test_lower_priority_only_lowers_and_is_idempotent() -> None:
    code = (
        "import os\n"
        "from cryptoorchestrator.cluster.runtime import lower_priority\n"
        "base = os.nice(0)\n"
        "print(lower_priority(base + 5) - base, lower_priority(base + 3) - base,"
        " lower_priority(base + 7) - base)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.split() == ["5", "5", "7"]


def test_lowering_from_a_thread_lowers_the_whole_process() -> None:
    # An actor's constructor runs on one of Ray's threads; the bots loop and Ray's own
    # threads must follow.
    code = (
        "import os, threading, psutil\n"
        "from cryptoorchestrator.cluster.runtime import lower_priority\n"
        "base = psutil.Process().nice()\n"
        "t = threading.Thread(target=lower_priority, args=(base + 4,)); t.start(); t.join()\n"
        "later = []\n"
        "t2 = threading.Thread(target=lambda: later.append(os.getpriority(os.PRIO_PROCESS, 0)))\n"
        "t2.start(); t2.join()\n"
        "print(psutil.Process().nice() - base, later[0] - base)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.split() == ["4", "4"]


def test_clusters_we_start_run_workers_at_normal_priority() -> None:
    # Ray's default would be 15 for every worker, the risk actor included.
    code = (
        "import os\n"
        "os.environ.pop('RAY_worker_niceness', None)\n"
        "from cryptoorchestrator.cluster.runtime import configure_ray_environment\n"
        "configure_ray_environment()\n"
        "print(os.environ['RAY_worker_niceness'])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "0"
