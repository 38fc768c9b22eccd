"""Nearest-point lookup against brute force."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tsimcne_widgets.render.spatial import SpatialIndex


def brute_force_nearest(xy, x, y, radius):
    distance = np.hypot(xy[:, 0] - x, xy[:, 1] - y)
    distance[~np.isfinite(distance)] = np.inf
    k = int(np.argmin(distance))
    return (k if distance[k] < radius else None), distance[k]


def test_matches_brute_force_on_random_points():
    rng = np.random.default_rng(0)
    xy = rng.normal(0, 5, (3000, 2))
    xy[rng.choice(3000, 100, replace=False)] = np.nan
    index = SpatialIndex(xy)
    for x, y in rng.uniform(-20, 20, (300, 2)):
        for radius in (0.05, 0.5, np.inf):
            expected, distance = brute_force_nearest(xy, x, y, radius)
            found = index.nearest(x, y, None if radius == np.inf else radius)
            if expected is None:
                assert found is None
            else:
                assert found is not None
                # Ties aside, the same point; always the same distance.
                assert np.hypot(*(xy[found] - (x, y))) == pytest.approx(distance)


@settings(max_examples=40, deadline=None)
@given(
    points=st.lists(st.tuples(st.floats(-100, 100), st.floats(-100, 100)), min_size=1, max_size=40),
    query=st.tuples(st.floats(-120, 120), st.floats(-120, 120)),
    radius=st.floats(0.01, 300),
)
def test_property_nearest_is_closest_within_radius(points, query, radius):
    xy = np.asarray(points, float)
    found = SpatialIndex(xy).nearest(*query, radius=radius)
    expected, distance = brute_force_nearest(xy, *query, radius)
    if expected is None:
        assert found is None
    else:
        assert np.hypot(*(xy[found] - query)) == pytest.approx(distance)


def test_lazy_build_and_none_cases():
    index = SpatialIndex(np.array([[0.0, 0.0], [np.nan, 1.0], [3.0, 4.0]]))
    assert not index.is_built
    assert index.nearest(0.1, 0.1, radius=1) == 0
    assert index.is_built
    assert index.nearest(3, 4.1, radius=0.5) == 2
    assert index.nearest(0, 1, radius=0.5) is None  # the NaN row is never found
    assert index.nearest(10, 10, radius=1) is None
    assert index.nearest(np.nan, 0, radius=1) is None
    assert index.nearest(0, 0, radius=0) is None
    assert SpatialIndex(np.full((3, 2), np.nan)).nearest(0, 0) is None
    assert SpatialIndex(np.zeros((0, 2))).nearest(0, 0) is None
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        SpatialIndex(np.zeros(4))
