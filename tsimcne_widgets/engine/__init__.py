"""The torch engine: augmentations, networks, loss, schedule, trainer, planner, estimator.

Never imports bokeh, ipywidgets, datashader, render or widget."""

from __future__ import annotations

from tsimcne_widgets._lazy import lazy_exports

__all__ = ["TSimCNE", "Trainer", "TrainingError", "Snapshot"]

_HOME = {
    "TSimCNE": "estimator",
    "Trainer": "trainer",
    "TrainingError": "trainer",
    "Snapshot": "events",
}


__getattr__, __dir__ = lazy_exports(globals(), _HOME)
