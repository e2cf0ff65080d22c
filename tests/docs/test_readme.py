"""README.md works as written: its shell and Python blocks run, in order, as a newcomer runs them.

The README is run in a scratch copy of the checkout's layout (``.venv``, ``scripts``, ``src``
and the project files linked; ``../shared`` linked beside it), so every relative path of the
text resolves and nothing is written into the checkout.  Markers the reader does not see, an
HTML comment on the line before a block, tell the runner what a block needs:

``<!-- doc-test: platform -->``
    The platform must be up: the runner starts it the README's way (``scripts/start.sh``, the
    first of the two commands) once, before the first such block, on the README's ports.
``<!-- doc-test: not-run: REASON -->``
    Not run, for the reason given (the two commands themselves; the suite, CI and benchmark
    commands of *Development*).  The list of such blocks is
    fixed below, so a new one cannot slip in unnoticed.

Shell blocks run with ``bash -euo pipefail``; a command that ends in ``&`` keeps running (the
simulator) until the end of the module.  Python blocks run in a fresh interpreter; one name is
a documented placeholder: ``demo_password`` (``$DEMO_PASSWORD`` in shell blocks), the password
``serve --demo`` prints.  Password prompts read from standard input, which holds a strong
password.  The troubleshooting guide's calls to the platform run against the same platform.
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

import pytest
from tests.conftest import fixed_ports

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
SHARED = ROOT.parent / "shared"
GUIDE = SHARED / "seed" / "troubleshooting-guide.md"
LINKED = (
    ".venv",
    "scripts",
    "src",
    "web",
    "pyproject.toml",
    "constraints.txt",
    "README.md",
    "docs",
)
PASSWORD = "Corvid-Lantern-Quarry-42"
API = "http://127.0.0.1:8000"

_BLOCK = re.compile(
    r"(?:^<!--\s*doc-test:\s*(?P<marker>.*?)\s*-->\n)?"
    r"^```(?P<lang>[\w-]*)[ \t]*\n(?P<code>.*?)^```",
    re.DOTALL | re.MULTILINE,
)

#: Blocks not run, by their first line: the two commands (the runner starts the platform with
#: the first; the second is this suite) and the developer's commands (the suite, CI itself).
NOT_RUN = {
    "scripts/start.sh     # install into ./.venv and start the platform on its embedded defaults",
    "scripts/test.sh tests/unit -x -q          # any pytest arguments",
}


@dataclass(frozen=True)
class Block:
    """One fenced block of a Markdown file."""

    line: int
    lang: str
    code: str
    marker: str

    @property
    def runnable(self) -> bool:
        """Whether the block is a command or program (not a diagram or config excerpt)."""
        return self.lang in ("bash", "sh", "python")


def blocks(path: Path) -> list[Block]:
    """Return the fenced blocks of a Markdown file with their markers."""
    text = path.read_text()
    return [
        Block(text.count("\n", 0, m.start("code")), m["lang"], m["code"], m["marker"] or "")
        for m in _BLOCK.finditer(text)
    ]


def test_every_runnable_readme_block_is_run_or_named() -> None:
    runnable = [b for b in blocks(README) if b.runnable]
    assert len(runnable) >= 4
    skipped = {b.code.splitlines()[0] for b in runnable if b.marker.startswith("not-run")}
    assert skipped == NOT_RUN
    for b in runnable:
        assert b.marker in ("", "platform") or b.marker.startswith("not-run: "), b.line


#: The README's ports: the API, the exchange simulator, Ray's dashboard.
PORTS = (8000, 8765, 8265)


def _free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def _wait_until_free(ports: tuple[int, ...], timeout_s: float = 120.0) -> None:
    """Wait for ``ports`` to close (a previous module's platform may still be going away)."""
    deadline = time.monotonic() + timeout_s
    for port in ports:
        while not _free(port):
            assert time.monotonic() < deadline, f"port {port} is in use: the README needs it"
            time.sleep(0.5)


@dataclass
class Workdir:
    """The scratch checkout, its environment and what runs in the background."""

    path: Path
    env: dict[str, str]
    procs: list[subprocess.Popen[bytes]]
    demo_password: str = ""

    def spawn(self, args: list[str], log: Path) -> subprocess.Popen[bytes]:
        """Start ``args`` in its own process group, output to ``log``."""
        with log.open("wb") as out:
            proc = subprocess.Popen(  # noqa: S603
                args,
                cwd=self.path,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs.append(proc)
        return proc

    def run(self, args: list[str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """Run ``args`` to completion with a strong password on standard input."""
        return subprocess.run(  # noqa: S603
            args,
            cwd=self.path,
            env=self.env,
            input=f"{PASSWORD}\n" * 8,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            start_new_session=True,
        )


@pytest.fixture(scope="module")
def workdir() -> Iterator[Workdir]:
    """A scratch copy of the checkout's layout with a private Ray; stops all it started."""
    with fixed_ports():
        yield from _workdir()


def _workdir(fixed_ports: bool = True) -> Iterator[Workdir]:
    """Yield the scratch workdir; ``fixed_ports``: its commands bind the README's ports."""
    if fixed_ports:
        _wait_until_free(PORTS)
    # Install (if the project's files changed) from the checkout itself: pip writes the
    # interpreter path it ran under into the entry points, and the scratch path goes away.
    subprocess.run(  # noqa: S603
        ["scripts/bootstrap.sh", "dev"], cwd=ROOT, check=True, capture_output=True
    )
    base = Path(tempfile.mkdtemp(prefix="co-readme-"))
    work = base / "work"
    work.mkdir()
    for name in LINKED:
        (work / name).symlink_to(ROOT / name)
    (base / "shared").symlink_to(SHARED)
    ray_tmp = Path(tempfile.mkdtemp(prefix="rd", dir="/tmp"))  # short: Ray's socket paths
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CRYPTOORCH_", "RAY_"))}
    env.update(
        RAY_TMPDIR=str(ray_tmp),  # a cluster of its own, never the test session's
        RAY_AUTH_MODE="disabled",
        RAY_USAGE_STATS_ENABLED="0",
        MPLBACKEND="Agg",
        PATH=f"{ROOT / '.venv' / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    wd = Workdir(work, env, [])
    try:
        yield wd
    finally:
        _stop(wd.procs)
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(ray_tmp, ignore_errors=True)
        if fixed_ports:
            # Leave the ports as found: the next module's platform (or the security page's)
            # binds them too.
            _wait_until_free(PORTS)


def _stop(procs: list[subprocess.Popen[bytes]], grace_s: float = 60.0) -> None:
    """SIGTERM each background process group (newest first), reap it, SIGKILL what lingers."""
    for proc in reversed(procs):
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
    deadline = time.monotonic() + grace_s
    for proc in procs:
        try:
            proc.wait(timeout=max(deadline - time.monotonic(), 0.1))  # reaps: no zombie
        except subprocess.TimeoutExpired:
            pass
        while time.monotonic() < deadline:  # children the leader left behind
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


def _start_platform(wd: Workdir) -> None:
    """Start the platform as the README's first command does; wait until it answers healthy."""
    log = wd.path / "start.log"
    proc = wd.spawn(["scripts/start.sh"], log)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"start.sh exited:\n{log.read_text()[-3000:]}"
        try:
            with urllib.request.urlopen(f"{API}/api/health", timeout=5) as r:  # noqa: S310
                if r.status == 200:
                    break
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(1.0)
    else:
        raise AssertionError(f"the platform never answered healthy:\n{log.read_text()[-3000:]}")
    found = re.search(r"as demo@cryptoorchestrator\.local / (\S+)", log.read_text())
    assert found, log.read_text()[-3000:]
    wd.demo_password = found.group(1)
    wd.env["DEMO_PASSWORD"] = wd.demo_password  # the shell blocks' name for it
    # The README promises Ray's dashboard beside the API (it may come up a little later).
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen("http://127.0.0.1:8265/api/version", timeout=10) as r:  # noqa: S310
                assert r.status == 200
                break
        except (urllib.error.URLError, OSError):
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(1.0)


def _check(done: subprocess.CompletedProcess[str], block: Block) -> None:
    tail = f"README line {block.line}:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    assert done.returncode == 0, tail
    assert "Traceback" not in done.stderr, tail


def test_readme_runs_as_written(workdir: Workdir) -> None:
    started = bool(workdir.demo_password)
    ran = 0
    for block in blocks(README):
        if not block.runnable or block.marker.startswith("not-run"):
            continue
        if block.marker == "platform" and not started:
            _start_platform(workdir)
            started = True
        if block.lang == "python":
            code = f"demo_password = {workdir.demo_password!r}\n{block.code}"
            done = workdir.run([sys.executable, "-c", code])
        else:
            # A trailing `&` starts a server for the blocks below: give it its own group.
            lines = block.code.replace("\\\n", " ").splitlines()
            bg = [
                ln.split("#")[0].rstrip()[:-1]
                for ln in lines
                if ln.split("#")[0].rstrip().endswith("&")
            ]
            script = "\n".join(ln for ln in lines if not ln.split("#")[0].rstrip().endswith("&"))
            for i, cmd in enumerate(bg):
                wrapped = f"source .venv/bin/activate; exec {cmd}"
                workdir.spawn(["bash", "-c", wrapped], workdir.path / f"bg{block.line}-{i}.log")
            done = workdir.run(["bash", "-xeuo", "pipefail", "-c", script])
        _check(done, block)
        ran += 1
    assert started
    assert ran >= 3


#: What each of the troubleshooting guide's calls to the platform answers on the started demo,
#: by method and path: the guide's routes hold, and where the guide's own example cannot work
#: here (no token on a protected route, a symbol the demo's exchange does not list) the answer
#: says why in the API's error shape.
GUIDE_ANSWERS = {
    ("GET", "/api/integrations/exchanges/test"): 200,
    ("GET", "/api/health/detailed"): 200,
    ("GET", "/api/analytics/risk"): 200,
    ("GET", "/api/health/external-apis"): 200,
    ("GET", "/api/health"): 200,
    ("GET", "/api/trades/?botId=BOT_ID&limit=50"): 200,
    ("POST", "/api/auth/refresh"): 200,
    ("GET", "/api/auth/profile"): 200,
    ("HEAD", "/api/markets"): 200,
    ("POST", "/api/integrations/exchanges/sync"): 401,  # the guide sends no token
    ("GET", "/api/markets/BTC-USD/ohlcv?limit=100"): 422,  # the demo trades BTC/USDT
    ("GET", "/api/analytics/performance"): 401,  # the guide sends no token
    ("GET", "/api/health/database"): 200,
}

#: The guide's ``curl -w "@curl-format.txt"``: the timing template it assumes the reader has.
CURL_FORMAT = (
    "time_namelookup: %{time_namelookup}s\\ntime_connect: %{time_connect}s\\n"
    "time_starttransfer: %{time_starttransfer}s\\ntime_total: %{time_total}s\\n"
)


def _guide_calls() -> list[str]:
    """Return every curl command of the guide that calls the platform, continuations joined."""
    calls = []
    # The guide indents its blocks under numbered steps.
    for code in re.findall(r"^[ \t]*```bash\n(.*?)^[ \t]*```", GUIDE.read_text(), re.S | re.M):
        for line in code.replace("\\\n", " ").splitlines():
            command = line.split(" #")[0].strip()
            if command.startswith("curl") and "localhost:8000" in command:
                calls.append(command)
    return calls


def _route(command: str) -> tuple[str, str]:
    found = re.search(r"http://localhost:8000(\S*?)[\"']?(?:\s|$)", command)
    assert found, command
    method = "HEAD" if " -I " in f"{command} " else "GET"
    if "-X POST" in command:
        method = "POST"
    return method, found.group(1)


def _login(password: str) -> dict[str, str]:
    body = json.dumps({"email": "demo@cryptoorchestrator.local", "password": password}).encode()
    request = urllib.request.Request(  # noqa: S310
        f"{API}/api/auth/login", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as r:  # noqa: S310
        tokens: dict[str, str] = json.loads(r.read())
    return tokens


def test_troubleshooting_guide_holds(workdir: Workdir) -> None:
    """Run every call the guide makes to the platform, as written, and read what it promises."""
    calls = _guide_calls()
    assert {_route(c) for c in calls} == set(GUIDE_ANSWERS)
    if not workdir.demo_password:
        _start_platform(workdir)
    tokens = _login(workdir.demo_password)
    (workdir.path / "curl-format.txt").write_text(CURL_FORMAT)
    for command in calls:
        method, path = _route(command)
        command = command.replace("YOUR_REFRESH_TOKEN", tokens["refreshToken"])
        command = re.sub(r"\b(YOUR_TOKEN|TOKEN)\b", tokens["accessToken"], command)
        command = command.replace("BOT_ID", "1")  # the demo's paper bot
        headers = workdir.path / "headers.txt"
        # Run as written; -sS -D only make curl quiet and keep the status line and headers.
        script = f'curl() {{ command curl -sS -D {headers} "$@"; }}\n{command}'
        done = workdir.run(["bash", "-euo", "pipefail", "-c", script], timeout=120)
        assert done.returncode == 0, f"{command}\n{done.stderr}"
        head = headers.read_text()
        status = int(head.split()[1])
        assert status == GUIDE_ANSWERS[method, path], f"{command}\n{head}\n{done.stdout[-2000:]}"
        if status >= 400 and "-o /dev/null" not in command:
            error = json.loads(done.stdout)
            assert set(error) == {"code", "message", "details"}, done.stdout  # the error shape
            assert error["message"], done.stdout  # says why
            if status == 422:
                assert "BTC/USDT" in done.stdout, done.stdout  # lists the symbols there are
        if path == "/api/health/detailed":
            assert "circuit_breaker" in json.loads(done.stdout)  # "look for circuit_breaker"
        if method == "HEAD":
            assert re.search(r"(?im)^x-ratelimit-limit: \d+", head), head  # "X-RateLimit-*"
        if "curl-format.txt" in command:
            assert "time_total:" in done.stdout, done.stdout
    # "Review Logs": the API's log and each bot's log are where the guide looks for them.
    logs = workdir.path / "logs"
    assert (logs / "fastapi.log").stat().st_size > 0
    assert (logs / "bot_1.log").stat().st_size > 0


TROUBLESHOOTING = ROOT / "docs" / "troubleshooting.md"


def test_troubleshooting_page_runs_as_written(workdir: Workdir) -> None:
    """docs/troubleshooting.md's blocks, in order, against the started demo (``$TOKEN`` set)."""
    if not workdir.demo_password:
        _start_platform(workdir)
    workdir.env["TOKEN"] = _login(workdir.demo_password)["accessToken"]
    ran = 0
    for block in blocks(TROUBLESHOOTING):
        if not block.runnable:
            continue
        assert block.marker == "platform", f"troubleshooting.md:{block.line}: {block.marker!r}"
        done = workdir.run(["bash", "-xeuo", "pipefail", "-c", block.code])
        _check(done, block)
        ran += 1
    assert ran >= 8
