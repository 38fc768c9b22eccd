"""Training images that stay on disk: each batch is gathered from a memory map when needed.

:func:`~tsimcne_widgets.engine.device.images_to_tensor` copies the whole collection into
one tensor, which for a million 64 px images is 12 GB of anonymous memory (and as much
again on the device).  When the images live in a memory-mapped file (an image store,
:func:`tsimcne_widgets.data.store.open_store`, or any ``np.load(..., mmap_mode="r")``),
:class:`DiskImages` stands in for that tensor: indexing it with a batch of indices
gathers just those rows, in index order (sequential reads through the page cache), and
returns a uint8 ``(B, 3, H, W)`` tensor on the device.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from tsimcne_widgets.data.store import is_disk_backed

__all__ = ["DiskImages", "disk_images"]


def disk_images(images: Any) -> "DiskImages | None":
    """A :class:`DiskImages` over ``images`` (an ImageSet or array) when they live in a
    memory-mapped file, else None."""
    if isinstance(images, DiskImages):
        return images
    array = getattr(images, "images", images)
    if isinstance(array, np.ndarray) and is_disk_backed(array):
        if array.ndim != 4 or array.shape[-1] != 3 or array.dtype != np.uint8:
            raise ValueError(f"expected uint8 (N, H, W, 3) images, got {array.dtype} {array.shape}; "
                             "convert them with tsimcne_widgets.load_images")
        return DiskImages(array)
    return None


class DiskImages:
    """A read-only stand-in for a uint8 ``(N, 3, H, W)`` image tensor, backed by an
    ``(N, H, W, 3)`` memory-mapped array.

    Parameters
    ----------
    array : numpy.ndarray
        uint8 ``(N, H, W, 3)``, normally a memory map; never copied as a whole.
    device : torch.device or str
        Where indexed batches are delivered.

    Notes
    -----
    Supports what the trainer does with its image tensor: ``shape``, ``len``,
    ``.to(device)`` (a view delivering to that device, the rows stay on disk),
    indexing by a slice, an int, or a 1-D tensor/array of indices (rows come back in
    the order asked for).
    """

    def __init__(self, array: np.ndarray, device: torch.device | str = "cpu") -> None:
        self.array = array
        self.device = torch.device(device)
        n, h, w, c = array.shape
        self.shape = torch.Size((n, c, h, w))
        self.dtype = torch.uint8

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"DiskImages(shape={tuple(self.shape)}, device={self.device})"

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "DiskImages":
        """The same rows, delivered to ``device``."""
        return DiskImages(self.array, device)

    def cpu(self) -> "DiskImages":
        return self.to("cpu")

    def size(self, dim: int | None = None):
        return self.shape if dim is None else self.shape[dim]

    def __getitem__(self, index: Any) -> torch.Tensor:
        if isinstance(index, (int, np.integer)):
            rows = np.asarray(self.array[int(index)])[None]
            return self._deliver(rows)[0]
        if isinstance(index, slice):
            return self._deliver(np.asarray(self.array[index]))
        if isinstance(index, torch.Tensor):
            index = index.detach().cpu().numpy()
        index = np.asarray(index)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        if index.ndim != 1 or index.dtype.kind not in "iu":
            raise TypeError(f"index DiskImages with a slice, an int or 1-D integers, got "
                            f"{index.dtype} {index.shape}")
        index = np.where(index < 0, index + len(self), index)
        # Sorted reads walk the file forwards (read-ahead helps, seeks do not repeat);
        # the inverse permutation restores the order the caller asked for.
        order = np.argsort(index, kind="stable")
        rows = np.empty((len(index), *self.array.shape[1:]), np.uint8)
        rows[order] = self.array[index[order]]
        return self._deliver(rows)

    def _deliver(self, rows: np.ndarray) -> torch.Tensor:
        # One copy, straight into NCHW (rows of a memory map are read-only).
        tensor = torch.from_numpy(np.ascontiguousarray(rows.transpose(0, 3, 1, 2)))
        if self.device.type != "cpu":
            tensor = tensor.pin_memory() if self.device.type == "cuda" else tensor
            return tensor.to(self.device, non_blocking=True)
        return tensor
