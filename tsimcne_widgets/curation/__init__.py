"""Curation: selections, tags, suggested selections and exports (numpy + pandas; torch only for subsets).

Modules, lowest first: ``base`` (index validation) -> ``selection`` (SelectionModel, the
selection modes), ``tags`` (TagStore, tag names), ``suggestions`` -> ``export`` (tables and
image folders), ``subset`` (a selection as a torch dataset).
"""

from __future__ import annotations

from tsimcne_widgets._lazy import lazy_exports

__all__ = ["SelectionModel", "SELECTION_MODES", "TagStore", "validate_tag_name", "as_indices",
           "suggest_outliers", "suggest_duplicates", "export_files", "write_table",
           "make_subset", "selection_frame"]

_HOME = {
    "SelectionModel": "selection",
    "SELECTION_MODES": "selection",
    "TagStore": "tags",
    "validate_tag_name": "tags",
    "as_indices": "base",
    "suggest_outliers": "suggestions",
    "suggest_duplicates": "suggestions",
    "export_files": "export",
    # Defined in tsimcne_widgets.io.tables; export writes its manifest with it.
    "write_table": "export",
    "make_subset": "subset",
    "selection_frame": "export",
}


__getattr__, __dir__ = lazy_exports(globals(), _HOME)
