"""The :class:`ImageSet`: uint8 images with aligned labels, source paths and metadata.

What every loader in :mod:`tsimcne_widgets.data.load` returns and everything downstream
(training, the widget, exports) reads. numpy and pandas only.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["ImageSet", "UNLABELLED", "label_array", "to_numpy"]

#: Label of images that have none while others do (root files of a nested folder, NA labels).
UNLABELLED = "unlabelled"


@dataclass(frozen=True, eq=False)
class ImageSet:
    """Images with optional labels, source paths and metadata, all aligned by row.

    Parameters
    ----------
    images : numpy.ndarray
        uint8 array (N, H, W, 3). Stored as a C-contiguous read-only view; do not
        modify the array you pass in afterwards (``load_images`` always hands over
        an array nobody else holds).
    labels : array-like of length N, optional
        Class names; converted to an object array of ``str``.
    paths : sequence of str, optional
        Source file of each image, for crisp thumbnails and file exports.
    metadata : pandas.DataFrame, optional
        N rows of extra columns; the index is reset to 0..N-1.
    skipped : tuple of (path, reason)
        Files that could not be read when the set was loaded.
    augmentation : dict, optional
        :class:`~tsimcne_widgets.engine.augment.Augmenter` settings that suit these images
        better than the paper's, e.g. no flips for digits, whose mirror images are
        other symbols.  ``TSimCNE`` trains with them unless given its own
        ``augmentation``.
    """

    images: np.ndarray
    labels: np.ndarray | None = None
    paths: tuple[str, ...] | None = None
    metadata: pd.DataFrame | None = None
    skipped: tuple[tuple[str, str], ...] = ()
    augmentation: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        images = self.images
        if (not isinstance(images, np.ndarray) or images.dtype != np.uint8
                or images.ndim != 4 or images.shape[-1] != 3):
            described = (f"{type(images).__name__} {getattr(images, 'dtype', '')} "
                         f"{getattr(images, 'shape', '')}")
            raise TypeError(f"ImageSet.images must be a uint8 array of shape (N, H, W, 3), got "
                            f"{described}; use load_images() to convert other inputs")
        images = _read_only(np.ascontiguousarray(images))
        n = len(images)
        object.__setattr__(self, "images", images)
        if self.labels is not None:
            object.__setattr__(self, "labels", _read_only(label_array(self.labels, n)))
        if self.paths is not None:
            paths = tuple(os.fspath(p) for p in self.paths)
            if len(paths) != n:
                raise ValueError(f"paths has {len(paths)} entries but there are {n} images")
            object.__setattr__(self, "paths", paths)
        if self.metadata is not None:
            if not isinstance(self.metadata, pd.DataFrame):
                raise TypeError(f"metadata must be a pandas DataFrame, got {type(self.metadata).__name__}")
            if len(self.metadata) != n:
                raise ValueError(f"metadata has {len(self.metadata)} rows but there are {n} images")
            object.__setattr__(self, "metadata", self.metadata.reset_index(drop=True))
        object.__setattr__(self, "skipped", tuple((str(p), str(r)) for p, r in self.skipped))
        if self.augmentation is not None:
            if not isinstance(self.augmentation, Mapping):
                raise TypeError("augmentation must be a dict of Augmenter keyword arguments, "
                                f"got {type(self.augmentation).__name__}")
            object.__setattr__(self, "augmentation", dict(self.augmentation))

    def __len__(self) -> int:
        return len(self.images)

    def __repr__(self) -> str:
        h, w = self.image_size
        labels = "none" if self.labels is None else f"{len(self.label_names)} classes"
        columns = None if self.metadata is None else list(self.metadata.columns)
        return (f"ImageSet(n={len(self)}, size={h}x{w}, labels={labels}, "
                f"paths={'yes' if self.paths is not None else 'no'}, metadata={columns}, "
                f"skipped={len(self.skipped)})")

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) of every image."""
        return int(self.images.shape[1]), int(self.images.shape[2])

    @cached_property
    def _label_index(self) -> tuple[tuple[str, ...], np.ndarray | None]:
        if self.labels is None:
            return (), None
        names, codes = np.unique(self.labels, return_inverse=True)
        return tuple(str(x) for x in names), _read_only(codes.astype(np.intp).reshape(-1))

    @property
    def label_names(self) -> tuple[str, ...]:
        """Sorted unique labels; ``()`` when there are no labels."""
        return self._label_index[0]

    @property
    def label_codes(self) -> np.ndarray | None:
        """(N,) int array indexing :attr:`label_names`; ``None`` when there are no labels."""
        return self._label_index[1]

    def subset(self, indices: Any) -> ImageSet:
        """Rows picked by integer indices, a boolean mask of length N, or a slice.

        Parameters
        ----------
        indices : slice, sequence of int, or boolean mask
            Negative integers count from the end; order and repeats are kept.

        Returns
        -------
        ImageSet
            A new set with its own copy of the picked images; ``skipped`` is kept.
        """
        idx = _resolve_indices(indices, len(self))
        return ImageSet(
            images=self.images[idx],
            labels=None if self.labels is None else self.labels[idx],
            paths=None if self.paths is None else tuple(self.paths[i] for i in idx),
            metadata=None if self.metadata is None else self.metadata.iloc[idx],
            skipped=self.skipped,
            augmentation=self.augmentation,
        )


