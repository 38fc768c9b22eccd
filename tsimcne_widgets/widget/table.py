"""A paged table of the selection, linked both ways with the map's ring and the gallery.

One page of rows is built at a time (the rows are ipywidgets, made once and reused), so a
selection of 100,000 images shows as fast as one of 20.  Clicking a row's index (with its
thumbnail) or a gallery thumbnail *focuses* that image: the map rings its point
(:meth:`~tsimcne_widgets.widget.client.MapClient.focus`), the gallery outlines it and
its row is highlighted (the table turns to its page).  A row's ✕ button, or the Delete or
Backspace key with the pointer over the map, removes the focused image from the
selection like any other selection change (undoable).
"""

from __future__ import annotations

import html
import itertools
from collections.abc import Callable
from pathlib import PurePath

import ipywidgets as widgets
import numpy as np
import pandas as pd

from tsimcne_widgets.curation.export import selection_frame
from .client import RING_COLOR
from .gallery import FOCUS_CLASS, move_focus_class, thumbnail_rule

__all__ = ["SelectionTable", "PAGE_ROWS"]

#: Rows per page.
PAGE_ROWS = 20
_THUMB = 24
_PICK_WIDTH = 96
_WIDTHS = {"label": 110, "path": 180, "tags": 110}
_OTHER_WIDTH = 90
# Positions on the map change with every training step: not table columns.
_HIDDEN = ("index", "x", "y")
_ids = itertools.count()


