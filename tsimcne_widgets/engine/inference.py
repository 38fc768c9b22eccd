"""Running a t-SimCNE network forward: the projection of training, and batched inference.

Both the trainer (its maps) and the estimator (``transform``) map images through
:func:`embed`, and the training step projects its views through :func:`project`, so
the two agree on precision and memory layout.
"""

from __future__ import annotations

import contextlib
from typing import Callable

import torch

from .augment import Augmenter
from .device import choose_memory_layout

__all__ = ["autocast", "project", "embed", "uses_mixed_precision"]


def uses_mixed_precision(device: torch.device) -> bool:
    """Whether the backbone runs in bf16 autocast by default on ``device``: CUDA, MPS and
    CPUs with native bf16 (:func:`~tsimcne_widgets.engine.precision.default_mixed_precision`)."""
    from .precision import default_mixed_precision

    return default_mixed_precision(device)


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on ``device`` when ``enabled`` and supported there, else a no-op."""
    if not enabled:
        return contextlib.nullcontext()
    try:
        return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
    except (RuntimeError, ValueError):
        return contextlib.nullcontext()


def project(model: torch.nn.Module, views: torch.Tensor, *, mixed_precision: bool,
            features: Callable | None = None) -> torch.Tensor:
    """Head output of float views.

    Parameters
    ----------
    model : TSimCNENet
        The network.
    views : torch.Tensor
        ``(B, 3, H, W)`` floats in [0, 1] on the network's device.
    mixed_precision : bool
        Run the backbone in bf16 autocast (where the device supports it).
    features : callable, optional
        Replaces ``model.features`` (e.g. its ``torch.compile`` version).

    Returns
    -------
    torch.Tensor
        ``(B, out_dim)`` float32.  The head always runs in float32: bf16's 8-bit
        mantissa would quantise the coordinates of the 2-D map visibly.
    """
    with autocast(views.device, mixed_precision):
        hidden = (features or model.features)(views)
    return model.head(hidden.float())


def embed(
    model: torch.nn.Module,
    images: torch.Tensor,
    image_size: tuple[int, int],
    *,
    channels_last: bool | None = None,
    mixed_precision: bool | None = None,
    batch_size: int = 512,
) -> torch.Tensor:
    """Head output of un-augmented images, in batches, without gradients, in eval mode.

    Parameters
    ----------
    model : TSimCNENet
        The network; its training mode is restored afterwards.
    images : torch.Tensor
        uint8 ``(N, 3, H, W)``, on any device; resized to ``image_size`` where needed
        (bilinear, antialiased).
    image_size : (int, int)
        The resolution the network trained at.
    channels_last : bool, optional
        Memory layout of the inputs; default
        :func:`~tsimcne_widgets.engine.device.choose_memory_layout` (the layout the
        trainer and :meth:`TSimCNE.load` give the network, so that no convolution
        converts).
    mixed_precision : bool, optional
        Default :func:`uses_mixed_precision` of the network's device.
    batch_size : int
        Images per forward pass.

    Returns
    -------
    torch.Tensor
        ``(N, out_dim)`` float32 on the network's device.
    """
    batch_size = int(batch_size)
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    device = next(model.parameters()).device
    if channels_last is None:
        channels_last = choose_memory_layout(model, device)
    if mixed_precision is None:
        mixed_precision = uses_mixed_precision(device)
    to_float = Augmenter(tuple(image_size)).to_float
    outputs = None  # filled in place: a list of chunks and their cat would double the peak
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, images.shape[0], batch_size):
                chunk = images[start:start + batch_size].to(device, non_blocking=True)
                views = to_float(chunk, channels_last=bool(channels_last))
                out = project(model, views, mixed_precision=mixed_precision)
                if outputs is None:
                    outputs = out.new_empty((images.shape[0], out.shape[1]))
                outputs[start:start + out.shape[0]] = out
    finally:
        model.train(was_training)
    if outputs is None:
        return torch.empty((0, model.out_dim), device=device)
    return outputs
