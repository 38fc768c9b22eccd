"""The packages' lazy exports: light imports, every name reachable, clear misses."""
from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["tsimcne_widgets", "tsimcne_widgets.data", "tsimcne_widgets.curation",
            "tsimcne_widgets.render", "tsimcne_widgets.widget"]


def test_importing_the_packages_loads_no_heavy_library():
    code = (
        "import json, sys\n"
        "import tsimcne_widgets, tsimcne_widgets.render, tsimcne_widgets.widget\n"
        "heavy = ['torch', 'bokeh', 'ipywidgets', 'datashader']\n"
        "print(json.dumps([m for m in heavy if m in sys.modules]))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


@pytest.mark.parametrize("package_name", PACKAGES)
def test_every_export_resolves_to_its_home_module(package_name):
    package = importlib.import_module(package_name)
    assert sorted(package.__all__) == sorted(package._HOME)
    for name, module_name in package._HOME.items():
        home = importlib.import_module(f"{package_name}.{module_name}")
        assert getattr(package, name) is getattr(home, name)
        assert name in vars(package)  # cached: the next lookup is a plain attribute
        assert name in dir(package)


@pytest.mark.parametrize("package_name", PACKAGES)
def test_an_unknown_name_is_an_attribute_error_naming_the_package(package_name):
    package = importlib.import_module(package_name)
    with pytest.raises(AttributeError, match=f"module '{package_name}' has no attribute 'Nope'"):
        package.Nope
    assert not hasattr(package, "Nope")
