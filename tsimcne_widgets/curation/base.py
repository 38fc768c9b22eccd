"""Index validation and observer calls shared by selections, tags, exports and subsets.

numpy only; the other curation modules build on it, so it imports none of them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["as_indices", "freeze", "notify_all"]


def as_indices(indices: object, n: int, what: str = "indices") -> np.ndarray:
    """Validate a selection of images into sorted unique int64 indices.

    Parameters
    ----------
    indices : array-like of int, bool mask of length ``n``, set or scalar
        The picked images; order and duplicates do not matter.
    n : int
        Number of images; valid indices are ``0..n-1``.
    what : str
        How the error messages call ``indices``.

    Returns
    -------
    numpy.ndarray
        Sorted unique int64 indices (a new array).

    Raises
    ------
    TypeError
        For values that are neither integers nor booleans.
    ValueError
        For indices outside ``0..n-1``, a mask of the wrong length or a 2-D input.
    """
    if isinstance(indices, (set, frozenset)):
        indices = sorted(indices)
    arr = np.asarray(indices)
    if arr.dtype == object:
        # Lists of Python ints mixed with numpy ints come through as object arrays.
        try:
            arr = arr.astype(np.int64)
        except (TypeError, ValueError):
            raise TypeError(f"{what} must be integers or a boolean mask, got {arr.dtype}") from None
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise ValueError(f"{what} must be one-dimensional, got shape {arr.shape}")
    if arr.dtype == bool:
        if arr.shape[0] != n:
            raise ValueError(
                f"boolean mask for {what} has length {arr.shape[0]}, expected {n} (one per image)"
            )
        return np.flatnonzero(arr).astype(np.int64)
    if arr.size == 0:
        return np.empty(0, dtype=np.int64)
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(
            f"{what} must be integers or a boolean mask, got dtype {arr.dtype}; "
            "convert with np.asarray(indices, dtype=int)"
        )
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= n:
        bad = lo if lo < 0 else hi
        raise ValueError(
            f"{what} out of range: got {bad}, valid range is 0..{n - 1} (n={n})"
            if n > 0 else f"{what} out of range: got {bad}, but there are no images (n=0)"
        )
    return np.unique(arr.astype(np.int64, copy=False))


def freeze(arr: np.ndarray) -> np.ndarray:
    """Make ``arr`` read-only in place and return it (selections are shared, never edited)."""
    arr.flags.writeable = False
    return arr


def notify_all(callbacks: Sequence[Callable], payload: object) -> None:
    """Call every observer with ``payload``; one failing does not stop the others.

    The first failure is re-raised once every observer has run.
    """
    first_error = None
    for callback in callbacks:
        try:
            callback(payload)
        except Exception as exc:  # noqa: BLE001 - re-raised below after the others ran
            if first_error is None:
                first_error = exc
    if first_error is not None:
        raise first_error
