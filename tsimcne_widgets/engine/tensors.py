"""Tensors from images and maps from tensors: conversions shared by the engine."""

from __future__ import annotations

import zlib

import numpy as np
import torch

__all__ = ["images_to_tensor", "data_fingerprint", "pca_2d", "detached_copy"]


def images_to_tensor(images) -> torch.Tensor:
    """uint8 ``(N, 3, H, W)`` CPU tensor from an ImageSet, NHWC uint8 array or NCHW tensor.

    Images in a memory-mapped file (an image store) are not copied: a
    :class:`~tsimcne_widgets.engine.batches.DiskImages` stands in for the tensor.
    """
    from .batches import disk_images

    on_disk = disk_images(images)
    if on_disk is not None:
        return on_disk
    images = getattr(images, "images", images)
    if isinstance(images, torch.Tensor):
        tensor = images.detach().cpu()
        if tensor.ndim == 4 and tensor.shape[1] != 3 and tensor.shape[-1] == 3:
            tensor = tensor.permute(0, 3, 1, 2)
    else:
        array = np.asarray(images)
        if array.ndim != 4 or array.shape[-1] != 3:
            raise ValueError(
                f"expected uint8 (N, H, W, 3) images, got shape {array.shape}; "
                "convert them with tsimcne_widgets.load_images"
            )
        # A copy: ImageSet arrays are read-only and torch wants writable memory.
        tensor = torch.from_numpy(np.array(array, copy=True, order="C")).permute(0, 3, 1, 2)
    if tensor.dtype != torch.uint8 or tensor.ndim != 4 or tensor.shape[1] != 3:
        raise ValueError(
            f"expected uint8 RGB images, got {tensor.dtype} with shape {tuple(tensor.shape)}; "
            "convert them with tsimcne_widgets.load_images"
        )
    return tensor.contiguous()


def data_fingerprint(images: torch.Tensor) -> int:
    """A cheap checksum of a strided sample of the images (to match checkpoints to data)."""
    stride = max(1, images.shape[0] // 64)
    return zlib.crc32(images[::stride].numpy().tobytes())


def pca_2d(output: torch.Tensor, previous: np.ndarray | None = None) -> np.ndarray:
    """First two principal components of ``(N, D)`` outputs as float32.

    Each axis's sign is chosen to agree with ``previous`` (the last frame), so the
    provisional map does not flip between frames.  Outputs narrower than 2 are padded.
    """
    # float64 arithmetic a chunk of rows at a time: a float64 copy of a whole (N, 128)
    # output would cost twice the output itself (100 MB more at 100k images).
    chunks = output.detach().split(4096)
    mean = sum(c.to(torch.float64).sum(0) for c in chunks) / max(output.shape[0], 1)
    if output.shape[1] <= 2:
        top = torch.eye(output.shape[1], 2, dtype=torch.float64, device=output.device)
    else:
        # eigh of the D x D covariance: cheaper than an SVD of N x D and free of the
        # global RNG that torch.pca_lowrank would consume.
        centred = (c.to(torch.float64) - mean for c in chunks)
        _, vectors = torch.linalg.eigh(sum(c.T @ c for c in centred))
        top = vectors[:, -2:].flip(1)
    xy = torch.empty((output.shape[0], 2), dtype=torch.float32, device=output.device)
    for start, c in zip(range(0, output.shape[0], 4096), chunks):
        xy[start:start + c.shape[0]] = (c.to(torch.float64) - mean) @ top
    xy = xy.cpu().numpy()
    if previous is not None and previous.shape == xy.shape:
        signs = np.where((xy * previous).sum(axis=0) < 0, -1.0, 1.0).astype(np.float32)
        xy *= signs
    return xy


def detached_copy(value):
    """A copy of ``value`` (nested dicts, lists and tuples of tensors and other values)
    with every tensor detached, cloned and on the CPU, so that it no longer changes
    with the original (e.g. an optimiser's state while training goes on)."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().clone()
    if isinstance(value, dict):
        return {key: detached_copy(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(detached_copy(item) for item in value)
    return value