def _resolve_indices(indices: Any, n: int) -> np.ndarray:
    if isinstance(indices, slice):
        return np.arange(n)[indices]
    idx = to_numpy(indices) if hasattr(indices, "detach") else np.asarray(indices)
    if idx.dtype == bool:
        if idx.shape != (n,):
            raise ValueError(f"a boolean mask must have length {n}, got shape {idx.shape}")
        return np.flatnonzero(idx)
    if idx.size == 0:
        return np.zeros(0, np.intp)
    if idx.dtype.kind not in "iu" or idx.ndim != 1:
        raise TypeError(f"indices must be a slice, 1-D integers or a boolean mask, got {idx.dtype} {idx.shape}")
    if idx.min() < -n or idx.max() >= n:
        raise IndexError(f"indices must lie in [-{n}, {n - 1}], got {idx.min()}..{idx.max()}")
    return np.where(idx < 0, idx + n, idx).astype(np.intp)


def to_numpy(x: Any) -> np.ndarray:
    """``x`` as a numpy array; a torch tensor (duck-typed) is detached and moved to the CPU."""
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu()
        try:
            return x.numpy()
        except TypeError:  # bfloat16 and friends have no numpy dtype
            return x.float().numpy()
    return np.asarray(x)


def _label_str(value: Any) -> str:
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or value is pd.NA or value is pd.NaT or (isinstance(value, float) and value != value):
        return UNLABELLED
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # labels that went through a float column: 3.0 → "3"
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def label_array(values: Any, n: int) -> np.ndarray:
    """``n`` labels as an object array of ``str`` (NA becomes :data:`UNLABELLED`).

    Raises
    ------
    TypeError
        For a single string or a scalar instead of one label per image.
    ValueError
        For the wrong number of labels or a 2-D array.
    """
    if hasattr(values, "detach"):
        values = to_numpy(values)
    if isinstance(values, (pd.Series, pd.Index)):
        values = values.to_numpy(dtype=object)
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
        raise TypeError(f"labels must be one value per image (a list or array), got {type(values).__name__}")
    if isinstance(values, np.ndarray) and values.ndim != 1:
        raise ValueError(f"labels must be 1-D (one per image), got shape {values.shape}")
    values = list(values)
    if len(values) != n:
        raise ValueError(f"labels has {len(values)} entries but there are {n} images; pass one label "
                         "per image")
    out = np.empty(n, dtype=object)
    out[:] = [_label_str(v) for v in values]
    return out


def _read_only(arr: np.ndarray) -> np.ndarray:
    if arr.flags.writeable:
        arr = arr.view()
        arr.flags.writeable = False
    return arr
