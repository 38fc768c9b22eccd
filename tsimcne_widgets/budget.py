"""Fit a t-SimCNE run into a time budget by measuring the actual device.

:func:`plan_for_budget` times a few real training steps of candidate backbones, from
the cheapest up, and picks the largest one that still gets enough epochs within the
budget; the epochs keep the paper's 1000 : 50 : 450 stage ratio.  All the knobs are
arguments with defaults, so the choice can be tuned without touching the logic.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np
import torch

from .runtime import resolve_device
from .schedule import DEFAULT_EPOCHS, StagePlan

__all__ = [
    "BudgetChoice",
    "TimeBudget",
    "plan_for_budget",
    "time_training_steps",
    "DEFAULT_CANDIDATES",
    "STAGE2_COST",
]

#: (backbone, width), cheapest first.
DEFAULT_CANDIDATES: tuple[tuple[str, int], ...] = (
    ("resnet10", 8),
    ("resnet10", 16),
    ("resnet18", 16),
    ("resnet18", 32),
    ("resnet18", 64),
)
#: A stage-2 step skips the backbone's backward pass: about a third of a full step.
STAGE2_COST = 0.35
_BLOCK_COST = {"resnet10": 0.5, "resnet18": 1.0}
_WARMUP_STEPS, _MEASURED_STEPS = 1, 3
_TIMED_STEPS = _WARMUP_STEPS + _MEASURED_STEPS


class BudgetChoice(NamedTuple):
    """What :func:`plan_for_budget` chose."""

    backbone: str
    width: int | None
    plan: StagePlan
    image_size: tuple[int, int]


def _relative_cost(backbone: str, width: int) -> float:
    # Convolution FLOPs grow with the square of the width.
    return _BLOCK_COST[backbone] * (width / 64.0) ** 2


def _budget_epochs(
    seconds: float,
    seconds_per_epoch: float,
    stage_ratio: Sequence[float],
    max_epochs: Sequence[int],
    min_epochs: Sequence[int],
) -> tuple[int, ...]:
    costs = [STAGE2_COST if index == 1 else 1.0 for index in range(len(stage_ratio))]
    weighted = sum(r * c for r, c in zip(stage_ratio, costs))
    scale = max(seconds, 0.0) / (seconds_per_epoch * weighted)
    epochs = []
    for index, ratio in enumerate(stage_ratio):
        value = int(math.floor(ratio * scale))
        value = min(value, int(max_epochs[index]))
        epochs.append(max(value, int(min_epochs[index])))
    return tuple(epochs)


def _equivalent_epochs(epochs: Sequence[int]) -> float:
    return sum(e * (STAGE2_COST if i == 1 else 1.0) for i, e in enumerate(epochs))


@dataclass(frozen=True)
class TimeBudget:
    """Seconds a :class:`~tsimcne_widgets.trainer.Trainer` may use, for re-fitting its plan.

    A measurement before training can be off (a machine shared with other work, warm-up
    effects), so the trainer calls :meth:`refit` once, early in stage 1, with the speed
    it actually reached.

    Parameters
    ----------
    seconds : float
        Seconds for training and maps, counted from the trainer's start.
    stage_ratio : sequence of float
        Relative stage lengths, also the most epochs per stage.
    min_epochs : sequence of int
        Floor per stage.
    overhead_fraction : float
        Share kept for maps and checkpoints.
    """

    seconds: float
    stage_ratio: tuple[float, ...] = DEFAULT_EPOCHS
    min_epochs: tuple[int, ...] = (1, 3, 3)
    overhead_fraction: float = 0.1

    def refit(
        self, plan: StagePlan, epochs_done: int, seconds_used: float, seconds_per_epoch: float
    ) -> StagePlan | None:
        """A plan that ends on time at ``seconds_per_epoch``, or None if ``plan`` is close.

        Parameters
        ----------
        plan : StagePlan
            The current plan; training is in stage 1 with ``epochs_done`` epochs done.
        seconds_used : float
            Seconds of the budget used so far.
        seconds_per_epoch : float
            Measured seconds per full-cost epoch.
        """
        seconds_left = self.seconds * (1.0 - self.overhead_fraction) - seconds_used
        ratio = tuple(float(r) for r in self.stage_ratio[: plan.n_stages])
        max_epochs = tuple(int(round(r)) for r in ratio)
        epochs = list(
            _budget_epochs(
                seconds_left + epochs_done * seconds_per_epoch,
                seconds_per_epoch,
                ratio,
                max_epochs,
                self.min_epochs,
            )
        )
        epochs[0] = max(epochs[0], epochs_done + 1)
        if abs(epochs[0] - plan.epochs[0]) <= 0.1 * plan.epochs[0]:
            return None
        return StagePlan(
            epochs=tuple(epochs),
            batch_size=plan.batch_size,
            steps_per_epoch=plan.steps_per_epoch,
            base_lr=plan.base_lr,
            lr_factors=plan.lr_factors,
            warmup_epochs=_warmup(epochs) + (0,) * 3,
        )


def _warmup(epochs: Sequence[int]) -> tuple[int, ...]:
    # The paper warms up 10 of 1000 epochs; short runs warm up a tenth of the stage.
    return tuple(
        0 if index == 1 else min(10, max(1, math.ceil(0.1 * count)))
        for index, count in enumerate(epochs)
    )


def plan_for_budget(
    time_budget: float,
    n_images: int,
    image_size: int | tuple[int, int],
    device="auto",
    batch_size: int = 512,
    *,
    stage_ratio: Sequence[float] = DEFAULT_EPOCHS,
    candidates: Sequence[tuple[str, int]] = DEFAULT_CANDIDATES,
    target_epochs: float = 150.0,
    min_epochs: Sequence[int] = (1, 3, 3),
    overhead_fraction: float = 0.1,
    measure_fraction: float = 0.1,
    max_side: int = 32,
    learning_rate: float | None = None,
    hidden_dim: int = 1024,
    num_threads: int | None = None,
    verbose: bool = False,
) -> BudgetChoice:
    """Choose backbone, width, epochs and resolution so training ends within a budget.

    Parameters
    ----------
    time_budget : float
        Seconds for the whole run (measurement, training and maps).
    n_images : int
        Training images.
    image_size : int or (int, int)
        Native (height, width) of the images.
    device : str or torch.device
        Where training will run; the measurement runs there too.
    batch_size : int
        Images per step (capped at ``n_images``).
    stage_ratio : sequence of float
        Relative stage lengths and the largest epochs per stage (default 1000, 50, 450):
        a generous budget never trains longer than this.
    candidates : sequence of (str, int)
        Backbones and widths, cheapest first.
    target_epochs : float
        The largest candidate that still reaches this many full-cost epochs (stage-2
        epochs count :data:`STAGE2_COST`) wins; if none does, the cheapest is used.
    min_epochs : sequence of int
        Floor per stage (a tiny budget may therefore be exceeded).
    overhead_fraction : float
        Share of the budget kept for maps, checkpoints and start-up.
    measure_fraction : float
        Measuring stops once it has used this share of the budget.
    max_side : int
        Images larger than this train at ``max_side`` pixels when even the cheapest
        candidate misses ``target_epochs`` at the native size.
    learning_rate : float, optional
        Stage-1 learning rate of the plan (default ``0.03 * batch_size / 256``).
    hidden_dim : int
        Width of the head's hidden layer.
    num_threads : int, optional
        CPU threads, as the training will use them.
    verbose : bool
        Print what was measured.

    Returns
    -------
    BudgetChoice
        ``(backbone, width, plan, image_size)``.
    """
    if not (isinstance(time_budget, (int, float)) and time_budget > 0):
        raise ValueError(f"time_budget must be a positive number of seconds, got {time_budget!r}")
    if not candidates:
        raise ValueError("candidates must name at least one (backbone, width)")
    started = time.perf_counter()
    device = resolve_device(device)
    native = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    batch = min(int(batch_size), int(n_images))
    steps_per_epoch = int(n_images) // batch
    stage_ratio = tuple(float(r) for r in stage_ratio)
    max_epochs = tuple(int(round(r)) for r in stage_ratio)
    # Accelerators are timed at the real batch, where they reach full speed.  On the
    # CPU a first probe uses a small batch (a step at the real batch of a large model
    # can take seconds); its fixed per-step costs overstate the cost per view, so the
    # cheapest model is then re-timed at the largest batch that fits the allowance.
    measure_batch = batch if device.type != "cpu" else min(batch, 32)
    allowance = measure_fraction * time_budget / 4

    def seconds_left() -> float:
        return (time_budget - (time.perf_counter() - started)) * (1.0 - overhead_fraction)

    def epochs_for(seconds_per_step: float) -> tuple[int, ...]:
        seconds_per_epoch = seconds_per_step * (batch / measure_batch) * steps_per_epoch
        return _budget_epochs(
            seconds_left(), seconds_per_epoch, stage_ratio, max_epochs, min_epochs
        )

    def measure(candidate, resolution) -> float:
        return _time_candidate(
            *candidate, resolution, measure_batch, device, hidden_dim, num_threads
        )

    resolution = native
    step_time = measure(candidates[0], resolution)
    if _equivalent_epochs(epochs_for(step_time)) < target_epochs and max(native) > max_side:
        scale = max_side / max(native)
        resolution = (max(8, round(native[0] * scale)), max(8, round(native[1] * scale)))
        step_time = measure(candidates[0], resolution)
    larger = batch
    while larger > measure_batch and step_time * larger / measure_batch * _TIMED_STEPS > allowance:
        larger //= 2
    if larger > measure_batch:
        measure_batch = larger
        step_time = measure(candidates[0], resolution)
    chosen, chosen_time = candidates[0], step_time
    measured = {candidates[0]: step_time}
    for candidate in candidates[1:]:
        if time.perf_counter() - started > measure_fraction * time_budget:
            break
        ratio = _relative_cost(*candidate) / _relative_cost(*chosen)
        if _equivalent_epochs(epochs_for(chosen_time * ratio)) < target_epochs:
            break  # predicted too slow: not worth timing
        step_time = measure(candidate, resolution)
        measured[candidate] = step_time
        if _equivalent_epochs(epochs_for(step_time)) < target_epochs:
            break
        chosen, chosen_time = candidate, step_time
    epochs = epochs_for(chosen_time)[: len(stage_ratio)]
    plan = StagePlan.from_total_epochs(
        epochs, n_images, batch, base_lr=learning_rate, warmup_epochs=_warmup(epochs) + (0,) * 3
    )
    if verbose:
        for candidate, seconds in measured.items():
            views_per_second = measure_batch * 2 / seconds
            print(f"  {_describe(candidate)}: {views_per_second:.0f} views/s at {resolution}")
        print(f"  budget plan: {_describe(chosen)}, epochs {epochs}, resolution {resolution}")
    width = None if chosen[1] is None else int(chosen[1])
    return BudgetChoice(chosen[0], width, plan, resolution)


def _describe(candidate) -> str:
    backbone, width = candidate
    name = backbone if isinstance(backbone, str) else type(backbone).__name__
    return name if width is None else f"{name}-w{width}"


def _time_candidate(backbone, width, resolution, batch, device, hidden_dim, num_threads) -> float:
    """Seconds per training step of a throw-away model on random images."""
    from .trainer import Trainer

    if isinstance(backbone, torch.nn.Module):
        backbone = copy.deepcopy(backbone)  # timing trains it: spare the caller's module
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (max(batch, 2), *resolution, 3), dtype=np.uint8)
    plan = StagePlan.from_total_epochs(1, len(images), batch)
    with torch.random.fork_rng(devices=[]):
        trainer = Trainer(
            images,
            plan,
            backbone=backbone,
            backbone_width=width,
            hidden_dim=hidden_dim,
            device=device,
            random_state=0,
            num_threads=num_threads,
        )
        return time_training_steps(trainer, n_steps=_MEASURED_STEPS, warmup=_WARMUP_STEPS)


def time_training_steps(trainer, n_steps: int = 3, warmup: int = 1) -> float:
    """Median seconds per stage-1 optimiser step of ``trainer`` at its batch size.

    The median resists the spikes of a machine shared with other work.  Trains the
    model for ``warmup + n_steps`` steps outside its plan: use a throw-away trainer.
    """
    if trainer.optimizer is None:
        trainer._enter_stage()
    for group in trainer.optimizer.param_groups:
        group["lr"] = trainer.plan.stage_lr(1)
    batch_size = trainer.plan.batch_size
    durations = []
    for index in range(warmup + max(1, n_steps)):
        trainer.synchronize()
        started = time.perf_counter()
        order = torch.randperm(trainer.n_images, generator=trainer.cpu_generator)[:batch_size]
        trainer._train_step(trainer.images[order.to(trainer.device)])
        trainer.synchronize()
        if index >= warmup:
            durations.append(time.perf_counter() - started)
    return float(np.median(durations))
