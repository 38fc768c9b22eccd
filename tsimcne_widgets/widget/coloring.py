"""What the map's points are coloured by: categories with a legend, or a number with a colour bar.

numpy + pandas, no Bokeh or ipywidgets: :func:`column_coloring` turns the Explorer's
choice (``"label"``, a metadata column or ``"none"``) into a :class:`Coloring`, which
:meth:`~tsimcne_widgets.widget.canvas.MapCanvas.set_coloring` draws.  The Explorer's
colour and search methods live here too (:class:`ColorAndSearch`, a mixin).

The rule for numbers: a numeric column (int or float, not bool) is coloured through a
continuous colormap with a colour bar when it has at least two distinct values and
either more distinct values than :data:`MAX_CATEGORIES` or any value with a fractional
part.  So a float measurement is always continuous, while a small integer code (also
one stored as float because it has gaps, as pandas does) keeps a categorical legend.
Labels are always categories.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from tsimcne_widgets.render.palette import natural_key

from .state import NO_COLOR

__all__ = ["Coloring", "ColorAndSearch", "categorize", "coloring_of", "column_coloring",
           "color_options", "LABEL", "MAX_CATEGORIES", "MISSING_CATEGORY", "OTHER_CATEGORY"]

#: The colour option that colours by the images' labels.
LABEL = "label"
MISSING_CATEGORY = "(missing)"
#: More legend rows than this stop being readable; the rest share one colour.
MAX_CATEGORIES = 20
OTHER_CATEGORY = "(other)"


@dataclass(frozen=True, eq=False)
class Coloring:
    """How to colour the points of a map.

    Exactly one of ``categories`` (with ``codes``) and ``values`` (with
    ``value_range``) is set, or neither (every point alike).

    Attributes
    ----------
    column : str
        What the colouring shows (a colour option).
    categories : tuple of str or None
        Legend entries; ``codes`` index into them.
    codes : numpy.ndarray of int32 or None
        Category of each point.
    values : numpy.ndarray of float64 or None
        Value of each point, NaN where it has none.
    value_range : (float, float) or None
        Smallest and largest value: the colour bar's ends.
    missing : int
        Points without a value (drawn gray), when colouring by values.
    """

    column: str
    categories: tuple[str, ...] | None = None
    codes: np.ndarray | None = None
    values: np.ndarray | None = None
    value_range: tuple[float, float] | None = None
    missing: int = 0

    @property
    def kind(self) -> str:
        """str : ``"continuous"``, ``"categorical"`` or ``"none"``."""
        if self.values is not None:
            return "continuous"
        return "none" if self.categories is None else "categorical"

    @property
    def title(self) -> str:
        """str : The colour bar's title: the column, and how many points are gray."""
        if not self.missing:
            return self.column
        return f"{self.column} (gray: {self.missing:,} without a value)"


def categorize(values, max_categories: int = MAX_CATEGORIES):
    """Turn per-point values into ``(categories, codes)`` for a categorical legend.

    Parameters
    ----------
    values : array_like, shape (N,)
        Labels or a metadata column.  Missing values become ``"(missing)"``.
    max_categories : int
        The most frequent ``max_categories - 1`` values keep their own colour
        when there are more; the rest become ``"(other)"``.

    Returns
    -------
    categories : list of str
        In natural order ("2" before "10"), "(missing)" and "(other)" last.
    codes : numpy.ndarray of int32, shape (N,)
    """
    series = pd.Series(np.asarray(values, dtype=object).ravel())
    missing = series.isna().to_numpy()
    names = series.map(str).where(~missing, MISSING_CATEGORY)
    counts = names.value_counts(sort=True)
    if len(counts) > max_categories:
        keep = set(counts.index[: max_categories - 1])
        names = names.where(names.isin(keep), OTHER_CATEGORY)
    last = (MISSING_CATEGORY, OTHER_CATEGORY)
    categories = sorted(set(names), key=lambda name: natural_key(name, last=last))
    lookup = {name: k for k, name in enumerate(categories)}
    return categories, names.map(lookup).to_numpy(dtype=np.int32)


def _numbers(values) -> np.ndarray | None:
    """float64 copy of a numeric column (NaN where missing), None for anything else."""
    series = values if isinstance(values, pd.Series) else pd.Series(np.asarray(values).ravel())
    if pd.api.types.is_bool_dtype(series):
        return None
    if pd.api.types.is_numeric_dtype(series):
        return series.to_numpy(dtype=np.float64, na_value=np.nan)
    if series.dtype != object:
        return None
    present = series[series.notna()]
    numeric = present.map(lambda v: isinstance(v, (int, float, np.number))
                          and not isinstance(v, (bool, np.bool_)))
    if present.empty or not numeric.all():
        return None
    return pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64)


