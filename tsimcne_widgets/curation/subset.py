"""A selection as a torch dataset, ready for a ``DataLoader``.

Duck-typed so that importing this module does not import torch: :func:`make_subset`
imports it when called.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .base import as_indices

__all__ = ["ImageSetDataset", "make_subset"]


class ImageSetDataset:
    """A map-style dataset over uint8 images: item ``i`` is ``(CHW float tensor, target)``.

    Duck-typed (``__len__``/``__getitem__``), so it works with ``torch.utils.data``
    without importing torch at module load. Pixels are scaled to [0, 1]. ``target`` is
    the position of the image's label in :attr:`classes` (sorted label names), or -1
    without labels, following torchvision's ImageFolder.
    """

    def __init__(self, images: np.ndarray, labels: Sequence | None = None) -> None:
        arr = np.asarray(images)
        if arr.ndim != 4 or arr.dtype != np.uint8:
            raise ValueError(f"images must be uint8 (N, H, W, C), got {arr.dtype} {arr.shape}")
        self.images = arr
        if labels is None:
            self.classes: list[str] = []
            self.targets = np.full(arr.shape[0], -1, dtype=np.int64)
        else:
            label_arr = np.asarray(labels, dtype=object)
            if label_arr.shape[0] != arr.shape[0]:
                raise ValueError(f"{label_arr.shape[0]} labels for {arr.shape[0]} images")
            self.classes = sorted({str(x) for x in label_arr})
            lookup = {c: k for k, c in enumerate(self.classes)}
            self.targets = np.array([lookup[str(x)] for x in label_arr], dtype=np.int64)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, i: int):
        import torch

        # Copy: ImageSet arrays are read-only and torch.from_numpy warns on those.
        chw = np.ascontiguousarray(self.images[i].transpose(2, 0, 1))
        return torch.from_numpy(chw.copy()).float().div_(255.0), int(self.targets[i])


def make_subset(dataset_or_imageset: object, indices: object):
    """A ``torch.utils.data.Subset`` of the selected images, ready for a DataLoader.

    Parameters
    ----------
    dataset_or_imageset : ImageSet or map-style dataset
        An :class:`~tsimcne_widgets.data.load.ImageSet` (or anything with a uint8 ``images``
        array and ``labels``) is wrapped in :class:`ImageSetDataset`; any object with
        ``__len__`` and ``__getitem__`` (e.g. a torchvision dataset) is used as is.
    indices : array-like of int or bool mask
        The selection (sorted, de-duplicated).

    Returns
    -------
    torch.utils.data.Subset
    """
    from torch.utils.data import Subset

    source = dataset_or_imageset
    images = getattr(source, "images", None)
    if isinstance(images, np.ndarray) and images.ndim == 4:
        dataset = ImageSetDataset(images, getattr(source, "labels", None))
    elif hasattr(source, "__len__") and hasattr(source, "__getitem__"):
        dataset = source
    else:
        raise TypeError(f"make_subset needs an ImageSet or a dataset with __len__ and "
                        f"__getitem__, got {type(source).__name__}")
    idx = as_indices(indices, len(dataset))
    return Subset(dataset, idx.tolist())
