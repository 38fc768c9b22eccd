"""A t-SimCNE map as ONE self-contained HTML file: hover thumbnails, lasso, CSV download.

The page embeds BokehJS itself (``bokeh.resources.INLINE``), every thumbnail in sprite
sheets (:mod:`tsimcne_widgets.render.atlas`) and all interactivity as CustomJS, so it opens
offline, by e-mail or from a USB stick, with no kernel and no server.  Hover cards,
lasso/box/click selection and the gestures are the live widget's own browser code
(``js/lib_map.js`` with ``params.static``), so the page behaves as the widget does.
"""

from __future__ import annotations

import html
import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .atlas import point_text

__all__ = ["to_html"]

# Longer legends run off the page; colours still tell the clusters apart.
_MAX_LEGEND_ITEMS = 40
_FRAME_PIXELS = 580
# The frame's offset inside the figure (nothing above or left of it): lib_map.js places
# the card and the count line relative to the figure.
_BORDER = 8
_CARD_STYLE = {"position": "absolute", "z-index": "100", "pointer-events": "none",
               "background": "white", "border": "1px solid #bbb", "border-radius": "4px",
               "padding": "6px", "box-shadow": "0 2px 8px rgba(0,0,0,0.25)"}


class _ShownImages:
    """The shown images in sample order, read page by page when the atlas is encoded (a
    copy of a 20k sample of large images would hold them all in memory at once)."""

    def __init__(self, images: np.ndarray, shown: np.ndarray, cache, cell: int) -> None:
        self.images, self.shown, self.cache, self.cell = images, shown, cache, cell

    def __len__(self) -> int:
        return len(self.shown)

    def __getitem__(self, part: slice) -> list[np.ndarray]:
        return [self._one(int(i)) for i in self.shown[part]]

    def _one(self, i: int) -> np.ndarray:
        if self.cache is None:
            return self.images[i]
        from PIL import Image

        # From the source file when it has more detail than the array.
        return np.asarray(Image.open(io.BytesIO(self.cache.png_bytes(i, self.cell))).convert("RGB"))


def _point_size(n: int) -> float:
    # Big enough to hover at a few hundred points, small enough not to blot out 20k.
    return float(np.clip(9.0 - 1.5 * np.log10(max(n, 1)), 3.0, 8.0))


def _as_text(values: Sequence) -> list[str]:
    return ["" if text is None else text for text in map(point_text, values)]


def _any_larger_file(paths: Sequence[str | None], shown: np.ndarray, native: int) -> bool:
    """Whether some shown image's source file has more detail than the array (headers only)."""
    from PIL import Image

    for i in shown:
        if paths[i]:
            try:
                with Image.open(paths[i]) as source:
                    if max(source.size) > native:
                        return True
            except (OSError, ValueError):
                pass
    return False


