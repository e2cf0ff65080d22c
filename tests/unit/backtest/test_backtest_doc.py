"""Every ```python block of docs/backtest.md runs and its assertions hold.

The page states the engine's rules (fills, stops, gaps, conflicts, sizing, fees,
annualisation) with worked examples; running them here keeps the page true to the engine.
Each block runs on its own, in a fresh namespace, as a reader would paste it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[3] / "docs" / "backtest.md"
# a fence opening a python block at the start of a line, up to the next closing fence
_BLOCK = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)


def python_blocks(text: str) -> list[tuple[int, str]]:
    """Return ``(first line number, code)`` of every ```python block of a Markdown text.

    Parameters
    ----------
    text
        Markdown source.

    Returns
    -------
    list of tuple of (int, str)
        One entry per block, in order; line numbers are 1-based and point at the code's
        first line, so a traceback names the line of the page.
    """
    return [(text.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in _BLOCK.finditer(text)]


_BLOCKS = python_blocks(DOC.read_text(encoding="utf-8"))


def test_the_page_has_its_examples() -> None:
    # fill timing, stops and gaps, re-entry, conflicts, sizing, fees, annualisation at least
    assert len(_BLOCKS) >= 7


def test_extraction_finds_fenced_python_only() -> None:
    text = "a\n```python\nx = 1\n```\n```text\nnot code\n```\n```python\ny = 2\nz = 3\n```\n"
    assert python_blocks(text) == [(3, "x = 1\n"), (9, "y = 2\nz = 3\n")]


@pytest.mark.parametrize(
    ("line", "code"), _BLOCKS, ids=[f"docs/backtest.md:{line}" for line, _ in _BLOCKS]
)
def test_doc_example_runs(line: int, code: str) -> None:
    # Padding with blank lines makes a failing assertion's traceback show the page's line.
    source = "\n" * (line - 1) + code
    namespace: dict[str, object] = {"__name__": "docs_backtest_example"}
    exec(compile(source, str(DOC), "exec"), namespace)  # noqa: S102 - our own page's code
