"""Gallery of the selected images: pages of up to 64 crisp thumbnails in a grid."""

from __future__ import annotations

import html

import ipywidgets as widgets
import numpy as np

__all__ = ["Gallery"]


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
        self.html = widgets.HTML("")
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
            self.html,
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

    def _render(self, chosen: np.ndarray, prefix: str) -> None:
        self.shown = chosen
        paged = self.selection.size > self.max_images
        self.resample_button.disabled = not paged
        self.previous_button.disabled = not paged or self.page == 0
        self.next_button.disabled = not paged or self.page >= self.n_pages - 1
        if chosen.size == 0:
            self.caption.value = ""
            self.html.value = ""
            return
        self.caption.value = (
            f'<span style="font:12px sans-serif">{prefix}showing {chosen.size} of '
            f"{self.selection.size} selected</span>"
        )
        cells = []
        for i in chosen.tolist():
            label = "" if self.labels is None else f" · {self.labels[i]}"
            title = html.escape(f"#{i}{label}", quote=True)
            uri = self.thumbnails.data_uri(i, self.size)
            cells.append(
                f'<img src="{uri}" title="{title}" width="{self.size}" height="{self.size}" '
                'style="image-rendering:pixelated;object-fit:contain;margin:1px;'
                'border:1px solid #ddd">'
            )
        self.html.value = (
            f'<div style="display:flex;flex-wrap:wrap;max-width:{8 * (self.size + 4)}px">'
            + "".join(cells) + "</div>"
        )
