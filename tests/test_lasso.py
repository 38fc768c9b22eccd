"""Lasso and box hit-tests against an independent winding-number implementation."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tsimcne_widgets.curation.selection import SelectionModel
from tsimcne_widgets.render.lasso import points_in_box, points_in_polygon


def winding_number(px: float, py: float, polygon) -> int:
    """Dan Sunday's winding number of a closed polygon around (px, py), pure Python."""
    def is_left(ax, ay, bx, by):
        return (bx - ax) * (py - ay) - (px - ax) * (by - ay)

    winding = 0
    count = len(polygon)
    for k in range(count):
        (ax, ay), (bx, by) = polygon[k], polygon[(k + 1) % count]
        if ay <= py:
            if by > py and is_left(ax, ay, bx, by) > 0:
                winding += 1
        elif by <= py and is_left(ax, ay, bx, by) < 0:
            winding -= 1
    return winding


def distance_to_boundary(px: float, py: float, polygon) -> float:
    best = math.inf
    count = len(polygon)
    for k in range(count):
        (ax, ay), (bx, by) = polygon[k], polygon[(k + 1) % count]
        dx, dy = bx - ax, by - ay
        length2 = dx * dx + dy * dy
        t = 0.0 if length2 == 0 else max(0.0, min(1.0, ((px - ax) * dx + (py - ay) * dy) / length2))
        best = min(best, math.hypot(px - (ax + t * dx), py - (ay + t * dy)))
    return best


def assert_matches_reference(points: np.ndarray, polygon: np.ndarray) -> None:
    mask = points_in_polygon(points, polygon)
    assert mask.dtype == bool and mask.shape == (len(points),)
    poly = [tuple(map(float, v)) for v in polygon]
    for k, (px, py) in enumerate(points.tolist()):
        # On (or within rounding of) an edge either answer is right.
        if distance_to_boundary(px, py, poly) < 1e-9:
            continue
        expected = winding_number(px, py, poly) % 2 == 1  # even-odd rule
        assert mask[k] == expected, (k, px, py)


coordinate = st.floats(-10, 10, allow_nan=False, allow_infinity=False, width=32)
vertex = st.tuples(coordinate, coordinate)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(polygon=st.lists(vertex, min_size=3, max_size=12), seed=st.integers(0, 2**32 - 1))
def test_random_polygons_match_winding_parity(polygon, seed):
    # Random vertex order gives non-convex and self-intersecting polygons.
    rng = np.random.default_rng(seed)
    points = rng.uniform(-11, 11, (150, 2))
    # Also probe the vertices themselves and points on a coarse grid (shared
    # y with vertices exercises the half-open edge bands).
    grid = np.stack(np.meshgrid(np.arange(-10, 11, 2.5), np.arange(-10, 11, 2.5)), -1).reshape(-1, 2)
    points = np.concatenate([points, np.asarray(polygon, float), grid])
    assert_matches_reference(points, np.asarray(polygon, float))


@settings(max_examples=30, deadline=None)
@given(
    polygon=st.lists(st.tuples(st.integers(-5, 5), st.integers(-5, 5)), min_size=3, max_size=10),
)
def test_integer_polygons_with_repeated_and_touching_vertices(polygon):
    # Integer vertices make repeated vertices, horizontal edges and edges that
    # touch other vertices likely; probe at half-integer points off the lattice.
    offsets = np.arange(-5.75, 6, 0.5)
    points = np.stack(np.meshgrid(offsets, offsets + 0.125), -1).reshape(-1, 2)
    assert_matches_reference(points, np.asarray(polygon, float))


