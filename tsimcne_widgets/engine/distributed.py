"""Training across processes with ``torch.distributed`` (launched by ``torchrun``).

``torchrun --nproc_per_node=K -m tsimcne_widgets train DIR --out OUT --epochs ...`` starts
K processes; each trains on ``B / K`` images of every global batch of ``B``, on its own
device, and the run behaves like one process at batch ``B``:

* **The same views.**  Every rank draws the augmentation parameters of the whole global
  batch from the same generator (they are a few numbers per image) and applies only its
  own rows (:func:`augment_shard`), so the views are those one process would make, and
  a run can resume with a different K.
* **The global loss.**  The Cauchy InfoNCE loss needs every view's distance to every
  other view of the global batch, so the outputs are gathered with gradients
  (``torch.distributed.nn.functional.all_gather``) and every rank evaluates the loss of
  the whole global batch (:func:`global_cauchy_infonce`); for a 2-D or 128-D output
  that redundant ``(2B)^2`` term costs far less than a step of the backbone.
* **The same BatchNorm.**  One process normalises over all 2B views;
  :class:`GlobalBatchNorm2d` does so across ranks by summing the per-channel count, sum
  and sum of squares with a differentiable all-reduce (torch's ``SyncBatchNorm`` works
  on GPUs only, and the CPU ``gloo`` runs in CI must match too).
* **The same gradient.**  Backward through the gather sums every rank's copy of the
  loss gradient, so each rank holds K times its share; :func:`average_gradients`
  all-reduces and divides by K, which leaves exactly the single-process gradient.

Without an initialised process group (or with one process) every helper here is the
plain single-process operation, so a normal run is unchanged.  Only rank 0 should
write checkpoints, maps and snapshots (:func:`is_main_process`).
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, fields

import torch
import torch.distributed as dist
from torch import nn

from .loss import cauchy_infonce

__all__ = [
    "DistributedContext", "GlobalBatchNorm2d", "augment_shard", "average_gradients", "context",
    "global_cauchy_infonce", "is_main_process", "prepare_model", "setup_from_env", "shard_batch",
    "shutdown",
]


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands in a distributed run.

    Attributes
    ----------
    rank : int
        0 to ``world_size - 1``; rank 0 writes outputs.
    world_size : int
        Number of processes.
    local_rank : int
        Rank on this node (selects the GPU).
    backend : str
        ``"nccl"`` or ``"gloo"``.
    """

    rank: int
    world_size: int
    local_rank: int
    backend: str


