"""Networks for t-SimCNE: a CIFAR-style ResNet backbone and the projection head.

The backbone is the ResNet-18 variant SimCLR uses for 32x32 images (3x3 stem with
stride 1, no max-pool).  :class:`TSimCNENet` adds the two-layer head whose output is
128-D in stage 1 and is swapped for a fresh 2-D layer in stage 2, and it knows how to
freeze everything but that layer (including BatchNorm statistics) for stage 2.
"""

from __future__ import annotations

import re
import torch
from torch import nn
import torch.nn.functional as F

__all__ = [
    "BasicBlock",
    "build_network",
    "CifarResNet",
    "BACKBONE_NAMES",
    "build_backbone",
    "TSimCNENet",
]


class BasicBlock(nn.Module):
    """The two-convolution residual block of ResNet-18/34.

    Parameters
    ----------
    in_channels, out_channels : int
        Channels in and out.
    stride : int
        Stride of the first convolution; a 1x1 projection shortcut is used when the
        stride or channel count changes.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x), inplace=True)


class CifarResNet(nn.Module):
    """ResNet for small images, as in SimCLR's CIFAR-10 setup.

    A 3x3 stride-1 stem (no max-pool, so 32x32 inputs keep their resolution), four
    stages of :class:`BasicBlock` with ``width, 2*width, 4*width, 8*width`` channels
    and strides 1, 2, 2, 2, then global average pooling.

    Parameters
    ----------
    block_counts : tuple of int
        Blocks per stage; ``(2, 2, 2, 2)`` is ResNet-18, ``(1, 1, 1, 1)`` ResNet-10.
    width : int
        Channels of the first stage (64 for the standard ResNet-18).
    in_channels : int
        Channels of the input images.

    Attributes
    ----------
    feature_dim : int
        Length of the pooled feature vector, ``8 * width``.
    """

    def __init__(
        self,
        block_counts: tuple[int, ...] = (2, 2, 2, 2),
        width: int = 64,
        in_channels: int = 3,
    ):
        super().__init__()
        if len(block_counts) != 4 or any(int(c) < 1 for c in block_counts):
            raise ValueError(
                f"block_counts must be four positive integers, got {block_counts!r}"
            )
        if int(width) < 1:
            raise ValueError(f"width must be a positive integer, got {width!r}")
        width = int(width)
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, 1, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )
        stages = []
        channels = width
        for index, count in enumerate(block_counts):
            out_channels = width * 2**index
            stride = 1 if index == 0 else 2
            blocks = []
            for block_index in range(int(count)):
                blocks.append(
                    BasicBlock(channels, out_channels, stride if block_index == 0 else 1)
                )
                channels = out_channels
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = channels
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the pooled ``(N, feature_dim)`` features of ``(N, C, H, W)`` images."""
        x = self.stages(self.stem(x))
        return torch.flatten(self.pool(x), 1)


_BLOCKS = {"resnet18": (2, 2, 2, 2), "resnet10": (1, 1, 1, 1)}
_NAME_PATTERN = re.compile(r"^(resnet18|resnet10)(?:-w(\d+))?$")
BACKBONE_NAMES = ("resnet18", "resnet10", "resnet18-w<width>", "resnet10-w<width>")


def _dummy_feature_dim(module: nn.Module, in_channels: int = 3, size: int = 32) -> int:
    # Probe in eval mode so BatchNorm running statistics stay untouched, then restore.
    was_training = module.training
    try:
        parameter = next(module.parameters(), None)
        device = parameter.device if parameter is not None else torch.device("cpu")
        dtype = parameter.dtype if parameter is not None else torch.float32
        module.eval()
        with torch.no_grad():
            out = module(torch.zeros(2, in_channels, size, size, device=device, dtype=dtype))
    finally:
        module.train(was_training)
    if not isinstance(out, torch.Tensor) or out.ndim < 2:
        raise ValueError(
            "a custom backbone must return an (N, feature_dim) tensor for (N, 3, H, W) "
            f"images; got {type(out).__name__} with shape {getattr(out, 'shape', None)}. "
            "Wrap it so it pools and flattens, or pass a (module, feature_dim) tuple."
        )
    return int(torch.flatten(out, 1).shape[1])


def build_backbone(
    backbone: str | nn.Module | tuple[nn.Module, int] = "resnet18",
    width: int | None = None,
) -> tuple[nn.Module, int]:
    """Build (or adopt) a backbone and report its feature dimension.

    Parameters
    ----------
    backbone : str, nn.Module or (nn.Module, int)
        ``"resnet18"`` (width 64), ``"resnet10"`` (one block per stage, for tiny CPU
        budgets), or either with a width suffix such as ``"resnet18-w16"``.  A module is
        used as is; its feature dimension is found with a dummy 32x32 forward pass
        (it must return ``(N, feature_dim)``).  A ``(module, feature_dim)`` tuple skips
        the probe.
    width : int, optional
        Channels of the first stage for named backbones; overrides a ``-w`` suffix.

    Returns
    -------
    module : nn.Module
    feature_dim : int

    Raises
    ------
    ValueError
        For an unknown name (the message lists the valid ones) or a bad width.
    """
    if isinstance(backbone, tuple):
        if len(backbone) != 2 or not isinstance(backbone[0], nn.Module):
            raise ValueError("a backbone tuple must be (nn.Module, feature_dim)")
        module, feature_dim = backbone
        if int(feature_dim) < 1:
            raise ValueError(f"feature_dim must be positive, got {feature_dim!r}")
        return module, int(feature_dim)
    if isinstance(backbone, nn.Module):
        return backbone, _dummy_feature_dim(backbone)
    if not isinstance(backbone, str):
        raise TypeError(
            "backbone must be a name such as 'resnet18', an nn.Module or a "
            f"(module, feature_dim) tuple, got {type(backbone).__name__}"
        )
    match = _NAME_PATTERN.match(backbone.strip().lower())
    if match is None:
        raise ValueError(
            f"unknown backbone {backbone!r}; valid names: {', '.join(BACKBONE_NAMES)} "
            "(e.g. 'resnet18-w16'), or pass an nn.Module"
        )
    name, suffix_width = match.groups()
    if width is None:
        width = int(suffix_width) if suffix_width else 64
    if int(width) != width or int(width) < 1:
        raise ValueError(f"width must be a positive integer, got {width!r}")
    module = CifarResNet(_BLOCKS[name], width=int(width))
    return module, module.feature_dim


