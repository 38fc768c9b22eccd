"""Lazy package exports (PEP 562), shared by the package and its sub-packages.

Importing a name's module on first use keeps ``import tsimcne_widgets`` light: torch
loads with the estimator, bokeh and ipywidgets with the widget, datashader with the
rasteriser.
"""

from __future__ import annotations

import importlib
from typing import Callable


def lazy_exports(
    package_globals: dict, home: dict[str, str]
) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """Module ``__getattr__`` and ``__dir__`` that import each name from its submodule.

    Parameters
    ----------
    package_globals : dict
        The package's ``globals()``; a name, once imported, is cached there so later
        lookups are plain attribute reads.
    home : dict
        Exported name -> submodule (relative to the package) that defines it.
    """
    package = package_globals["__name__"]

    def __getattr__(name: str):
        try:
            module_name = home[name]
        except KeyError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        value = getattr(importlib.import_module(f"{package}.{module_name}"), name)
        package_globals[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(package_globals) | set(home))

    return __getattr__, __dir__
