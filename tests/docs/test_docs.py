"""Every command and code block of docs/*.md is run by a test, or named here with the reason.

``docs/backtest.md`` and ``docs/security.md`` have tests of their own (their blocks assert the
engine's rules and the security procedures); the others' blocks run here, with the README's
runner (``tests/docs/test_readme.py``): shell blocks with ``bash -euo pipefail`` and Python
blocks in a fresh interpreter, in a scratch copy of the checkout's layout.
"""

from __future__ import annotations

import itertools
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.docs.test_readme import ROOT, Block, Workdir, _check, _workdir, blocks

DOCS = ROOT / "docs"

#: Pages whose blocks another test runs (and checks).
OWN_TESTS = {
    "backtest.md": ROOT / "tests" / "unit" / "backtest" / "test_backtest_doc.py",
    "security.md": ROOT / "tests" / "security" / "test_security_doc.py",
    # against the demo the README's runner starts (one platform for both)
    "troubleshooting.md": ROOT / "tests" / "docs" / "test_readme.py",
}

#: Blocks not run, by page and first line, with the reason.
NOT_RUN = {
    (
        "bots.md",
        ".venv/bin/python benchmarks/bots.py --bots 50 --group-size 25 --candles 100 "
        "[--no-feed --poll 0.05]",
    ): "the capacity benchmark itself: minutes of both cores (run by hand, figures in the page)",
    (
        "optimize.md",
        "ray job submit --address http://HEAD:8265 --working-dir . \\",
    ): "needs a cluster head (HEAD); tests/integration/cluster/test_ray_jobs.py runs jobs",
}


def _runnable(page: Path) -> list[Block]:
    return [b for b in blocks(page) if b.runnable]


def test_every_runnable_block_is_run_or_named() -> None:
    pages = sorted(DOCS.glob("*.md"))
    assert pages
    skipped: set[tuple[str, str]] = set()
    for page in pages:
        runnable = _runnable(page)
        if page.name in OWN_TESTS:
            test = OWN_TESTS[page.name]
            assert test.exists()
            assert page.name in test.read_text()
            continue
        for b in runnable:
            if b.marker.startswith("not-run"):
                skipped.add((page.name, b.code.splitlines()[0]))
            else:
                assert b.marker in ("",), f"{page.name}:{b.line}: unknown marker {b.marker!r}"
    assert skipped == set(NOT_RUN)


@pytest.fixture(scope="module")
def workdir() -> Iterator[Workdir]:
    """The README's scratch workdir, without the fixed ports' lock.

    These pages start no server and no Ray dashboard (the settings' default), so they need
    none of the README's fixed ports and run beside the module that holds them.
    """
    yield from _workdir(fixed_ports=False)


@pytest.mark.parametrize("page", ["notifications.md", "optimize.md"])
def test_page_runs_as_written(page: str, workdir: Workdir) -> None:
    ran = 0
    for block in _runnable(DOCS / page):
        if block.marker.startswith("not-run"):
            continue
        if block.lang == "python":
            done = workdir.run([sys.executable, "-c", block.code])
        else:
            done = workdir.run(["bash", "-xeuo", "pipefail", "-c", block.code])
        _check(done, block)
        ran += 1
    assert ran >= 1


#: Inline mentions of the CLI in the prose of README.md and docs/*.md (``cryptoorch ...`` in
#: backticks): not commands to run as they stand (placeholders, options alone), but each names
#: a command path and options that must exist.
_PROSE_COMMAND = re.compile(r"`cryptoorch ([^`]*)`")


def _prose_commands() -> list[tuple[str, str]]:
    found = []
    for page in [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]:
        found += [(page.name, m) for m in _PROSE_COMMAND.findall(page.read_text())]
    return found


def test_commands_named_in_prose_exist() -> None:
    """Every ``cryptoorch ...`` named in the prose is a real command with real options."""
    from typer.testing import CliRunner

    from cryptoorchestrator.cli.main import app

    mentions = _prose_commands()
    assert len(mentions) >= 10
    runner = CliRunner()
    for page, mention in mentions:
        words = mention.split()
        path = [w for w in itertools.takewhile(lambda w: re.fullmatch(r"[a-z][a-z-]*", w), words)]
        options = [w.split("=")[0] for w in words if w.startswith("--")]
        done = runner.invoke(app, [*path, "--help"])
        assert done.exit_code == 0, f"{page}: `cryptoorch {mention}`: {done.output}"
        for option in options:
            assert option in done.output, f"{page}: `cryptoorch {mention}`: no {option}"
