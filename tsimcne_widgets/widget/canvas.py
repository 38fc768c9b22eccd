"""The Bokeh map canvas: a datashader raster, hover card, lasso/box events.

Pure numpy + Bokeh + the renderer: no torch, no ipywidgets.  The canvas owns
the Bokeh figure and turns browser events (``SelectionGeometry``,
``MouseMove``, ``RangesUpdate``, ``Reset``) into plain-Python calls on
handlers the :class:`~tsimcne_widgets.widget.explorer.Explorer` sets.  All its
methods must run on the kernel's event loop thread (Bokeh documents are not
thread-safe).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
from bokeh import events
from bokeh.models import (
    BoxSelectTool,
    ColorBar,
    ColumnDataSource,
    CustomJS,
    Div,
    Label,
    LassoSelectTool,
    Legend,
    LegendItem,
    LinearColorMapper,
    PanTool,
    Range1d,
    ResetTool,
    WheelZoomTool,
)
from bokeh.plotting import figure

from tsimcne_widgets.js import load_js
from tsimcne_widgets.render.palette import MISSING_COLOR, continuous_palette
from tsimcne_widgets.render.raster import Rasterizer, data_range

from .client import MapClient
from .scheduler import kernel_event_loop

__all__ = ["MapCanvas", "fit_ranges", "PROVISIONAL_TEXT"]

PROVISIONAL_TEXT = "provisional view (PCA of 128-D output)"
MAX_DRAG_SECONDS = 30.0

# The frame's offset inside the figure: the card is positioned relative to the figure.
_MIN_BORDER = 8
_CARD_STYLE = {
    "position": "absolute",
    "z-index": "100",
    "pointer-events": "none",
    "background": "white",
    "border": "1px solid #bbb",
    "border-radius": "4px",
    "padding": "6px",
    "box-shadow": "0 2px 8px rgba(0,0,0,0.25)",
}


def fit_ranges(xy, width: int, height: int, pad: float = 0.05):
    """Ranges that frame every finite point with equal units per pixel on both axes.

    Returns
    -------
    (x0, x1), (y0, y1) : tuple of float pairs
    """
    (x0, x1), (y0, y1) = data_range(xy, pad=pad)
    per_pixel = max((x1 - x0) / width, (y1 - y0) / height)
    x_mid, y_mid = (x0 + x1) / 2, (y0 + y1) / 2
    half_w, half_h = per_pixel * width / 2, per_pixel * height / 2
    return (x_mid - half_w, x_mid + half_w), (y_mid - half_h, y_mid + half_h)


class MapCanvas:
    """Bokeh figure showing a 2-D map as a datashader raster.

    Parameters
    ----------
    width, height : int
        Size of the drawing area (the frame) in screen pixels; the raster is
        rendered at exactly this resolution.
    hover_radius : float
        Pointer distance, in screen pixels, within which a point is hovered.

    Attributes
    ----------
    figure : bokeh.plotting.figure
    follow : bool
        Whether the view re-fits the map on every update; a user zoom or pan
        turns it off, the toolbar's reset turns it back on.
    on_polygon : callable or None
        ``on_polygon(polygon)`` with an (M, 2) array in data units, after a
        finished lasso or box selection.
    on_hover : callable or None
        ``on_hover(x, y, sx, sy)`` on pointer moves (throttled).
    on_leave : callable or None
        ``on_leave()`` when the pointer leaves the canvas.
    on_error : callable or None
        ``on_error(exception)`` when a handler raises; browser events must
        never take the kernel-side widget down.
    on_selection : callable or None
        ``on_selection(indices, polygon, action)`` when the browser changed the
        selection itself (maps up to ``client.max_points``; see
        :class:`~tsimcne_widgets.widget.client.MapClient`).
    client : MapClient
        The browser-side hover and selection.
    legend : bokeh.models.Legend
        Shown when the points are coloured by category.
    color_bar : bokeh.models.ColorBar
        Shown instead when they are coloured by a number (its mapper: ``color_mapper``).
    """

    def __init__(self, width: int = 640, height: int = 520, hover_radius: float = 6.0) -> None:
        self.width, self.height = int(width), int(height)
        self.hover_radius = float(hover_radius)
        self.xy: np.ndarray | None = None
        # What the rasterizer colours by: category codes, or values (float, NaN = none).
        self.codes: np.ndarray | None = None
        self.selected: np.ndarray | None = None
        self.rasterizer = Rasterizer(None)
        self.follow = True
        self.x_range, self.y_range = (-1.0, 1.0), (-1.0, 1.0)
        self.on_polygon: Callable[[np.ndarray], object] | None = None
        self.on_hover: Callable[[float, float, float | None, float | None], object] | None = None
        self.on_leave: Callable[[], object] | None = None
        self.on_error: Callable[[BaseException], object] | None = None
        self.on_selection: Callable[[np.ndarray, np.ndarray | None, str], object] | None = None
        self.min_hover_interval = 0.03
        self._last_hover_time = float("-inf")
        self._drag_started: float | None = None
        self._index = None
        self._pending_view: tuple | None = None
        self.render_count = 0
        self._build_figure()
        self._build_color_bar()

    # -- construction --------------------------------------------------------------------
    def _build_figure(self) -> None:
        self.lasso_tool = LassoSelectTool(continuous=False, renderers=[])
        self.box_tool = BoxSelectTool(continuous=False, renderers=[])
        wheel = WheelZoomTool()
        fig = figure(
            frame_width=self.width,
            frame_height=self.height,
            # The browser's own view changes need not travel back: the kernel learns the
            # view from RangesUpdate.  Synced, every wheel notch or pan frame sent two
            # range messages first, and jupyter_bokeh's combine_events sends one message
            # per kernel idle cycle, so RangesUpdate (and the new raster) came ~0.2 s late.
            x_range=Range1d(*self.x_range, syncable=False),
            y_range=Range1d(*self.y_range, syncable=False),
            tools=[PanTool(), wheel, self.lasso_tool, self.box_tool, ResetTool()],
            # On the right every tool stays visible; above, Bokeh folds some of
            # them (reset among them) into an overflow menu.
            toolbar_location="right",
            active_drag=self.lasso_tool,
            active_scroll=wheel,
            output_backend="canvas",
            min_border=_MIN_BORDER,
            # BokehJS sends a wheel zoom's RangesUpdate when it leaves level-of-detail mode:
            # with lod_interval=0 on the first frame after the notch (defaults: ~0.7 s).
            # request_view draws only the last of a burst; no glyph here is decimated.
            lod_interval=0,
            lod_timeout=40,
        )
        fig.xaxis.visible = False
        fig.yaxis.visible = False
        fig.grid.visible = False
        fig.toolbar.logo = None
        # Not synced back: jupyter_bokeh echoed every raster to the kernel (50-70 kB).
        self.source = ColumnDataSource(self._image_columns(self._blank()), syncable=False)
        fig.image_rgba(image="image", x="x", y="y", dw="dw", dh="dh", source=self.source)
        self.source.js_on_change("data", CustomJS(
            args={"source": self.source, "x_range": fig.x_range, "y_range": fig.y_range},
            code=load_js("follow.js")))
        self.status_label = Label(
            x=8, y=self.height - 22, x_units="screen", y_units="screen", text="",
            text_font_size="12px", text_color="#555", background_fill_color="white",
            background_fill_alpha=0.8, visible=False,
        )
        fig.add_layout(self.status_label)
        self.legend = Legend(items=[], location="top_left", label_text_font_size="11px",
                             glyph_height=12, glyph_width=12, spacing=1, padding=4)
        fig.add_layout(self.legend, "right")
        self._legend_renderers = []
        self.card = Div(text="", visible=False, styles=dict(_CARD_STYLE))
        fig.elements = [self.card]
        fig.on_event(events.SelectionGeometry, self._guard(self._selection_event))
        fig.on_event(events.MouseMove, self._guard(self._mouse_move_event))
        fig.on_event(events.MouseLeave, self._guard(lambda event: self._leave()))
        fig.on_event(events.RangesUpdate, self._guard(self._ranges_event))
        fig.on_event(events.Reset, self._guard(lambda event: self.reset_view()))
        # The pointer also moves while a lasso is drawn or the map is panned: no hover
        # cards then, or one would pop up under the lasso and stay after it.
        fig.on_event(events.PanStart, self._guard(lambda event: self._drag(True)))
        fig.on_event(events.PanEnd, self._guard(lambda event: self._drag(False)))
        self.figure = fig
        self.client = MapClient(fig, self.card, self.width, self.height, self.hover_radius,
                                _MIN_BORDER, _CARD_STYLE, guard=self._guard)
        self.client.on_view = self.set_view
        self.client.on_selection = lambda *args: self.on_selection and self.on_selection(*args)

    def _build_color_bar(self) -> None:
        self.color_mapper = LinearColorMapper(palette=continuous_palette(), low=0.0, high=1.0,
                                              nan_color=MISSING_COLOR)
        # Below, horizontal: on the side Bokeh turns the title on end, into the help line.
        self.color_bar = ColorBar(color_mapper=self.color_mapper, visible=False, height=10,
                                  orientation="horizontal", padding=6, title_text_font_size="11px",
                                  title_text_font_style="normal", major_label_text_font_size="11px")
        self.figure.add_layout(self.color_bar, "below")

    def _guard(self, handler):
        def guarded(event):
            try:
                handler(event)
            except Exception as error:  # noqa: BLE001 - shown in the widget instead
                if self.on_error is None:
                    raise
                self.on_error(error)

        return guarded

    def _blank(self) -> np.ndarray:
        return np.zeros((1, 1), dtype=np.uint32)

    def _image_columns(self, image: np.ndarray, follow: bool = False) -> dict:
        (x0, x1), (y0, y1) = self.x_range, self.y_range
        return {"image": [image], "x": [x0], "y": [y0], "dw": [x1 - x0], "dh": [y1 - y0],
                "follow": [bool(follow)]}

    # -- state ---------------------------------------------------------------------------
    def set_map(self, xy) -> None:
        """Show a new map (N×2, NaN rows are not drawn) and redraw."""
        xy = None if xy is None else np.asarray(xy, dtype=np.float32)
        if xy is not None and (xy.ndim != 2 or xy.shape[1] != 2):
            raise ValueError(f"the map must be an (N, 2) array, got shape {xy.shape}")
        self.xy = xy
        self._index = None
        self.client.set_points(xy)
        if self.follow:
            self._fit()
        self.redraw()

    def set_colors(self, categories: Sequence[str] | None, codes=None, palette=None) -> None:
        """Colour points by category (``codes`` index ``categories``), or all alike (None)."""
        if categories is None:
            self.rasterizer, self.codes = Rasterizer(None), None
        else:
            self.rasterizer = Rasterizer(list(categories), palette=palette)
            self.codes = np.asarray(codes, dtype=np.int32)
        self._update_legend()
        self.redraw()

    def set_values(self, values, value_range=None, title: str = "") -> None:
        """Colour points by a number through the colormap, with a colour bar instead of the legend.

        Parameters
        ----------
        values : array_like of float, shape (N,)
            One value per point; NaN (or inf) draws it gray.
        value_range : (float, float) or None
            The colormap's ends; None takes the smallest and largest finite value.
        title : str
            The colour bar's title (e.g. the column's name).
        """
        values = np.asarray(values, dtype=np.float64)
        if self.xy is not None and values.shape != (len(self.xy),):
            raise ValueError(f"need one value per point ({len(self.xy)}), got {values.shape}")
        if value_range is None:
            finite = values[np.isfinite(values)]
            value_range = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
        low, high = float(value_range[0]), float(value_range[1])
        self.rasterizer, self.codes = Rasterizer(None, value_range=(low, high)), values
        self.color_mapper.update(low=low, high=high)
        self.color_bar.title = str(title)
        self._update_legend()
        self.redraw()

    def set_coloring(self, coloring) -> None:
        """Colour points as a :class:`~tsimcne_widgets.widget.coloring.Coloring` says."""
        if coloring.kind == "continuous":
            self.set_values(coloring.values, coloring.value_range, coloring.title)
        else:
            self.set_colors(coloring.categories, coloring.codes)

    def set_selected(self, indices) -> None:
        """Highlight these points (indices); empty or None highlights none."""
        indices = None if indices is None else np.asarray(indices, dtype=np.int64)
        self.selected = indices if indices is not None and indices.size else None
        self.client.push_selection(indices)
        self.redraw()

    def set_point_info(self, images, labels=None, metadata=None, thumb_size: int = 160) -> None:
        """Thumbnails, labels and metadata for hover cards drawn in the browser."""
        self.client.set_point_info(images, labels, metadata, thumb_size)
        self.client.set_points(self.xy)

    def set_status(self, text: str | None) -> None:
        """Show ``text`` in the top-left corner of the map (None or "" hides it)."""
        self.status_label.text = text or ""
        self.status_label.visible = bool(text)

    def _update_legend(self) -> None:
        colors = self.rasterizer.colors
        old = self._legend_renderers
        for renderer in old:
            if renderer in self.figure.renderers:
                self.figure.renderers.remove(renderer)
        items, renderers = [], []
        for name, color in colors.items():
            # A single NaN point draws nothing on the map but gives the legend its
            # swatch (a glyph with no data at all gets an empty legend entry).
            renderer = self.figure.scatter(x=[np.nan], y=[np.nan], marker="square", size=10,
                                           fill_color=color, line_color=color)
            renderers.append(renderer)
            items.append(LegendItem(label=name, renderers=[renderer]))
        self._legend_renderers = renderers
        self.legend.items = items
        self.legend.visible = bool(items)
        self.color_bar.visible = self.rasterizer.value_range is not None

    # -- view ----------------------------------------------------------------------------
    @property
    def units_per_pixel(self) -> tuple[float, float]:
        """Data units per screen pixel along x and y in the current view."""
        (x0, x1), (y0, y1) = self.x_range, self.y_range
        return (x1 - x0) / self.width, (y1 - y0) / self.height

    def _fit(self) -> None:
        if self.xy is None:
            return
        x_range, y_range = fit_ranges(self.xy, self.width, self.height)
        self.x_range = (float(x_range[0]), float(x_range[1]))
        self.y_range = (float(y_range[0]), float(y_range[1]))

    def reset_view(self) -> None:
        """Follow the map again: fit every point and redraw."""
        self.follow = True
        self._fit()
        self.redraw()

    def set_view(self, x_range, y_range) -> None:
        """Show this window (a user zoom or pan): stop following and redraw at full resolution."""
        x0, x1 = sorted(float(v) for v in x_range)
        y0, y1 = sorted(float(v) for v in y_range)
        if not all(np.isfinite((x0, x1, y0, y1))) or x1 <= x0 or y1 <= y0:
            return
        self.follow = False
        self.x_range, self.y_range = (x0, x1), (y0, y1)
        self.redraw()

    def request_view(self, x_range, y_range) -> None:
        """:meth:`set_view` on the event loop's next turn inside a kernel (at once without
        a running loop): of a burst of views already waiting, only the last is drawn."""
        loop = kernel_event_loop()
        if loop is None:
            self.set_view(x_range, y_range)
            return
        waiting, self._pending_view = self._pending_view is not None, (x_range, y_range)
        if not waiting:
            loop.call_soon(self._guard(lambda _: self._draw_pending_view()), None)

    def _draw_pending_view(self) -> None:
        view, self._pending_view = self._pending_view, None
        if view is not None:
            self.set_view(*view)

    def redraw(self) -> None:
        """Rasterise the map for the current view and send it to the browser.

        While following, the new view travels with the raster (see
        ``js/follow.js``); the figure's ranges are set afterwards for Python's
        side of the document, which the browser then already shows.
        """
        if self.xy is None or len(self.xy) == 0 or not np.isfinite(self.xy).all(axis=1).any():
            self.source.data = self._image_columns(self._blank())
            return
        image = self.rasterizer.render(
            self.xy,
            self.codes,
            x_range=self.x_range,
            y_range=self.y_range,
            width=self.width,
            height=self.height,
            selected=self.selected,
        )
        self.source.data = self._image_columns(image, follow=self.follow)
        if self.follow:
            self.figure.x_range.update(start=self.x_range[0], end=self.x_range[1])
            self.figure.y_range.update(start=self.y_range[0], end=self.y_range[1])
        self.render_count += 1

    # -- hover ---------------------------------------------------------------------------
    def nearest(self, x: float, y: float) -> int | None:
        """The point under the pointer at data position (x, y), or None.

        A point counts when it lies within :attr:`hover_radius` screen pixels,
        measured with the current view's scale on each axis.
        """
        if self.xy is None or len(self.xy) == 0:
            return None
        if self._index is None:
            from tsimcne_widgets.render.spatial import SpatialIndex

            self._index = SpatialIndex(self.xy)
        per_x, per_y = self.units_per_pixel
        found = self._index.nearest(x, y, radius=self.hover_radius * max(per_x, per_y))
        if found is None:
            return None
        dx = (float(self.xy[found, 0]) - x) / per_x
        dy = (float(self.xy[found, 1]) - y) / per_y
        return found if dx * dx + dy * dy <= self.hover_radius ** 2 else None

    def show_card(self, html: str, sx: float | None, sy: float | None,
                  size: tuple[float, float] = (200, 240)) -> None:
        """Show the hover card near the pointer.

        Parameters
        ----------
        html : str
            Card content (already escaped).
        sx, sy : float or None
            Pointer position in screen pixels from the frame's top-left corner
            (as in Bokeh's ``MouseMove`` event); None centres the card.
        size : (float, float)
            Estimated card width and height, to keep it inside the frame.
        """
        card_w, card_h = size
        sx = self.width / 2 if sx is None else float(sx)
        sy = self.height / 2 if sy is None else float(sy)
        # Put the card on whichever side of the pointer has room.
        left = sx + 16 if sx + 16 + card_w < self.width else max(0.0, sx - 16 - card_w)
        top = sy + 16 if sy + 16 + card_h < self.height else max(0.0, sy - 16 - card_h)
        styles = dict(_CARD_STYLE, left=f"{left + _MIN_BORDER:.0f}px",
                      top=f"{top + _MIN_BORDER:.0f}px")
        self.card.update(text=html, styles=styles, visible=True)

    def hide_card(self) -> None:
        """Hide the hover card."""
        if self.card.visible:
            self.card.visible = False

    # -- browser events ------------------------------------------------------------------
    def _selection_event(self, event) -> None:
        if not getattr(event, "final", True):
            return
        self._drag(False)
        polygon = geometry_to_polygon(event.geometry)
        if polygon is not None and self.on_polygon is not None:
            self.on_polygon(polygon)

    def _drag(self, dragging: bool) -> None:
        self._drag_started = time.monotonic() if dragging else None
        self._leave()

    @property
    def dragging(self) -> bool:
        """bool : Whether a drag (lasso, box, pan) is in progress; hovers are ignored then."""
        # A lost PanEnd must not disable hovering for good.
        started = self._drag_started
        return started is not None and time.monotonic() - started < MAX_DRAG_SECONDS

    def _mouse_move_event(self, event) -> None:
        if self.dragging:
            return
        now = time.monotonic()
        if now - self._last_hover_time < self.min_hover_interval:
            return
        self._last_hover_time = now
        if self.on_hover is not None:
            self.on_hover(event.x, event.y, event.sx, event.sy)

    def _leave(self) -> None:
        self.hide_card()
        if self.on_leave is not None:
            self.on_leave()

    def _ranges_event(self, event) -> None:
        self.request_view((event.x0, event.x1), (event.y0, event.y1))


def geometry_to_polygon(geometry: dict) -> np.ndarray | None:
    """Polygon (M×2, data units) of a Bokeh ``SelectionGeometry`` geometry dict.

    Lasso (``type == "poly"``) gives its vertices, a box (``"rect"``) its four
    corners; other geometries (point, span) give None.
    """
    kind = geometry.get("type")
    if kind == "poly":
        xs = np.asarray(geometry.get("x", []), dtype=np.float64)
        ys = np.asarray(geometry.get("y", []), dtype=np.float64)
        if xs.shape != ys.shape:
            return None
        return np.column_stack([xs, ys])
    if kind == "rect":
        x0, x1 = geometry["x0"], geometry["x1"]
        y0, y1 = geometry["y0"], geometry["y1"]
        return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)
    return None
