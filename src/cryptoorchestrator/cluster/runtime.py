"""Joining or starting Ray the same way from every entry point (SDK, CLI, API, tests).

``RAY_AUTH_MODE`` is always set explicitly: Ray 2.60's ``ray.init()`` may switch token
authentication on by itself, after which ``ray status`` and other drivers fail to connect.
"""

from __future__ import annotations

import atexit
import os
import socket
import sys
from pathlib import Path
from typing import Any

from cryptoorchestrator.platform.errors import ConfigError
from cryptoorchestrator.platform.settings import Settings, get_settings

#: Namespace of every named actor of the platform (bots, the risk actor, the supervisor).
NAMESPACE = "cryptoorchestrator"


#: CPU priorities (nice values) of the platform's Ray workers.  Ray starts every worker at nice
#: 15 unless ``RAY_worker_niceness`` says otherwise, which let anything else on the node (the
#: API, a test run, a notebook) starve the risk actor and the bots: at equal load a nice-15
#: process gets about a thirtieth of a nice-0 one's share.  Clusters started here (and, as the
#: README says, ``ray start``) run workers at 0; each kind of work then takes its own place:
#: the risk actor and the event bus stay at 0 (every order waits for the risk actor), bots step
#: down to 5 (an approval never waits behind bots' bookkeeping), sweeps and batch backtests to
#: 15, Ray's own default (a study on the head node never slows live trading).
BOT_NICENESS = 5
BATCH_NICENESS = 15


