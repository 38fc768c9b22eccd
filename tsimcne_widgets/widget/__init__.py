"""The live notebook widget (:class:`Explorer`) and its parts.

Submodules load lazily, so ``tsimcne_widgets.widget.canvas`` can be imported
(e.g. by the HTML export or tests) without ipywidgets, and nothing here
imports torch until training starts.
"""

from __future__ import annotations

from tsimcne_widgets._lazy import lazy_exports

__all__ = ["Explorer", "MapCanvas"]

_HOME = {"Explorer": "explorer", "MapCanvas": "canvas"}


__getattr__, __dir__ = lazy_exports(globals(), _HOME)
