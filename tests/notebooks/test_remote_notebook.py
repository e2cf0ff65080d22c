"""``docs/notebooks/remote.ipynb`` against a real platform: ``cryptoorch serve --demo``.

The platform runs as a reader would start it (the exchange simulator replaying the bundled
candles, a paper bot, SQLite, a private local Ray), on free ports in a scratch folder; the
notebook gets its address and the demo's password through the variables it reads (``DEMO_URL``,
``DEMO_PASSWORD``), runs in a real kernel, and must end with fills in its DataFrame, its own bot
stopped and removed, and no file beside it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

REPO_ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO_ROOT / "docs" / "notebooks" / "remote.ipynb"
DEMO_EMAIL = "demo@cryptoorchestrator.local"
#: Generous bound on the platform's start on a busy machine: nothing here is timed.
START_S = 300.0

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@dataclass
class Demo:
    url: str
    password: str
    log: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str, token: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url)  # noqa: S310 (a loopback URL this test made)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as r:  # noqa: S310
            return int(r.status), r.read()
    except urllib.error.HTTPError as e:
        return int(e.code), e.read()


@pytest.fixture(scope="module")
def demo() -> Iterator[Demo]:
    """``cryptoorch serve --demo`` on a free port, all its state in a scratch folder."""
    base = Path(tempfile.mkdtemp(prefix="co-nb-remote-"))
    ray_tmp = Path(tempfile.mkdtemp(prefix="rn", dir="/tmp"))  # short: Ray's socket paths
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CRYPTOORCH_", "RAY_"))}
    env.update(
        CRYPTOORCH_VAR_DIR=str(base / "var"),
        CRYPTOORCH_DATA_DIR=str(base / "var" / "data"),
        CRYPTOORCH_LOG_DIR=str(base / "logs"),
        CRYPTOORCH_DATABASE_URL=f"sqlite:///{base / 'var' / 'platform.db'}",
        CRYPTOORCH_RAY_DASHBOARD="false",  # Ray's dashboard would take the fixed port 8265
        RAY_TMPDIR=str(ray_tmp),  # a cluster of its own, never the test session's
        RAY_AUTH_MODE="disabled",
        RAY_USAGE_STATS_ENABLED="0",
    )
    port = _free_port()
    log = base / "serve.log"
    cli = Path(sys.executable).with_name("cryptoorch")
    with log.open("wb") as out:
        proc = subprocess.Popen(  # noqa: S603
            [str(cli), "serve", "--demo", "--host", "127.0.0.1", "--port", str(port)],
            cwd=base,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_S
        while True:
            assert proc.poll() is None, f"serve exited:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"never healthy:\n{log.read_text()[-3000:]}"
            try:
                if _get(f"{url}/api/health")[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(1.0)
        found = re.search(rf"as {re.escape(DEMO_EMAIL)} / (\S+)", log.read_text())
        assert found, log.read_text()[-3000:]
        yield Demo(url, found.group(1), log)
    finally:
        _stop(proc)
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _stop(proc: subprocess.Popen[bytes], grace_s: float = 60.0) -> None:
    """SIGTERM the server's process group, reap it, SIGKILL what lingers."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:  # Ray's processes the server left behind
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.5)
    else:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.poll()


def _outputs_text(cell: nbformat.NotebookNode) -> str:
    parts = []
    for out in cell.outputs:
        parts.append(out.get("text", ""))
        parts.append(str(out.get("data", {}).get("text/plain", "")))
    return "".join(parts)


def test_the_remote_notebook_trades_on_the_demo_and_writes_no_files(
    demo: Demo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = nbformat.read(NOTEBOOK, as_version=4)
    setup = source.cells[1].source
    # the notebook names its variables with defaults a reader can run against the demo
    assert 'os.environ.get("DEMO_URL", "http://127.0.0.1:8000")' in setup
    assert 'os.environ.get("DEMO_PASSWORD", ' in setup

    folder = tmp_path / "notebooks"
    folder.mkdir()
    shutil.copy(NOTEBOOK, folder / NOTEBOOK.name)
    for key in list(os.environ):  # the kernel is a plain client: no platform settings
        if key.startswith(("CRYPTOORCH_", "RAY_")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("DEMO_URL", demo.url)
    monkeypatch.setenv("DEMO_PASSWORD", demo.password)
    monkeypatch.delenv("DEMO_EMAIL", raising=False)

    nb = nbformat.read(folder / NOTEBOOK.name, as_version=4)
    # after the notebook: what the DataFrame held, as JSON the test can read
    nb.cells.append(
        nbformat.v4.new_code_cell(
            "import json\n"
            "print('RESULT', json.dumps({'bot': bot['id'], 'rows': len(trades), "
            "'columns': list(trades.columns), 'index': str(trades.index.dtype), "
            "'price': str(trades['price'].dtype), 'sides': sorted(set(trades['side'])), "
            "'bots': [int(b) for b in trades['botId']]}))"
        )
    )
    NotebookClient(
        nb,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(folder)}},
    ).execute()

    for cell in nb.cells:
        if cell.cell_type == "code":
            errors = [o for o in cell.outputs if o.output_type == "error"]
            assert not errors, errors
            assert "Traceback" not in _outputs_text(cell)
    assert "'demo@cryptoorchestrator.local'" in _outputs_text(nb.cells[1])
    listing = next(c for c in nb.cells if "api.bots(as_frame=True)" in c.source)
    assert "text/html" in {m for o in listing.outputs for m in o.get("data", {})}
    assert "demo-sma-cross" in _outputs_text(listing)

    line = next(ln for ln in _outputs_text(nb.cells[-1]).splitlines() if ln.startswith("RESULT"))
    result = json.loads(line.split(" ", 1)[1])
    assert result["rows"] >= 2
    assert result["bots"] == [result["bot"]] * result["rows"]  # its own bot's fills only
    assert {"side", "price", "amount", "fee", "realizedPnl"} <= set(result["columns"])
    assert result["index"].endswith(", UTC]")
    assert result["price"] == "float64"
    assert set(result["sides"]) <= {"buy", "sell"}
    table = next(c for c in nb.cells if c.source.startswith("def trades_frame"))
    assert "text/html" in {m for o in table.outputs for m in o.get("data", {})}

    # the platform agrees: the notebook's bot traded, was stopped and removed
    token = _login(demo)
    status, body = _get(f"{demo.url}/api/trades/?botId={result['bot']}&limit=500", token)
    assert status == 200
    assert len(json.loads(body)["items"]) >= result["rows"]
    status, body = _get(f"{demo.url}/api/bots", token)
    assert status == 200
    assert result["bot"] not in [b["id"] for b in json.loads(body)["items"]]

    assert sorted(p.name for p in folder.iterdir()) == [NOTEBOOK.name]


def _login(demo: Demo) -> str:
    request = urllib.request.Request(  # noqa: S310 (loopback)
        f"{demo.url}/api/auth/login",
        data=json.dumps({"email": DEMO_EMAIL, "password": demo.password}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as r:  # noqa: S310
        return str(json.loads(r.read())["accessToken"])
