"""The current selection of images: set algebra, bounded undo/redo and observers.

Plain numpy, no torch, no bokeh, so the widget, the CLI and scripts share one model of
"what the user picked".  The selection modes (:data:`SELECTION_MODES`) live here only:
the lasso and box tools in :mod:`tsimcne_widgets.render.lasso` compute which points a
gesture covers, and :meth:`SelectionModel.set` combines them with the selection.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np

from .base import as_indices, freeze, notify_all

__all__ = ["SelectionModel", "SELECTION_MODES"]

#: How :meth:`SelectionModel.set` combines picked images with the current selection.
SELECTION_MODES = ("replace", "add", "subtract", "intersect")


class SelectionModel:
    """The current selection of images, with set algebra, undo/redo and observers.

    Parameters
    ----------
    n : int
        Number of images; valid indices are ``0..n-1``.
    history : int, default 50
        How many past selections :meth:`undo` can go back to.

    Notes
    -----
    A change that leaves the selection unchanged records no history and notifies no
    observer. Observers are called synchronously with the new selection (a read-only,
    sorted, unique int64 array) after the state is updated.
    """

    def __init__(self, n: int, history: int = 50) -> None:
        if int(n) < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        if int(history) < 1:
            raise ValueError(f"history must be >= 1, got {history}")
        self.n = int(n)
        self.history = int(history)
        self._current = freeze(np.empty(0, dtype=np.int64))
        self._undo: list[np.ndarray] = []
        self._redo: list[np.ndarray] = []
        self._observers: list[Callable[[np.ndarray], object]] = []
        self._lock = threading.RLock()

    # -- reading -------------------------------------------------------------------------
    @property
    def indices(self) -> np.ndarray:
        """Sorted unique int64 indices of the selection (read-only array)."""
        return self._current

    @property
    def mask(self) -> np.ndarray:
        """Boolean mask of length ``n``, True where selected (a fresh array)."""
        out = np.zeros(self.n, dtype=bool)
        out[self._current] = True
        return out

    @property
    def count(self) -> int:
        """Number of selected images."""
        return int(self._current.size)

    def __len__(self) -> int:
        return self.count

    def __contains__(self, index: object) -> bool:
        pos = np.searchsorted(self._current, index)
        return bool(pos < self._current.size and self._current[pos] == index)

    def __repr__(self) -> str:
        return f"SelectionModel(n={self.n}, selected={self.count})"

    @property
    def can_undo(self) -> bool:
        """Whether :meth:`undo` would change anything."""
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        """Whether :meth:`redo` would change anything."""
        return bool(self._redo)

    # -- changing ------------------------------------------------------------------------
    def set(self, indices: object, mode: str = "replace") -> np.ndarray:
        """Combine ``indices`` with the current selection.

        Parameters
        ----------
        indices : array-like of int or bool mask of length ``n``
            The picked images (duplicates and order do not matter).
        mode : {"replace", "add", "subtract", "intersect"}
            ``replace`` makes ``indices`` the selection; ``add`` is the union,
            ``subtract`` the difference and ``intersect`` the intersection with the
            current selection.

        Returns
        -------
        numpy.ndarray
            The new selection.

        Raises
        ------
        ValueError
            For an unknown mode or indices outside ``0..n-1``.
        """
        if mode not in SELECTION_MODES:
            raise ValueError(f"mode must be one of {SELECTION_MODES}, got {mode!r}")
        picked = as_indices(indices, self.n)
        with self._lock:
            current = self._current
            if mode == "replace":
                new = picked
            elif mode == "add":
                new = np.union1d(current, picked)
            elif mode == "subtract":
                new = np.setdiff1d(current, picked, assume_unique=True)
            else:
                new = np.intersect1d(current, picked, assume_unique=True)
            return self._apply(new.astype(np.int64, copy=False), record=True)

    def clear(self) -> np.ndarray:
        """Select nothing (undoable)."""
        return self.set([], mode="replace")

    def undo(self) -> bool:
        """Go back to the previous selection.

        Returns
        -------
        bool
            False when there was nothing to undo.
        """
        with self._lock:
            if not self._undo:
                return False
            self._redo.append(self._current)
            self._apply(self._undo.pop(), record=False)
            return True

    def redo(self) -> bool:
        """Re-apply the last undone change.

        Returns
        -------
        bool
            False when there was nothing to redo.
        """
        with self._lock:
            if not self._redo:
                return False
            self._undo.append(self._current)
            self._apply(self._redo.pop(), record=False)
            return True

    def observe(self, callback: Callable[[np.ndarray], object]) -> Callable[[], None]:
        """Call ``callback(new_selection)`` after every change.

        Returns
        -------
        callable
            Call it (no arguments) to stop observing.
        """
        if not callable(callback):
            raise TypeError("callback must be callable")
        self._observers.append(callback)
        return lambda: self.unobserve(callback)

    def unobserve(self, callback: Callable[[np.ndarray], object]) -> None:
        """Stop calling ``callback``; unknown callbacks are ignored."""
        if callback in self._observers:
            self._observers.remove(callback)

    def _apply(self, new: np.ndarray, record: bool) -> np.ndarray:
        if np.array_equal(new, self._current):
            return self._current
        if record:
            self._undo.append(self._current)
            del self._undo[: max(0, len(self._undo) - self.history)]
            self._redo.clear()
        self._current = freeze(new)
        notify_all(list(self._observers), self._current)
        return self._current
