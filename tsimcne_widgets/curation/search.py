"""Find images by text: a substring or a regular expression over labels, file names and metadata.

numpy + pandas only; the Explorer's search box and :meth:`Explorer.search` select what
:func:`search_images` finds.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

__all__ = ["search_images", "searchable_columns", "LABEL_FIELD", "PATH_FIELD"]

#: The field of the images' labels.
LABEL_FIELD = "label"
#: The field of the images' file names (the last part of each path).
PATH_FIELD = "path"


def _fields(labels, paths, metadata: pd.DataFrame | None) -> dict[str, pd.Series]:
    fields: dict[str, pd.Series] = {}
    if labels is not None:
        fields[LABEL_FIELD] = pd.Series(np.asarray(labels, dtype=object).ravel())
    if paths is not None:
        # The file name only: a folder that holds every image would match every search.
        names = [None if p is None else os.path.basename(os.fspath(p)) for p in paths]
        fields[PATH_FIELD] = pd.Series(names, dtype=object)
    if metadata is not None:
        for column in metadata.columns:
            name = str(column)
            if name not in fields:
                fields[name] = metadata[column].reset_index(drop=True)
    return fields


def searchable_columns(labels=None, paths=None, metadata: pd.DataFrame | None = None) -> list[str]:
    """Names :func:`search_images` accepts in ``columns``: ``"label"``, ``"path"``, metadata."""
    return list(_fields(labels, paths, metadata))


def search_images(query: str, *, labels=None, paths=None, metadata: pd.DataFrame | None = None,
                  regex: bool = False, columns: Sequence[str] | None = None,
                  n: int | None = None) -> np.ndarray:
    """Indices of the images whose label, file name or a metadata value matches ``query``.

    Parameters
    ----------
    query : str
        Text to find, case-insensitive: a substring, or with ``regex`` a Python
        regular expression (``re.search``: it may match anywhere in a value).
    labels : array_like, shape (N,), optional
    paths : sequence of str or path-like, shape (N,), optional
        Image files; only the file name is searched, not its folders.
    metadata : pandas.DataFrame, optional
        N rows; every column is searched as text (numbers as Python writes
        them, e.g. ``"0.5"``).  Missing values never match.
    regex : bool
        Treat ``query`` as a regular expression.
    columns : sequence of str, optional
        Search only these fields (see :func:`searchable_columns`); default all.
    n : int, optional
        Number of images, checked against every field.

    Returns
    -------
    numpy.ndarray of int64
        Sorted indices of the matching images (empty when none matches).

    Raises
    ------
    ValueError
        For an empty query, a query that is not a valid regular expression,
        an unknown column, or fields of different lengths; nothing is selected.

    Examples
    --------
    >>> search_images("cat", labels=["cat", "dog", "Wildcat"]).tolist()
    [0, 2]
    >>> search_images("^cat$", labels=["cat", "dog", "Wildcat"], regex=True).tolist()
    [0]
    """
    if not isinstance(query, str) or not query.strip():
        raise ValueError("the search is empty: type some text to find in labels, file "
                         "names or metadata")
    if regex:
        try:
            pattern = re.compile(query, re.IGNORECASE)
        except re.error as error:
            raise ValueError(f"not a valid regular expression: {query!r} ({error}); fix it, "
                             "or turn the regex switch off to search for the text as "
                             "written") from None
    fields = _fields(labels, paths, metadata)
    if columns is not None:
        columns = [columns] if isinstance(columns, str) else [str(c) for c in columns]
        unknown = [c for c in columns if c not in fields]
        if unknown:
            raise ValueError(f"cannot search {unknown}: the columns are {list(fields)}")
        fields = {name: fields[name] for name in columns}
    lengths = {name: len(values) for name, values in fields.items()}
    expected = n if n is not None else next(iter(lengths.values()), 0)
    wrong = {name: length for name, length in lengths.items() if length != expected}
    if wrong:
        raise ValueError(f"every field needs {expected} values, one per image; got {wrong}")
    found = np.zeros(expected, dtype=bool)
    for values in fields.values():
        present = values.notna().to_numpy()
        text = values[present].astype(str)
        if regex:
            hits = np.fromiter((pattern.search(v) is not None for v in text), bool, len(text))
        else:
            hits = text.str.contains(query, case=False, regex=False).to_numpy(dtype=bool)
        found[np.flatnonzero(present)[hits]] = True
    return np.flatnonzero(found).astype(np.int64)
