"""Tables on disk: CSV, Parquet or JSON Lines, written atomically and safe to open in a spreadsheet.

pandas plus :mod:`.atomic`; Parquet needs pyarrow, imported only when asked for.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from .atomic import atomic_path

__all__ = ["write_table", "table_format", "neutralise_formulas", "FORMULA_PREFIXES"]

_TABLE_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet",
                   ".jsonl": "jsonl", ".ndjson": "jsonl"}
# RFC 4180 line ends. Python's csv module quotes a cell holding a line-end character only
# when that character is in the line terminator, so with "\n" alone a label holding a
# bare "\r" was written unquoted and split its row in two for every reader.
_CSV_LINE_END = "\r\n"
#: A spreadsheet reads a cell starting with one of these as a formula (CSV injection).
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def table_format(path: str | os.PathLike, format: str | None = None) -> str:
    """``"csv"``, ``"parquet"`` or ``"jsonl"`` from ``format`` or the file suffix.

    Parameters
    ----------
    path : str or os.PathLike
        The table's file name; its suffix decides when ``format`` is None
        (``.csv``, ``.parquet``/``.pq``, ``.jsonl``/``.ndjson``).
    format : str, optional
        One of the names above (a leading dot and ``pq``/``ndjson`` are accepted).

    Returns
    -------
    str

    Raises
    ------
    ValueError
        For an unknown format or suffix; the message lists the accepted ones.
    """
    if format is not None:
        fmt = format.lower().lstrip(".")
        fmt = {"pq": "parquet", "ndjson": "jsonl"}.get(fmt, fmt)
        if fmt not in ("csv", "parquet", "jsonl"):
            raise ValueError(f"format must be 'csv', 'parquet' or 'jsonl', got {format!r}")
        return fmt
    suffix = Path(path).suffix.lower()
    if suffix not in _TABLE_SUFFIXES:
        raise ValueError(f"cannot tell the table format of {Path(path).name!r}: use a .csv, "
                         ".parquet or .jsonl suffix, or pass format=")
    return _TABLE_SUFFIXES[suffix]


def _is_formula(value: object) -> bool:
    return isinstance(value, str) and value.startswith(FORMULA_PREFIXES)


def neutralise_formulas(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``df`` whose text cells a spreadsheet cannot run as formulas.

    A text cell (or column name) starting with ``=``, ``+``, ``-``, ``@``, a tab or a
    carriage return gets a leading single quote, as OWASP recommends against CSV
    injection: Excel, LibreOffice and Google Sheets then show the text instead of
    evaluating e.g. ``=HYPERLINK(...)``.  Numeric, boolean and date columns, and numbers
    inside mixed columns, are left alone, so ``-1.5`` stays a number.

    Parameters
    ----------
    df : pandas.DataFrame

    Returns
    -------
    pandas.DataFrame
        A new frame; ``df`` is not modified.
    """
    out = df.copy(deep=False)
    for position in range(out.shape[1]):
        column = out.iloc[:, position]
        if (pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column)
                or pd.api.types.is_datetime64_any_dtype(column)
                or isinstance(column.dtype, pd.PeriodDtype)
                or pd.api.types.is_timedelta64_dtype(column)):
            continue
        values = column.astype(object)
        risky = values.map(_is_formula).to_numpy(dtype=bool)
        if risky.any():
            values = values.copy()
            values[risky] = ["'" + v for v in values[risky]]
            out.isetitem(position, values)
    out.columns = ["'" + c if _is_formula(c) else c for c in out.columns]
    return out


def write_table(df: pd.DataFrame, path: str | os.PathLike, format: str | None = None,
                overwrite: bool = False, spreadsheet_safe: bool = True) -> Path:
    """Write ``df`` as CSV, Parquet or JSON Lines, atomically.

    Parameters
    ----------
    df : pandas.DataFrame
        The table (e.g. from :func:`~tsimcne_widgets.curation.export.selection_frame`);
        its index is not written.
    path : str or os.PathLike
        Destination file; its folder must exist.
    format : {"csv", "parquet", "jsonl"}, optional
        Default: from the suffix (``.csv``, ``.parquet``/``.pq``, ``.jsonl``/``.ndjson``).
    overwrite : bool, default False
        Replace an existing file.
    spreadsheet_safe : bool, default True
        CSV only: text cells that a spreadsheet would run as a formula get a leading
        single quote (see :func:`neutralise_formulas`).  Pass False for a CSV that a
        program reads back and whose text must stay exact.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    FileExistsError
        If the file exists and ``overwrite`` is False.
    ImportError
        For Parquet without pyarrow; the message says what to install.
    PermissionError, OSError
        If the location cannot be written; the message names the path and a fix.
        No partial file is left behind.
    """
    path = Path(path)
    fmt = table_format(path, format)
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ImportError("writing Parquet needs pyarrow: pip install pyarrow "
                              "(or write .csv / .jsonl instead)") from None
    with atomic_path(path, overwrite=overwrite) as tmp:
        if fmt == "csv":
            (neutralise_formulas(df) if spreadsheet_safe else df).to_csv(
                tmp, index=False, lineterminator=_CSV_LINE_END)
        elif fmt == "parquet":
            df.to_parquet(tmp, index=False)
        else:
            df.to_json(tmp, orient="records", lines=True, force_ascii=False)
    return path
