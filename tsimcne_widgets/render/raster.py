"""Datashader rasters of a 2-D map, ready for a Bokeh ``image_rgba`` glyph."""

from __future__ import annotations

import io
import threading
from collections.abc import Sequence

import datashader as ds
import numpy as np
import pandas as pd
from PIL import Image

from . import shading
from .palette import MISSING_COLOR, SINGLE_COLOR, continuous_palette, default_palette

__all__ = ["Rasterizer", "data_range", "to_png_bytes"]

_SHADE_HOWS = ("eq_hist", "log", "cbrt", "linear")


def _finite_rows(xy: np.ndarray) -> np.ndarray:
    return np.isfinite(xy).all(axis=1)


def data_range(xy, pad: float = 0.05) -> tuple[tuple[float, float], tuple[float, float]]:
    """Padded ``(x_range, y_range)`` that frames every finite point.

    Parameters
    ----------
    xy : array_like, shape (N, 2)
    pad : float
        Margin on each side as a fraction of the data span.

    Returns
    -------
    tuple of two (low, high) tuples
        ``((-1, 1), (-1, 1))`` when there is no finite point; an axis whose
        points all share one value gets a span of 1 around it.
    """
    xy = _as_xy(xy)
    finite = xy[_finite_rows(xy)]
    if len(finite) == 0:
        return (-1.0, 1.0), (-1.0, 1.0)
    ranges = []
    for axis in range(2):
        low, high = float(finite[:, axis].min()), float(finite[:, axis].max())
        span = high - low
        if span <= 0:
            ranges.append((low - 0.5, high + 0.5))
        else:
            ranges.append((low - pad * span, high + pad * span))
    return ranges[0], ranges[1]


def _as_xy(xy) -> np.ndarray:
    array = np.asarray(xy)
    if array.ndim != 2 or array.shape[1] != 2:
        raise ValueError(
            f"xy must be an (N, 2) array of map coordinates, got shape {array.shape}"
        )
    if array.dtype.kind not in "fiu":
        raise TypeError(f"xy must be numeric, got dtype {array.dtype}")
    return array


