"""Curation state: the current selection, named tags, and suggested selections.

Plain numpy and pandas (the suggestions add scipy); no torch, no bokeh, so the widget, the
CLI and scripts share one model of "what the user picked".

* :class:`SelectionModel` -- the current selection with set algebra, bounded undo/redo and
  observers.
* :class:`TagStore` -- several named tags, each a set of image indices, saved as CSV or
  Parquet.
* :func:`suggest_outliers`, :func:`suggest_duplicates` (defined in :mod:`.suggestions`) --
  candidate selections for the user to inspect; they never change any state on their own.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

# Re-exported: curation is the one place to import the curation tools from.
from .suggestions import outlier_scores, suggest_duplicates, suggest_outliers

__all__ = [
    "SelectionModel",
    "TagStore",
    "validate_tag_name",
    "outlier_scores",
    "suggest_outliers",
    "suggest_duplicates",
    "SELECTION_MODES",
    "TAG_NAME_MAX_LENGTH",
]

SELECTION_MODES = ("replace", "add", "subtract", "intersect")
TAG_NAME_MAX_LENGTH = 64

# A whitelist rather than a blacklist: tag names become folder names on every OS and are
# joined with ";" in tables, so anything outside this set could escape the export folder,
# be illegal on Windows, or make the joined column ambiguous.
_TAG_EXTRA_CHARS = " _-.+()[],@#=&!~'"
_TAG_ALLOWED_TEXT = (
    "letters, digits, spaces and the characters " + " ".join(_TAG_EXTRA_CHARS.strip())
    + f"; at most {TAG_NAME_MAX_LENGTH} characters; no leading dot or space, no trailing "
    "space, no '..'"
)
_WINDOWS_RESERVED = re.compile(r"^(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?$", re.IGNORECASE)


def validate_tag_name(name: object) -> str:
    """Check that ``name`` can be a tag name and a folder name everywhere.

    Parameters
    ----------
    name : str
        Candidate tag name.

    Returns
    -------
    str
        ``name`` unchanged.

    Raises
    ------
    TypeError
        If ``name`` is not a string.
    ValueError
        If ``name`` is empty, longer than 64 characters, starts with a dot or space, ends
        with a space, contains ``..``, a path separator, NUL, ``;`` or any character outside
        letters, digits, spaces and ``_-.+()[],@#=&!~'``, or is a reserved Windows device
        name. The message lists the allowed characters.
    """
    if not isinstance(name, str):
        raise TypeError(f"tag name must be a str, got {type(name).__name__}")
    problem = None
    if not name:
        problem = "it is empty"
    elif len(name) > TAG_NAME_MAX_LENGTH:
        problem = f"it has {len(name)} characters"
    elif name[0] in ". ":
        problem = "it starts with a dot or a space"
    elif name[-1] == " ":
        problem = "it ends with a space"
    elif ".." in name:
        problem = "it contains '..'"
    elif _WINDOWS_RESERVED.match(name):
        problem = "it is a reserved device name on Windows"
    else:
        bad = sorted({c for c in name if not (c.isalnum() or c in _TAG_EXTRA_CHARS)})
        if bad:
            problem = "it contains " + ", ".join(repr(c) for c in bad)
    if problem is not None:
        raise ValueError(f"invalid tag name {name!r}: {problem}. Allowed: {_TAG_ALLOWED_TEXT}.")
    return name


def _as_indices(indices: object, n: int, what: str = "indices") -> np.ndarray:
    """Validate ``indices`` (ints or a length-``n`` bool mask) into sorted unique int64."""
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


def _frozen(arr: np.ndarray) -> np.ndarray:
    arr.flags.writeable = False
    return arr


def _notify(callbacks: Sequence[Callable], payload: object) -> None:
    """Call every observer even if one fails, then re-raise the first failure."""
    first_error = None
    for callback in callbacks:
        try:
            callback(payload)
        except Exception as exc:  # noqa: BLE001 - re-raised below after the others ran
            if first_error is None:
                first_error = exc
    if first_error is not None:
        raise first_error


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
        self._current = _frozen(np.empty(0, dtype=np.int64))
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
        picked = _as_indices(indices, self.n)
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
        self._current = _frozen(new)
        _notify(list(self._observers), self._current)
        return self._current


class TagStore:
    """Named tags, each a set of image indices.

    Parameters
    ----------
    n : int
        Number of images; valid indices are ``0..n-1``.

    Notes
    -----
    * :meth:`add` with a name that already exists merges (set union) into that tag.
    * Empty tags are allowed (a tag can be created before anything is put in it); they are
      kept by :meth:`save` (as a row with an empty index) and flagged by the exports.
    * Names are checked by :func:`validate_tag_name` because they become folder names.
    """

    def __init__(self, n: int) -> None:
        if int(n) < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        self.n = int(n)
        self._tags: dict[str, np.ndarray] = {}
        self._observers: list[Callable[[TagStore], object]] = []

    @property
    def names(self) -> tuple[str, ...]:
        """Tag names in creation order."""
        return tuple(self._tags)

    @property
    def empty_names(self) -> tuple[str, ...]:
        """Names of tags with no images."""
        return tuple(name for name, idx in self._tags.items() if idx.size == 0)

    def __len__(self) -> int:
        return len(self._tags)

    def __contains__(self, name: object) -> bool:
        return name in self._tags

    def __iter__(self):
        return iter(self.names)

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k!r}: {v.size}" for k, v in self._tags.items())
        return f"TagStore(n={self.n}, {{{sizes}}})"

    def _get(self, name: str) -> np.ndarray:
        try:
            return self._tags[name]
        except KeyError:
            known = ", ".join(repr(k) for k in self._tags) or "none yet"
            raise KeyError(f"no tag named {name!r}; existing tags: {known}") from None

    def indices(self, name: str) -> np.ndarray:
        """Sorted unique int64 indices in tag ``name`` (read-only array)."""
        return self._get(name)

    def add(self, name: str, indices: object = ()) -> np.ndarray:
        """Put ``indices`` into tag ``name``, creating it if needed (merges if it exists).

        Returns
        -------
        numpy.ndarray
            The tag's indices after the change.
        """
        validate_tag_name(name)
        picked = _as_indices(indices, self.n)
        old = self._tags.get(name)
        new = picked if old is None else np.union1d(old, picked).astype(np.int64)
        self._tags[name] = _frozen(new)
        if old is None or not np.array_equal(old, new):
            _notify(list(self._observers), self)
        return self._tags[name]

    def remove(self, name: str, indices: object = None) -> None:
        """Delete tag ``name`` (``indices=None``) or take ``indices`` out of it.

        Taking every index out leaves an empty tag; only ``indices=None`` deletes it.
        """
        old = self._get(name)
        if indices is None:
            del self._tags[name]
        else:
            picked = _as_indices(indices, self.n)
            self._tags[name] = _frozen(np.setdiff1d(old, picked, assume_unique=True))
        _notify(list(self._observers), self)

    def rename(self, old: str, new: str) -> None:
        """Rename tag ``old`` to ``new``, keeping its position in :attr:`names`.

        Raises
        ------
        ValueError
            If ``new`` is invalid or already exists (use :meth:`add` to merge tags).
        """
        validate_tag_name(new)
        self._get(old)
        if new == old:
            return
        if new in self._tags:
            raise ValueError(
                f"a tag named {new!r} already exists; to merge, use "
                f"store.add({new!r}, store.indices({old!r})) then store.remove({old!r})"
            )
        self._tags = {(new if k == old else k): v for k, v in self._tags.items()}
        _notify(list(self._observers), self)

    def clear(self) -> None:
        """Delete every tag."""
        self._tags.clear()
        _notify(list(self._observers), self)

    def tags_of(self, indices: object) -> list[tuple[str, ...]]:
        """The tags of each index in ``indices`` (in :attr:`names` order).

        ``indices`` keep their order and duplicates here, unlike everywhere else.
        """
        arr = np.asarray(indices, dtype=np.int64).reshape(-1)
        _as_indices(arr, self.n)  # range check only
        out: list[list[str]] = [[] for _ in range(arr.size)]
        for name, members in self._tags.items():
            if members.size == 0:
                continue
            pos = np.minimum(np.searchsorted(members, arr), members.size - 1)
            hit = members[pos] == arr
            for row in np.flatnonzero(hit):
                out[row].append(name)
        return [tuple(t) for t in out]

    def observe(self, callback: Callable[[TagStore], object]) -> Callable[[], None]:
        """Call ``callback(store)`` after every change; returns a function that stops it."""
        if not callable(callback):
            raise TypeError("callback must be callable")
        self._observers.append(callback)
        return lambda: self._observers.remove(callback) if callback in self._observers else None

    # -- tables --------------------------------------------------------------------------
    def to_frame(self, include_empty: bool = False) -> pd.DataFrame:
        """Long format: one row per (index, tag), columns ``index`` and ``tag``.

        Parameters
        ----------
        include_empty : bool, default False
            Add one row with a missing index (``pd.NA``) per empty tag so that the table
            keeps it; the ``index`` column is then a nullable ``Int64``.
        """
        idx_parts, tag_parts = [], []
        for name, members in self._tags.items():
            if members.size == 0 and include_empty:
                idx_parts.append(np.array([-1], dtype=np.int64))
                tag_parts.append(np.array([name], dtype=object))
            else:
                idx_parts.append(members)
                tag_parts.append(np.full(members.size, name, dtype=object))
        index = np.concatenate(idx_parts) if idx_parts else np.empty(0, dtype=np.int64)
        tag = np.concatenate(tag_parts) if tag_parts else np.empty(0, dtype=object)
        if include_empty:
            col = pd.array(index, dtype="Int64")
            col[index < 0] = pd.NA
        else:
            col = index
        return pd.DataFrame({"index": col, "tag": pd.Series(tag, dtype=object)})

    def membership(self, n: int | None = None) -> pd.DataFrame:
        """Wide format: ``n`` rows, one boolean column per tag.

        Parameters
        ----------
        n : int, optional
            Number of rows; defaults to the store's ``n`` and may not be smaller.
        """
        n = self.n if n is None else int(n)
        if n < self.n:
            raise ValueError(f"n={n} is smaller than the store's n={self.n}")
        cols = {}
        for name, members in self._tags.items():
            col = np.zeros(n, dtype=bool)
            col[members] = True
            cols[name] = col
        return pd.DataFrame(cols, index=pd.RangeIndex(n))

    # -- files ---------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, overwrite: bool = True) -> Path:
        """Write the tags to ``path`` (``.csv`` or ``.parquet``) atomically.

        The file is long format (columns ``index``, ``tag``); empty tags are rows with an
        empty index. Nothing partial is left behind on failure.

        Parameters
        ----------
        path : str or os.PathLike
            Destination; the suffix picks the format.
        overwrite : bool, default True
            Tag files are usually re-saved in place; pass False to refuse an existing file.

        Returns
        -------
        pathlib.Path
            The written file.
        """
        from .export import write_table  # export imports this module; import lazily

        path = Path(path)
        fmt = _tag_file_format(path)
        # tags are read back by load(): a tag starting with "=" must come back as written
        return write_table(self.to_frame(include_empty=True), path, format=fmt,
                           overwrite=overwrite, spreadsheet_safe=False)

    @classmethod
    def load(cls, path: str | os.PathLike, n: int) -> TagStore:
        """Read a file written by :meth:`save` (or any table with ``index``/``tag`` columns).

        Raises
        ------
        ValueError
            If columns are missing, an index is not an integer in ``0..n-1``, or a tag
            name is invalid.
        """
        path = Path(path)
        fmt = _tag_file_format(path)
        if not path.is_file():
            raise FileNotFoundError(f"tag file not found: {path}")
        if fmt == "csv":
            frame = pd.read_csv(path, dtype={"tag": str}, keep_default_na=False,
                                na_values={"index": [""]})
        else:
            frame = pd.read_parquet(path)
        missing = {"index", "tag"} - set(frame.columns)
        if missing:
            raise ValueError(
                f"{path} is not a tag file: missing column(s) {sorted(missing)}; "
                "expected columns 'index' and 'tag' (as written by TagStore.save)"
            )
        store = cls(n)
        raw_index = pd.to_numeric(frame["index"], errors="coerce")
        bad_number = raw_index.notna() & (raw_index != np.floor(raw_index.fillna(0)))
        unparsable = raw_index.isna() & frame["index"].notna() & (frame["index"].astype(str) != "")
        if bool(bad_number.any() or unparsable.any()):
            row = int(np.flatnonzero((bad_number | unparsable).to_numpy())[0])
            raise ValueError(f"{path}: row {row}: index {frame['index'].iloc[row]!r} is not an integer")
        if frame["tag"].isna().any() or (frame["tag"].astype(str) == "").any():
            row = int(np.flatnonzero((frame["tag"].isna() | (frame["tag"].astype(str) == ""))
                                     .to_numpy())[0])
            raise ValueError(f"{path}: row {row} has no tag name")
        for name, group in frame.groupby("tag", sort=False):
            name = str(name)
            validate_tag_name(name)
            values = raw_index[group.index].dropna().to_numpy(dtype=np.int64)
            try:
                store._tags[name] = _frozen(_as_indices(values, n, what=f"indices of tag {name!r}"))
            except ValueError as exc:
                raise ValueError(f"{path}: {exc}") from None
        return store


def _tag_file_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    raise ValueError(f"tag files are .csv or .parquet, got {path.name!r}; change the suffix")
