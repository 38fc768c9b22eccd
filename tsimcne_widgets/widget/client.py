"""The map's browser-side half: coordinates, thumbnails and selection held by BokehJS.

While a map has at most :data:`CLIENT_MAX_POINTS` points, the browser answers hover,
lasso, box, click and the gestures itself (``tsimcne_widgets/js/lib_map.js``), without a
kernel round trip per mouse move.  This module gives it what it needs and listens:

* the coordinates, as float32 arrays that Bokeh sends as binary buffers, once per map;
* thumbnail sprite sheets (PNG for small images, WebP for larger ones), one page of
  :data:`PAGE_SIZE` images at a time, encoded when the browser first asks for a page, on
  a worker thread (50-250 ms a page), so that the kernel answers a zoom or a lasso
  meanwhile;
* the kernel's selection with the number of the last browser message it reflects, so
  the browser ignores a state it has already moved past;
* the *focused* image (:meth:`MapClient.focus`), drawn as a ring around its point; the
  Delete or Backspace key, with the pointer over the map, removes it from the selection.

The browser tells the kernel its selection (and undo, view changes and page requests)
through one ColumnDataSource, whose change ``jupyter_bokeh`` sends when the kernel is
free.  Larger maps keep the kernel path of :class:`~tsimcne_widgets.widget.canvas.MapCanvas`.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
from bokeh.models import ColumnDataSource, Div

from tsimcne_widgets.render.atlas import (COLUMNS, HELP, META_LINES, PAGE_SIZE, atlas_rows,
                                          encode_page, map_callback, wire_map_events)

from .scheduler import kernel_event_loop

__all__ = ["MapClient", "CLIENT_MAX_POINTS", "PAGE_SIZE", "HELP", "RING_COLOR"]

# Above this many points the kernel answers hover and selection (see benchmarks/browser.py).
CLIENT_MAX_POINTS = 200_000
# The ring around the focused point: a white halo under a magenta line shows on any colour.
RING_COLOR = "#d6007e"
# Events the kernel handles only when it answers hover and selection itself.
KERNEL_PATH_EVENTS = {"mousemove", "mouseleave", "selectiongeometry", "panstart", "panend"}


class MapClient:
    """Browser-side hover and selection of one :class:`MapCanvas` figure.

    Parameters
    ----------
    figure : bokeh.plotting.figure
        The map's figure; the client adds a highlight layer, an info line and callbacks.
    card : bokeh.models.Div
        The hover card (shared with the kernel path).
    width, height : int
        Frame size in screen pixels.
    hover_radius : float
        Pointer distance, in screen pixels, within which a point is hovered.
    border : int
        The frame's offset inside the figure, for placing the card.
    card_style : dict
        CSS of the card.
    guard : callable
        ``guard(handler)`` wraps the handler of browser messages so that its errors
        are reported in the widget, not raised (``MapCanvas._guard``).
    max_points : int
        Largest map answered in the browser.

    Attributes
    ----------
    on_selection : callable or None
        ``on_selection(indices, polygon, action)`` when the browser changed the
        selection: ``action`` is ``"select"`` (``polygon`` an (M, 2) array for a lasso or
        box, else None) or ``"undo"``; ``indices`` is the selection the browser shows
        after it (an undo may stand for several changes the kernel did not hear of one
        by one, so the kernel must end on ``indices``).
    on_view : callable or None
        ``on_view(x_range, y_range)`` when the browser moved the view (double-click).
    on_mode : callable or None
        ``on_mode(active)`` after every map update: whether the browser answers hover and
        selection (:attr:`active`).
    ring : bokeh.models.ColumnDataSource
        ``{x, y, index}``: the focused point, drawn as a ring (empty when none).
    """

    def __init__(self, figure, card: Div, width: int, height: int, hover_radius: float,
                 border: int, card_style: dict, guard: Callable[[Callable], Callable],
                 max_points: int = CLIENT_MAX_POINTS) -> None:
        self.figure = figure
        self.max_points = int(max_points)
        self.images: np.ndarray | None = None
        self.labels = None
        self.metadata = None
        self.thumb_size = 160
        self.on_selection: Callable | None = None
        self.on_view: Callable | None = None
        self.ack = 0
        self.view_ack = 0
        self._page_id: str | None = None  # the browser page whose numbers ack counts
        self.n_points = 0
        self.xy: np.ndarray | None = None
        self._focused: int | None = None
        self._focus_observers: list[Callable[[int | None], object]] = []
        self.on_mode: Callable[[bool], object] | None = None
        # Kernel-path events the canvas subscribed to before making the client.
        self._kernel_events = set(figure.subscribed_events) & KERNEL_PATH_EVENTS
        self._pages_sent: set[int] = set()
        self._pages_pending: set[int] = set()
        self._atlas_generation = 0  # bumped when the images change: older pages are stale
        self._encoder: ThreadPoolExecutor | None = None
        self._guard = guard
        empty = np.zeros(0, dtype=np.float32)
        # Only the channel is synced back: the browser rewrites the others on every
        # gesture, and the kernel must not receive its own coordinates again.
        self.points = ColumnDataSource({"x": empty, "y": empty}, syncable=False)
        self.highlight = ColumnDataSource({"x": empty, "y": empty}, syncable=False)
        self.atlas = ColumnDataSource({"page": [], "sheet": [], "info": []}, syncable=False)
        self.sync = ColumnDataSource({"indices": [np.zeros(0, dtype=np.int32)], "ack": [0]},
                                     syncable=False)
        self.channel = ColumnDataSource({"seq": [], "action": [], "indices": [], "px": [],
                                         "py": [], "pages": [], "vseq": [], "vx": [], "vy": [],
                                         "sid": []})
        self.ring = ColumnDataSource({"x": [], "y": [], "index": []}, syncable=False)
        card.syncable = False
        self.info = Div(text="", visible=False, syncable=False, styles={
            "position": "absolute", "left": f"{border + 4}px",
            "top": f"{border + height - 20}px", "font": "11px sans-serif",
            "background": "rgba(255,255,255,0.8)", "padding": "1px 4px",
            "pointer-events": "none", "white-space": "nowrap"})
        self.info.css_classes = ["tsw-map-info"]
        figure.elements = list(figure.elements) + [self.info]
        figure.scatter("x", "y", source=self.highlight, size=5, fill_alpha=0,
                       line_color="#111", line_alpha=0.85, line_width=1)
        for color, width in (("white", 5), (RING_COLOR, 2.5)):
            figure.scatter("x", "y", source=self.ring, size=20, fill_alpha=0,
                           line_color=color, line_width=width)
        self.params = {"width": int(width), "height": int(height), "radius": float(hover_radius),
                       "thumb": self.thumb_size, "page_size": PAGE_SIZE, "cols": COLUMNS,
                       "border": int(border), "card_style": dict(card_style),
                       "meta_lines": 0, "help": HELP}
        self._callbacks: list = []  # CustomJS callbacks running lib_map.js
        args = {"points": self.points, "highlight": self.highlight, "atlas": self.atlas,
                "channel": self.channel, "sync": self.sync, "card": card, "info": self.info,
                "ring": self.ring,
                "x_range": figure.x_range, "y_range": figure.y_range}
        args = dict(args, params=self.params)
        wire_map_events(figure, args, self._callbacks)
        self.points.js_on_change("data", map_callback("points", args, self._callbacks))
        self.sync.js_on_change("data", map_callback("sync", args, self._callbacks))
        for change in ("streaming", "data"):
            self.atlas.js_on_change(change, map_callback("atlas", args, self._callbacks))
        handle = guard(self._message)
        self.channel.on_change("data", lambda attr, old, new: handle(new))

    # -- kernel side -------------------------------------------------------------------
    @property
    def active(self) -> bool:
        """bool : Whether the browser answers hover and selection for the current map."""
        return self.images is not None and 0 < self.n_points <= self.max_points

    def set_point_info(self, images: np.ndarray, labels=None, metadata=None,
                       thumb_size: int = 160) -> None:
        """What the browser shows on a hover card: thumbnails, labels, metadata.

        Parameters
        ----------
        images : numpy.ndarray of uint8, shape (N, H, W, 3)
        labels : array_like of length N, optional
        metadata : pandas.DataFrame with N rows, optional
            The first 8 columns are shown.
        thumb_size : int
            Displayed image size in CSS pixels.
        """
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(f"images must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
        self.images, self.labels, self.metadata = images, labels, metadata
        self.thumb_size = int(thumb_size)
        meta_lines = 0 if metadata is None else min(len(metadata.columns), META_LINES)
        self._set_params(thumb=self.thumb_size, meta_lines=meta_lines)
        self._pages_sent.clear()
        self._pages_pending.clear()
        self._atlas_generation += 1
        self.atlas.data = {"page": [], "sheet": [], "info": []}

    def _set_params(self, **changes) -> None:
        self.params.update(changes)
        for made in self._callbacks:
            made.args = dict(made.args, params=dict(self.params))

    def set_points(self, xy: np.ndarray | None) -> None:
        """Send a new map's coordinates to the browser (nothing above the threshold)."""
        n = 0 if xy is None else len(xy)
        was_active, self.n_points = self.active, n
        self.xy = None if xy is None else np.asarray(xy)
        if self.active:
            xy = np.asarray(xy, dtype=np.float32)
            self.points.data = {"x": np.ascontiguousarray(xy[:, 0]),
                                "y": np.ascontiguousarray(xy[:, 1])}
        elif was_active or len(self.points.data["x"]):
            empty = np.zeros(0, dtype=np.float32)
            self.points.data = {"x": empty, "y": empty}
        self._show_mode()
        self._draw_ring()

    def _show_mode(self) -> None:
        if self.on_mode is not None:
            self.on_mode(self.active)
        subscribed = set(self.figure.subscribed_events)
        if self.active:
            self.figure.subscribed_events = subscribed - KERNEL_PATH_EVENTS
        else:
            self.figure.subscribed_events = subscribed | self._kernel_events
        if self.images is None or self.n_points == 0:
            self.info.visible = False
            return
        if self.active:
            count = len(self.sync.data["indices"][0])
            text = (f'<span class="tsw-map-count">{count:,} selected</span> '
                    f'<span style="color:#777">· {HELP}</span>')
        else:
            text = (f"{self.n_points:,} points: hover and selection are answered by the kernel "
                    f"(in the browser up to {self.max_points:,})")
        self.info.update(text=text, visible=True)

    def push_selection(self, indices) -> None:
        """Tell the browser the kernel's selection (after every change, from any side)."""
        indices = np.asarray(indices if indices is not None else [], dtype=np.int32)
        self.sync.data = {"indices": [indices], "ack": [self.ack]}

    # -- focus ---------------------------------------------------------------------------
    @property
    def focused(self) -> int | None:
        """int or None : The focused image (ringed on the map), set by :meth:`focus`."""
        return self._focused

    def focus(self, index: int | None) -> None:
        """Ring image ``index`` on the map (None removes the ring) and tell the observers.

        Raises
        ------
        ValueError
            For an index outside the images; the focus stays as it was.
        """
        if index is not None:
            total = len(self.images) if self.images is not None else self.n_points
            if not 0 <= int(index) < total:
                raise ValueError(f"cannot focus image {index}: there are {total} images "
                                 f"(indices 0..{total - 1})")
            index = int(index)
        changed, self._focused = index != self._focused, index
        self._draw_ring()
        if changed:
            for callback in list(self._focus_observers):
                callback(index)

    def observe_focus(self, callback: Callable[[int | None], object]) -> Callable[[], None]:
        """Call ``callback(index or None)`` after every focus change; returns an
        unsubscribe function."""
        self._focus_observers.append(callback)
        return lambda: callback in self._focus_observers and self._focus_observers.remove(callback)

    def _draw_ring(self) -> None:
        i = self._focused
        if i is None or self.xy is None or i >= len(self.xy):
            data = {"x": [], "y": [], "index": []}
        else:
            data = {"x": [float(self.xy[i, 0])], "y": [float(self.xy[i, 1])], "index": [i]}
        self.ring.data = data

    # -- browser messages ---------------------------------------------------------------
    def _message(self, data: dict) -> None:
        """Act on the browser's state (``lib_map.js``'s ``post``): what is new in it only.

        Every message carries the browser's whole state, since jupyter_bokeh keeps only
        the newest change of the channel while the kernel is busy: the last selection
        change (``seq``, ``action``, ``indices`` = the selection it made, ``px``/``py`` its
        polygon), the sprite pages still wanted (``pages``) and the last zoom to the
        selection (``vseq``, ``vx``, ``vy``).  A ``seq`` or ``vseq`` seen before is ignored,
        so the same message twice (jupyter_bokeh runs on_change callbacks twice per
        browser change) or a page request after a selection changes nothing twice.  The
        numbers are the page's own (``sid``): a reloaded page starts again at 1.
        """
        if not data.get("seq"):
            return

        def first(key, default):
            column = data.get(key)
            return column[0] if column else default

        page_id = str(first("sid", ""))
        if page_id != self._page_id:
            self._page_id, self.ack, self.view_ack = page_id, 0, 0

        pages = first("pages", [])
        if len(pages):
            self.send_pages(np.asarray(pages, dtype=np.int64))
        vseq = int(first("vseq", 0))
        if vseq > self.view_ack:
            self.view_ack = vseq
            vx = np.asarray(first("vx", []), dtype=np.float64)
            vy = np.asarray(first("vy", []), dtype=np.float64)
            if self.on_view is not None and vx.size == 2 and vy.size == 2:
                self.on_view(tuple(vx), tuple(vy))
        seq, action = int(data["seq"][0]), str(data["action"][0])
        if seq <= self.ack:
            return
        self.ack = seq
        indices = np.asarray(data["indices"][0], dtype=np.int64)
        if action == "remove":
            # Delete over the map: the browser dropped the ringed image from its selection
            # (``indices`` is the rest) and took the ring away.
            self.focus(None)
            action = "select"
        if action not in ("select", "undo"):
            raise ValueError(f"unknown message from the map's browser code: {action!r}")
        if indices.size and (indices.min() < 0 or indices.max() >= max(self.n_points, 1)):
            raise ValueError("the browser selected points the map does not have; "
                             "re-run the cell that shows the explorer")
        px = np.asarray(first("px", []), dtype=np.float64)
        py = np.asarray(first("py", []), dtype=np.float64)
        polygon = np.column_stack([px, py]) if px.size >= 3 and px.size == py.size else None
        if self.on_selection is not None:
            self.on_selection(indices, polygon, action)
        # The kernel may leave the selection as it was (a repeated state): the browser
        # still needs to hear that its message was handled.
        if int(self.sync.data["ack"][0]) != self.ack:
            self.push_selection(self.sync.data["indices"][0])

    def send_pages(self, pages) -> None:
        """Stream the sprite sheets of these pages to the browser (each page once).

        Inside a kernel the pages are encoded on a worker thread and streamed from the
        event loop when done; without a running loop (a script, a test) at once.
        """
        if self.images is None:
            return
        n_pages = -(-len(self.images) // PAGE_SIZE)
        fresh = sorted({int(p) for p in pages if 0 <= int(p) < n_pages}
                       - self._pages_sent - self._pages_pending)
        if not fresh:
            return
        options = dict(labels=self.labels, metadata=self.metadata)
        loop = kernel_event_loop()
        if loop is None:
            self._stream_pages(fresh, atlas_rows(self.images, fresh, **options))
            return
        if self._encoder is None:
            self._encoder = ThreadPoolExecutor(1, thread_name_prefix="tsimcne-sprites")
        self._pages_pending.update(fresh)
        generation = self._atlas_generation
        future = self._encoder.submit(atlas_rows, self.images, fresh, **options)
        finish = self._guard(lambda _: self._encoded(generation, fresh, future))
        future.add_done_callback(lambda _: loop.call_soon_threadsafe(finish, None))

    def _encoded(self, generation: int, pages: list[int], future: Future) -> None:
        if generation != self._atlas_generation:
            return  # the images changed meanwhile: the browser asks again
        self._pages_pending.difference_update(pages)
        self._stream_pages(pages, future.result())  # an encoding error is reported here

    def _stream_pages(self, pages: list[int], rows: dict) -> None:
        self.atlas.stream(rows)
        self._pages_sent.update(pages)

    def encode_page(self, page: int) -> tuple[str, dict]:
        """Sprite sheet (data URI) and texts of images ``page * PAGE_SIZE ...``
        (:func:`tsimcne_widgets.render.atlas.encode_page`)."""
        return encode_page(self.images, page, labels=self.labels, metadata=self.metadata)
