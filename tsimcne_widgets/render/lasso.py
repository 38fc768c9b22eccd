"""Selection geometry: which points a lasso or box covers.

Only geometry: combining what a gesture covers with the current selection (add,
subtract, ...) is :meth:`tsimcne_widgets.curation.selection.SelectionModel.set`.
"""

from __future__ import annotations

import numpy as np

__all__ = ["points_in_polygon", "points_in_box"]


def _as_xy(xy, name: str = "xy") -> np.ndarray:
    array = np.asarray(xy)
    if array.dtype.kind != "f":
        array = array.astype(np.float64)
    if array.ndim != 2 or array.shape[1] != 2:
        raise ValueError(
            f"{name} must be an (N, 2) array of x, y coordinates, got shape {array.shape}"
        )
    return array


def points_in_box(xy, x0: float, x1: float, y0: float, y1: float) -> np.ndarray:
    """Boolean mask of the points inside an axis-aligned box (edges included).

    Parameters
    ----------
    xy : array_like, shape (N, 2)
        Point coordinates; NaN rows are outside.
    x0, x1, y0, y1 : float
        Box corners, in either order.

    Returns
    -------
    numpy.ndarray of bool, shape (N,)
    """
    xy = _as_xy(xy)
    x_low, x_high = sorted((float(x0), float(x1)))
    y_low, y_high = sorted((float(y0), float(y1)))
    x, y = xy[:, 0], xy[:, 1]
    return (x >= x_low) & (x <= x_high) & (y >= y_low) & (y <= y_high)


def points_in_polygon(xy, polygon) -> np.ndarray:
    """Boolean mask of the points inside a polygon, by the even-odd rule.

    Parameters
    ----------
    xy : array_like, shape (N, 2)
        Point coordinates; NaN rows are outside.
    polygon : array_like, shape (M, 2)
        Vertices in drawing order (a browser lasso); closing the ring is
        implicit, a repeated first vertex is harmless.  Self-intersecting
        polygons are fine: regions crossed an odd number of times are inside.
        Fewer than 3 vertices encloses nothing.

    Returns
    -------
    numpy.ndarray of bool, shape (N,)

    Notes
    -----
    Points outside the polygon's bounding box are discarded first.  The rest
    are bucketed into horizontal strips, so each edge only tests the
    contiguous run of points in the strips its y band spans: the work grows
    with the number of edge crossings rather than points × edges (timings:
    benchmarks/README.md, "Render layer").  A point on
    the boundary may fall either side, as in any crossing test.
    """
    xy = _as_xy(xy)
    polygon = _as_xy(polygon, "polygon")
    inside = np.zeros(len(xy), dtype=bool)
    polygon = polygon[np.isfinite(polygon).all(axis=1)]
    if len(polygon) < 3 or len(xy) == 0:
        return inside

    (x_low, y_low), (x_high, y_high) = polygon.min(axis=0), polygon.max(axis=0)
    candidates = np.flatnonzero(points_in_box(xy, x_low, x_high, y_low, y_high))
    if len(candidates) == 0 or y_high <= y_low:
        return inside

    # Bucket the candidates into horizontal strips (a 16-bit radix sort, much
    # faster than sorting the floats) so each edge visits only the strips its
    # y band overlaps.
    strips = int(np.clip(len(candidates) // 32, 1, 4096))
    strip_height = (y_high - y_low) / strips
    py = xy[candidates, 1].astype(np.float64)
    strip_of = np.minimum(((py - y_low) / strip_height).astype(np.int16), strips - 1)
    order = np.argsort(strip_of, kind="stable")
    candidates, py = candidates[order], py[order]
    px = xy[candidates, 0].astype(np.float64)
    strip_start = np.concatenate([[0], np.cumsum(np.bincount(strip_of, minlength=strips))])
    crossed_odd = np.zeros(len(candidates), dtype=bool)

    start = polygon
    end = np.roll(polygon, -1, axis=0)
    band_low = np.minimum(start[:, 1], end[:, 1])
    band_high = np.maximum(start[:, 1], end[:, 1])
    first_strip = np.clip(((band_low - y_low) / strip_height).astype(np.int64), 0, strips - 1)
    last_strip = np.clip(((band_high - y_low) / strip_height).astype(np.int64), 0, strips - 1)
    for k in np.flatnonzero(band_high > band_low):
        run = slice(strip_start[first_strip[k]], strip_start[last_strip[k] + 1])
        y_run = py[run]
        (xa, ya), (xb, yb) = start[k], end[k]
        # Half-open bands [low, high) make a ray through a vertex count once.
        in_band = (y_run >= band_low[k]) & (y_run < band_high[k])
        crossing_x = xa + (y_run - ya) * ((xb - xa) / (yb - ya))
        crossed_odd[run] ^= in_band & (px[run] < crossing_x)

    inside[candidates[crossed_odd]] = True
    return inside
