"""Nearest-point lookup for hover on a map of up to millions of points."""

from __future__ import annotations

import threading

import numpy as np
from scipy.spatial import cKDTree

__all__ = ["SpatialIndex"]


def _as_xy(xy) -> np.ndarray:
    array = np.asarray(xy, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != 2:
        raise ValueError(
            f"xy must be an (N, 2) array of map coordinates, got shape {array.shape}; "
            "pass the embedding, e.g. snapshot.embedding"
        )
    return array


class SpatialIndex:
    """k-d tree over the finite points of a 2-D map, built on first use.

    Parameters
    ----------
    xy : array_like, shape (N, 2)
        Map coordinates.  Rows with NaN or infinite values are never returned.

    Notes
    -----
    Building the tree for 1M points takes a fraction of a second, so it is
    deferred until the first query (a map that is never hovered costs
    nothing).  Call :meth:`build` from a worker thread to hide that cost;
    building is guarded by a lock, so concurrent first queries build once.
    """

    def __init__(self, xy) -> None:
        self._xy = _as_xy(xy)
        self._tree: cKDTree | None = None
        self._original_index: np.ndarray | None = None
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._xy)

    @property
    def is_built(self) -> bool:
        """bool : Whether the tree exists already."""
        return self._tree is not None

    def build(self) -> "SpatialIndex":
        """Build the tree now (idempotent) and return ``self``."""
        if self._tree is None:
            with self._lock:
                if self._tree is None:
                    finite = np.isfinite(self._xy).all(axis=1)
                    # A live map gets a new tree every snapshot: skipping balancing
                    # and node compaction builds it faster without slowing queries
                    # (benchmarks/README.md, "Render layer").
                    original_index = np.flatnonzero(finite)
                    tree = cKDTree(
                        self._xy[finite], balanced_tree=False, compact_nodes=False
                    )
                    self._original_index = original_index
                    self._tree = tree
        return self

    def nearest(self, x: float, y: float, radius: float | None = None) -> int | None:
        """Index of the point closest to ``(x, y)``.

        Parameters
        ----------
        x, y : float
            Query position in data coordinates.
        radius : float or None
            Only points strictly closer than this count (e.g. a few pixels
            converted to data units).  None means no limit.

        Returns
        -------
        int or None
            Row of ``xy`` of the closest finite point, or None when there is
            none within ``radius`` (or no finite point at all).
        """
        if not (np.isfinite(x) and np.isfinite(y)):
            return None
        if radius is not None and not radius > 0:
            return None
        self.build()
        if len(self._original_index) == 0:
            return None
        bound = np.inf if radius is None else float(radius)
        distance, position = self._tree.query((float(x), float(y)), k=1, distance_upper_bound=bound)
        if not np.isfinite(distance):
            return None
        return int(self._original_index[position])