class TSimCNENet(nn.Module):
    """Backbone plus the t-SimCNE projection head.

    ``head`` is ``Linear(feature_dim, hidden_dim) -> ReLU -> Linear(hidden_dim, out_dim)``.

    Parameters
    ----------
    backbone : nn.Module
        Maps ``(N, C, H, W)`` images to ``(N, feature_dim)`` features.
    feature_dim : int
        Width of the backbone output.
    hidden_dim : int
        Width of the head's hidden layer.
    out_dim : int
        Output dimension (128 in stage 1, 2 after :meth:`replace_output_layer`).
    """

    def __init__(
        self,
        backbone: nn.Module,
        feature_dim: int,
        hidden_dim: int = 1024,
        out_dim: int = 128,
    ):
        super().__init__()
        self.backbone = backbone
        self.feature_dim = int(feature_dim)
        self.hidden_dim = int(hidden_dim)
        self.head = nn.Sequential(
            nn.Linear(self.feature_dim, self.hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(self.hidden_dim, int(out_dim)),
        )
        self._stage = 1

    @property
    def output_layer(self) -> nn.Linear:
        """The last linear layer of the head (replaced between stages 1 and 2)."""
        return self.head[-1]

    @property
    def out_dim(self) -> int:
        """Dimension of the current output."""
        return self.output_layer.out_features

    @property
    def stage(self) -> int:
        """The training stage set by :meth:`set_stage` (1 initially)."""
        return self._stage

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone features ``h`` of ``(N, C, H, W)`` images."""
        return torch.flatten(self.backbone(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Head output ``z`` of ``(N, C, H, W)`` images."""
        return self.head(self.features(x))

    def replace_output_layer(
        self, out_dim: int = 2, generator: torch.Generator | None = None
    ) -> nn.Linear:
        """Swap the last head layer for a fresh ``Linear(hidden_dim, out_dim)``.

        Weights are drawn from N(0, 1) (the paper's stage-2 initialisation, which spreads
        the initial map widely), biases are zero.  The new layer lives on the device and
        dtype of the old one.

        Parameters
        ----------
        out_dim : int
            Output dimension of the new layer.
        generator : torch.Generator, optional
            Generator for the weights, for reproducibility.

        Returns
        -------
        nn.Linear
            The new output layer.
        """
        old = self.output_layer
        layer = nn.Linear(self.hidden_dim, int(out_dim))
        with torch.no_grad():
            device = generator.device if generator is not None else torch.device("cpu")
            weight = torch.randn(layer.weight.shape, generator=generator, device=device)
            layer.weight.copy_(weight)
            layer.bias.zero_()
        layer = layer.to(device=old.weight.device, dtype=old.weight.dtype)
        self.head[-1] = layer
        # Keep the freezing rules of the current stage for the new layer's neighbours.
        self.set_stage(self._stage)
        return layer

    def set_stage(self, stage: int) -> None:
        """Select which parameters train.

        Stages 1 and 3 train everything.  Stage 2 trains only :attr:`output_layer`;
        the rest has ``requires_grad=False`` and stays in eval mode even under
        ``train()``, so BatchNorm running statistics do not drift.

        Parameters
        ----------
        stage : {1, 2, 3}
        """
        if stage not in (1, 2, 3):
            raise ValueError(f"stage must be 1, 2 or 3, got {stage!r}")
        self._stage = int(stage)
        frozen = stage == 2
        for parameter in self.parameters():
            parameter.requires_grad_(not frozen)
        for parameter in self.output_layer.parameters():
            parameter.requires_grad_(True)
        self.train(self.training)

    def train(self, mode: bool = True) -> "TSimCNENet":
        """Set training mode; in stage 2 everything but the output layer stays in eval."""
        super().train(mode)
        if mode and self._stage == 2:
            self.backbone.eval()
            for module in self.head[:-1]:
                module.eval()
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters that train in the current stage (for the optimiser)."""
        return [p for p in self.parameters() if p.requires_grad]


def build_network(backbone, backbone_width: int | None, hidden_dim: int, projection_dim: int,
                  seed: int) -> TSimCNENet:
    """A fresh stage-1 :class:`TSimCNENet` whose weights depend on ``seed`` alone.

    The weights are drawn under :func:`torch.random.fork_rng`, so the process-wide
    random state is left as it was.  Arguments as for :func:`build_backbone` and
    :class:`TSimCNENet` (``projection_dim`` is its ``out_dim`` in stage 1).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module, feature_dim = build_backbone(backbone, backbone_width)
        return TSimCNENet(module, feature_dim, hidden_dim=hidden_dim, out_dim=projection_dim)
