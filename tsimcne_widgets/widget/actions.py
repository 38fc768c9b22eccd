"""Selection, hover, tags and exports of the Explorer (a mixin, to keep modules small).

The methods run on the kernel's event loop thread (browser events and button
clicks) or in the user's cell (the Python API); none touches the trainer.  What
they change lives in the Explorer's :class:`~tsimcne_widgets.widget.state.ExplorerState`
(``self.model``); the view follows it through the observers the Explorer wires up.
"""

from __future__ import annotations

import html
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["CurationActions"]


class CurationActions:
    """Hover, selection, tagging and export actions of
    :class:`~tsimcne_widgets.widget.explorer.Explorer`.

    Expects the attributes the Explorer sets up: ``model`` (the
    :class:`~tsimcne_widgets.widget.state.ExplorerState`), ``canvas``,
    ``controls``, ``gallery``, ``thumbnails``, ``image_set``, ``labels``,
    ``metadata``, ``n``, ``thumb_size``, the ``selection`` trait and the
    ``embedding`` property.
    """

    # ------------------------------------------------------------------ hover
    def _on_hover(self, x: float, y: float, sx: float | None = None,
                  sy: float | None = None) -> str | None:
        """Pointer at data (x, y): show and return the hover card, or None over empty space."""
        index = self.canvas.nearest(x, y)
        if index is None:
            self._on_leave()
            return None
        card = self.hover_card(index)
        lines = 2 + (0 if self.metadata is None else min(len(self.metadata.columns), 8))
        size = (self.thumb_size + 16, self.thumb_size + 16 * lines + 16)
        self.canvas.show_card(card, sx, sy, size=size)
        return card

    def _on_leave(self) -> None:
        self.canvas.hide_card()

    def hover_card(self, index: int) -> str:
        """HTML card of image ``index``: enlarged image, label, index and metadata."""
        label = None if self.labels is None else self.labels[index]
        meta = None
        if self.metadata is not None and len(self.metadata.columns):
            row = self.metadata.iloc[int(index)]
            meta = {str(k): v for k, v in list(row.items())[:8]}
        card = self.thumbnails.hover_card_html(int(index), label, meta, self.thumb_size)
        return f'<div class="tsw-hover-card">{card}</div>'  # CSS hook

    # ------------------------------------------------------------------ selection
    @property
    def selection_model(self):
        """SelectionModel : The selection with its undo history (``model.selection_model``)."""
        return self.model.selection_model

    def select(self, indices, mode: str = "replace") -> "Explorer":
        """Change the selection (``mode``: replace, add, subtract, intersect)."""
        self.model.select(indices, mode=mode)
        return self

    def observe_selection(self, callback: Callable[[np.ndarray], object]) -> Callable[[], None]:
        """Call ``callback(indices)`` after every selection change; returns an unsubscribe
        function.  The same as ``explorer.observe(lambda change: callback(change.new),
        "selection")``."""
        def handler(change) -> None:
            callback(change["new"])

        self.observe(handler, "selection")
        return lambda: self.unobserve(handler, "selection")

    def _on_polygon(self, polygon) -> int:
        from tsimcne_widgets.render.lasso import points_in_polygon

        self.last_polygon = np.asarray(polygon, dtype=np.float64)
        xy = self._shown_map()
        if xy is None:
            self._report("there is no map yet: start training, then select on the map",
                         "warning")
            return 0
        inside = np.flatnonzero(points_in_polygon(xy, polygon))
        self.select(inside, mode=self.model.selection_mode)
        return int(inside.size)

    def _on_lasso(self, xs, ys) -> int:
        """A finished lasso with vertices (xs, ys) in data units; returns the points inside."""
        return self._on_polygon(np.column_stack([np.asarray(xs, float), np.asarray(ys, float)]))

    def _on_box(self, x0: float, x1: float, y0: float, y1: float) -> int:
        """A finished box selection in data units; returns the points inside."""
        return self._on_polygon(np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], float))

    def _show_selection(self, change) -> None:
        indices = change["new"]
        self.canvas.set_selected(indices)
        self.controls.count.value = f"<b>{len(indices)}</b> selected"
        self.controls.undo.disabled = not self.model.can_undo
        self.gallery.show(indices)

    def _undo(self) -> None:
        if not self.model.undo():
            self._report("nothing to undo", "warning")

    def _clear_selection(self) -> None:
        self.model.clear_selection()

    def selected(self) -> pd.DataFrame:
        """Table of the selection: index, x, y, label, path, metadata columns, tags."""
        from tsimcne_widgets.curation.export import selection_frame

        return selection_frame(self.selection, xy=self.embedding, labels=self.labels,
                               paths=self.image_set.paths, metadata=self.metadata,
                               tags=self.tag_store, n=self.n)

    # ------------------------------------------------------------------ tags and exports
    def tag(self, name: str, indices=None) -> "Explorer":
        """Add ``indices`` (default: the selection) to tag ``name`` (created if new)."""
        chosen = self.selection if indices is None else indices
        self.tag_store.add(name, chosen)
        return self

    @property
    def tag_store(self):
        """TagStore : The tags (``model.tag_store``)."""
        return self.model.tag_store

    @property
    def tags(self) -> pd.DataFrame:
        """pandas.DataFrame : One row per (index, tag)."""
        return self.tag_store.to_frame()

    def _show_tags(self, change=None) -> None:
        parts = [f"{name} ({self.tag_store.indices(name).size})" for name in self.tag_store.names]
        self.controls.tags_summary.value = (
            '<span style="font:12px sans-serif">tags: ' + html.escape(", ".join(parts))
            + "</span>" if parts else "")

    def select_tag(self, name: str, mode: str = "replace") -> "Explorer":
        """Select the images of tag ``name`` (``mode``: replace, add, subtract, intersect)."""
        if name not in self.tag_store.names:
            known = ", ".join(map(repr, self.tag_store.names)) or "none yet"
            raise ValueError(f"no tag named {name!r}; tags: {known}")
        return self.select(self.tag_store.indices(name), mode=mode)

    def save_tags(self, path, overwrite: bool = True) -> Path:
        """Write the tags to ``path`` (.csv or .parquet) atomically, e.g. beside the data."""
        return self.tag_store.save(path, overwrite=overwrite)

    def load_tags(self, path, merge: bool = False) -> "Explorer":
        """Restore tags saved by :meth:`save_tags`; ``merge`` keeps the current ones too."""
        from tsimcne_widgets.curation.tags import TagStore

        loaded = TagStore.load(path, self.n)  # validates names and indices before anything changes
        if not merge:
            self.tag_store.clear()
        for name in loaded.names:
            self.tag_store.add(name, loaded.indices(name))
        return self

    def suggest_outliers(self, k: int = 15, top: int | None = None,
                         min_score: float = 3.0) -> np.ndarray:
        """Select points far from their map neighbours, most isolated first, for inspection."""
        from tsimcne_widgets.curation.suggestions import suggest_outliers

        found = suggest_outliers(self._require_map("suggest_outliers"), k=k, top=top,
                                 min_score=min_score)
        self.select(found)
        return found

    def suggest_duplicates(self, **kwargs) -> list[np.ndarray]:
        """Select near-duplicates: almost coincident on the map and close in pixels.

        Keyword arguments go to :func:`tsimcne_widgets.curation.suggestions.suggest_duplicates`.
        Returns the groups; the selection becomes their union.
        """
        from tsimcne_widgets.curation.suggestions import suggest_duplicates

        groups = suggest_duplicates(self._require_map("suggest_duplicates"),
                                    self.image_set.images, **kwargs)
        self.select(np.concatenate(groups) if groups else np.empty(0, dtype=np.int64))
        return groups

    def _require_map(self, what: str) -> np.ndarray:
        xy = self.embedding
        if xy is None:
            raise ValueError(f"there is no map yet: train (start()/wait()) before {what}")
        return xy

    def _require_selection(self) -> None:
        if len(self.selection) == 0:
            raise ValueError("nothing selected: lasso some points (or call select()) first")

    def export_csv(self, path, overwrite: bool = False) -> Path:
        """Write :meth:`selected` to ``path`` (.csv, .parquet or .jsonl), atomically."""
        from tsimcne_widgets.io.tables import write_table

        self._require_selection()
        return write_table(self.selected(), path, overwrite=overwrite)

    def export_files(self, folder, overwrite: bool = False, mode: str = "copy"):
        """Copy the selected images into ``folder`` (one sub-folder per tag) with a manifest."""
        from tsimcne_widgets.curation.export import export_files

        self._require_selection()
        return export_files(folder, self.selection, images=self.image_set.images,
                            paths=self.image_set.paths, labels=self.labels,
                            tags=self.tag_store, mode=mode, overwrite=overwrite)

    def subset(self, dataset=None):
        """``torch.utils.data.Subset`` of the selection (of ``dataset``, default the images)."""
        from tsimcne_widgets.curation.subset import make_subset

        return make_subset(self.image_set if dataset is None else dataset, self.selection)

    def to_html(self, path, **kwargs) -> Path:
        """Self-contained interactive HTML page of the current map.

        Keyword arguments go to :func:`tsimcne_widgets.render.html.to_html`.
        """
        from tsimcne_widgets.render.html import to_html

        xy = self.embedding
        if xy is None:
            raise ValueError("there is no map yet: train (start()/wait()) before to_html")
        return to_html(path, xy, self.labels, self.image_set.images, paths=self.image_set.paths,
                       metadata=self.metadata, **kwargs)

    def _tag_clicked(self) -> None:
        name = self.controls.tag_name.value.strip()
        self._require_selection()
        self.tag(name)
        self._report(f"tagged {len(self.selection)} images as {name!r}", "info")

    def _csv_clicked(self) -> None:
        path = self.export_csv(_user_path(self.controls.csv_path.value),
                               overwrite=self.controls.overwrite.value)
        self._report(f"wrote {len(self.selection)} rows to {path}", "info")

    def _files_clicked(self) -> None:
        report = self.export_files(_user_path(self.controls.files_path.value),
                                   overwrite=self.controls.overwrite.value)
        self._report(f"exported {report.n_files} files to {report.folder}", "info")


def _user_path(text: str) -> str:
    text = (text or "").strip()
    if not text:
        raise ValueError("the path box is empty: type a file or folder name")
    return os.path.expanduser(text)