def test_self_touching_and_bow_tie_polygons():
    rng = np.random.default_rng(1)
    points = rng.uniform(-1, 5, (2000, 2))
    bow_tie = np.array([[0, 0], [4, 4], [4, 0], [0, 4]], float)
    # Two squares joined at one vertex (2, 2): a self-touching outline.
    touching = np.array([[0, 0], [2, 0], [2, 2], [4, 2], [4, 4], [2, 4], [2, 2], [0, 2]], float)
    # A square with a square hole cut by a zero-width slit: even-odd leaves the hole out.
    slit = np.array([[0, 0], [4, 0], [4, 4], [0, 4], [0, 0], [1, 1], [1, 3], [3, 3], [3, 1], [1, 1]], float)
    for polygon in (bow_tie, touching, slit):
        assert_matches_reference(points, polygon)
    inside_hole = points_in_polygon(np.array([[2.0, 2.0], [0.5, 0.5]]), slit)
    assert inside_hole.tolist() == [False, True]


def test_simple_square_and_closing_vertex_is_harmless():
    square = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], float)
    points = np.array([[0.5, 0.5], [1.5, 0.5], [0.5, -0.1], [np.nan, 0.5]])
    assert points_in_polygon(points, square).tolist() == [True, False, False, False]
    closed = np.vstack([square, square[:1]])
    assert points_in_polygon(points, closed).tolist() == [True, False, False, False]


def test_degenerate_inputs():
    points = np.random.default_rng(0).uniform(0, 1, (50, 2))
    assert not points_in_polygon(points, np.zeros((0, 2))).any()
    assert not points_in_polygon(points, [[0, 0], [1, 1]]).any()
    assert not points_in_polygon(points, [[0, 0], [1, 1], [np.nan, 0]]).any()
    assert points_in_polygon(np.zeros((0, 2)), [[0, 0], [1, 0], [0, 1]]).shape == (0,)
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        points_in_polygon(np.zeros((5, 3)), [[0, 0], [1, 0], [0, 1]])
    with pytest.raises(ValueError, match="polygon"):
        points_in_polygon(points, [0, 1, 2])


def test_points_in_box_inclusive_and_any_corner_order():
    points = np.array([[0, 0], [1, 1], [2, 2], [1, np.nan], [0.5, 1.5]])
    expected = [True, True, False, False, False]
    assert points_in_box(points, 0, 1, 0, 1).tolist() == expected
    assert points_in_box(points, 1, 0, 1, 0).tolist() == expected


@pytest.mark.parametrize("mode, expected", [
    ("replace", [3, 4, 9]), ("add", [1, 3, 4, 5, 9]), ("subtract", [1, 5]), ("intersect", [3]),
])
def test_a_gesture_combines_with_the_selection_through_the_selection_model(mode, expected):
    # The lasso only says which points a gesture covers; the one place that combines
    # them with the current selection is SelectionModel.set.
    points = np.array([[k, 0.0] for k in range(10)])
    model = SelectionModel(len(points))
    model.set(np.array([5, 1, 3, 3]))
    covered = points_in_box(points, 2.5, 4.5, -1, 1) | points_in_box(points, 8.5, 9.5, -1, 1)
    assert np.flatnonzero(covered).tolist() == [3, 4, 9]
    result = model.set(covered, mode=mode)
    assert result.tolist() == expected
    assert result.dtype == np.int64


def test_the_selection_model_refuses_an_unknown_mode_and_keeps_the_selection():
    model = SelectionModel(10)
    model.set([1, 2])
    with pytest.raises(ValueError, match="replace"):
        model.set([3], mode="xor")
    assert model.indices.tolist() == [1, 2]
    assert SelectionModel(3).set([], mode="add").dtype == np.int64


def test_large_lasso_agrees_with_box_for_a_rectangle():
    rng = np.random.default_rng(2)
    points = rng.normal(0, 1, (200_000, 2))
    rectangle = np.array([[-0.5, -0.3], [0.7, -0.3], [0.7, 0.9], [-0.5, 0.9]])
    lasso = points_in_polygon(points, rectangle)
    box = points_in_box(points, -0.5, 0.7, -0.3, 0.9)
    # Only points exactly on the top or right edge may differ (half-open test).
    assert np.array_equal(lasso, box)