def to_html(path: str | os.PathLike, xy: object, labels: Sequence | None, images: np.ndarray | None,
            paths: Sequence[str] | None = None, metadata: pd.DataFrame | None = None,
            title: str = "t-SimCNE map", max_points: int = 20000, random_state: int | None = 0,
            thumb_size: int = 96, overwrite: bool = False) -> Path:
    """Write an interactive, self-contained HTML page of the map.

    The page has a scatter plot coloured by label (with a legend) and the live widget's
    browser side (``js/lib_map.js``): a hover card with each point's thumbnail, label, index
    and metadata (as escaped text), lasso, box and click selection with the gestures
    (shift adds, alt subtracts, Esc clears, Ctrl/⌘+Z undoes, double-click zooms to the
    selection), a selected-count line, a "Copy indices" and a "Download CSV" button.
    Everything works offline with no kernel: BokehJS is inlined, thumbnails are sprite
    sheets embedded as data URIs (:mod:`tsimcne_widgets.render.atlas`), the rest CustomJS.

    Parameters
    ----------
    path : str or os.PathLike
        Destination ``.html`` file; its folder must exist.
    xy : array-like, shape (N, 2)
        Map coordinates (finite).
    labels : sequence of length N or None
        Category of each point (colours and legend).
    images : numpy.ndarray, uint8 (N, H, W, 3), or None
        Thumbnails; None leaves the card without a picture.
    paths : sequence of str, optional
        Source files: thumbnails are decoded from them when they are larger than the array.
    metadata : pandas.DataFrame, optional
        N rows; the first 8 columns show on the card, all of them go into the CSV.
    title : str
        Page and header title (shown as text).
    max_points : int, default 20000
        Larger maps are shown as a random sample of this many points, which the subtitle
        states ("showing 20,000 of N points, random sample"); keeps the file and the page
        responsive (each thumbnail adds a few KB).
    random_state : int or None, default 0
        Seed of that sample.
    thumb_size : int, default 96
        Displayed thumbnail size in CSS pixels. Images smaller than this are stored at
        their own size (at most 96 px) and enlarged by the browser with sharp pixels;
        source files larger than the array are read at this size (at most 96 px).
    overwrite : bool, default False
        Replace an existing file.

    Returns
    -------
    pathlib.Path
        The written file (written atomically: no partial file on failure).
    """
    from bokeh.embed import file_html
    from bokeh.layouts import column, row
    from bokeh.core.properties import value as fixed_value
    from bokeh.models import (BoxSelectTool, Button, ColumnDataSource, CustomJS, Div,
                              LassoSelectTool, Legend, LegendItem, PanTool, Range1d, ResetTool,
                              SaveTool, WheelZoomTool)
    from bokeh.plotting import figure
    from bokeh.resources import INLINE
    from bokeh.transform import factor_cmap

    from tsimcne_widgets.io.atomic import atomic_write_bytes
    from tsimcne_widgets.io.tables import FORMULA_PREFIXES
    from tsimcne_widgets.js import load_js
    from .atlas import COLUMNS, HELP, MAX_CELL, META_LINES, PAGE_SIZE, atlas_rows, wire_map_events
    from .palette import default_palette
    from .thumbs import ThumbnailCache

    path = Path(path)
    xy_arr = np.asarray(xy, dtype=np.float64)
    if xy_arr.ndim != 2 or xy_arr.shape[1] != 2:
        raise ValueError(f"xy must have shape (N, 2), got {xy_arr.shape}")
    n = xy_arr.shape[0]
    if n == 0:
        raise ValueError("xy is empty: there is no map to export")
    if not np.isfinite(xy_arr).all():
        raise ValueError("xy contains NaN or infinite values; export a finished map")
    for name, value in (("labels", labels), ("paths", paths), ("metadata", metadata),
                        ("images", images)):
        if value is not None and len(value) != n:
            raise ValueError(f"{name} has {len(value)} rows but xy has {n}")
    if int(max_points) < 1:
        raise ValueError(f"max_points must be >= 1, got {max_points}")
    if int(thumb_size) < 8:
        raise ValueError(f"thumb_size must be at least 8 pixels, got {thumb_size}")
    thumb_size = int(thumb_size)

    if n > max_points:
        rng = np.random.default_rng(random_state)
        shown = np.sort(rng.choice(n, size=int(max_points), replace=False))
        subtitle = (f"showing {shown.size:,} of {n:,} points, random sample "
                    f"(random_state={random_state})")
    else:
        shown = np.arange(n)
        subtitle = f"{n:,} points"

    label_text = (_as_text(np.asarray(labels, dtype=object)[shown]) if labels is not None
                  else [""] * shown.size)
    data: dict[str, object] = {
        "x": xy_arr[shown, 0],
        "y": xy_arr[shown, 1],
        "index": shown.astype(np.int64),
        "label": label_text,
    }
    meta_names: list[str] = []
    if metadata is not None:
        for k, column_name in enumerate(metadata.columns):
            # Neutral field names: a user column name could clash with x, y, index, label.
            data[f"meta_{k}"] = _as_text(metadata.iloc[shown, k].tolist())
            meta_names.append(str(column_name))
    # lib_map.js reads the coordinates from `points`; the other columns are for the CSV.
    # x and y stay float64 so that the CSV has the exact coordinates.
    points = ColumnDataSource(data)
    if images is None:
        # The card still needs its texts, which travel with the sheets: blank 1-px cells.
        images, paths = np.full((n, 1, 1, 3), 238, dtype=np.uint8), None
    images = np.asarray(images)
    native = max(images.shape[1:3])
    larger = paths is not None and _any_larger_file(paths, shown, native)
    cell = min(thumb_size if larger else native, MAX_CELL)
    view = _ShownImages(images, shown, ThumbnailCache(images, paths, max_items=1)
                        if larger else None, cell)
    # Every page up front: no kernel will answer a page request.
    atlas = ColumnDataSource(atlas_rows(
        view, range(-(-shown.size // PAGE_SIZE)), cell=cell, index=shown,
        labels=None if labels is None else label_text,
        metadata=None if metadata is None else metadata.iloc[shown].reset_index(drop=True)))

    categories = sorted(set(label_text))
    palette = default_palette(max(len(categories), 1))
    # A square frame with fixed, equal-span ranges keeps the map's aspect ratio. (Bokeh's
    # match_aspect re-fits the ranges on every re-layout, e.g. when the selection count
    # text changes, which made the view jump after each lasso.)
    (x_lo, x_hi), (y_lo, y_hi) = [(float(v.min()), float(v.max())) for v in xy_arr[shown].T]
    half_span = 0.54 * max(x_hi - x_lo, y_hi - y_lo, 1e-9)
    x_mid, y_mid = (x_lo + x_hi) / 2, (y_lo + y_hi) / 2
    # As the live map: the select tools only report their geometry (no renderers), and
    # lib_map.js does the hit test; the toolbar sits right so the frame starts at _BORDER.
    lasso = LassoSelectTool(continuous=False, renderers=[])
    box = BoxSelectTool(continuous=False, renderers=[])
    wheel = WheelZoomTool()
    plot = figure(frame_width=_FRAME_PIXELS, frame_height=_FRAME_PIXELS,
                  x_range=Range1d(x_mid - half_span, x_mid + half_span),
                  y_range=Range1d(y_mid - half_span, y_mid + half_span),
                  tools=[PanTool(), wheel, lasso, box, ResetTool(), SaveTool()],
                  active_drag=lasso, active_scroll=wheel, output_backend="webgl",
                  toolbar_location="right", min_border=_BORDER)
    plot.xaxis.visible = plot.yaxis.visible = False
    plot.grid.visible = False
    plot.toolbar.logo = None
    # The highlight layer marks the selection; Bokeh's own selection styling stays off.
    plot.scatter(x="x", y="y", source=points, size=_point_size(shown.size), alpha=0.75,
                 line_color=None, selection_alpha=0.75, nonselection_alpha=0.75,
                 color=factor_cmap("label", palette=palette, factors=categories))
    if labels is not None and len(categories) <= _MAX_LEGEND_ITEMS:
        items = []
        for category, colour in zip(categories, palette):
            stand_in = plot.scatter(x=[np.nan], y=[np.nan], color=colour, size=8)
            items.append(LegendItem(label=fixed_value(category or "(no label)"),
                                    renderers=[stand_in]))
        legend = Legend(items=items, location="top_left", label_text_font_size="9pt",
                        background_fill_alpha=0.7)
        plot.add_layout(legend, "right")
    elif labels is not None:
        subtitle += f"; {len(categories)} labels (too many for a legend: hover to read them)"

    empty = np.zeros(0)
    highlight = ColumnDataSource({"x": empty, "y": empty})
    ring = ColumnDataSource({"x": [], "y": [], "index": []})
    plot.scatter("x", "y", source=highlight, size=5, fill_alpha=0, line_color="#111",
                 line_alpha=0.85, line_width=1)
    card = Div(text="", visible=False, styles=dict(_CARD_STYLE))
    # lib_map.js rewrites this line (count and gestures) on every selection.
    info = Div(text=f'<span class="tsw-map-count">0 selected</span> '
                    f'<span style="color:#777">· {html.escape(HELP)}</span>',
               disable_math=True, css_classes=["tsw-map-info"], styles={
                   "position": "absolute", "left": f"{_BORDER + 4}px",
                   # Two lines: the help line is wider than the frame.
                   "top": f"{_BORDER + _FRAME_PIXELS - 34}px", "font": "11px sans-serif",
                   "max-width": f"{_FRAME_PIXELS - 16}px", "pointer-events": "none",
                   "background": "rgba(255,255,255,0.8)", "padding": "1px 4px"})
    plot.elements = [card, info]
    params = {"width": _FRAME_PIXELS, "height": _FRAME_PIXELS,
              "radius": max(6.0, _point_size(shown.size)), "thumb": thumb_size,
              "page_size": PAGE_SIZE, "cols": COLUMNS, "border": _BORDER,
              "card_style": dict(_CARD_STYLE), "help": HELP, "static": True,
              "meta_lines": 0 if metadata is None else min(len(meta_names), META_LINES)}
    wire_map_events(plot, {
        "points": points, "highlight": highlight, "atlas": atlas, "ring": ring,
        "channel": ColumnDataSource({"seq": []}), "card": card, "info": info,
        "sync": ColumnDataSource({"indices": [np.zeros(0, dtype=np.int32)], "ack": [0]}),
        "x_range": plot.x_range, "y_range": plot.y_range, "params": params}, [])

    header = Div(text=(f"<h2 style='margin:4px 0'>{html.escape(title)}</h2>"
                       f"<div style='color:#555'>{html.escape(subtitle)}. Hover a point for its "
                       "image; the line under the map lists the selection gestures.</div>"),
                 width=900, disable_math=True)
    # The buttons read lib_map.js's selection from points.selected (params.static).
    status = Div(text="Select with the mouse, then copy or download.", width=220, height=40,
                 disable_math=True)
    copy_button = Button(label="Copy indices", width=200)
    copy_button.js_on_event("button_click", CustomJS(args=dict(source=points, info=status),
                                                     code=load_js("lib_selected.js", "copy.js")))
    fields = ["index", "label", "x", "y"] + [f"meta_{k}" for k in range(len(meta_names))]
    header_row = ["index", "label", "x", "y"] + [
        "'" + name if name.startswith(FORMULA_PREFIXES) else name for name in meta_names]
    # Metadata is stored as text for the card; only the columns that were numbers
    # stay unquoted in the CSV.
    text_fields = ["label"] + [
        f"meta_{k}" for k in range(len(meta_names))
        if not (pd.api.types.is_numeric_dtype(metadata.iloc[:, k])
                or pd.api.types.is_bool_dtype(metadata.iloc[:, k]))]
    download_button = Button(label="Download CSV", width=200)
    download_button.js_on_event("button_click", CustomJS(
        args=dict(source=points, info=status, fields=fields, header=header_row,
                  text_fields=text_fields, filename="selection.csv"),
        code=load_js("download.js")))
    layout = column(header, row(plot, column(status, copy_button, download_button)))

    page = file_html(layout, resources=INLINE, title=title)
    return atomic_write_bytes(path, page.encode("utf-8"), overwrite=overwrite)
