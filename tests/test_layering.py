"""The layering rules of docs/ARCHITECTURE.md, checked at run time and statically.

* Engine modules (training) never load the notebook stack: bokeh, ipywidgets,
  jupyter_bokeh, datashader.
* Renderer modules and the canvas never load torch, so maps can be drawn while
  the trainer owns the accelerator, and without torch installed at all.
"""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "tsimcne_widgets"
ENGINE = ["augment", "models", "loss", "schedule", "trainer", "estimator", "checkpoint"]
# Engine helpers that landed beside the contract's list follow the same rule.
ENGINE_EXTRA = ["budget", "runtime", "snapshot", "oom", "training_threads"]
UI_LIBRARIES = {"bokeh", "ipywidgets", "jupyter_bokeh", "datashader"}
TORCH_LIBRARIES = {"torch", "torchvision"}
# Package modules that import torch (directly or through the engine).
TORCH_MODULES = set(ENGINE + ENGINE_EXTRA) | {"evaluation"}


def _engine_modules() -> list[str]:
    return ENGINE + [m for m in ENGINE_EXTRA if (PACKAGE / f"{m}.py").is_file()]


def _torch_free_files() -> list[Path]:
    return sorted((PACKAGE / "render").glob("*.py")) + [PACKAGE / "widget" / "canvas.py"]


def _loaded_by_each(modules: list[str], watched: set[str]) -> dict[str, list[str]]:
    """Import ``modules`` one after another in one fresh interpreter.

    Returns, for each module, the ``watched`` libraries that its import added
    to ``sys.modules``; attribution is exact because a library loaded by an
    earlier module is not new any more.  One interpreter instead of one per
    module: importing torch alone takes seconds.
    """
    code = (
        "import importlib, json, sys\n"
        f"watched = {sorted(watched)!r}\n"
        "loaded = lambda: {m for m in sys.modules if m.split('.')[0] in watched}\n"
        "result = {}\n"
        f"for name in {modules!r}:\n"
        "    before = loaded()\n"
        "    importlib.import_module(name)\n"
        "    result[name] = sorted({m.split('.')[0] for m in loaded() - before})\n"
        "print(json.dumps(result))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=PACKAGE.parent, timeout=600)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)


def test_engine_modules_do_not_load_the_notebook_stack():
    modules = [f"tsimcne_widgets.{name}" for name in _engine_modules()]
    loaded = _loaded_by_each(modules, UI_LIBRARIES)
    assert set(loaded) == set(modules)
    assert {name: libs for name, libs in loaded.items() if libs} == {}


def test_renderer_and_canvas_do_not_load_torch():
    modules = [_module_name(path) for path in _torch_free_files()]
    loaded = _loaded_by_each(modules, TORCH_LIBRARIES)
    assert set(loaded) == set(modules)
    assert {name: libs for name, libs in loaded.items() if libs} == {}


def test_the_runtime_check_detects_a_loaded_library():
    # Guard against a checker that can never fail.
    loaded = _loaded_by_each(["colorsys", "tsimcne_widgets.render.lasso"], {"colorsys", "numpy"})
    assert loaded == {"colorsys": ["colorsys"], "tsimcne_widgets.render.lasso": ["numpy"]}


def _imports(path: Path) -> list[tuple[str, int]]:
    """Every import in ``path`` (module level or inside functions) as (absolute name, line).

    Relative imports are resolved against the module's package.
    """
    package = path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(package[: len(package) - node.level + 1])
                target = ".".join(base + ([node.module] if node.module else []))
                names = [target] if node.module else [f"{target}.{a.name}" for a in node.names]
            else:
                names = [node.module]
            found += [(name, node.lineno) for name in names]
    return found


@pytest.mark.parametrize("name", _engine_modules())
def test_engine_sources_import_no_notebook_library(name):
    path = PACKAGE / f"{name}.py"
    bad = [(imported, line) for imported, line in _imports(path)
           if imported.split(".")[0] in UI_LIBRARIES
           or imported.startswith(("tsimcne_widgets.render", "tsimcne_widgets.widget",
                                   "tsimcne_widgets.html_export"))]
    assert bad == [], f"{path.name} imports {bad}"


@pytest.mark.parametrize("path", _torch_free_files(), ids=lambda p: p.stem)
def test_renderer_and_canvas_sources_import_no_torch(path):
    bad = []
    for imported, line in _imports(path):
        parts = imported.split(".")
        if parts[0] in TORCH_LIBRARIES:
            bad.append((imported, line))
        elif parts[0] == "tsimcne_widgets" and len(parts) > 1 and parts[1] in TORCH_MODULES:
            bad.append((imported, line))
    assert bad == [], f"{path.name} imports {bad}"


def test_the_static_check_sees_lazy_and_relative_imports(tmp_path):
    # Guard against a checker that silently finds nothing.
    imports = dict(_imports(PACKAGE / "widget" / "canvas.py"))
    assert "bokeh.models" in imports and "tsimcne_widgets.render.raster" in imports
    assert "tsimcne_widgets.render.spatial" in imports  # imported inside a method
