"""Suggested selections: map outliers and near-duplicate images (numpy + scipy only).

Each function returns candidate indices for the user to inspect (for example with
``SelectionModel.set``); nothing here changes any state or removes anything.
"""

from __future__ import annotations

import numpy as np

__all__ = ["outlier_scores", "suggest_outliers", "suggest_duplicates"]


def _check_xy(xy: object) -> np.ndarray:
    arr = np.asarray(xy, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"xy must have shape (N, 2), got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError("xy contains NaN or infinite values; wait for a finished map")
    return arr


def outlier_scores(xy: object, k: int = 15) -> np.ndarray:
    """How isolated each point is relative to its neighbourhood in the map.

    The score of point *i* is its distance to its *k*-th nearest neighbour divided by the
    median of that same distance over those *k* neighbours, so it is about 1 inside any
    cluster, dense or sparse, and large for a point stranded away from the neighbours it
    has.

    Parameters
    ----------
    xy : array-like, shape (N, 2)
        Map coordinates.
    k : int, default 15
        Neighbourhood size (reduced to ``N - 1`` for tiny maps).

    Returns
    -------
    numpy.ndarray, shape (N,)
        float64 scores (all ones when N < 3).
    """
    from scipy.spatial import cKDTree

    arr = _check_xy(xy)
    n = arr.shape[0]
    if n < 3:
        return np.ones(n)
    k = int(min(max(1, k), n - 1))
    dist, nbr = cKDTree(arr).query(arr, k=k + 1)  # column 0 is the point itself
    kth = dist[:, -1]
    local = np.median(kth[nbr[:, 1:]], axis=1)
    # Exactly coincident neighbourhoods have zero scale; treat them as not outlying.
    with np.errstate(divide="ignore", invalid="ignore"):
        score = np.where(local > 0, kth / local, np.where(kth > 0, np.inf, 1.0))
    return score


def suggest_outliers(xy: object, k: int = 15, top: int | None = None,
                     min_score: float = 3.0) -> np.ndarray:
    """Candidate selection of points far from their map neighbours, for inspection.

    Parameters
    ----------
    xy : array-like, shape (N, 2)
        Map coordinates.
    k : int, default 15
        Neighbourhood size, see :func:`outlier_scores`.
    top : int, optional
        Return at most this many (the highest scores).
    min_score : float, default 3.0
        Only points whose k-th-neighbour distance is at least this many times the local
        median qualify.

    Returns
    -------
    numpy.ndarray
        int64 indices, most isolated first. A suggestion only: pass it to
        ``SelectionModel.set`` to look at the points.
    """
    score = outlier_scores(xy, k=k)
    order = np.argsort(-score, kind="stable")
    order = order[score[order] >= min_score]
    if top is not None:
        order = order[: max(0, int(top))]
    return order.astype(np.int64)


def suggest_duplicates(xy: object, images_or_features: object, map_radius: float | None = None,
                       pixel_threshold: float = 0.02, max_pairs: int = 2_000_000
                       ) -> list[np.ndarray]:
    """Candidate groups of near-duplicate images, for inspection.

    A pair qualifies when the two points almost coincide in the map AND their pixels (or
    features) are close; pairs are then joined into groups (connected components).

    Parameters
    ----------
    xy : array-like, shape (N, 2)
        Map coordinates.
    images_or_features : array-like
        ``(N, H, W, C)`` or ``(N, H, W)`` images (uint8 is scaled to [0, 1]) or ``(N, D)``
        features.
    map_radius : float, optional
        Map distance under which a pair is a candidate. Default: a quarter of the median
        nearest-neighbour distance in the map.
    pixel_threshold : float, default 0.02
        Largest mean absolute difference per value (on the [0, 1] scale for uint8
        images, i.e. about 5 grey levels) for the pair to count as duplicates.
    max_pairs : int, default 2,000,000
        Guard against a radius so large that the pair list would not fit in memory.

    Returns
    -------
    list of numpy.ndarray
        Each group is sorted int64 indices (at least two); groups are ordered by their first
        index. A suggestion only: nothing is removed.
    """
    from scipy.spatial import cKDTree

    arr = _check_xy(xy)
    n = arr.shape[0]
    values = np.asarray(images_or_features)
    if values.shape[0] != n:
        raise ValueError(f"images_or_features has {values.shape[0]} rows but xy has {n}")
    if values.ndim < 2:
        raise ValueError("images_or_features must be (N, H, W[, C]) images or (N, D) features")
    scale = 255.0 if values.dtype == np.uint8 else 1.0
    flat = values.reshape(n, -1)
    if n < 2:
        return []
    tree = cKDTree(arr)
    if map_radius is None:
        nn = tree.query(arr, k=2)[0][:, 1]
        map_radius = 0.25 * float(np.median(nn))
    if map_radius <= 0:
        # Coincident maps (median distance 0): only exact coincidences are candidates.
        map_radius = 1e-12
    pairs = tree.query_pairs(float(map_radius), output_type="ndarray")
    if len(pairs) > max_pairs:
        raise ValueError(
            f"map_radius={map_radius:g} gives {len(pairs):,} candidate pairs (> max_pairs="
            f"{max_pairs:,}); pass a smaller map_radius"
        )
    keep = np.zeros(len(pairs), dtype=bool)
    chunk = max(1, 4_000_000 // max(1, flat.shape[1]))  # bound the temporary float array
    for start in range(0, len(pairs), chunk):
        a, b = pairs[start:start + chunk].T
        diff = np.abs(flat[a].astype(np.float32) - flat[b].astype(np.float32)).mean(axis=1)
        keep[start:start + chunk] = diff / scale <= pixel_threshold
    pairs = pairs[keep]
    if len(pairs) == 0:
        return []
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    involved = np.unique(pairs)
    groups: dict[int, list[int]] = {}
    for i in involved:
        groups.setdefault(int(component[i]), []).append(int(i))
    result = [np.asarray(g, dtype=np.int64) for g in groups.values()]
    result.sort(key=lambda g: int(g[0]))
    return result