def coloring_of(values, column: str, *, categorical: bool = False,
                max_categories: int = MAX_CATEGORIES) -> Coloring:
    """Colouring of the points by ``values``: continuous for numbers (see the module's rule),
    else categorical.

    Parameters
    ----------
    values : array_like or pandas.Series, shape (N,)
        One value per point; NaN, None and inf count as missing.
    column : str
        Its name, for the legend or colour bar.
    categorical : bool
        Always categories (labels).
    max_categories : int
        Legend size; see :func:`categorize`.

    Returns
    -------
    Coloring
    """
    numbers = None if categorical else _numbers(values)
    if numbers is not None:
        finite = np.isfinite(numbers)
        distinct = np.unique(numbers[finite])
        fractional = bool((distinct != np.round(distinct)).any())
        if distinct.size >= 2 and (distinct.size > max_categories or fractional):
            return Coloring(column, values=np.where(finite, numbers, np.nan),
                            value_range=(float(distinct[0]), float(distinct[-1])),
                            missing=int((~finite).sum()))
    if isinstance(values, pd.Series):
        values = values.to_numpy()
    categories, codes = categorize(values, max_categories)
    return Coloring(column, categories=tuple(categories), codes=codes)


def color_options(labels, metadata: pd.DataFrame | None) -> list[str]:
    """What the points can be coloured by: ``"label"`` (with labels), the metadata
    columns, and ``"none"``."""
    options = [LABEL] if labels is not None else []
    if metadata is not None:
        options += [str(c) for c in metadata.columns if str(c) not in (LABEL, NO_COLOR)]
    return options + [NO_COLOR]


def column_coloring(column: str, labels, metadata: pd.DataFrame | None) -> Coloring:
    """The :class:`Coloring` of colour option ``column`` (see :func:`color_options`).

    Raises
    ------
    KeyError
        For a column that is not one of the options.
    """
    if column == NO_COLOR:
        return Coloring(column)
    if column == LABEL and labels is not None:
        return coloring_of(labels, column, categorical=True)
    for key in ([] if metadata is None else metadata.columns):
        if str(key) == column:
            return coloring_of(metadata[key], column)
    raise KeyError(f"no column {column!r} to colour by; choose one of "
                   f"{color_options(labels, metadata)}")


class ColorAndSearch:
    """The colouring and the text search of
    :class:`~tsimcne_widgets.widget.explorer.Explorer` (a mixin, to keep modules small).

    Expects the attributes the Explorer sets up: ``model``, ``canvas``, ``labels``,
    ``metadata``, ``image_set``, ``n``, ``select``, ``selection`` and ``_report``.
    """

    @property
    def color_options(self) -> tuple[str, ...]:
        """tuple of str : What :meth:`color_by` accepts (``"none"`` colours nothing)."""
        return self.model.color_options

    def _show_colors(self, change=None) -> None:
        self.canvas.set_coloring(column_coloring(self.model.color_column, self.labels,
                                                 self.metadata))

    def color_by(self, column: str | None):
        """Colour points by ``"label"``, a metadata column, or nothing (None / ``"none"``).

        The same as setting :attr:`color_column`; a column not in :attr:`color_options`
        raises ``ValueError`` and changes nothing.  A numeric column is drawn through
        a colormap with a colour bar (see :mod:`~tsimcne_widgets.widget.coloring`),
        anything else by category with a legend.
        """
        self.color_column = NO_COLOR if column is None else str(column)
        return self

    def search(self, query: str, regex: bool = False, columns=None,
               mode: str | None = None) -> np.ndarray:
        """Select the images whose label, file name or a metadata value contains ``query``.

        Parameters
        ----------
        query : str
            Text to find, case-insensitive.
        regex : bool
            Take ``query`` as a regular expression (``re.search``).
        columns : sequence of str, optional
            Search only these fields: ``"label"``, ``"path"`` (the file name) and
            metadata columns; default all.
        mode : str, optional
            replace, add, subtract or intersect; default the widget's selection mode.

        Returns
        -------
        numpy.ndarray of int64
            The matching indices.  The selection changes like a lasso's (undo reverts
            it); a bad query raises ``ValueError`` and changes nothing.
        """
        from tsimcne_widgets.curation.search import search_images

        found = search_images(query, labels=self.labels, paths=self.image_set.paths,
                              metadata=self.metadata, regex=regex, columns=columns, n=self.n)
        self.select(found, mode=self.model.selection_mode if mode is None else mode)
        self._report(f"search {query!r}: {len(found)} matched, {len(self.selection)} "
                     "selected", "info")
        return found
