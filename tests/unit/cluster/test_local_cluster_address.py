"""Joining "the local cluster" never waits on a dead one Ray still has on record."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from cryptoorchestrator.cluster.runtime import local_cluster_address


def test_none_recorded_stale_and_live(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    assert local_cluster_address() is None  # nothing on record
    record = tmp_path / "ray" / "ray_current_cluster"
    record.parent.mkdir()
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead_port = closed.getsockname()[1]
    record.write_text(f"127.0.0.1:{dead_port}\n")
    assert local_cluster_address() is None  # the cluster it names is gone
    with socket.socket() as live:
        live.bind(("127.0.0.1", 0))
        live.listen()
        address = f"127.0.0.1:{live.getsockname()[1]}"
        record.write_text(address)
        assert local_cluster_address() == address
