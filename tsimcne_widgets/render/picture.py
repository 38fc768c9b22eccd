"""Static PNG pictures of a map (CLI output, README figures) without matplotlib."""

from __future__ import annotations

import math
import os

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from tsimcne_widgets.io.atomic import atomic_path

from .palette import default_palette, natural_key
from .raster import Rasterizer, data_range

__all__ = ["render_map_image", "save_map_png"]

_MISSING_LABEL = "(unlabelled)"
_BACKGROUND = (255, 255, 255)
_TEXT = (34, 34, 34)
_FRAME = (214, 214, 214)
_SUPERSAMPLE = 2


def _font(size: int) -> ImageFont.ImageFont:
    for name in ("DejaVuSans.ttf", "Arial.ttf", "LiberationSans-Regular.ttf"):
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def _label_strings(labels, n: int) -> np.ndarray:
    labels = np.asarray(labels, dtype=object).ravel()
    if len(labels) != n:
        raise ValueError(f"got {len(labels)} labels for {n} points")
    out = np.empty(n, dtype=object)
    for k, value in enumerate(labels):
        missing = value is None or (isinstance(value, float) and math.isnan(value))
        out[k] = _MISSING_LABEL if missing else str(value)
    return out


def _equal_aspect(x_range, y_range, width: int, height: int):
    """Widen one axis so a data unit spans as many pixels horizontally as vertically."""
    (x0, x1), (y0, y1) = x_range, y_range
    units_per_pixel = max((x1 - x0) / width, (y1 - y0) / height)
    x_mid, y_mid = (x0 + x1) / 2, (y0 + y1) / 2
    half_w, half_h = units_per_pixel * width / 2, units_per_pixel * height / 2
    return (x_mid - half_w, x_mid + half_w), (y_mid - half_h, y_mid + half_h)


