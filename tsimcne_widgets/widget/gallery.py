"""Gallery of the selected images: pages of up to 64 crisp, clickable thumbnails in a grid.

Each thumbnail is an ipywidgets Button, so a click reaches the kernel
(:meth:`Gallery.on_click`); its picture is the button's CSS background, set by one
``<style>`` block per render (HTML widgets run no script, and data URIs load nothing).
The buttons are made once and reused, page after page.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import ipywidgets as widgets
import numpy as np

from .client import RING_COLOR

__all__ = ["Gallery", "thumbnail_rule", "move_focus_class", "FOCUS_CLASS"]

#: CSS class of the focused thumbnail (and table row): outlined in the map's ring colour.
FOCUS_CLASS = "tsw-focus"
_ids = itertools.count()


def thumbnail_rule(css_class: str, uri: str) -> str:
    """A CSS rule giving elements of class ``css_class`` the picture ``uri`` (a data URI).

    Parameters
    ----------
    css_class : str
        A plain class name (letters, digits, ``-``).
    uri : str
        ``data:image/...;base64,...``: base64 has no quote or bracket to break out of.
    """
    if not uri.startswith("data:image/"):
        raise ValueError("thumbnails must be data:image URIs (nothing may load from elsewhere)")
    return f'.{css_class}{{background-image:url("{uri}") !important}}'


def move_focus_class(items, old: int | None, new: int | None) -> int | None:
    """Move :data:`FOCUS_CLASS` from ``items[old]`` to ``items[new]`` (None: no item);
    returns ``new``.  Only a real move sends anything to the browser."""
    if new != old:
        if old is not None:
            items[old].remove_class(FOCUS_CLASS)
        if new is not None:
            items[new].add_class(FOCUS_CLASS)
    return new


class Gallery:
    """A grid of thumbnails of (a random sample of) the selection.

    Parameters
    ----------
    thumbnails : ThumbnailCache
        Encodes thumbnails on demand; only the shown ones are ever encoded.
    labels : sequence of str or None
        Shown in each image's tooltip.
    max_images : int
        The most images shown at once.
    size : int
        Displayed thumbnail size in CSS pixels.
    random_state : int or None
        Seed of the sample drawn when the selection is larger than ``max_images``.

    Attributes
    ----------
    shown : numpy.ndarray
        The indices shown, in grid order.
    cells : list of ipywidgets.Button
        The thumbnails; ``cells[k]`` shows ``shown[k]`` (the rest are hidden).
    marked : int or None
        The image outlined as focused (see :meth:`mark`).
    """

    def __init__(self, thumbnails, labels=None, max_images: int = 64, size: int = 56,
                 random_state: int | None = 0) -> None:
        self.thumbnails = thumbnails
        self.labels = labels
        self.max_images = int(max_images)
        self.size = int(size)
        self._rng = np.random.default_rng(random_state)
        self.selection = np.empty(0, dtype=np.int64)
        self.shown = np.empty(0, dtype=np.int64)
        self.marked: int | None = None
        self._marked_slot: int | None = None
        self._click_callbacks: list[Callable[[int], object]] = []
        self._css = f"tsw-g{next(_ids)}"
        self.cells: list[widgets.Button] = []
        self.style = widgets.HTML("")
        self.grid = widgets.Box([], layout=widgets.Layout(
            display="flex", flex_flow="row wrap", max_width=f"{8 * (self.size + 4) + 4}px"))
        self.grid.add_class(self._css)
        self.resample_button = widgets.Button(description="Resample", icon="random",
                                              layout=widgets.Layout(width="120px"),
                                              tooltip="Show another random sample")
        self.resample_button.on_click(lambda _: self.resample())
        self.previous_button = widgets.Button(icon="chevron-left", tooltip="Previous page",
                                              layout=widgets.Layout(width="36px"))
        self.next_button = widgets.Button(icon="chevron-right", tooltip="Next page",
                                          layout=widgets.Layout(width="36px"))
        self.previous_button.on_click(lambda _: self.show_page(self.page - 1))
        self.next_button.on_click(lambda _: self.show_page(self.page + 1))
        self.page = 0
        self.caption = widgets.HTML("")
        self.widget = widgets.VBox([
            widgets.HBox([self.caption, self.previous_button, self.next_button,
                          self.resample_button]),
            self.style,
            self.grid,
        ])

    @property
    def n_pages(self) -> int:
        """Pages of ``max_images`` the selection fills (at least 1)."""
        return max(1, -(-self.selection.size // self.max_images))

    def show_page(self, page: int) -> None:
        """Show page ``page`` (0-based, clipped) of the selection in index order."""
        self.page = int(np.clip(page, 0, self.n_pages - 1))
        start = self.page * self.max_images
        self._render(self.selection[start:start + self.max_images],
                     f"page {self.page + 1} of {self.n_pages} · ")

    def show(self, selection) -> None:
        """Show a sample of ``selection`` (indices)."""
        self.selection = np.asarray(selection, dtype=np.int64)
        self.page = 0
        self.resample()

    def resample(self) -> None:
        """Draw a new random sample of the selection (all of it when it fits)."""
        chosen = self.selection
        if chosen.size > self.max_images:
            chosen = np.sort(self._rng.choice(chosen, size=self.max_images, replace=False))
        self._render(chosen, "random sample · " if chosen.size < self.selection.size else "")

    def on_click(self, callback: Callable[[int], object], remove: bool = False) -> None:
        """Call ``callback(index)`` when a thumbnail is clicked (``remove`` unregisters it),
        as ``ipywidgets.Button.on_click``."""
        if remove:
            if callback in self._click_callbacks:
                self._click_callbacks.remove(callback)
        else:
            self._click_callbacks.append(callback)

    def click(self, index: int) -> None:
        """Click the thumbnail of image ``index`` (as the user does).

        Raises
        ------
        ValueError
            If image ``index`` is not shown.
        """
        slots = np.flatnonzero(self.shown == int(index))
        if not slots.size:
            raise ValueError(f"image {index} is not in the gallery; it shows "
                             f"{self.shown.size} images of the selection")
        self.cells[int(slots[0])].click()

    def mark(self, index: int | None) -> None:
        """Outline image ``index`` as focused wherever it is shown (None: no outline)."""
        self.marked = None if index is None else int(index)
        slots = np.flatnonzero(self.shown == self.marked) if self.marked is not None else []
        self._marked_slot = move_focus_class(self.cells, self._marked_slot,
                                             int(slots[0]) if len(slots) else None)

    def _clicked(self, slot: int) -> None:
        if slot < self.shown.size:
            index = int(self.shown[slot])
            for callback in list(self._click_callbacks):
                callback(index)

    def _cell(self, slot: int) -> widgets.Button:
        side = f"{self.size + 2}px"
        cell = widgets.Button(description="", layout=widgets.Layout(
            width=side, height=side, margin="1px", padding="0"))
        cell.add_class("tsw-thumb")
        cell.add_class(f"{self._css}-{slot}")
        cell.on_click(lambda _: self._clicked(slot))
        return cell

    def _render(self, chosen: np.ndarray, prefix: str) -> None:
        self.shown = chosen
        paged = self.selection.size > self.max_images
        self.resample_button.disabled = not paged
        self.previous_button.disabled = not paged or self.page == 0
        self.next_button.disabled = not paged or self.page >= self.n_pages - 1
        while len(self.cells) < chosen.size:
            self.cells.append(self._cell(len(self.cells)))
        if len(self.grid.children) != len(self.cells):
            self.grid.children = tuple(self.cells)
        rules = [f".{self._css} .tsw-thumb{{background:#fff center/contain no-repeat;"
                 "image-rendering:pixelated;border:1px solid #ddd;box-shadow:none}",
                 # !important: a clicked button also has the focus, whose outline would win.
                 f".{self._css} .{FOCUS_CLASS}{{outline:3px solid {RING_COLOR} !important;"
                 "outline-offset:-2px !important}"]
        for k, cell in enumerate(self.cells):
            if k < chosen.size:
                i = int(chosen[k])
                label = "" if self.labels is None else f" · {self.labels[i]}"
                cell.tooltip = f"#{i}{label}"
                rules.append(thumbnail_rule(f"{self._css}-{k}",
                                            self.thumbnails.data_uri(i, self.size)))
            cell.layout.display = None if k < chosen.size else "none"
        self.style.value = f"<style>{''.join(rules)}</style>" if chosen.size else ""
        self.mark(self.marked)
        if chosen.size == 0:
            self.caption.value = ""
            return
        self.caption.value = (
            f'<span style="font:12px sans-serif">{prefix}showing {chosen.size} of '
            f"{self.selection.size} selected</span>"
        )
