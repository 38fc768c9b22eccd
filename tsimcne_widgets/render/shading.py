"""Per-pixel counts and colours to straight-alpha RGBA: opacity, spreading, compositing.

The shading half of :class:`~tsimcne_widgets.render.raster.Rasterizer`: numpy only, run
on every live redraw, so each step works on whole arrays or on the non-empty pixels.
"""

from __future__ import annotations

import numpy as np

__all__ = ["shade", "spread", "over", "pack", "alpha_levels"]


def alpha_levels(total: np.ndarray, how: str, min_alpha: int) -> np.ndarray:
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


def shade(
    count: np.ndarray, colors, single_rgb: np.ndarray, how: str, min_alpha: int
) -> np.ndarray:
    """Per-pixel counts (and colours) → (H, W, 4) uint8 straight-alpha RGBA.

    ``colors`` holds the (K, 3) colour of the K non-empty pixels in row-major
    order (None: ``single_rgb``); the opacity follows the density mapping ``how``.
    """
    out = np.zeros(count.shape + (4,), dtype=np.uint8)
    # Flat indices and whole-pixel rows: boolean-mask assignment into (H, W, 4) cost
    # twice as much (200k points, a third of 640 × 520 pixels filled: 10.2 vs 6.8 ms).
    filled = np.flatnonzero(count.ravel())
    if not filled.size:
        return out
    filled_count = count.ravel().take(filled)
    pixels = np.empty((filled.size, 4), dtype=np.uint8)
    if colors is None:
        pixels[:, :3] = np.rint(single_rgb).astype(np.uint8)
    else:
        pixels[:, :3] = np.clip(np.rint(colors), 0, 255)
    pixels[:, 3] = np.rint(alpha_levels(filled_count.astype(np.int64), how, min_alpha))
    out.reshape(-1, 4)[filled] = pixels
    return out


def _disc_offsets(radius: int) -> list[tuple[int, int]]:
    return [
        (dy, dx)
        for dy in range(-radius, radius + 1)
        for dx in range(-radius, radius + 1)
        if (dy or dx) and dy * dy + dx * dx <= radius * radius + radius
    ]


def spread(rgba: np.ndarray, radius: int) -> np.ndarray:
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


def pack(rgba: np.ndarray) -> np.ndarray:
    """(H, W, 4) uint8 → (H, W) uint32 with R in the lowest byte (Bokeh's layout)."""
    return np.ascontiguousarray(rgba).view("<u4")[..., 0].astype(np.uint32, copy=False)


def over(top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
    """Porter-Duff 'over' of two (H, W, 4) uint8 straight-alpha images.

    Only pixels the top layer covers need blending, so the work follows the
    size of the selection rather than the canvas.
    """
    out = bottom.copy()
    covered = np.flatnonzero(top[..., 3].ravel())
    if not covered.size:
        return out
    flat = out.reshape(-1, 4)
    upper = top.reshape(-1, 4).take(covered, axis=0).astype(np.float32)
    lower = flat.take(covered, axis=0).astype(np.float32)
    top_alpha = upper[:, 3:4] / 255.0
    lower_alpha = lower[:, 3:4] / 255.0 * (1.0 - top_alpha)
    out_alpha = top_alpha + lower_alpha
    blended = np.empty_like(upper)
    blended[:, :3] = (upper[:, :3] * top_alpha + lower[:, :3] * lower_alpha) / out_alpha
    blended[:, 3:4] = out_alpha * 255.0
    flat[covered] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return out
