"""Colouring by a column: categories with a legend, numbers with a colormap and a colour bar.

Pure rules (``widget/coloring.py``), then the Explorer with a real canvas (no training).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tsimcne_widgets.data.load import ImageSet
from tsimcne_widgets.render.palette import MISSING_COLOR, continuous_palette
from tsimcne_widgets.widget.coloring import (
    MAX_CATEGORIES,
    MISSING_CATEGORY,
    OTHER_CATEGORY,
    categorize,
    coloring_of,
    column_coloring,
)


# ---------------------------------------------------------------------------- categories
def test_categorize_labels_round_trip_in_natural_order():
    labels = np.array(["10", "2", "1", "2", None, "10"], dtype=object)
    categories, codes = categorize(labels)
    assert categories == ["1", "2", "10", MISSING_CATEGORY]
    assert [categories[c] for c in codes] == ["10", "2", "1", "2", MISSING_CATEGORY, "10"]
    assert codes.dtype == np.int32


def test_categorize_keeps_the_most_frequent_and_lumps_the_rest():
    values = [f"c{k}" for k in range(30) for _ in range(30 - k)]  # c0 most frequent
    categories, codes = categorize(values, max_categories=5)
    assert len(categories) == 5 and categories[-1] == OTHER_CATEGORY
    assert set(categories) - {OTHER_CATEGORY} == {"c0", "c1", "c2", "c3"}
    decoded = np.array(categories, dtype=object)[codes]
    assert (decoded[np.array(values) == "c29"] == OTHER_CATEGORY).all()
    assert (decoded[np.array(values) == "c0"] == "c0").all()


# ---------------------------------------------------------------------------- the rule
@pytest.mark.parametrize("values, kind", [
    (np.linspace(0.0, 1.0, 7), "continuous"),           # a float measurement, few values
    (np.arange(MAX_CATEGORIES + 1), "continuous"),      # many integers
    (np.arange(MAX_CATEGORIES), "categorical"),         # a small integer code
    (np.array([1.0, 2.0, np.nan] * 5), "categorical"),  # integers with gaps (pandas: float)
    (pd.Series([1, 2, None] * 10, dtype="Int64"), "categorical"),
    (pd.Series(range(40), dtype="Int64"), "continuous"),
    (np.array([True, False] * 20), "categorical"),      # bool is no number
    (np.array([0.5] * 9), "categorical"),                # one value: nothing to scale
    (np.array([f"s{k}" for k in range(40)]), "categorical"),
    (np.array([1.5, None, 2.5, 3], dtype=object), "continuous"),
    (np.array([1.5, "x", 2.5], dtype=object), "categorical"),
])
def test_numbers_are_continuous_unless_a_small_integer_code(values, kind):
    assert coloring_of(values, "column").kind == kind


def test_labels_are_always_categories_even_when_numeric():
    labels = np.arange(100) % 50  # e.g. CIFAR-100-like integer classes
    coloring = coloring_of(labels, "label", categorical=True)
    assert coloring.kind == "categorical" and len(coloring.categories) == MAX_CATEGORIES
    assert coloring.categories[-1] == OTHER_CATEGORY


def test_continuous_range_is_the_data_range_and_missing_values_are_counted():
    values = np.array([3.5, np.nan, -2.0, np.inf, 10.25, 1.0])
    coloring = coloring_of(values, "size")
    assert coloring.kind == "continuous"
    assert coloring.value_range == (-2.0, 10.25)
    assert coloring.missing == 2
    assert np.isnan(coloring.values[[1, 3]]).all()
    assert coloring.values[[0, 2, 4, 5]].tolist() == [3.5, -2.0, 10.25, 1.0]
    assert coloring.title == "size (gray: 2 without a value)"
    assert coloring_of(np.array([0.5, 1.5]), "w").title == "w"


def test_column_coloring_finds_label_metadata_and_none():
    metadata = pd.DataFrame({"w": np.linspace(0, 1, 6), 7: ["a", "b"] * 3})
    labels = ["x"] * 6
    assert column_coloring("none", labels, metadata).kind == "none"
    assert column_coloring("label", labels, metadata).categories == ("x",)
    assert column_coloring("w", labels, metadata).kind == "continuous"
    assert column_coloring("7", labels, metadata).categories == ("a", "b")  # non-str name
    with pytest.raises(KeyError, match="choose one of"):
        column_coloring("nope", labels, metadata)


# ---------------------------------------------------------------------------- in the Explorer
N = 60


@pytest.fixture
def explorer():
    from tsimcne_widgets.widget.explorer import Explorer

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (N, 8, 8, 3), dtype=np.uint8)
    k = np.arange(N)
    metadata = pd.DataFrame({
        "brightness": np.where(k < N // 2, 0.0, 1.0) + 0.001 * k,  # low left, high right
        "site": [f"site{j % 30}" for j in k],                        # 30 categories
    })
    metadata.loc[5, "brightness"] = np.nan
    xy = np.column_stack([np.where(k < N // 2, -10.0, 10.0), (k % 30) * 0.2]).astype(np.float32)
    explorer = Explorer(ImageSet(images, labels=np.array(["a", "b"] * (N // 2)),
                                 metadata=metadata), device="cpu")
    return explorer.set_embedding(xy)


def _rgba(image):
    return np.asarray(image).astype("<u4").view(np.uint8).reshape(np.shape(image) + (4,))


def _hex(rgb) -> str:
    return "#{:02x}{:02x}{:02x}".format(*(int(c) for c in rgb))


def test_a_numeric_column_shows_a_colour_bar_instead_of_the_legend(explorer):
    canvas = explorer.canvas
    assert canvas.legend.visible and not canvas.color_bar.visible  # labels: a legend
    explorer.color_by("brightness")
    assert canvas.color_bar.visible and not canvas.legend.visible
    values = explorer.metadata["brightness"]
    assert (canvas.color_mapper.low, canvas.color_mapper.high) == (values.min(), values.max())
    assert canvas.color_bar.title == "brightness (gray: 1 without a value)"
    # The raster follows the values: the left cluster (0.00-0.03) gets the colormap's low
    # end, the right one (1.03-1.06) its high end, the point without a value gray.
    rgba = _rgba(canvas.source.data["image"][0])
    opaque = rgba[..., 3] > 0
    columns = np.flatnonzero(opaque.any(axis=0))
    ramp = continuous_palette()
    left = {_hex(c) for c in rgba[:, columns[0]][opaque[:, columns[0]], :3]}
    right = {_hex(c) for c in rgba[:, columns[-1]][opaque[:, columns[-1]], :3]}
    assert left - {MISSING_COLOR} and left <= set(ramp[:10]) | {MISSING_COLOR}, left
    assert right and right <= set(ramp[-10:]), right
    assert MISSING_COLOR in left

    explorer.color_by("label")
    assert canvas.legend.visible and not canvas.color_bar.visible
    explorer.color_by("none")
    assert not canvas.legend.visible and not canvas.color_bar.visible


def test_thirty_categories_show_twenty_legend_rows_with_other(explorer):
    explorer.color_by("site")
    labels = [item.label.value for item in explorer.canvas.legend.items]
    assert len(labels) == MAX_CATEGORIES and labels[-1] == OTHER_CATEGORY
    assert explorer.canvas.legend.visible and not explorer.canvas.color_bar.visible