def configure_ray_environment() -> None:
    """Set the environment Ray reads at import and init time (idempotent, never overrides)."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_worker_niceness", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Ray's log deduplication hides which bot printed what; our logs go to files anyway.
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    if "ipykernel" in sys.modules:
        # A Jupyter kernel is stopped with SIGTERM when Ray's shutdown outlasts the kernel
        # manager's grace period; Ray's failure handler then dumps C++ stack traces into the
        # notebook's log.  Only the private cluster a notebook starts goes without it.
        os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")


def lower_priority(niceness: int) -> int:
    """Lower this process's CPU priority to ``niceness`` if it is higher; return the result.

    Only ever lowers (raising needs privileges), so a worker that ran batch work keeps its low
    priority, and a process already lower is left alone.  On Linux a nice value belongs to a
    thread, and an actor's constructor runs on one of Ray's threads: every thread of the
    process is lowered (threads started later inherit it).  Where priorities cannot be read or
    changed, nothing changes.
    """
    try:
        current = os.getpriority(os.PRIO_PROCESS, 0)
    except (AttributeError, OSError):  # no setpriority (Windows)
        return 0
    if niceness <= current:
        return current
    tasks = Path("/proc/self/task")
    threads = [int(t) for t in os.listdir(tasks)] if tasks.is_dir() else [0]
    for tid in threads:
        try:
            if os.getpriority(os.PRIO_PROCESS, tid) < niceness:
                os.setpriority(os.PRIO_PROCESS, tid, niceness)
        except OSError:  # the thread ended meanwhile, or a sandbox refuses: leave it
            continue
    return os.getpriority(os.PRIO_PROCESS, 0)


def ensure_ray(
    settings: Settings | None = None,
    *,
    num_cpus: int | None = None,
    object_store_memory: int | None = None,
    start_local: bool = True,
    head: bool = False,
) -> Any:
    """Connect to Ray once per process and return the ``ray`` module.

    With ``settings.ray_address`` set, join that cluster (``auto`` or ``ray://host:10001``).
    Otherwise join the cluster this machine has on record (``ray start --head``, or a running
    ``cryptoorch serve``), and failing that start a private local Ray that lives as long as this
    process (the laptop and notebook default), unless ``start_local`` is False.  A driver already
    connected (tests, notebooks, ``ray job submit``) is reused as it is.  Other Ray clusters
    running on the machine (another user's, a test run's) are never joined by guesswork.

    ``head=True`` (the API of ``cryptoorch serve``) records a cluster it starts where ``ray
    start --head`` would, so that the CLI, ``ray list actors`` and ``ray job submit`` find it,
    and removes the record when the process exits.

    Raises
    ------
    ConfigError
        With ``start_local=False`` and no cluster to join: bots must outlive the command that
        starts them, so they need a long-running cluster.
    """
    configure_ray_environment()
    import ray

    if ray.is_initialized():
        return ray
    settings = settings or get_settings()
    address = settings.ray_address or os.environ.get("RAY_ADDRESS") or None
    kwargs: dict[str, Any] = {
        "namespace": settings.ray_namespace or NAMESPACE,
        "log_to_driver": False,
        "configure_logging": False,
    }
    if address is not None:
        ray.init(address=address, **kwargs)
        return ray
    try:
        recorded = local_cluster_address()
        if recorded is None:
            raise ConnectionError("no Ray cluster on record answers")
        ray.init(address=recorded, **kwargs)
        return ray
    except (ConnectionError, RuntimeError):
        if not start_local:
            raise ConfigError(
                "no Ray cluster is running: start the platform with `cryptoorch serve` (or "
                "`ray start --head`), or set CRYPTOORCH_RAY_ADDRESS"
            ) from None
    local: dict[str, Any] = {"num_cpus": num_cpus, **dashboard_options(settings)}
    if object_store_memory is not None:
        local["object_store_memory"] = object_store_memory
    ray.init(**kwargs, **local)
    if head:
        _record_cluster(ray.get_runtime_context().gcs_address)
    return ray


def _record_cluster(address: str) -> None:
    """Record ``address`` as this machine's cluster until this process exits."""
    from ray._common.utils import get_ray_address_file

    path = Path(get_ray_address_file(None))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(address)

    def forget() -> None:
        try:
            if path.read_text().strip() == address:  # not if a newer cluster took the record
                path.unlink()
        except OSError:
            pass

    atexit.register(forget)


def local_cluster_address(timeout_s: float = 1.0) -> str | None:
    """Return the GCS address of the Ray cluster running on this machine, None if none answers.

    The record is ``<RAY_TMPDIR or /tmp>/ray/ray_current_cluster``, written by ``ray start
    --head`` and by ``cryptoorch serve``.  It may outlive its cluster (a killed head), and
    ``ray.init(address="auto")`` would then spend a minute trying to reach a dead GCS, or join
    whatever other cluster ``ps`` shows; a TCP connect to the recorded address answers at once.
    """
    from ray._common.utils import get_ray_address_file

    path = Path(get_ray_address_file(None))
    try:
        address = path.read_text().strip()
    except OSError:
        return None
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        return None
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            return address
    except OSError:
        return None


def dashboard_available() -> bool:
    """Return whether Ray's dashboard can run here (``ray[default]``'s packages present)."""
    try:
        import aiohttp  # noqa: F401
        import ray.dashboard  # noqa: F401
    except ImportError:
        return False
    return True


def dashboard_options(settings: Settings) -> dict[str, Any]:
    """Return the ``ray.init`` options of a local cluster's dashboard and metrics endpoint.

    The dashboard (actors, jobs, logs, metrics) listens on loopback only: it has no
    authentication of its own, so reach it from elsewhere through an SSH tunnel or a proxy that
    authenticates.
    """
    options: dict[str, Any] = {"include_dashboard": False}
    if settings.ray_dashboard and dashboard_available():
        options.update(
            include_dashboard=True,
            dashboard_host="127.0.0.1",
            dashboard_port=settings.ray_dashboard_port,
        )
    if settings.ray_metrics_port is not None:
        options["_metrics_export_port"] = settings.ray_metrics_port
    return options


def metrics_endpoint() -> str | None:
    """Return the URL of this node's Prometheus endpoint, or None when not connected."""
    import sys

    if "ray" not in sys.modules:
        return None
    import ray

    if not ray.is_initialized():
        return None
    node_id = ray.get_runtime_context().get_node_id()
    for node in ray.nodes():
        if node.get("NodeID") == node_id and node.get("MetricsExportPort"):
            return f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
    return None


def dashboard_url() -> str | None:
    """Return the dashboard's URL when this driver's cluster runs one, else None."""
    import sys

    if "ray" not in sys.modules:
        return None
    import ray

    if not ray.is_initialized():
        return None
    try:
        from ray._private.worker import global_worker

        url = global_worker.node.address_info.get("webui_url")  # type: ignore[union-attr]
    except AttributeError:  # a ray:// client has no local node
        return None
    if not url:
        return None
    return str(url) if str(url).startswith("http") else f"http://{url}"


def ray_status() -> dict[str, Any]:
    """Describe the Ray connection for health checks (never starts Ray)."""
    import sys

    if "ray" not in sys.modules:
        return {"status": "not_connected"}
    import ray

    if not ray.is_initialized():
        return {"status": "not_connected"}
    try:
        resources = ray.cluster_resources()
        nodes = [n for n in ray.nodes() if n.get("Alive")]
    except Exception as exc:  # the GCS went away under us
        return {"status": "unhealthy", "error": f"{type(exc).__name__}: {exc}"}
    return {
        "status": "healthy",
        "nodes": len(nodes),
        "cpus": resources.get("CPU", 0.0),
        "namespace": ray.get_runtime_context().namespace,
        "dashboard": dashboard_url(),
        "metrics": metrics_endpoint(),
    }
