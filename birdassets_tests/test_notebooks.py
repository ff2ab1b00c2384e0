"""The notebooks run top to bottom against a home the suite built (the demo's), and their figures are kept.

Each figure a notebook displays is written to ``$BIRDASSETS_TEST_ARTIFACTS/notebooks/<notebook>.<k>.png`` (CI keeps
the folder); an error in any cell fails the test with the cell's traceback.
"""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
FIGURES = {"results.ipynb": 5, "detections.ipynb": 2}
"""Figures each notebook shows on the demo: results: a leaderboard per demo task (demo-clear, demo-noisy), score
against step for the run demo-sup on each, per-class AP against support; detections: the timeline of demo-orca's
detector and the spectrograms of its top windows."""


def executed(name: str, home: Path):
    """The notebook after running every cell with ``BIRDASSETS_HOME=home`` (nbclient, the python3 kernel)."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}})
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BIRDASSETS_HOME", str(home))
        client.execute()
    return notebook


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_the_notebook_runs_on_the_demo_home_and_its_figures_are_kept(name, demo_home, artifacts_dir):
    home, _ = demo_home
    notebook = executed(name, home)
    pngs = [base64.b64decode(output["data"]["image/png"]) for cell in notebook.cells if cell.cell_type == "code"
            for output in cell.get("outputs", []) if "image/png" in output.get("data", {})]
    folder = artifacts_dir / "notebooks"
    folder.mkdir(exist_ok=True)
    for k, png in enumerate(pngs):
        (folder / f"{name}.{k}.png").write_bytes(png)
    assert len(pngs) == FIGURES[name] and all(png.startswith(b"\x89PNG") for png in pngs)
    errors = [output for cell in notebook.cells for output in cell.get("outputs", []) if output.get("output_type") == "error"]
    assert errors == []


def test_the_notebooks_hold_no_outputs():
    """Committed notebooks are clean: outputs belong to whoever runs them."""
    import nbformat

    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        notebook = nbformat.read(path, as_version=4)
        assert [cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code" and cell.get("outputs")] == []
