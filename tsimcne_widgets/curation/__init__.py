"""Curation: selections, tags, suggested selections and exports (numpy + pandas; torch only for Subset)."""

from __future__ import annotations

from tsimcne_widgets._lazy import lazy_exports

__all__ = ["SelectionModel", "TagStore", "suggest_outliers", "suggest_duplicates", "export_files", "write_table", "make_subset", "selection_frame"]

_HOME = {
    "SelectionModel": "selection",
    "TagStore": "selection",
    "suggest_outliers": "suggestions",
    "suggest_duplicates": "suggestions",
    "export_files": "export",
    "write_table": "export",
    "make_subset": "export",
    "selection_frame": "export",
}


__getattr__, __dir__ = lazy_exports(globals(), _HOME)
