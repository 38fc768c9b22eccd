"""The browser code ships as ``.js`` files inside the package and every use finds its file."""
from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import pytest

from tsimcne_widgets.js import load_js

PACKAGE = Path(__file__).resolve().parents[1] / "tsimcne_widgets"
JS_DIR = PACKAGE / "js"


def _names_used() -> set[str]:
    used = set()
    for path in PACKAGE.rglob("*.py"):
        for call in re.findall(r"load_js\(([^)]*)\)", path.read_text()):
            used.update(re.findall(r"\"([\w.]+\.js)\"", call))
    return used


def test_every_script_the_package_names_exists_and_loads():
    used = _names_used()
    assert {"follow.js", "copy.js", "download.js"} <= used
    for name in used:
        assert load_js(name).strip(), name


def test_no_javascript_left_in_python_strings():
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        assert "code=\"" not in text and "code='" not in text, path
        assert not re.search(r"_JS\s*=\s*(\"\"\"|''')", text), f"JavaScript string in {path}"


def test_scripts_are_package_data():
    config = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["tsimcne_widgets.js"]
    for script in JS_DIR.glob("*.js"):
        assert any(fnmatch(script.name, p) for p in patterns), script.name


def test_an_unknown_script_names_the_known_ones():
    with pytest.raises(FileNotFoundError, match="follow.js"):
        load_js("no_such_script.js")


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
@pytest.mark.parametrize("script", sorted(p.name for p in JS_DIR.glob("*.js")))
def test_every_script_parses_as_a_callback_body(script, tmp_path):
    # CustomJS runs a file as a function body; `node --check` parses without running it.
    wrapped = tmp_path / "wrapped.js"
    wrapped.write_text("function callback() {\n" + load_js(script) + "\n}\n")
    result = subprocess.run(["node", "--check", str(wrapped)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
