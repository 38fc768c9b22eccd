"""The live notebook widget (:class:`Explorer`) and its parts.

Submodules load lazily, so ``tsimcne_widgets.widget.canvas`` can be imported
(e.g. by the HTML export or tests) without ipywidgets, and nothing here
imports torch until training starts.
"""

from __future__ import annotations

import importlib

__all__ = ["Explorer", "MapCanvas"]

_HOME = {"Explorer": "explorer", "MapCanvas": "canvas"}


def __getattr__(name: str):
    try:
        module_name = _HOME[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f"{__name__}.{module_name}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
