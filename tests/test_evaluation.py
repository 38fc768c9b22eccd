"""Tests for the kNN protocol and the pixel t-SNE baseline."""

from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from tsimcne_widgets.engine.evaluation import knn_accuracy, pixel_tsne


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # The test machine is shared: competing OpenMP threads slow t-SNE down many times.
    # Import first: threadpoolctl only limits libraries already loaded.
    import sklearn.manifold  # noqa: F401
    import sklearn.neighbors  # noqa: F401

    with threadpool_limits(limits=1):
        yield


def blobs(n_per_class=100, n_classes=4, spread=0.5, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.array([[0, 0], [10, 0], [0, 10], [10, 10]])[:n_classes]
    xy = np.concatenate([c + spread * rng.standard_normal((n_per_class, 2)) for c in centres])
    labels = np.repeat([f"class {i}" for i in range(n_classes)], n_per_class)
    return xy, labels


def test_separable_blobs_score_one():
    xy, labels = blobs()
    score = knn_accuracy(xy, labels)
    assert score.mean == pytest.approx(1.0) and score.std == pytest.approx(0.0)
    assert len(score.scores) == 5 and str(score) == "1.000 ± 0.000"


def test_random_labels_score_chance():
    xy, labels = blobs(n_per_class=500)
    shuffled = np.random.default_rng(1).permutation(labels)
    score = knn_accuracy(xy, shuffled, n_splits=3)
    assert 0.15 < score.mean < 0.35  # chance is 0.25


def test_overlapping_classes_score_in_between():
    xy, labels = blobs(spread=4.0)
    assert 0.4 < knn_accuracy(xy, labels).mean < 0.95


def test_split_is_stratified_and_sized():
    xy, labels = blobs(n_per_class=60, spread=3.0)  # 240 points: default holds out 40
    a = knn_accuracy(xy, labels, random_state=0)
    b = knn_accuracy(xy, labels, random_state=0)
    c = knn_accuracy(xy, labels, random_state=1)
    assert a == b and a.scores != c.scores
    # 40 held-out points: every accuracy is a multiple of 1/40.
    assert all(abs(s * 40 - round(s * 40)) < 1e-9 for s in a.scores)
    assert all(abs(s * 60 - round(s * 60)) < 1e-9 for s in knn_accuracy(xy, labels, test_size=0.25).scores)
    assert all(abs(s * 30 - round(s * 30)) < 1e-9 for s in knn_accuracy(xy, labels, test_size=30).scores)


def test_bad_input():
    xy, labels = blobs()
    with pytest.raises(ValueError, match="one per point"):
        knn_accuracy(xy, labels[:-1])
    with pytest.raises(ValueError, match="NaN"):
        knn_accuracy(np.full_like(xy, np.nan), labels)
    with pytest.raises(ValueError, match="test_size"):
        knn_accuracy(xy, labels, test_size=len(xy))


def test_tiny_classes_fall_back_to_plain_splits():
    xy, labels = blobs(n_per_class=20)
    labels = labels.copy()
    labels[0] = "singleton"
    with pytest.warns(UserWarning, match="stratified"):
        knn_accuracy(xy, labels)


def test_pixel_tsne_separates_distinct_images():
    rng = np.random.default_rng(0)
    dark = rng.integers(0, 40, (40, 8, 8, 3), dtype=np.uint8)
    bright = rng.integers(215, 256, (40, 8, 8, 3), dtype=np.uint8)
    xy = pixel_tsne(np.concatenate([dark, bright]), random_state=0)
    assert xy.shape == (80, 2) and xy.dtype == np.float32
    assert knn_accuracy(xy, np.repeat(["dark", "bright"], 40), k=5).mean == 1.0
