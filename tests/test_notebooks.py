"""Every notebook in ``notebooks/`` runs from top to bottom, headless, in quick mode.

Each notebook is executed with nbclient in a scratch copy of ``notebooks/`` (exports land
there, not in the source tree), with ``TSIMCNE_QUICK=1`` so that training takes about a
minute. A cell that raises fails the test with the cell and its traceback; the executed
copy is saved under ``test-artifacts/notebooks/`` either way. The committed files must
carry no outputs and name their kernel, so that they open cleanly in JupyterLab.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = REPO_ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
ARTIFACTS_DIR = REPO_ROOT / "test-artifacts" / "notebooks"
# Generous per cell: the quick-mode training budget is about a minute, and a cell that
# waits for it must not be cut off on a loaded 2-core machine.
CELL_TIMEOUT_S = int(os.environ.get("TSW_NOTEBOOK_CELL_TIMEOUT", "300"))


def test_notebooks_exist():
    assert NOTEBOOKS, f"no notebooks found in {NOTEBOOK_DIR}"
    assert (NOTEBOOK_DIR / "01-quickstart.ipynb") in NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebook_is_clean(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    kernelspec = notebook.metadata.get("kernelspec", {})
    # Without a kernelspec JupyterLab asks for a kernel in a dialog on first open.
    assert kernelspec.get("name") == "python3", f"{path.name}: kernelspec {kernelspec!r}"
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        assert cell.outputs == [], f"{path.name} cell {index} has committed outputs"
        assert cell.execution_count is None, f"{path.name} cell {index} has an execution count"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, tmp_path, monkeypatch):
    if path.name.startswith("02-cifar10"):
        from tsimcne_widgets.data.datasets import cifar10_folder

        if cifar10_folder() is None:
            pytest.skip("CIFAR-10 JPEGs not found (set TSIMCNE_CIFAR10 or put ../shared/data beside the repo)")
    workdir = tmp_path / "notebooks"
    shutil.copytree(NOTEBOOK_DIR, workdir, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    # The kernel inherits this environment: quick mode, and the package from this tree.
    monkeypatch.setenv("TSIMCNE_QUICK", "1")
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
    )
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    notebook = nbformat.read(workdir / path.name, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(workdir)}},
    )
    start = time.monotonic()
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as error:
        pytest.fail(f"{path.name} failed:\n{error}", pytrace=False)
    finally:
        # The executed copy, outputs included, for reading after a CI run.
        ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
        nbformat.write(notebook, ARTIFACTS_DIR / path.name)
    elapsed = time.monotonic() - start
    print(f"{path.name}: {elapsed:.0f} s")

    texts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            assert output.get("output_type") != "error", f"{path.name}: {output}"
            texts.append(output.get("text", "") + str(output.get("data", {}).get("text/plain", "")))
    assert any(texts), f"{path.name} produced no output at all"
