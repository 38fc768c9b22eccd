"""The layering contracts of docs/ARCHITECTURE.md, enforced by folder.

Imports flow one way: ``io`` -> ``data`` -> ``engine``, ``curation``, ``render`` -> ``widget``,
``cli``.  Each contract below holds for every module found in its folder, so a new module
is held to its folder's rule without editing this file.

* ``io`` imports nothing from the package; ``data`` only ``io``.
* ``engine`` never imports the notebook stack (bokeh, ipywidgets, jupyter_bokeh, datashader)
  nor ``render``, ``curation`` or ``widget``.
* ``render``, ``widget``, ``data`` and ``io`` never import torch (``widget/session.py``, the
  one seam to the engine, imports it only inside functions, when training starts; the
  CIFAR-10 download in ``data/datasets.py``, made only on request, imports torchvision).
* No import cycle between modules, nor between sub-packages.
"""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "tsimcne_widgets"
UI_LIBRARIES = {"bokeh", "ipywidgets", "jupyter_bokeh", "datashader"}
TORCH_LIBRARIES = {"torch", "torchvision"}
SUBPACKAGES = ["io", "data", "engine", "curation", "render", "widget"]
# Which sub-packages each one may import (besides itself).
ALLOWED = {
    "io": set(),
    "data": {"io"},
    "engine": {"io", "data"},
    "curation": {"io", "data"},
    "render": {"io", "data"},
    "widget": {"io", "data", "engine", "curation", "render"},
}
# The widget reaches the engine through this module only, and only inside functions.
ENGINE_SEAM = "tsimcne_widgets.widget.session"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules(folder: str) -> list[Path]:
    return sorted(p for p in (PACKAGE / folder).rglob("*.py"))


def _imports(path: Path, top_level_only: bool = False) -> list[tuple[str, int]]:
    """Every import in ``path`` as (absolute name, line); relative ones resolved.

    With ``top_level_only``, imports inside functions are left out (they run only when
    the function is called).
    """
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    package = parts[:-1]
    tree = ast.parse(path.read_text(), filename=str(path))
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = []
    for node in nodes:
        if top_level_only and isinstance(node, (ast.If, ast.Try)):
            # `if TYPE_CHECKING:` and try/except ImportError blocks at module level
            found += [(n, l) for n, l in _imports_in(node, package)]
            continue
        found += _imports_in_node(node, package)
    return found


