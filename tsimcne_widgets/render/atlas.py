"""Thumbnail sprite sheets and hover-card texts for the browser-side map (``js/lib_map.js``).

One copy for both users of ``lib_map.js``: the live widget
(:class:`~tsimcne_widgets.widget.client.MapClient`, which encodes a page when the browser
asks for it) and the static HTML export (:func:`~tsimcne_widgets.render.html.to_html`,
which embeds every page up front).  Pure numpy/pandas/PIL (Bokeh only inside the wiring functions).

A page holds :data:`PAGE_SIZE` images on a sheet :data:`COLUMNS` cells wide; image ``k``
of the page sits in cell ``(k % COLUMNS, k // COLUMNS)``.  Texts are raw: the browser
escapes them when it builds the card.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Sequence

import numpy as np
import pandas as pd

__all__ = ["PAGE_SIZE", "COLUMNS", "META_LINES", "HELP", "cell_size", "encode_page",
           "atlas_rows", "point_text"]

PAGE_SIZE = 64
COLUMNS = 8
MAX_CELL = 96
# Small images are shown enlarged with sharp pixels: lossy sheets would blur them.
LOSSLESS_CELL = 32
META_LINES = 8
HELP = ("drag: lasso · shift+drag add · alt+drag subtract · click: pick · "
        "double-click: zoom to selection · Esc clear · Ctrl/⌘+Z undo · Del remove ringed")


def cell_size(images) -> int:
    """Sheet cell size in pixels for images of this shape (their longest side, at most 96)."""
    return int(min(max(np.asarray(images[0]).shape[:2]), MAX_CELL))


def point_text(value) -> str | None:
    """A label or metadata value as card text; None for a missing value (None, NaN)."""
    if value is None or (np.ndim(value) == 0 and pd.isna(value)):
        return None
    return str(value)


def encode_page(images: Sequence, page: int, labels=None, metadata=None,
                index: Sequence[int] | None = None, cell: int | None = None) -> tuple[str, dict]:
    """Sprite sheet (data URI) and texts of images ``page * PAGE_SIZE ...``.

    Parameters
    ----------
    images : sequence of uint8 (H, W, 3) arrays
        Anything ``len()``-able whose slices give such arrays (an array, or a lazy view).
    page : int
    labels : sequence, optional
        Label per image (same positions as ``images``).
    metadata : pandas.DataFrame, optional
        One row per image; the first :data:`META_LINES` columns are shown.
    index : sequence of int, optional
        The number the card shows for each image (the row in the full data set when
        ``images`` is a sample); by default the position itself.
    cell : int, optional
        Cell size; by default :func:`cell_size`.

    Returns
    -------
    sheet : str
        ``data:image/png`` (cells up to 32 px, exact pixels) or ``data:image/webp``.
    info : dict
        ``cell`` (cell size in px), ``w``, ``h`` (sheet size), ``labels`` and ``meta``
        (per image, a list of [key, value] text pairs), and ``index`` when given.
    """
    from PIL import Image

    first = int(page) * PAGE_SIZE
    chunk = images[first:first + PAGE_SIZE]
    cell = cell_size(images) if cell is None else int(cell)
    rows_used = -(-len(chunk) // COLUMNS)
    sheet = Image.new("RGB", (COLUMNS * cell, rows_used * cell), (238, 238, 238))
    for k, array in enumerate(chunk):
        image = Image.fromarray(np.ascontiguousarray(array))
        if max(image.size) > cell:
            image.thumbnail((cell, cell), Image.Resampling.LANCZOS)
        sheet.paste(image, ((k % COLUMNS) * cell, (k // COLUMNS) * cell))
    buffer = io.BytesIO()
    if cell <= LOSSLESS_CELL:
        sheet.save(buffer, format="PNG", compress_level=1)
        kind = "png"
    else:
        sheet.save(buffer, format="WEBP", quality=82)
        kind = "webp"
    uri = f"data:image/{kind};base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
    span = range(first, first + len(chunk))
    meta = [[] for _ in span]
    if metadata is not None and len(metadata.columns):
        columns = list(metadata.columns)[:META_LINES]
        block = metadata.iloc[first:first + len(chunk)][columns]
        meta = [[[str(key), point_text(value)] for key, value in zip(columns, row)]
                for row in block.itertuples(index=False, name=None)]
    info = {"cell": cell, "w": sheet.width, "h": sheet.height,
            "labels": None if labels is None else [point_text(labels[i]) for i in span],
            "meta": meta}
    if index is not None:
        info["index"] = [int(index[i]) for i in span]
    return uri, info


def atlas_rows(images: Sequence, pages, **page_options) -> dict[str, list]:
    """Columns ``{page, sheet, info}`` of the map's ``atlas`` source for these pages.

    ``info`` is JSON text (as ``lib_map.js`` parses it); ``page_options`` go to
    :func:`encode_page`.
    """
    rows: dict[str, list] = {"page": [], "sheet": [], "info": []}
    for page in pages:
        sheet, info = encode_page(images, page, **page_options)
        rows["page"].append(int(page))
        rows["sheet"].append(sheet)
        rows["info"].append(json.dumps(info))
    return rows


# -- wiring lib_map.js to a figure (Bokeh imported when called) --------------------------
# Bokeh event -> the kind onMapEvent() handles.
MAP_EVENTS = (("mousemove", "move"), ("mouseenter", "move"), ("mouseleave", "leave"),
              ("panstart", "panstart"), ("panend", "panend"), ("selectiongeometry", "geometry"),
              ("tap", "tap"), ("doubletap", "doubletap"))


def map_callback(kind: str, args: dict, made: list):
    """A CustomJS running ``lib_map.js`` then ``onMapEvent(kind, cb_obj)``; appended to
    ``made`` (whoever changes ``params`` later rewrites the args of all of them)."""
    from bokeh.models import CustomJS

    from tsimcne_widgets.js import load_js

    code = f"{load_js('lib_map.js')}\nonMapEvent({kind!r}, cb_obj);"
    made.append(CustomJS(args=dict(args), code=code))
    return made[-1]


def wire_map_events(figure, args: dict, made: list) -> None:
    """Hand the figure's pointer events and view changes to ``lib_map.js``.

    ``args`` are the CustomJS arguments listed at the top of ``lib_map.js``.
    """
    for event, kind in MAP_EVENTS:
        figure.js_on_event(event, map_callback(kind, args, made))
    for axis in (figure.x_range, figure.y_range):
        axis.js_on_change("end", map_callback("range", args, made))