def render_map_image(
    xy,
    labels=None,
    title: str | None = None,
    width: int = 900,
    height: int = 700,
    palette=None,
) -> Image.Image:
    """Picture of a map as a PIL image: points, legend and title on white.

    Parameters
    ----------
    xy : array_like, shape (N, 2)
        Map coordinates; NaN rows are skipped.
    labels : array_like of str, shape (N,), or None
        Class of each point; coloured by class with a legend when given.
    title : str or None
        Drawn above the map.
    width, height : int
        Picture size in pixels.
    palette : see :class:`~tsimcne_widgets.render.raster.Rasterizer`

    Returns
    -------
    PIL.Image.Image
        RGB image.
    """
    xy = np.asarray(xy, dtype=np.float64)
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise ValueError(f"xy must be an (N, 2) array of map coordinates, got shape {xy.shape}")
    width, height = int(width), int(height)
    if width < 200 or height < 150:
        raise ValueError(f"the picture must be at least 200×150 pixels, got {width}×{height}")

    scale = max(1.0, min(width / 900, height / 700))
    margin = round(16 * scale)
    title_font, legend_font = _font(round(20 * scale)), _font(round(14 * scale))
    picture = Image.new("RGB", (width, height), _BACKGROUND)
    draw = ImageDraw.Draw(picture)

    top = margin
    if title:
        draw.text((margin, top), str(title), font=title_font, fill=_TEXT)
        top += _text_height(draw, str(title), title_font) + margin

    categories, codes = None, None
    if labels is not None:
        strings = _label_strings(labels, len(xy))
        # Natural order ("2" before "10"), the unlabelled group last.
        categories = sorted(set(strings.tolist()), key=lambda c: natural_key(c, last=(_MISSING_LABEL,)))
        lookup = {name: k for k, name in enumerate(categories)}
        codes = np.fromiter((lookup[s] for s in strings), dtype=np.int32, count=len(strings))
    if categories and palette is None and _MISSING_LABEL in categories:
        # Unlabelled points read as background, not as one more class.
        named = [c for c in categories if c != _MISSING_LABEL]
        palette = dict(zip(named, default_palette(len(named))), **{_MISSING_LABEL: "#b0b0b0"})
    rasterizer = Rasterizer(categories, palette=palette)

    finite = int(np.isfinite(xy).all(axis=1).sum())
    note = f"{finite:,} points"
    footer = _text_height(draw, note, legend_font) + margin // 2
    legend_width = 0
    if categories:
        legend_width = _draw_legend(
            draw, rasterizer.colors, legend_font, right=width - margin, top=top,
            bottom=height - margin, gap=margin,
        )
    plot_box = (margin, top, width - margin - legend_width, height - margin - footer)
    plot_w, plot_h = plot_box[2] - plot_box[0], plot_box[3] - plot_box[1]
    if plot_w < 50 or plot_h < 50:
        raise ValueError("the title and legend leave no room for the map: make the picture larger")

    # No point to draw (a map not trained yet): an empty frame, without datashader, whose
    # first aggregation compiles for seconds (the notebook shows this picture at once).
    if finite:
        x_range, y_range = _equal_aspect(*data_range(xy, pad=0.05), plot_w, plot_h)
        spread = 3 if finite < 3_000 else 2 if finite < 30_000 else 1 if finite < 300_000 else 0
        raster = rasterizer.render(
            xy, codes, x_range, y_range, plot_w * _SUPERSAMPLE, plot_h * _SUPERSAMPLE,
            spread=spread, how="eq_hist", min_alpha=150,
        )
        rgba = raster.view(np.uint8).reshape(raster.shape + (4,))[::-1]
        layer = Image.fromarray(np.ascontiguousarray(rgba))
        layer = layer.resize((plot_w, plot_h), Image.Resampling.LANCZOS)
        picture.paste(layer, plot_box[:2], layer)
    draw.rectangle(
        (plot_box[0] - 1, plot_box[1] - 1, plot_box[2], plot_box[3]), outline=_FRAME, width=1
    )
    note_w = draw.textlength(note, font=legend_font)
    draw.text((plot_box[2] - note_w, plot_box[3] + margin // 3), note, font=legend_font,
              fill=(120, 120, 120))
    return picture


def _text_height(draw: ImageDraw.ImageDraw, text: str, font) -> int:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return bottom - top


def _draw_legend(draw, colors: dict, font, right: int, top: int, bottom: int, gap: int) -> int:
    """Draw colour swatches and names right-aligned in the box; return the width used."""
    names = list(colors)
    line_h = max(_text_height(draw, "Ag", font) + round(font.size * 0.55), 12)
    swatch = max(8, round(font.size * 0.8))
    rows_fit = max(1, (bottom - top) // line_h)
    columns = math.ceil(len(names) / rows_fit)
    max_columns = 3
    shown = names
    if columns > max_columns:
        shown = names[: rows_fit * max_columns - 1]
        columns = max_columns
    rows = math.ceil((len(shown) + (len(shown) < len(names))) / columns)
    max_text = max(draw.textlength(name, font=font) for name in names)
    max_text = min(max_text, 220)
    column_w = round(swatch + 8 + max_text + gap)
    total_w = column_w * columns + gap
    x_start = right - column_w * columns + gap

    for k, name in enumerate(shown):
        column, row = divmod(k, rows)
        x = x_start + column * column_w
        y = top + row * line_h
        swatch_top = y + (line_h - swatch) // 2 - round(font.size * 0.15)
        draw.rounded_rectangle(
            (x, swatch_top, x + swatch, swatch_top + swatch), radius=2, fill=colors[name]
        )
        text = name
        while draw.textlength(text, font=font) > max_text and len(text) > 2:
            text = text[:-2] + "…"
        draw.text((x + swatch + 8, y), text, font=font, fill=_TEXT)
    if len(shown) < len(names):
        column, row = divmod(len(shown), rows)
        draw.text(
            (x_start + column * column_w, top + row * line_h),
            f"… {len(names) - len(shown)} more", font=font, fill=(120, 120, 120),
        )
    return total_w


def save_map_png(
    xy,
    labels=None,
    path: str | os.PathLike = "map.png",
    title: str | None = None,
    width: int = 900,
    height: int = 700,
    palette=None,
) -> str:
    """Write a picture of a map to a PNG file.

    Parameters
    ----------
    xy, labels, title, width, height, palette
        See :func:`render_map_image`.
    path : str or path-like
        Destination; its folder must exist.  An existing file is replaced atomically
        (:func:`~tsimcne_widgets.io.atomic.atomic_path`), so a crash never leaves half a PNG.

    Returns
    -------
    str
        The path written.
    """
    picture = render_map_image(xy, labels, title, width, height, palette)
    with atomic_path(path, overwrite=True) as temporary:
        picture.save(temporary, format="PNG", optimize=True)
    return os.fspath(path)
