"""A t-SimCNE map as ONE self-contained HTML file: hover thumbnails, lasso, CSV download.

The page embeds BokehJS itself (``bokeh.resources.INLINE``), every thumbnail as a base64
PNG data URI and all interactivity as CustomJS, so it opens offline, by e-mail or from a
USB stick, with no kernel and no server.
"""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["to_html"]

# Shown in the hover tooltip; the rest of the metadata still goes into the CSV download.
_MAX_TOOLTIP_METADATA = 8
# Longer legends run off the page; colours still tell the clusters apart.
_MAX_LEGEND_ITEMS = 40
_FRAME_PIXELS = 580

# The tooltip is a template: Bokeh substitutes "@field" values HTML-escaped (no "{safe}"
# anywhere), so labels and metadata are displayed as text, never run as markup.
_TOOLTIP = """
<div style="font:12px sans-serif;max-width:{box}px;overflow-wrap:anywhere">
<img src="@thumb" width="{size}" height="{size}" alt=""
 style="image-rendering:pixelated;object-fit:contain;display:block;background:#eee">
<div><b>@label</b></div>
<div style="color:#666">#@index</div>
{metadata}
</div>
"""

def _point_size(n: int) -> float:
    # Big enough to hover at a few hundred points, small enough not to blot out 20k.
    return float(np.clip(9.0 - 1.5 * np.log10(max(n, 1)), 3.0, 8.0))


def _as_text(values: Sequence) -> list[str]:
    return ["" if v is None or (np.ndim(v) == 0 and pd.isna(v)) else str(v) for v in values]


def _stored_thumb_size(path: str | None, native: int, thumb_size: int) -> int:
    """Encode at the display size only when the source file has more detail than the array.

    Otherwise the array's own size is stored and the <img> enlarges it (pixelated): an
    enlarged PNG would multiply the file size for no extra detail.
    """
    if path:
        from PIL import Image

        try:
            with Image.open(path) as source:  # reads the header only
                if max(source.size) > native:
                    return thumb_size
        except (OSError, ValueError):
            pass
    return min(thumb_size, native)


