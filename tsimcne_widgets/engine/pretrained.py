"""Pretrained backbones: start t-SimCNE from weights instead of from scratch.

A pretrained backbone mostly helps on small budgets, when a few CPU minutes cannot
train a ResNet from scratch.  Two sources:

* a local file: a state dict of a torchvision ``resnet18``, of this package's
  :class:`~tsimcne_widgets.engine.models.CifarResNet` (any width), a ``TSimCNENet`` (its
  ``backbone.`` part is used) or a model file written by ``TSimCNE.save``;
* ``"imagenet"``: torchvision's ImageNet ResNet-18 weights.  They are read from the
  torch hub cache; they are downloaded only when the caller passes
  ``download=True`` as well, so nothing touches the network unasked.

ImageNet ResNets shrink their input 4x in the stem (a 7x7 stride-2 convolution and
a max-pool), which leaves a 32x32 image 1x1 pixel after the last stage.  For small
images (``small_images=True``, the default) the stem keeps its pretrained 7x7
filters but runs with stride 1 and without the max-pool, the usual way to transfer
ImageNet networks to CIFAR-sized inputs.  The wrapper also applies ImageNet's input
normalisation, since t-SimCNE's views are plain [0, 1] values.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from .models import CifarResNet

__all__ = ["ImageNetResNet", "pretrained_backbone", "imagenet_weights_path"]

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageNetResNet(nn.Module):
    """A torchvision ResNet-18 returning pooled ``(N, 512)`` features of [0, 1] images.

    Parameters
    ----------
    small_images : bool
        Run the stem with stride 1 and no max-pool (for images up to about 64 px).
    normalize : bool
        Subtract ImageNet's channel means and divide by its standard deviations
        first, as the pretrained weights expect.
    """

    feature_dim = 512

    def __init__(self, small_images: bool = True, normalize: bool = True):
        super().__init__()
        from torchvision.models import resnet18

        network = resnet18(weights=None)
        network.fc = nn.Identity()
        if small_images:
            network.conv1.stride = (1, 1)
            network.maxpool = nn.Identity()
        self.network = network
        self.small_images = bool(small_images)
        self.normalize = bool(normalize)
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features of ``(N, 3, H, W)`` images with values in [0, 1]."""
        if self.normalize:
            x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        return self.network(x)

    def load_torchvision_state(self, state: Mapping[str, torch.Tensor]) -> None:
        """Load a torchvision ``resnet18`` state dict (its ``fc.*`` entries are ignored)."""
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        self.network.load_state_dict(state, strict=True)


def imagenet_weights_path() -> Path:
    """Where torch hub keeps torchvision's ImageNet ResNet-18 weights (may not exist)."""
    from torchvision.models import ResNet18_Weights

    filename = os.path.basename(ResNet18_Weights.IMAGENET1K_V1.url)
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def _imagenet_state(download: bool, progress: bool) -> Mapping[str, torch.Tensor]:
    path = imagenet_weights_path()
    if path.is_file():
        return torch.load(path, map_location="cpu", weights_only=True)
    if not download:
        raise FileNotFoundError(
            f"ImageNet ResNet-18 weights are not in the torch hub cache ({path}). Pass "
            "download=True to fetch them from download.pytorch.org (about 45 MB), copy the "
            "file there by hand on an offline machine, or pass the path of a local weights file."
        )
    from torchvision.models import ResNet18_Weights

    return ResNet18_Weights.IMAGENET1K_V1.get_state_dict(progress=progress)


def _unwrap_state(obj: Any, source: str) -> Mapping[str, torch.Tensor]:
    # Accept the containers people save weights in: a bare state dict, a
    # {"state_dict": ...} / {"model": ...} checkpoint, or a TSimCNE.save file.
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    for key in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(
            f"{source} holds no state dict (a mapping of names to tensors); save weights "
            "with torch.save(model.state_dict(), path)"
        )
    state = dict(obj)
    if any(k.startswith("backbone.") for k in state):  # a TSimCNENet's weights
        state = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    for prefix in ("module.", "network."):  # DataParallel / ImageNetResNet wrappers
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def _cifar_resnet_from_state(state: Mapping[str, torch.Tensor]) -> CifarResNet:
    width = int(state["stem.0.weight"].shape[0])
    blocks = []
    for stage in range(4):
        indices = {int(k.split(".")[2]) for k in state if k.startswith(f"stages.{stage}.")}
        blocks.append(max(indices) + 1 if indices else 0)
    module = CifarResNet(tuple(blocks), width=width)
    module.load_state_dict(state, strict=True)
    return module


def pretrained_backbone(
    pretrained: str | os.PathLike,
    *,
    download: bool = False,
    small_images: bool = True,
    progress: bool = False,
) -> tuple[nn.Module, int]:
    """A backbone with pretrained weights, ready for ``TSimCNE(backbone=...)``.

    Parameters
    ----------
    pretrained : str or path-like
        ``"imagenet"`` for torchvision's ImageNet ResNet-18, or the path of a local
        weights file (torchvision ``resnet18``, this package's ``CifarResNet``, a
        ``TSimCNENet`` state dict or a ``TSimCNE.save`` file).
    download : bool
        Allow fetching the ImageNet weights when they are not cached.  Off by
        default: without it nothing is downloaded.
    small_images : bool
        For torchvision ResNets: stride-1 stem and no max-pool, for images up to
        about 64 px (see the module notes).  Ignored for ``CifarResNet`` weights,
        which are built for small images already.
    progress : bool
        Show a download progress bar.

    Returns
    -------
    (torch.nn.Module, int)
        The backbone and its feature dimension; pass the pair as ``backbone=``.

    Raises
    ------
    FileNotFoundError
        For a missing file, or ImageNet weights that are not cached while
        ``download`` is False.
    ValueError
        For a file whose weights fit none of the supported networks.

    Examples
    --------
    >>> from tsimcne_widgets import TSimCNE                          # doctest: +SKIP
    >>> backbone = pretrained_backbone("imagenet", download=True)   # doctest: +SKIP
    >>> TSimCNE(backbone=backbone, time_budget=180).fit(images)     # doctest: +SKIP
    """
    if isinstance(pretrained, str) and pretrained.strip().lower() == "imagenet":
        module = ImageNetResNet(small_images=small_images)
        module.load_torchvision_state(_imagenet_state(download, progress))
        return module, module.feature_dim
    if not isinstance(pretrained, (str, os.PathLike)):
        raise TypeError(
            f"pretrained must be 'imagenet' or a path to a weights file, got "
            f"{type(pretrained).__name__}"
        )
    path = Path(pretrained).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"no weights file at {str(path)!r}; pass an existing file or 'imagenet'"
        )
    state = _unwrap_state(torch.load(path, map_location="cpu", weights_only=True), repr(str(path)))
    try:
        if "stem.0.weight" in state:
            module = _cifar_resnet_from_state(state)
            return module, module.feature_dim
        if "conv1.weight" in state and "layer4.1.conv2.weight" in state:
            module = ImageNetResNet(small_images=small_images)
            module.load_torchvision_state(state)
            return module, module.feature_dim
    except RuntimeError as exc:  # load_state_dict: missing, unexpected or misshapen keys
        raise ValueError(f"the weights in {str(path)!r} do not fit the network: {exc}") from None
    sample = ", ".join(list(state)[:4])
    raise ValueError(
        f"{str(path)!r} holds weights of an unsupported network (keys such as {sample}); "
        "supported: torchvision resnet18, tsimcne_widgets CifarResNet or TSimCNENet"
    )
