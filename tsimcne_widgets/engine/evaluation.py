"""Map quality: the kNN protocol of the t-SimCNE paper and a pixel-space t-SNE baseline."""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np

__all__ = ["KNNAccuracy", "knn_accuracy", "pixel_tsne"]


class KNNAccuracy(NamedTuple):
    """Result of :func:`knn_accuracy`: mean and standard deviation over splits."""

    mean: float
    std: float
    scores: tuple[float, ...]

    def __str__(self) -> str:
        return f"{self.mean:.3f} ± {self.std:.3f}"


def _resolve_test_size(test_size, n_samples: int) -> int:
    if test_size is None:
        # The paper holds out 10k of CIFAR's 60k images: 1/6 of the data, at most 10k.
        count = min(10000, n_samples // 6)
    elif isinstance(test_size, float) and 0 < test_size < 1:
        count = int(round(test_size * n_samples))
    elif isinstance(test_size, (int, np.integer)) and not isinstance(test_size, bool):
        count = int(test_size)
    else:
        raise ValueError(
            "test_size must be a fraction in (0, 1), a number of points or None, "
            f"got {test_size!r}"
        )
    if not 1 <= count <= n_samples - 1:
        raise ValueError(
            f"test_size gives {count} held-out points of {n_samples}; "
            "it must leave at least one point for training and one for testing"
        )
    return count


def knn_accuracy(
    xy,
    labels,
    k: int = 15,
    test_size: float | int | None = None,
    n_splits: int = 5,
    random_state: int | None = 0,
) -> KNNAccuracy:
    """kNN classification accuracy of an embedding (the t-SimCNE paper's protocol).

    Each split holds out a stratified random test set, fits a Euclidean k-nearest-
    neighbour classifier on the rest and scores the held-out points.

    Parameters
    ----------
    xy : array-like, shape (N, D)
        The embedding (usually the 2-D map).
    labels : array-like, shape (N,)
        Class of each point.
    k : int
        Neighbours (15 in the paper); reduced to the training-set size if larger.
    test_size : float, int or None
        Fraction or number of held-out points; None: 1/6 of the data, at most 10,000
        (10k of 60k for CIFAR, as in the paper).
    n_splits : int
        Random splits to average over.
    random_state : int or None
        Seed of the splits.

    Returns
    -------
    KNNAccuracy
        ``(mean, std, scores)``; ``str()`` gives ``"0.912 ± 0.004"``.

    Examples
    --------
    >>> import numpy as np
    >>> xy = np.r_[np.zeros((50, 2)), np.ones((50, 2)) * 10]
    >>> knn_accuracy(xy + np.random.default_rng(0).normal(size=(100, 2)), [0] * 50 + [1] * 50).mean
    1.0
    """
    from sklearn.model_selection import ShuffleSplit, StratifiedShuffleSplit
    from sklearn.neighbors import KNeighborsClassifier

    xy = np.asarray(xy, dtype=np.float64)
    if xy.ndim != 2:
        raise ValueError(f"xy must be an (N, D) array, got shape {xy.shape}")
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != len(xy):
        raise ValueError(
            f"labels must be one per point: got {labels.shape} labels for {len(xy)} points"
        )
    if not np.isfinite(xy).all():
        raise ValueError("xy contains NaN or infinite values; score a finite embedding")
    if int(k) < 1 or int(n_splits) < 1:
        raise ValueError(f"k and n_splits must be positive, got k={k!r}, n_splits={n_splits!r}")
    n_test = _resolve_test_size(test_size, len(xy))
    _, class_counts = np.unique(labels, return_counts=True)
    n_classes = len(class_counts)
    if class_counts.min() >= 2 and n_test >= n_classes and len(xy) - n_test >= n_classes:
        splitter = StratifiedShuffleSplit(
            n_splits=n_splits, test_size=n_test, random_state=random_state
        )
    else:
        warnings.warn(
            "some classes are too small for a stratified split; using plain random splits",
            UserWarning,
            stacklevel=2,
        )
        splitter = ShuffleSplit(n_splits=n_splits, test_size=n_test, random_state=random_state)
    scores = []
    for train_index, test_index in splitter.split(xy, labels):
        neighbours = min(int(k), len(train_index))
        classifier = KNeighborsClassifier(n_neighbors=neighbours, metric="euclidean")
        classifier.fit(xy[train_index], labels[train_index])
        scores.append(float(classifier.score(xy[test_index], labels[test_index])))
    return KNNAccuracy(float(np.mean(scores)), float(np.std(scores)), tuple(scores))


def pixel_tsne(images_uint8, random_state: int | None = 0, n_pca: int = 50) -> np.ndarray:
    """t-SNE of raw pixels: the baseline a t-SimCNE map should beat.

    Pixels are flattened and scaled to [0, 1], reduced to ``n_pca`` principal
    components and embedded with scikit-learn's Barnes-Hut t-SNE.

    Parameters
    ----------
    images_uint8 : array-like, shape (N, H, W[, C])
        Images (an :class:`~tsimcne_widgets.data.load.ImageSet`'s ``images``).
    random_state : int or None
        Seed of PCA and t-SNE.
    n_pca : int
        Principal components kept before t-SNE.

    Returns
    -------
    numpy.ndarray, shape (N, 2), float32
    """
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    images = getattr(images_uint8, "images", images_uint8)
    pixels = np.asarray(images, dtype=np.float32).reshape(len(images), -1)
    if len(pixels) < 5:
        raise ValueError(f"pixel_tsne needs at least 5 images, got {len(pixels)}")
    if pixels.max(initial=0) > 1.0:
        pixels = pixels / 255.0
    components = min(int(n_pca), pixels.shape[1], len(pixels) - 1)
    if components < pixels.shape[1]:
        pixels = PCA(n_components=components, random_state=random_state).fit_transform(pixels)
    perplexity = min(30.0, (len(pixels) - 1) / 3.0)
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=random_state)
    return tsne.fit_transform(pixels).astype(np.float32)
