"""Binder's environment builds from nothing and runs the quickstart notebook.

Binder (repo2docker) installs ``binder/requirements.txt`` with pip, from the repository root,
into the Python named by ``binder/runtime.txt``, and starts Jupyter through ``binder/start``.
This test does the same in a fresh virtual environment in a temporary folder (several GB,
removed afterwards), then executes ``notebooks/01-quickstart.ipynb`` in quick mode with that
environment's own ``jupyter nbconvert``, launched through ``binder/start``.

``requirements.txt`` names the PyTorch CPU-only index. Where that index cannot be reached,
pip must fall back to the other indexes at once: the test sets ``PIP_RETRIES=0`` (pip's
default of five retries with back-off costs several seconds for each of the ~150 projects
it looks up there) and a short ``PIP_DEFAULT_TIMEOUT`` (a host that drops packets would
otherwise hold every lookup for the full timeout). Where the index answers, the test checks
that the environment got a CPU-only torch, as Binder does.

The test skips, saying why, when pip fails because a package index cannot be reached, when
the Python of ``runtime.txt`` is missing, or when the disk is too full; any other pip failure
fails it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

nbformat = pytest.importorskip("nbformat")

REPO_ROOT = Path(__file__).resolve().parents[1]
BINDER = REPO_ROOT / "binder"
QUICKSTART = REPO_ROOT / "notebooks" / "01-quickstart.ipynb"
DEFAULT_INDEX = "https://pypi.org/simple"
# Seconds pip waits on one stalled connection; large wheels still download, since the
# timeout applies to each read, not to a whole file.
PIP_TIMEOUT_S = 15
PIP_INSTALL_LIMIT_S = int(os.environ.get("TSW_BINDER_PIP_LIMIT", str(40 * 60)))
NOTEBOOK_LIMIT_S = int(os.environ.get("TSW_BINDER_NOTEBOOK_LIMIT", str(20 * 60)))
# torch with CUDA libraries fills about 5 GB; keep room for pip's unpacking as well.
MIN_FREE_BYTES = 10 * 2**30
# Messages pip (urllib3, requests) prints when it cannot talk to an index at all.
CONNECTION_ERRORS = (
    "NewConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "Max retries exceeded",
    "Failed to establish a new connection", "Temporary failure in name resolution",
    "Name or service not known", "Network is unreachable", "ProxyError",
    "Connection reset by peer", "Connection refused",
)
NOT_FOUND = ("No matching distribution found", "Could not find a version that satisfies")
# Appended to the quickstart: reports from inside the kernel where it ran.
PROBE_MARK = "TSW_BINDER_PROBE "
PROBE_CELL = f"""\
import json, os, sys, torch, tsimcne_widgets
print({PROBE_MARK!r} + json.dumps({{
    "prefix": sys.prefix, "version": list(sys.version_info[:2]),
    "package": tsimcne_widgets.__file__, "torch": torch.__version__, "cuda": torch.version.cuda,
    "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "torch_threads": torch.get_num_threads(),
}}))"""


def runtime_version() -> tuple[int, int]:
    """(major, minor) from ``binder/runtime.txt`` (``python-3.11``)."""
    text = (BINDER / "runtime.txt").read_text().strip()
    match = re.fullmatch(r"python-(\d+)\.(\d+)(?:\.\d+)?", text)
    assert match, f"binder/runtime.txt must read like 'python-3.11', got {text!r}"
    return int(match[1]), int(match[2])


def find_python(version: tuple[int, int]) -> str | None:
    if sys.version_info[:2] == version:
        return sys.executable  # venv from a venv: the new one is based on the base interpreter
    return shutil.which("python{}.{}".format(*version))


def index_urls(requirements: Path) -> list[str]:
    """Index URLs named in a requirements file (``--index-url``, ``--extra-index-url``, ``-i``)."""
    urls = []
    for line in requirements.read_text().splitlines():
        match = re.match(r"\s*(?:--(?:extra-)?index-url|-i)[\s=]+(\S+)", line)
        if match:
            urls.append(match[1])
    return urls


def reachable(url: str, timeout: float = 5.0) -> bool:
    """Whether a TCP connection to the URL's host opens (file:// URLs always count)."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        return True
    try:
        with socket.create_connection((parts.hostname, parts.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def network_failure(pip_output: str, default_index: str, default_index_reachable: bool
                    ) -> str | None:
    """Why pip failed, when the cause is an index it could not reach; None for other failures."""
    for marker in CONNECTION_ERRORS:
        if marker in pip_output:
            return f"pip reported {marker!r}"
    if not default_index_reachable and any(m in pip_output for m in NOT_FOUND):
        return (f"a requirement is missing from the reachable indexes and {default_index} "
                "cannot be reached")
    return None


def tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.splitlines()[-lines:])


def isolated_env(venv: Path, scratch: Path) -> dict[str, str]:
    """This process's environment minus anything that would leak the project's own .venv."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP",
                        "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env["PATH"] = os.pathsep.join([str(venv / "bin"), env.get("PATH", "")])
    # Kernel specs and config from this environment, not from the user's home.
    env["JUPYTER_PREFER_ENV_PATH"] = "1"
    env["JUPYTER_DATA_DIR"] = str(scratch / "jupyter-data")
    env["JUPYTER_CONFIG_DIR"] = str(scratch / "jupyter-config")
    env["IPYTHONDIR"] = str(scratch / "ipython")
    return env


@pytest.fixture
def scratch():
    """A temporary folder removed afterwards, even on failure (pytest keeps tmp_path)."""
    base = tempfile.gettempdir()
    free = shutil.disk_usage(base).free
    if free < MIN_FREE_BYTES:
        pytest.skip(f"the Binder environment needs about {MIN_FREE_BYTES / 2**30:.0f} GB free "
                    f"in {base}; only {free / 2**30:.1f} GB are (set TMPDIR to a larger disk)")
    path = Path(tempfile.mkdtemp(prefix="tsw-binder-", dir=base))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_binder_requirements_name_a_cpu_index_and_the_package():
    # Cheap guard of what the slow test below relies on, readable in the failure message.
    requirements = (BINDER / "requirements.txt").read_text().splitlines()
    entries = [line.split("#")[0].strip() for line in requirements]
    assert "-e ." in entries, "binder/requirements.txt must install this package with '-e .'"
    assert any("download.pytorch.org/whl/cpu" in url
               for url in index_urls(BINDER / "requirements.txt")), \
        "binder/requirements.txt must name the PyTorch CPU index (Binder has no GPU)"
    assert os.access(BINDER / "start", os.X_OK), "binder/start must be executable"
    assert QUICKSTART.is_file(), f"Binder opens {QUICKSTART.relative_to(REPO_ROOT)}; it is missing"


def test_binder_offers_jupyterlab_notebook7_and_voila():
    # So that Binder can open the quickstart in each of them (docs/FRONTENDS.md).
    entries = [line.split("#")[0].strip() for line in
               (BINDER / "requirements.txt").read_text().splitlines()]
    names = {re.split(r"[<>=!~ \[]", entry, maxsplit=1)[0].lower() for entry in entries if entry}
    missing = {"jupyterlab", "notebook", "voila"} - names
    assert not missing, f"binder/requirements.txt lacks {sorted(missing)}"


@pytest.mark.slow
def test_binder_environment_runs_quickstart(scratch):
    version = runtime_version()
    python = find_python(version)
    if python is None:
        pytest.skip("binder/runtime.txt asks for Python {}.{}, which is not installed here"
                    .format(*version))
    requirements = BINDER / "requirements.txt"
    extra_indexes = index_urls(requirements)
    default_index = os.environ.get("PIP_INDEX_URL", DEFAULT_INDEX)
    default_up = reachable(default_index)
    cpu_index_up = all(reachable(url) for url in extra_indexes)

    venv = scratch / "venv"
    started = time.monotonic()
    subprocess.run([python, "-m", "venv", str(venv)], check=True, timeout=300)
    env = isolated_env(venv, scratch)
    pip_env = dict(env, PIP_RETRIES="0", PIP_DEFAULT_TIMEOUT=str(PIP_TIMEOUT_S),
                   PIP_PROGRESS_BAR="off", PIP_DISABLE_PIP_VERSION_CHECK="1")
    # From the repository root, as repo2docker does, so that '-e .' is this package.
    pip = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-r", str(requirements)],
        cwd=REPO_ROOT, env=pip_env, capture_output=True, text=True, timeout=PIP_INSTALL_LIMIT_S,
    )
    pip_seconds = time.monotonic() - started
    if pip.returncode != 0:
        output = pip.stdout + pip.stderr
        reason = network_failure(output, default_index, default_up)
        if reason:
            pytest.skip(f"cannot build Binder's environment here: {reason}")
        pytest.fail(f"pip install -r binder/requirements.txt failed (exit {pip.returncode}):\n"
                    f"{tail(output)}", pytrace=False)

    # Run a scratch copy, so the notebook's exports land there; the probe cell goes last.
    workdir = scratch / "notebooks"
    shutil.copytree(QUICKSTART.parent, workdir, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    notebook = nbformat.read(workdir / QUICKSTART.name, as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell(PROBE_CELL))
    nbformat.write(notebook, workdir / QUICKSTART.name)
    executed = workdir / "executed.ipynb"
    started = time.monotonic()
    run = subprocess.run(
        [str(BINDER / "start"), str(venv / "bin" / "jupyter"), "nbconvert", "--to", "notebook",
         "--execute", f"--ExecutePreprocessor.timeout={NOTEBOOK_LIMIT_S}",
         "--output", executed.name, QUICKSTART.name],
        cwd=workdir, env=dict(env, TSIMCNE_QUICK="1"), capture_output=True, text=True,
        timeout=NOTEBOOK_LIMIT_S,
    )
    notebook_seconds = time.monotonic() - started
    assert run.returncode == 0, (f"the quickstart failed in Binder's environment:\n"
                                 f"{tail(run.stdout + run.stderr)}")

    result = nbformat.read(executed, as_version=4)
    probe = None
    for index, cell in enumerate(result.cells):
        if cell.cell_type != "code":
            continue
        assert cell.execution_count is not None, f"cell {index} did not run"
        for output in cell.outputs:
            assert output.output_type != "error", f"cell {index}: {output.get('ename')}: " \
                                                  f"{output.get('evalue')}"
            text = output.get("text", "")
            if PROBE_MARK in text:
                probe = json.loads(text.split(PROBE_MARK, 1)[1])
    assert probe is not None, "the probe cell printed nothing"

    # The kernel ran in the new environment, with this repository installed in it.
    assert Path(probe["prefix"]).resolve() == venv.resolve(), probe
    assert tuple(probe["version"]) == version, probe
    assert Path(probe["package"]).resolve().is_relative_to(REPO_ROOT / "tsimcne_widgets"), probe
    # binder/start capped torch's thread pool.
    assert probe["omp_num_threads"] and int(probe["omp_num_threads"]) >= 1, probe
    assert probe["torch_threads"] == int(probe["omp_num_threads"]), probe
    if cpu_index_up:
        assert probe["cuda"] is None and "+cpu" in probe["torch"], \
            f"Binder's environment should have a CPU-only torch, got {probe['torch']}"
    print(f"\nBinder environment: pip install {pip_seconds:.0f} s "
          f"(CPU index {'reachable' if cpu_index_up else 'unreachable: fell back'}; "
          f"torch {probe['torch']}), quickstart {notebook_seconds:.0f} s")