def to_html(path: str | os.PathLike, xy: object, labels: Sequence | None, images: np.ndarray | None,
            paths: Sequence[str] | None = None, metadata: pd.DataFrame | None = None,
            title: str = "t-SimCNE map", max_points: int = 20000, random_state: int | None = 0,
            thumb_size: int = 96, overwrite: bool = False) -> Path:
    """Write an interactive, self-contained HTML page of the map.

    The page has a scatter plot coloured by label (with a legend), a hover tooltip showing
    each point's thumbnail, label, index and metadata (as escaped text), lasso and box
    selection, a selected-count line, a "Copy indices" button and a "Download CSV" button.
    Everything works offline with no kernel: BokehJS is inlined, thumbnails are base64 PNG
    data URIs, the buttons are CustomJS.

    Parameters
    ----------
    path : str or os.PathLike
        Destination ``.html`` file; its folder must exist.
    xy : array-like, shape (N, 2)
        Map coordinates (finite).
    labels : sequence of length N or None
        Category of each point (colours and legend).
    images : numpy.ndarray, uint8 (N, H, W, 3), or None
        Thumbnails; None leaves the tooltip without a picture.
    paths : sequence of str, optional
        Source files: thumbnails are decoded from them when they are larger than the array.
    metadata : pandas.DataFrame, optional
        N rows; the first 8 columns show in the tooltip, all of them go into the CSV.
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
        their own size and enlarged by the browser with sharp pixels.
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
                              HoverTool, LassoSelectTool, Legend, LegendItem, Range1d)
    from bokeh.plotting import figure
    from bokeh.resources import INLINE
    from bokeh.transform import factor_cmap

    from tsimcne_widgets.io.atomic import atomic_write_bytes
    from tsimcne_widgets.io.tables import FORMULA_PREFIXES
    from tsimcne_widgets.js import load_js
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
    if images is not None:
        cache = ThumbnailCache(np.asarray(images), paths, max_items=1)
        native = max(cache.images.shape[1:3])
        data["thumb"] = [
            cache.data_uri(int(i), _stored_thumb_size(
                None if paths is None else paths[i], native, thumb_size))
            for i in shown]
    else:
        data["thumb"] = [""] * shown.size
    meta_names: list[str] = []
    if metadata is not None:
        for k, column_name in enumerate(metadata.columns):
            # Fields get neutral names: a user column name could break the "@{...}" syntax.
            data[f"meta_{k}"] = _as_text(metadata.iloc[shown, k].tolist())
            meta_names.append(str(column_name))
    source = ColumnDataSource(data)

    categories = sorted(set(label_text))
    palette = default_palette(max(len(categories), 1))
    # A square frame with fixed, equal-span ranges keeps the map's aspect ratio. (Bokeh's
    # match_aspect re-fits the ranges on every re-layout, e.g. when the selection count
    # text changes, which made the view jump after each lasso.)
    (x_lo, x_hi), (y_lo, y_hi) = [(float(v.min()), float(v.max())) for v in xy_arr[shown].T]
    half_span = 0.54 * max(x_hi - x_lo, y_hi - y_lo, 1e-9)
    x_mid, y_mid = (x_lo + x_hi) / 2, (y_lo + y_hi) / 2
    plot = figure(frame_width=_FRAME_PIXELS, frame_height=_FRAME_PIXELS,
                  x_range=Range1d(x_mid - half_span, x_mid + half_span),
                  y_range=Range1d(y_mid - half_span, y_mid + half_span),
                  tools="pan,wheel_zoom,reset,save", active_scroll="wheel_zoom",
                  output_backend="webgl", toolbar_location="above")
    plot.xaxis.visible = plot.yaxis.visible = False
    plot.grid.visible = False
    scatter_kwargs = dict(x="x", y="y", source=source, size=_point_size(shown.size),
                          alpha=0.75, line_color=None, selection_alpha=0.95,
                          nonselection_alpha=0.12)
    renderer = plot.scatter(color=factor_cmap("label", palette=palette, factors=categories),
                            **scatter_kwargs)
    if labels is not None and len(categories) <= _MAX_LEGEND_ITEMS:
        # Legend entries point at empty stand-in renderers: entries tied to the real one
        # would fade with its non-selection style as soon as anything is lassoed.
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

    meta_rows = "\n".join(
        f'<div><span style="color:#666">{html.escape(name)}:</span> @{{meta_{k}}}</div>'
        for k, name in enumerate(meta_names[:_MAX_TOOLTIP_METADATA]))
    tooltip = _TOOLTIP.format(box=thumb_size + 24, size=thumb_size, metadata=meta_rows)
    if images is None:
        tooltip = tooltip.replace('<img src="@thumb"', '<img hidden src="@thumb"')
    plot.add_tools(HoverTool(renderers=[renderer], tooltips=tooltip))
    lasso = LassoSelectTool(renderers=[renderer], continuous=True)
    box = BoxSelectTool(renderers=[renderer], continuous=True)
    plot.add_tools(lasso, box)
    plot.toolbar.active_drag = lasso

    header = Div(text=(f"<h2 style='margin:4px 0'>{html.escape(title)}</h2>"
                       f"<div style='color:#555'>{html.escape(subtitle)}. Hover a point for its "
                       "image; drag to lasso (box tool in the toolbar).</div>"),
                 width=900, disable_math=True)
    info = Div(text="Nothing selected: drag with the lasso or box tool.", width=220, height=40,
               disable_math=True)
    source.selected.js_on_change("indices", CustomJS(args=dict(source=source, info=info),
                                                     code=load_js("selection_count.js")))
    copy_button = Button(label="Copy indices", width=200)
    copy_button.js_on_event("button_click", CustomJS(args=dict(source=source, info=info),
                                                     code=load_js("lib_selected.js", "copy.js")))
    fields = ["index", "label", "x", "y"] + [f"meta_{k}" for k in range(len(meta_names))]
    header_row = ["index", "label", "x", "y"] + [
        "'" + name if name.startswith(FORMULA_PREFIXES) else name for name in meta_names]
    # Metadata is stored as text for the tooltip; only the columns that were numbers
    # stay unquoted in the CSV.
    text_fields = ["label"] + [
        f"meta_{k}" for k in range(len(meta_names))
        if not (pd.api.types.is_numeric_dtype(metadata.iloc[:, k])
                or pd.api.types.is_bool_dtype(metadata.iloc[:, k]))]
    download_button = Button(label="Download CSV", width=200)
    download_button.js_on_event("button_click", CustomJS(
        args=dict(source=source, info=info, fields=fields, header=header_row,
                  text_fields=text_fields, filename="selection.csv"),
        code=load_js("download.js")))
    layout = column(header, row(plot, column(info, copy_button, download_button)))

    page = file_html(layout, resources=INLINE, title=title)
    return atomic_write_bytes(path, page.encode("utf-8"), overwrite=overwrite)

