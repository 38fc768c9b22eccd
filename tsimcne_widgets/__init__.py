"""t-SimCNE maps of image collections: a scikit-learn-style estimator, a CLI and a live
Jupyter widget.

>>> from tsimcne_widgets import TSimCNE, load_images        # doctest: +SKIP
>>> xy = TSimCNE(time_budget=180).fit_transform(load_images("photos/"))  # doctest: +SKIP

Names are imported on first use, so ``import tsimcne_widgets`` stays light: torch loads
with the estimator, bokeh and ipywidgets only with :class:`Explorer`.
"""

from __future__ import annotations

from tsimcne_widgets._lazy import lazy_exports

__version__ = "0.1.0"

__all__ = ["TSimCNE", "Snapshot", "Trainer", "load_images", "ImageSet", "Explorer"]

_HOME = {
    "TSimCNE": "engine.estimator",
    "Snapshot": "engine.events",
    "Trainer": "engine.trainer",
    "load_images": "data.load",
    "ImageSet": "data.load",
    "Explorer": "widget.explorer",
}


__getattr__, __dir__ = lazy_exports(globals(), _HOME)
