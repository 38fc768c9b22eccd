"""Named tags, each a set of image indices, and the rule for tag names.

Tag names become folder names on every OS (exports) and are joined with ``;`` in
tables, hence :func:`validate_tag_name`.  numpy and pandas; files through
:mod:`tsimcne_widgets.io.tables`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from tsimcne_widgets.io.tables import write_table

from .base import as_indices, freeze, notify_all

__all__ = ["TagStore", "validate_tag_name", "TAG_NAME_MAX_LENGTH"]

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
        picked = as_indices(indices, self.n)
        old = self._tags.get(name)
        new = picked if old is None else np.union1d(old, picked).astype(np.int64)
        self._tags[name] = freeze(new)
        if old is None or not np.array_equal(old, new):
            notify_all(list(self._observers), self)
        return self._tags[name]

    def remove(self, name: str, indices: object = None) -> None:
        """Delete tag ``name`` (``indices=None``) or take ``indices`` out of it.

        Taking every index out leaves an empty tag; only ``indices=None`` deletes it.
        """
        old = self._get(name)
        if indices is None:
            del self._tags[name]
        else:
            picked = as_indices(indices, self.n)
            self._tags[name] = freeze(np.setdiff1d(old, picked, assume_unique=True))
        notify_all(list(self._observers), self)

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
        notify_all(list(self._observers), self)

    def clear(self) -> None:
        """Delete every tag."""
        self._tags.clear()
        notify_all(list(self._observers), self)

    def tags_of(self, indices: object) -> list[tuple[str, ...]]:
        """The tags of each index in ``indices`` (in :attr:`names` order).

        ``indices`` keep their order and duplicates here, unlike everywhere else.
        """
        arr = np.asarray(indices, dtype=np.int64).reshape(-1)
        as_indices(arr, self.n)  # range check only
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
                store._tags[name] = freeze(as_indices(values, n, what=f"indices of tag {name!r}"))
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