def context() -> DistributedContext | None:
    """The running distributed context, or None in a single-process run."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return None
    return DistributedContext(dist.get_rank(), dist.get_world_size(),
                              int(os.environ.get("LOCAL_RANK", dist.get_rank())),
                              str(dist.get_backend()))


def is_main_process() -> bool:
    """True in a single-process run and on rank 0."""
    ctx = context()
    return ctx is None or ctx.rank == 0


def setup_from_env(device: str = "auto") -> DistributedContext | None:
    """Join the process group ``torchrun`` describes in the environment.

    Parameters
    ----------
    device : str
        The run's device setting: GPUs (``"auto"`` with CUDA, ``"cuda"``) use NCCL and
        ``cuda:LOCAL_RANK``; otherwise gloo on the CPU.

    Returns
    -------
    DistributedContext or None
        None when ``WORLD_SIZE`` is unset or 1: a single-process run.

    Raises
    ------
    RuntimeError
        When the environment names a world but the group cannot form (the message
        carries torch's reason and the variables it read).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world < 2:
        return None
    if not (dist.is_available() and dist.is_initialized()):
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        use_cuda = torch.cuda.is_available() and str(device).split(":")[0] in ("auto", "cuda")
        if use_cuda:
            torch.cuda.set_device(local_rank)
        try:
            dist.init_process_group("nccl" if use_cuda else "gloo")
        except Exception as exc:  # noqa: BLE001 - re-raised with what was read
            names = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
            seen = ", ".join(f"{k}={os.environ.get(k)!r}" for k in names)
            raise RuntimeError(f"could not join the torch.distributed process group ({seen}): "
                               f"{exc}; launch with torchrun --nproc_per_node=K") from exc
    return context()


def device_for(ctx: DistributedContext | None, device: str) -> str:
    """The device this rank trains on: ``cuda:LOCAL_RANK`` for GPU runs, else ``device``."""
    if ctx is not None and ctx.backend == "nccl":
        return f"cuda:{ctx.local_rank}"
    return "cpu" if ctx is not None and str(device) == "auto" else device


def shutdown() -> None:
    """Leave the process group (no effect in a single-process run)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# ----------------------------------------------------------------------------- one step

def _check_divisible(global_batch: int, world: int) -> int:
    if global_batch % world:
        raise ValueError(f"the batch of {global_batch} images does not split evenly over {world} "
                         f"processes; choose a batch size divisible by {world}")
    return global_batch // world


def shard_batch(indices: torch.Tensor) -> torch.Tensor:
    """This rank's contiguous share of a global batch's indices (all of them when alone).

    Raises
    ------
    ValueError
        When the batch does not split evenly over the processes.
    """
    ctx = context()
    if ctx is None:
        return indices
    share = _check_divisible(len(indices), ctx.world_size)
    return indices[ctx.rank * share:(ctx.rank + 1) * share]


def _rows(params, index: torch.Tensor):
    return type(params)(**{f.name: getattr(params, f.name)[index] for f in fields(params)})


def augment_shard(augmenter, batch: torch.Tensor, generator: torch.Generator, *,
                  channels_last: bool = False) -> torch.Tensor:
    """Both views of this rank's ``batch``: ``(2b, 3, H, W)``, first views then second.

    Draws the parameters of the whole global batch (``b * world_size`` images, two
    views each) so that every rank's generator stays in step and each view equals the
    one a single process would make for the same image.
    """
    doubled = torch.cat([batch, batch])
    ctx = context()
    if ctx is None:
        return augmenter(doubled, generator, channels_last=channels_last)
    share = batch.shape[0]
    total = share * ctx.world_size
    params = augmenter.sample(2 * total, batch.device, generator,
                              image_shape=tuple(batch.shape[-2:]))
    mine = torch.arange(ctx.rank * share, (ctx.rank + 1) * share, device=params.flip.device)
    return augmenter.apply(doubled, _rows(params, torch.cat([mine, mine + total])),
                           channels_last=channels_last)


def _differentiable(name: str):
    """``torch.distributed.nn.functional.<name>``: the public collectives with gradients.

    torch 2.14 marks them deprecated in favour of the private ``_functional_collectives``;
    their FutureWarning would repeat every step, so it is silenced here.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        from torch.distributed.nn import functional

    def call(tensor: torch.Tensor):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return getattr(functional, name)(tensor)

    return call


def _gather(z: torch.Tensor) -> torch.Tensor:
    return torch.cat(_differentiable("all_gather")(z.contiguous()), dim=0)


def global_cauchy_infonce(z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
    """:func:`~tsimcne_widgets.engine.loss.cauchy_infonce` over the global batch.

    ``z_a``/``z_b`` are this rank's ``(b, D)`` outputs of the first/second views; the
    result (the same on every rank) is the loss one process gets on the concatenation.
    """
    if context() is None:
        return cauchy_infonce(z_a, z_b)
    return cauchy_infonce(_gather(z_a), _gather(z_b))


def average_gradients(parameters) -> None:
    """Replace each gradient by its mean over the ranks (one all-reduce for all of them)."""
    ctx = context()
    if ctx is None:
        return
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= ctx.world_size
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


# ----------------------------------------------------------------------------- BatchNorm

class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics cover the views of every rank.

    In eval mode, or without a process group, it is exactly :class:`torch.nn.BatchNorm2d`.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or context() is None:
            return super().forward(x)
        all_reduce = _differentiable("all_reduce")
        dims = (0, 2, 3)
        channels = x.shape[1]
        shape = (1, channels, 1, 1)
        xf = x.float()
        # Two passes (mean, then the centred squares), as one process computes them:
        # E[x^2] - E[x]^2 would lose digits the equivalence with one process needs.
        local_count = torch.tensor([x.numel() / channels], dtype=torch.float32, device=x.device)
        totals = all_reduce(torch.cat([local_count, xf.sum(dims)]))
        n = totals[0]
        mean = totals[1:] / n
        centred = xf - mean.view(shape)
        var = all_reduce(centred.square().sum(dims)) / n
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                momentum = 0.1 if self.momentum is None else self.momentum
                unbiased = var * (n / (n - 1).clamp_min(1.0))
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), momentum)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)
                self.num_batches_tracked.add_(1)
        y = centred * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def prepare_model(model: nn.Module) -> nn.Module:
    """Make ``model`` train as one network across ranks (no effect when alone).

    Every ``BatchNorm2d`` becomes a :class:`GlobalBatchNorm2d` with the same parameters
    and statistics, and rank 0's parameters and buffers are broadcast, so all ranks
    start identical whatever their random state.
    """
    if context() is None:
        return model
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if type(child) is nn.BatchNorm2d:
                replacement = GlobalBatchNorm2d(child.num_features, child.eps, child.momentum,
                                                child.affine, child.track_running_stats,
                                                device=child.weight.device if child.affine else None)
                replacement.load_state_dict(child.state_dict())
                replacement.train(child.training)
                setattr(module, child_name, replacement)
    with torch.no_grad():
        for tensor in list(model.parameters()) + list(model.buffers()):
            dist.broadcast(tensor.data, src=0)
    return model
