"""Datashader rasters of a 2-D map, ready for a Bokeh ``image_rgba`` glyph."""

from __future__ import annotations

import io
import threading
from collections.abc import Sequence

import datashader as ds
import numpy as np
import pandas as pd
from PIL import Image

from .palette import SINGLE_COLOR, default_palette

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

    Parameters
    ----------
    categories : sequence of str or None
        Category names; ``codes`` passed to :meth:`render` index into them.
        None draws every point in one colour.
    palette : sequence of str, or dict of str to str, or None
        Hex colours, one per category in order (or a ``{category: colour}``
        mapping).  Defaults to :func:`default_palette`.  With no categories,
        the first colour (default ``SINGLE_COLOR``) is used.

    Attributes
    ----------
    categories : tuple of str or None
    colors : dict of str to str
        Category → hex colour, for a legend (empty without categories).

    Notes
    -----
    The per-point colour columns handed to datashader are kept from the
    previous call while the codes do not change, so a live map whose
    coordinates move every epoch only pays for the new coordinates.
    ``render`` is safe to call from several threads.
    """

    def __init__(self, categories: Sequence[str] | None = None, palette=None) -> None:
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

    def _aggregate(self, canvas, xy: np.ndarray, colors: np.ndarray | None):
        """Count and, with categories, summed colour of the points in each pixel."""
        columns = {"x": xy[:, 0], "y": xy[:, 1]}
        if colors is None:
            frame = pd.DataFrame(columns, copy=False)
            return np.asarray(canvas.points(frame, "x", "y", agg=ds.count()).data), None
        columns.update(r=colors[:, 0], g=colors[:, 1], b=colors[:, 2])
        frame = pd.DataFrame(columns, copy=False)
        reduction = ds.summary(n=ds.count(), r=ds.sum("r"), g=ds.sum("g"), b=ds.sum("b"))
        result = canvas.points(frame, "x", "y", agg=reduction)
        return np.asarray(result["n"].data), tuple(np.asarray(result[c].data) for c in "rgb")

    def _check_codes(self, codes, n: int) -> np.ndarray | None:
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
        codes : array_like of int, shape (N,), or None
            Category of each point (index into ``categories``); required when
            the rasterizer has categories, ignored otherwise.
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
        sum of its points' colours; the shading (count-weighted colour mix,
        density → opacity) is a few numpy operations.  That is what
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
        colors = self._point_colors(codes) if codes is not None else None
        count, sums = self._aggregate(canvas, xy, colors)
        layer = _shade(count, sums, self._rgb[0], how, int(min_alpha))
        if mask is None:
            return _pack(_spread(layer, int(spread)))
        layer[..., 3] = (layer[..., 3] * float(faded_alpha)).astype(np.uint8)
        count, sums = self._aggregate(canvas, xy[mask], None if colors is None else colors[mask])
        highlight = _shade(count, sums, self._rgb[0], how, int(min_alpha))
        return _pack(_over(_spread(highlight, int(spread)), _spread(layer, int(spread))))


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


def _alpha_levels(total: np.ndarray, how: str, min_alpha: int) -> np.ndarray:
    """Map positive pixel counts to opacities in [min_alpha, 255]."""
    values = total.astype(np.float64)
    if how == "eq_hist":
        # Rank of each count in the distribution of non-empty pixels: a
        # dense core and a sparse halo both get the full opacity range.
        if total.max() <= 4_000_000:
            histogram = np.bincount(total)
            present = np.flatnonzero(histogram)
            cdf = np.cumsum(histogram[present]) / len(total)
            level = np.zeros(len(histogram))
            level[present] = cdf
            levels = len(present)
            normalized = level[total]
            low = cdf[0]
        else:
            unique, inverse, frequency = np.unique(total, return_inverse=True, return_counts=True)
            cdf = np.cumsum(frequency) / len(total)
            levels, normalized, low = len(unique), cdf[inverse], cdf[0]
        normalized = (normalized - low) / (1.0 - low) if levels > 1 else np.ones_like(normalized)
        # Few distinct counts (a sparse map where a handful of pixels hold two
        # points) would otherwise dim every single point to min_alpha.
        span = min(1.0, (levels - 1) / 20.0)
        normalized = 1.0 - span * (1.0 - normalized)
    else:
        transform = {"log": np.log1p, "cbrt": np.cbrt, "linear": lambda v: v}[how]
        scaled = transform(values)
        low, high = scaled.min(), scaled.max()
        normalized = (scaled - low) / (high - low) if high > low else np.ones_like(scaled)
    return min_alpha + (255 - min_alpha) * normalized


def _shade(
    count: np.ndarray, sums, single_rgb: np.ndarray, how: str, min_alpha: int
) -> np.ndarray:
    """Per-pixel counts (and colour sums) → (H, W, 4) uint8 straight-alpha RGBA.

    A pixel's colour is the count-weighted mean of its points' colours; its
    opacity follows the density mapping ``how``.
    """
    out = np.zeros(count.shape + (4,), dtype=np.uint8)
    filled = count > 0
    if not filled.any():
        return out
    filled_count = count[filled]
    if sums is None:
        out[filled, :3] = np.rint(single_rgb).astype(np.uint8)
    else:
        for channel, total in enumerate(sums):
            out[..., channel][filled] = np.clip(np.rint(total[filled] / filled_count), 0, 255)
    out[..., 3][filled] = np.rint(_alpha_levels(filled_count.astype(np.int64), how, min_alpha))
    return out


def _disc_offsets(radius: int) -> list[tuple[int, int]]:
    return [
        (dy, dx)
        for dy in range(-radius, radius + 1)
        for dx in range(-radius, radius + 1)
        if (dy or dx) and dy * dy + dx * dx <= radius * radius + radius
    ]


def _spread(rgba: np.ndarray, radius: int) -> np.ndarray:
    """Grow every non-empty pixel into a disc; where discs meet, the more opaque wins.

    Runs on every live redraw, so pixels move as whole uint32 words under a mask
    written in place rather than through boolean fancy indexing (timings:
    benchmarks/README.md, "Widget throughput").
    """
    if radius <= 0:
        return rgba
    height, width = rgba.shape[:2]
    out = rgba.copy()
    out_pixels, source_pixels = out.view(np.uint32)[..., 0], rgba.view(np.uint32)[..., 0]
    out_alpha, source_alpha = out[..., 3], rgba[..., 3]
    stronger = np.empty((height, width), dtype=bool)
    for dy, dx in _disc_offsets(radius):
        target = (slice(max(dy, 0), height + min(dy, 0)), slice(max(dx, 0), width + min(dx, 0)))
        source = (slice(max(-dy, 0), height + min(-dy, 0)), slice(max(-dx, 0), width + min(-dx, 0)))
        mask = stronger[target]
        np.greater(source_alpha[source], out_alpha[target], out=mask)
        np.copyto(out_pixels[target], source_pixels[source], where=mask)
    return out


def _pack(rgba: np.ndarray) -> np.ndarray:
    """(H, W, 4) uint8 → (H, W) uint32 with R in the lowest byte (Bokeh's layout)."""
    return np.ascontiguousarray(rgba).view("<u4")[..., 0].astype(np.uint32, copy=False)


def _over(top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
    """Porter-Duff 'over' of two (H, W, 4) uint8 straight-alpha images.

    Only pixels the top layer covers need blending, so the work follows the
    size of the selection rather than the canvas.
    """
    out = bottom.copy()
    covered = top[..., 3] > 0
    if not covered.any():
        return out
    upper = top[covered].astype(np.float32)
    lower = bottom[covered].astype(np.float32)
    top_alpha = upper[:, 3:4] / 255.0
    lower_alpha = lower[:, 3:4] / 255.0 * (1.0 - top_alpha)
    out_alpha = top_alpha + lower_alpha
    blended = np.empty_like(upper)
    blended[:, :3] = (upper[:, :3] * top_alpha + lower[:, :3] * lower_alpha) / out_alpha
    blended[:, 3:4] = out_alpha * 255.0
    out[covered] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return out