def _valid_range(value, name: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a (low, high) pair of numbers, got {value!r}") from None
    if not (np.isfinite(low) and np.isfinite(high)):
        raise ValueError(f"{name} must be finite, got {value!r}; use data_range(xy)")
    if low > high:
        low, high = high, low
    if high - low <= 0:
        # A single point (or a user zoomed to nothing) still needs a canvas.
        low, high = low - 0.5, high + 0.5
    return low, high


def to_png_bytes(rgba: np.ndarray) -> bytes:
    """Encode a packed RGBA raster from :meth:`Rasterizer.render` as PNG bytes.

    Rows are flipped so the PNG's top row is the map's top (highest y).
    """
    rgba = np.asarray(rgba)
    if rgba.ndim != 2 or rgba.dtype != np.uint32:
        raise ValueError(
            f"rgba must be a 2-D uint32 array as returned by Rasterizer.render, "
            f"got {rgba.dtype} with shape {rgba.shape}"
        )
    image = Image.fromarray(np.ascontiguousarray(_unpack(rgba)[::-1]))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def _unpack(rgba: np.ndarray) -> np.ndarray:
    """(H, W) uint32 → (H, W, 4) uint8 in R, G, B, A order (little-endian packing)."""
    return np.ascontiguousarray(rgba).astype("<u4", copy=False).view(np.uint8).reshape(
        rgba.shape + (4,)
    )


class Rasterizer:
    """Draw a 2-D map as a coloured density raster for Bokeh's ``image_rgba``.

    Points are coloured by category (``categories``), by a number through a
    colormap (``value_range``), or all alike (neither).

    Parameters
    ----------
    categories : sequence of str or None
        Category names; ``codes`` passed to :meth:`render` index into them.
        None draws every point in one colour.
    palette : sequence of str, or dict of str to str, or None
        Hex colours, one per category in order (or a ``{category: colour}``
        mapping).  Defaults to :func:`default_palette`.  With no categories,
        the first colour (default ``SINGLE_COLOR``) is used.
    value_range : (float, float) or None
        Colour by a number instead: :meth:`render` then takes each point's
        value in place of ``codes``, and a pixel gets the colormap's colour
        for the mean value of its points, ``low`` the first colour and
        ``high`` the last (values outside are clipped).
    colormap : sequence of str or None
        Hex colours from low to high (default :func:`continuous_palette`, viridis).
    missing_color : str
        Colour of pixels whose points all lack a value (NaN), when colouring
        by a number.

    Attributes
    ----------
    categories : tuple of str or None
    colors : dict of str to str
        Category → hex colour, for a legend (empty without categories).
    value_range : (float, float) or None
    colormap : list of str or None

    Notes
    -----
    The per-point colour columns handed to datashader are kept from the
    previous call while the codes do not change, so a live map whose
    coordinates move every epoch only pays for the new coordinates.
    ``render`` is safe to call from several threads.
    """

    def __init__(self, categories: Sequence[str] | None = None, palette=None, *,
                 value_range=None, colormap=None, missing_color: str = MISSING_COLOR) -> None:
        self.value_range, self.colormap = _continuous(categories, value_range, colormap)
        self._ramp = None if self.colormap is None else _rgb_table(self.colormap)
        self._missing_rgb = _rgb_table([missing_color])[0]
        if categories is not None:
            if isinstance(categories, str):
                raise TypeError("categories must be a sequence of names, not one string")
            categories = tuple(str(c) for c in categories)
            if len(set(categories)) != len(categories):
                raise ValueError("categories must be unique")
        self.categories: tuple[str, ...] | None = categories
        count = len(categories) if categories is not None else 0
        if palette is None:
            colors = default_palette(count) if count else [SINGLE_COLOR]
        elif isinstance(palette, dict):
            missing = [c for c in (categories or ()) if c not in palette]
            if missing:
                raise ValueError(f"palette has no colour for categories {missing[:5]}")
            colors = [palette[c] for c in categories] if count else list(palette.values())[:1]
        else:
            colors = [str(c) for c in palette]
            if len(colors) < max(count, 1):
                raise ValueError(
                    f"palette has {len(colors)} colours for {count} categories; "
                    "pass at least one colour per category or palette=None"
                )
        self._color_list = colors[: max(count, 1)]
        self.colors: dict[str, str] = (
            dict(zip(categories, self._color_list)) if count else {}
        )
        self._lock = threading.Lock()
        self._rgb = _rgb_table(self._color_list)
        self._cached_codes: np.ndarray | None = None
        self._cached_colors: np.ndarray | None = None

    def data_range(self, xy, pad: float = 0.05):
        """Same as the module-level :func:`data_range`."""
        return data_range(xy, pad)

    def _point_colors(self, codes: np.ndarray) -> np.ndarray | None:
        """(N, 3) float32 colour of each point, reused while the codes stay the same."""
        if self.categories is None:
            return None
        with self._lock:
            if self._cached_codes is not None and np.array_equal(self._cached_codes, codes):
                return self._cached_colors
        colors = self._rgb[codes]
        with self._lock:
            self._cached_codes = codes.copy()
            self._cached_colors = colors
        return colors

    def _aggregate(self, canvas, xy: np.ndarray, data: np.ndarray | None):
        """Points per pixel, and the colour of each non-empty pixel (row-major), or None.

        ``data`` is the (N, 3) colour of each point (categories), the (N,) values
        (a value range), or None (one colour).
        """
        columns = {"x": xy[:, 0], "y": xy[:, 1]}
        if data is None:
            frame = pd.DataFrame(columns, copy=False)
            return np.asarray(canvas.points(frame, "x", "y", agg=ds.count()).data), None
        if self.value_range is not None:
            columns["v"] = data
            # count("v") counts the points that have a value (not NaN); sum("v") skips NaN.
            reduction = ds.summary(n=ds.count(), s=ds.sum("v"), m=ds.count("v"))
        else:
            columns.update(r=data[:, 0], g=data[:, 1], b=data[:, 2])
            reduction = ds.summary(n=ds.count(), r=ds.sum("r"), g=ds.sum("g"), b=ds.sum("b"))
        result = canvas.points(pd.DataFrame(columns, copy=False), "x", "y", agg=reduction)
        count = np.asarray(result["n"].data)
        filled = np.flatnonzero(count.ravel())  # row-major, as shading.shade expects

        def at_filled(name: str) -> np.ndarray:
            return np.asarray(result[name].data).ravel().take(filled)

        if self.value_range is None:
            sums = np.stack([at_filled(c) for c in "rgb"], 1)
            return count, sums / count.ravel().take(filled)[:, None]
        valued = at_filled("m")
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = at_filled("s") / valued
        return count, self._value_colors(mean, valued > 0)

    def _value_colors(self, mean: np.ndarray, valued: np.ndarray) -> np.ndarray:
        """(K, 3) colormap colours of K pixel means; the missing colour where ``~valued``."""
        low, high = self.value_range
        position = (mean - low) / (high - low) if high > low else np.full_like(mean, 0.5)
        position = np.clip(np.where(valued, position, 0.0), 0.0, 1.0)
        colors = self._ramp[np.rint(position * (len(self._ramp) - 1)).astype(np.intp)]
        colors[~valued] = self._missing_rgb
        return colors

    def _check_codes(self, codes, n: int) -> np.ndarray | None:
        if self.value_range is not None:
            return _check_values(codes, n)
        if self.categories is None:
            return None
        if codes is None:
            raise ValueError(
                "this Rasterizer has categories, so render() needs codes (one int per point)"
            )
        codes = np.asarray(codes)
        if codes.shape != (n,):
            raise ValueError(f"codes must have shape ({n},), got {codes.shape}")
        if codes.dtype.kind not in "iu":
            raise TypeError(f"codes must be integers indexing categories, got {codes.dtype}")
        if n and (codes.min() < 0 or codes.max() >= len(self.categories)):
            raise ValueError(
                f"codes must lie in [0, {len(self.categories)}) to index categories"
            )
        return codes

    @staticmethod
    def _selection_mask(selected, n: int) -> np.ndarray | None:
        if selected is None:
            return None
        selected = np.asarray(selected)
        if selected.dtype == bool:
            if selected.shape != (n,):
                raise ValueError(
                    f"a boolean selection must have shape ({n},), got {selected.shape}"
                )
            mask = selected
        else:
            if selected.size and selected.dtype.kind not in "iu":
                raise TypeError("selected must be a boolean mask or integer indices")
            mask = np.zeros(n, dtype=bool)
            mask[selected.astype(np.int64, copy=False).ravel()] = True
        return mask if mask.any() else None

    def render(
        self,
        xy,
        codes=None,
        x_range=None,
        y_range=None,
        width: int = 800,
        height: int = 600,
        selected=None,
        spread: int | str = "auto",
        how: str = "eq_hist",
        min_alpha: int = 110,
        faded_alpha: float = 0.18,
    ) -> np.ndarray:
        """Rasterise the map.

        Parameters
        ----------
        xy : array_like, shape (N, 2)
            Map coordinates; rows with NaN are skipped.
        codes : array_like, shape (N,), or None
            Category of each point (int index into ``categories``), required
            when the rasterizer has categories; with a ``value_range``, the
            value of each point (float; NaN or inf: no value), required;
            ignored otherwise.
        x_range, y_range : (float, float) or None
            Visible window in data units; None frames all points
            (:func:`data_range`).  An empty window is widened to span 1.
        width, height : int
            Raster size in pixels.
        selected : array_like of bool (N,), or of int indices, or None
            Points to highlight: they are drawn on top in full colour and
            every other point is faded.  None or an empty selection
            highlights nothing.
        spread : int or "auto"
            Grow every point to a disc of this radius in pixels; "auto" picks
            2, 1 or 0 for fewer than 5k, 50k or more points.
        how : {"eq_hist", "log", "cbrt", "linear"}
            Density → opacity mapping.
        min_alpha : int
            Opacity (0–255) of the sparsest non-empty pixels.
        faded_alpha : float
            Opacity factor of the unselected points when there is a selection.

        Returns
        -------
        numpy.ndarray of uint32, shape (height, width)
            Packed RGBA (byte order R, G, B, A in memory, as Bokeh's
            ``image_rgba`` reads it); row 0 is the bottom of the window, as
            Bokeh image glyphs draw it.  Empty pixels are 0 (transparent).

        Notes
        -----
        Datashader aggregates, in one pass, each pixel's point count and the
        sum of its points' colours (or values, and how many have one); the
        shading (count-weighted colour mix or colormap lookup of the mean
        value, density → opacity) is a few numpy operations.  That is what
        ``ds.by(category, ds.count())`` + ``tf.shade(color_key=...)`` compute,
        without the (height, width, categories) count cube: 100 classes at
        800×600 would need 192 MB per frame there, and numba would compile a
        new kernel for every category count.  A selection adds a second pass
        over the selected points only.
        """
        xy = _as_xy(xy)
        width, height = int(width), int(height)
        if width < 1 or height < 1:
            raise ValueError(f"width and height must be >= 1 pixel, got {width}×{height}")
        if how not in _SHADE_HOWS:
            raise ValueError(f"how must be one of {_SHADE_HOWS}, got {how!r}")
        if not 0 <= int(min_alpha) <= 255:
            raise ValueError(f"min_alpha must be in [0, 255], got {min_alpha}")
        codes = self._check_codes(codes, len(xy))
        mask = self._selection_mask(selected, len(xy))
        if x_range is None or y_range is None:
            auto_x, auto_y = data_range(xy)
            x_range = auto_x if x_range is None else x_range
            y_range = auto_y if y_range is None else y_range
        x_range = _valid_range(x_range, "x_range")
        y_range = _valid_range(y_range, "y_range")
        if isinstance(spread, str) and spread == "auto":
            spread = 2 if len(xy) < 5_000 else 1 if len(xy) < 50_000 else 0
        elif isinstance(spread, bool) or not (
            isinstance(spread, (int, np.integer)) and spread >= 0
        ):
            raise ValueError(f"spread must be a non-negative int or 'auto', got {spread!r}")

        if len(xy) == 0:
            return np.zeros((height, width), dtype=np.uint32)
        if xy.dtype.kind != "f":
            xy = xy.astype(np.float64)
        canvas = ds.Canvas(
            plot_width=width, plot_height=height, x_range=x_range, y_range=y_range
        )
        data = codes if self.value_range is not None else self._point_colors(codes)
        count, colors = self._aggregate(canvas, xy, data)
        layer = shading.shade(count, colors, self._rgb[0], how, int(min_alpha))
        if mask is None:
            return shading.pack(shading.spread(layer, int(spread)))
        layer[..., 3] = (layer[..., 3] * float(faded_alpha)).astype(np.uint8)
        count, colors = self._aggregate(canvas, xy[mask], None if data is None else data[mask])
        highlight = shading.shade(count, colors, self._rgb[0], how, int(min_alpha))
        return shading.pack(shading.over(shading.spread(highlight, int(spread)),
                                         shading.spread(layer, int(spread))))


def _continuous(categories, value_range, colormap):
    """Checked ``(value_range, colormap)`` of a rasterizer; ``(None, None)`` without a range."""
    if value_range is None:
        if colormap is not None:
            raise ValueError("a colormap needs a value_range (the values of its ends)")
        return None, None
    if categories is not None:
        raise ValueError("colour by categories or by values (value_range), not both")
    try:
        low, high = (float(v) for v in value_range)
    except (TypeError, ValueError):
        raise ValueError(f"value_range must be a (low, high) pair of numbers, "
                         f"got {value_range!r}") from None
    if not (np.isfinite(low) and np.isfinite(high) and low <= high):
        raise ValueError(f"value_range must be finite with low <= high, got {value_range!r}")
    colormap = continuous_palette() if colormap is None else [str(c) for c in colormap]
    if len(colormap) < 2:
        raise ValueError(f"a colormap needs at least 2 colours, got {len(colormap)}")
    return (low, high), colormap


def _check_values(values, n: int) -> np.ndarray:
    """(N,) float64 values with NaN where a point has none (NaN, inf)."""
    if values is None:
        raise ValueError("this Rasterizer colours by values, so render() needs one per point")
    values = np.asarray(values)
    if values.shape != (n,):
        raise ValueError(f"values must have shape ({n},), got {values.shape}")
    if values.dtype.kind not in "fiu":
        raise TypeError(f"values must be numbers (NaN: no value), got dtype {values.dtype}")
    values = values.astype(np.float64, copy=False)
    finite = np.isfinite(values)
    return values if finite.all() else np.where(finite, values, np.nan)


def _rgb_table(hex_colors: Sequence[str]) -> np.ndarray:
    table = np.empty((len(hex_colors), 3), dtype=np.float32)
    for k, color in enumerate(hex_colors):
        value = str(color).lstrip("#")
        if len(value) == 3:
            value = "".join(2 * c for c in value)
        try:
            table[k] = [int(value[i : i + 2], 16) for i in (0, 2, 4)]
        except ValueError:
            raise ValueError(f"colours must be hex strings like '#1f77b4', got {color!r}") from None
    return table