def _imports_in_node(node: ast.AST, package: tuple[str, ...]) -> list[tuple[str, int]]:
    if isinstance(node, ast.Import):
        return [(alias.name, node.lineno) for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        if node.level:
            base = list(package[: len(package) - node.level + 1])
            target = ".".join(base + ([node.module] if node.module else []))
            if node.module:
                return [(target, node.lineno)]
            return [(f"{target}.{a.name}", node.lineno) for a in node.names]
        return [(node.module, node.lineno)]
    return []


def _imports_in(block: ast.AST, package: tuple[str, ...]) -> list[tuple[str, int]]:
    found = []
    for node in ast.walk(block):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        found += _imports_in_node(node, package)
    return found


def _subpackage(name: str) -> str | None:
    parts = name.split(".")
    if parts[0] != "tsimcne_widgets" or len(parts) < 2:
        return None
    return parts[1]


@pytest.mark.parametrize("folder", SUBPACKAGES)
def test_subpackages_import_only_the_layers_below(folder):
    bad = []
    for path in _modules(folder):
        for imported, line in _imports(path):
            if _module_name(path) == ENGINE_SEAM and _subpackage(imported) == "engine":
                continue
            target = _subpackage(imported)
            if target is None or target == folder:
                continue
            if target in ALLOWED or target in ("cli", "__main__"):
                if target not in ALLOWED[folder]:
                    bad.append((path.name, imported, line))
    assert bad == [], f"{folder}/ imports layers it must not: {bad}"


@pytest.mark.parametrize("path", _modules("engine") + _modules("data") + _modules("io")
                         + _modules("curation"), ids=lambda p: _module_name(p))
def test_engine_data_and_curation_import_no_notebook_library(path):
    bad = [(i, line) for i, line in _imports(path) if i.split(".")[0] in UI_LIBRARIES]
    assert bad == [], f"{path} imports {bad}"


@pytest.mark.parametrize("path", _modules("render") + _modules("widget") + _modules("data")
                         + _modules("io"), ids=lambda p: _module_name(p))
def test_render_widget_and_data_import_no_torch(path):
    # The widget's one seam to the engine may import torch inside functions only; so may
    # data/datasets.py, whose CIFAR-10 download (on request only) goes through torchvision.
    top_only = _module_name(path) in (ENGINE_SEAM, "tsimcne_widgets.data.datasets")
    bad = [(i, line) for i, line in _imports(path, top_level_only=top_only)
           if i.split(".")[0] in TORCH_LIBRARIES
           or (_subpackage(i) == "engine" and _module_name(path) != ENGINE_SEAM)]
    if top_only:
        bad += [(i, line) for i, line in _imports(path, top_level_only=True)
                if _subpackage(i) == "engine"]
    assert bad == [], f"{path} imports {bad}"


def _graph(level: str) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = _module_name(path)
        node = name if level == "module" else (_subpackage(name) or name)
        edges = graph.setdefault(node, set())
        for imported, _ in _imports(path):
            if not imported.startswith("tsimcne_widgets"):
                continue
            target = _resolve_module(imported) if level == "module" else _subpackage(imported)
            if target and target != node and target != "tsimcne_widgets":
                if level == "package" and "." not in name.replace("tsimcne_widgets.", "", 1):
                    continue  # top-level modules (cli, __init__) sit above every layer
                edges.add(target)
    return graph


def _resolve_module(name: str) -> str | None:
    """The package module that ``name`` (a module or a name inside one) refers to."""
    parts = name.split(".")
    while parts:
        candidate = PACKAGE.parent.joinpath(*parts)
        if candidate.with_suffix(".py").is_file() or (candidate / "__init__.py").is_file():
            return ".".join(parts)
        parts.pop()
    return None


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_between_modules():
    # Package __init__ files only re-export lazily; leave them out of the module graph.
    graph = {k: {t for t in v if not (PACKAGE.parent / Path(*t.split("."))).is_dir()}
             for k, v in _graph("module").items()
             if not (PACKAGE.parent / Path(*k.split("."))).is_dir()}
    assert _cycles(graph) == []


def test_no_import_cycle_between_subpackages():
    assert _cycles(_graph("package")) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def _loaded_by_each(modules: list[str], watched: set[str]) -> dict[str, list[str]]:
    """Import ``modules`` one after another in one fresh interpreter; for each, the
    ``watched`` libraries its import added to ``sys.modules`` (one interpreter, because
    importing torch alone takes seconds)."""
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


def test_engine_modules_do_not_load_the_notebook_stack_when_imported():
    modules = [_module_name(p) for p in _modules("engine")]
    loaded = _loaded_by_each(modules, UI_LIBRARIES)
    assert set(loaded) == set(modules)
    assert {name: libs for name, libs in loaded.items() if libs} == {}


def test_render_and_widget_modules_do_not_load_torch_when_imported():
    modules = [_module_name(p) for p in _modules("render") + _modules("widget")]
    loaded = _loaded_by_each(modules, TORCH_LIBRARIES)
    assert set(loaded) == set(modules)
    assert {name: libs for name, libs in loaded.items() if libs} == {}


def test_the_runtime_check_detects_a_loaded_library():
    # Guard against a checker that can never fail.
    loaded = _loaded_by_each(["colorsys", "tsimcne_widgets.render.lasso"], {"colorsys", "numpy"})
    assert loaded == {"colorsys": ["colorsys"], "tsimcne_widgets.render.lasso": ["numpy"]}


def test_the_static_check_sees_lazy_and_relative_imports():
    # Guard against a checker that silently finds nothing.
    imports = dict(_imports(PACKAGE / "widget" / "canvas.py"))
    assert "bokeh.models" in imports and "tsimcne_widgets.render.raster" in imports
    assert "tsimcne_widgets.render.spatial" in imports  # imported inside a method
    top = dict(_imports(PACKAGE / "widget" / "session.py", top_level_only=True))
    every = dict(_imports(PACKAGE / "widget" / "session.py"))
    assert set(top) < set(every)  # the engine is imported inside functions only