class SelectionTable:
    """The selection as a paged table, linked with the map and the gallery.

    Parameters
    ----------
    explorer : Explorer
        Whose selection is shown (its ``selection`` trait is followed) and changed
        (through :meth:`~tsimcne_widgets.widget.explorer.Explorer.select`).
    page_size : int
        Rows per page.

    Attributes
    ----------
    widget : ipywidgets.VBox
        The table, to place in a layout.
    selection : numpy.ndarray
        The selection shown.
    shown : numpy.ndarray
        The indices on the current page.
    page : int
        The current page, 0-based.
    rows : list of ipywidgets.HBox
        Row widgets; ``rows[k]`` shows ``shown[k]`` (the rest are hidden).  Each has
        ``children = (index button, cells, remove button)``.

    Examples
    --------
    >>> table = SelectionTable(explorer)                      # doctest: +SKIP
    >>> ipywidgets.VBox([explorer.widget, table.widget])      # doctest: +SKIP
    """

    def __init__(self, explorer, page_size: int = PAGE_ROWS) -> None:
        if int(page_size) < 1:
            raise ValueError(f"page_size must be at least 1, got {page_size}")
        self.explorer = explorer
        self.client = explorer.canvas.client
        self.gallery = explorer.gallery
        self.page_size = int(page_size)
        self.page = 0
        self.selection = np.asarray(explorer.selection, dtype=np.int64)
        self.shown = np.empty(0, dtype=np.int64)
        self.rows: list[widgets.HBox] = []
        self._css = f"tsw-t{next(_ids)}"
        self._focused_row: int | None = None
        self.caption = widgets.HTML("")
        self.previous_button = widgets.Button(icon="chevron-left", tooltip="Previous page",
                                              layout=widgets.Layout(width="36px"))
        self.next_button = widgets.Button(icon="chevron-right", tooltip="Next page",
                                          layout=widgets.Layout(width="36px"))
        self.previous_button.on_click(self._guarded(lambda: self.show_page(self.page - 1)))
        self.next_button.on_click(self._guarded(lambda: self.show_page(self.page + 1)))
        self.style = widgets.HTML("")
        self.header = widgets.HTML("")
        # Rows as wide as their cells: the highlight then marks the row, not the page.
        self.body = widgets.VBox([], layout=widgets.Layout(align_items="flex-start"))
        self.widget = widgets.VBox(
            [widgets.HBox([self.caption, self.previous_button, self.next_button]),
             self.style, self.header, self.body],
            layout=widgets.Layout(overflow="auto"))
        self.widget.add_class("tsw-selection-table")
        self.widget.add_class(self._css)
        explorer.observe(self._guarded(self._selection_changed, takes_event=True), "selection")
        explorer.model.observe(self._guarded(lambda change: self.show_page(self.page),
                                             takes_event=True), "tags_version")
        self.client.observe_focus(self._guarded(self._focus_changed, takes_event=True))
        self.gallery.on_click(self._guarded(self.focus, takes_event=True))
        self.show_page(0)

    # -- reading ---------------------------------------------------------------------------
    @property
    def n_pages(self) -> int:
        """int : Pages the selection fills (at least 1)."""
        return max(1, -(-self.selection.size // self.page_size))

    @property
    def focused(self) -> int | None:
        """int or None : The focused image (ringed on the map, outlined in the gallery)."""
        return self.client.focused

    def page_frame(self) -> pd.DataFrame:
        """The current page as :meth:`Explorer.selected` rows (only these are built)."""
        e = self.explorer
        return selection_frame(self.shown, labels=e.labels, paths=e.image_set.paths,
                               metadata=e.metadata, tags=e.tag_store, n=e.n)

    # -- acting ----------------------------------------------------------------------------
    def show_page(self, page: int) -> None:
        """Show page ``page`` (0-based, clipped)."""
        self.page = int(np.clip(page, 0, self.n_pages - 1))
        start = self.page * self.page_size
        self.shown = self.selection[start:start + self.page_size]
        self._render()

    def focus(self, index: int | None) -> None:
        """Focus image ``index`` (None: none): ring it on the map, outline it in the
        gallery and highlight its row, turning to its page."""
        self.client.focus(index)

    def remove(self, index: int | None = None) -> None:
        """Remove image ``index`` (default: the focused one) from the selection (undoable).

        Raises
        ------
        ValueError
            When no index is given and nothing is focused.
        """
        if index is None:
            index = self.focused
        if index is None:
            raise ValueError("nothing to remove: click a row or a thumbnail to focus an "
                             "image first")
        index = int(index)
        self.explorer.select([index], mode="subtract")
        if self.focused == index:
            self.client.focus(None)

    # -- following ---------------------------------------------------------------------------
    def _selection_changed(self, change) -> None:
        old, new = self.selection, np.asarray(change["new"], dtype=np.int64)
        self.selection = new
        focused = self.focused
        if focused is not None and not _contains(new, focused):
            self.client.focus(None)
        # Removing rows keeps the page (the next rows move up); a new selection starts over.
        shrunk = new.size <= old.size and bool(np.isin(new, old, assume_unique=True).all())
        self.show_page(self.page if shrunk else 0)

    def _focus_changed(self, index: int | None) -> None:
        self.gallery.mark(index)
        if index is not None and _contains(self.selection, index) \
                and not _contains(self.shown, index):
            self.show_page(int(np.searchsorted(self.selection, index)) // self.page_size)
        else:
            self._highlight()

    def _highlight(self) -> None:
        focused = self.focused
        found = np.flatnonzero(self.shown == focused) if focused is not None else []
        self._focused_row = move_focus_class(self.rows, self._focused_row,
                                             int(found[0]) if len(found) else None)

    # -- drawing ---------------------------------------------------------------------------
    def _row(self, slot: int) -> widgets.HBox:
        pick = widgets.Button(layout=widgets.Layout(width=f"{_PICK_WIDTH}px", height="28px",
                                                    margin="0 4px 0 0"))
        pick.add_class("tsw-pick")
        pick.add_class(f"{self._css}-{slot}")
        pick.on_click(self._guarded(lambda: self.focus(int(self.shown[slot]))))
        remove = widgets.Button(description="✕", layout=widgets.Layout(
            width="28px", height="28px", padding="0"))
        remove.add_class("tsw-remove")
        remove.on_click(self._guarded(lambda: self.remove(int(self.shown[slot]))))
        row = widgets.HBox([pick, widgets.HTML(""), remove],
                           layout=widgets.Layout(align_items="center"))
        row.add_class("tsw-row")
        return row

    def _render(self) -> None:
        n, shown = self.selection.size, self.shown
        self.previous_button.disabled = self.page == 0
        self.next_button.disabled = self.page >= self.n_pages - 1
        if n == 0:
            self.caption.value = ('<span style="font:12px sans-serif;color:#666">nothing '
                                  "selected: lasso points on the map</span>")
            self.header.value = ""
        else:
            start = self.page * self.page_size
            self.caption.value = (f'<span style="font:12px sans-serif">rows {start + 1:,}–'
                                  f"{start + shown.size:,} of {n:,} selected · page "
                                  f"{self.page + 1:,} of {self.n_pages:,}</span>")
        while len(self.rows) < shown.size:
            self.rows.append(self._row(len(self.rows)))
        if len(self.body.children) != len(self.rows):
            self.body.children = tuple(self.rows)
        rules = [f".{self._css} .tsw-pick{{background:#fff {4}px center/{_THUMB}px {_THUMB}px "
                 f"no-repeat;padding-left:{_THUMB + 8}px;text-align:left;"
                 "image-rendering:pixelated}",
                 f".{self._css} .tsw-row{{border-bottom:1px solid #eee}}",
                 f".{self._css} .{FOCUS_CLASS}{{background:#fbe3f0;"
                 f"box-shadow:inset 3px 0 0 {RING_COLOR}}}",
                 f".{self._css} .tsw-cells span{{display:inline-block;overflow:hidden;"
                 "text-overflow:ellipsis;white-space:nowrap;padding-right:8px;"
                 "vertical-align:middle}"]
        if shown.size:
            frame = self.page_frame()
            # Images from an array have no files: no empty path column.
            hidden = _HIDDEN + (("path",) if self.explorer.image_set.paths is None else ())
            columns = [c for c in frame.columns if c not in hidden]
            self.header.value = _cells_html(columns, columns, bold=True)
            for k, (row, i) in enumerate(zip(self.rows, shown.tolist())):
                pick, cells, remove = row.children
                pick.description = f"#{i}"
                pick.tooltip = f"ring #{i} on the map"
                remove.tooltip = f"remove #{i} from the selection"
                values = [frame[c].iloc[k] for c in columns]
                cells.value = _cells_html(columns, values)
                rules.append(thumbnail_rule(f"{self._css}-{k}",
                                            self.explorer.thumbnails.data_uri(i, _THUMB)))
        for k, row in enumerate(self.rows):
            row.layout.display = None if k < shown.size else "none"
        self.style.value = f"<style>{''.join(rules)}</style>"
        self._highlight()

    def _guarded(self, action: Callable, *, takes_event: bool = False) -> Callable:
        """A handler whose errors are shown in the explorer's messages, not raised."""
        def handler(event=None):
            try:
                return action(event) if takes_event else action()
            except Exception as error:  # noqa: BLE001 - shown to the user
                self.explorer.model.report(str(error) or type(error).__name__, "error")

        return handler


def _contains(sorted_indices: np.ndarray, index: int) -> bool:
    pos = int(np.searchsorted(sorted_indices, index))
    return pos < sorted_indices.size and int(sorted_indices[pos]) == int(index)


def _text(column: str, value) -> tuple[str, str]:
    """(shown, full) text of a cell: paths by file name, numbers short, missing blank."""
    if value is None or (np.ndim(value) == 0 and bool(pd.isna(value))):
        return "", ""
    full = str(value)
    if column == "path":
        return PurePath(full).name, full
    if isinstance(value, (float, np.floating)):
        return f"{value:.4g}", full
    return full, full


def _cells_html(columns, values, bold: bool = False) -> str:
    spans = []
    for column, value in zip(columns, values):
        shown, full = (str(value), str(value)) if bold else _text(column, value)
        width = _WIDTHS.get(column, _OTHER_WIDTH)
        weight = "font-weight:bold;" if bold else ""
        spans.append(f'<span style="width:{width}px;{weight}" '
                     f'title="{html.escape(full, quote=True)}">{html.escape(shown)}</span>')
    pad = "" if not bold else f"padding-left:{_PICK_WIDTH + 4}px;"
    return (f'<div class="tsw-cells" style="font:12px sans-serif;white-space:nowrap;{pad}">'
            + "".join(spans) + "</div>")
