"""The example notebooks of ``docs/notebooks/``, executed in a real Jupyter kernel (nbclient).

Each notebook runs in a copy of its folder with the candle store in a temporary folder: every
cell must succeed, the plot cells must produce an image, HTML, Plotly or widget output,
matplotlib's backend must be the kernel's own after plotting, and no file may appear beside the
notebook.  The stored notebooks carry no outputs (they are documentation, diffed as text).
``remote.ipynb`` needs a running platform: ``test_remote_notebook.py`` starts one for it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

REPO_ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((REPO_ROOT / "docs" / "notebooks").glob("*.ipynb"))
#: Run against a platform that ``test_remote_notebook.py`` starts.
REMOTE = "remote.ipynb"
LOCAL = [p for p in NOTEBOOKS if p.name != REMOTE]
WIDGET = "application/vnd.jupyter.widget-view+json"
RICH = {"image/png", "text/html", "application/vnd.plotly.v1+json", WIDGET}
BACKEND_PROBE = "import matplotlib\nprint('backend:', matplotlib.get_backend())"


def _mimetypes(cell: Any) -> set[str]:
    return {m for out in cell.get("outputs", []) for m in out.get("data", {})}


def _backends(nb: Any) -> list[str]:
    return [
        line.split(":", 1)[1].strip()
        for cell in nb.cells
        if cell.cell_type == "code" and cell.source == BACKEND_PROBE
        for out in cell.outputs
        for line in out.get("text", "").splitlines()
        if line.startswith("backend:")
    ]


def test_the_example_notebooks_exist_and_are_stored_without_outputs() -> None:
    names = {p.name for p in NOTEBOOKS}
    assert {"quickstart.ipynb", "optimization.ipynb", REMOTE} <= names
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [], f"{path.name} is stored with outputs"
                assert cell.execution_count is None


@pytest.mark.parametrize("path", LOCAL, ids=[p.stem for p in LOCAL])
def test_notebook_runs_in_a_kernel_with_rich_plots_and_writes_no_files(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "notebooks"
    folder.mkdir()
    shutil.copy(path, folder / path.name)
    # the kernel inherits this environment: a private candle store, no platform settings
    for key in list(os.environ):
        if key.startswith("CRYPTOORCH_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("CRYPTOORCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CRYPTOORCH_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("CRYPTOORCH_LOG_DIR", str(tmp_path / "logs"))

    nb = nbformat.read(folder / path.name, as_version=4)
    nb.cells.insert(0, nbformat.v4.new_code_cell(BACKEND_PROBE))
    nb.cells.append(nbformat.v4.new_code_cell(BACKEND_PROBE))
    NotebookClient(
        nb,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(folder)}},
    ).execute()

    plot_cells = [c for c in nb.cells if c.cell_type == "code" and ".plot(" in c.source]
    assert plot_cells, f"{path.name} has no plot cell"
    for cell in plot_cells:
        assert _mimetypes(cell) & RICH, f"no rich output for {cell.source!r}: {cell.outputs}"
    for cell in nb.cells:
        if cell.cell_type == "code":
            errors = [o for o in cell.outputs if o.output_type == "error"]
            assert not errors, errors
            text = "".join(o.get("text", "") for o in cell.outputs)
            assert "Traceback" not in text
    interactive = [c for c in plot_cells if "interactive=True" in c.source]
    for cell in interactive:
        assert _mimetypes(cell) & {"application/vnd.plotly.v1+json", "text/html", WIDGET}
    if path.name == "quickstart.ipynb":
        # the candle charts are widgets in a kernel: they redraw zoomed windows in full
        assert len(interactive) == 2
        for cell in interactive:
            assert WIDGET in _mimetypes(cell), cell.outputs
    # results display as HTML tables, not as dataclass dumps
    first_result = next(
        c for c in nb.cells if c.cell_type == "code" and c.source.rstrip().endswith(("res", "opt"))
    )
    assert "text/html" in _mimetypes(first_result)
    assert "_study_key" not in str(first_result.outputs)

    before, after = _backends(nb)
    assert before == after
    assert "agg" != after.lower() or before.lower() == "agg"
    assert sorted(p.name for p in folder.iterdir()) == [path.name]


def test_a_kernel_that_started_ray_exits_without_stack_dumps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    # the kernel's stderr is this process's fd 2: Ray's SIGTERM dumps would land there
    monkeypatch.delenv("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    for key in list(os.environ):  # no platform settings: a library's Ray, no dashboard
        if key.startswith("CRYPTOORCH_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("CRYPTOORCH_VAR_DIR", str(tmp_path / "var"))
    source = (
        "from cryptoorchestrator.cluster.runtime import ensure_ray\n"
        "ray = ensure_ray(num_cpus=1)\n"
        "ray.get(ray.put(41)) + 1"
    )
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)])
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    assert nb.cells[0].outputs[0]["data"]["text/plain"] == "42"
    err = capfd.readouterr().err
    assert "SIGTERM received" not in err
    assert "Traceback" not in err
