"""Fit a t-SimCNE run into a time budget by measuring the actual device.

:func:`plan_for_budget` times a few real training steps of candidate backbones, from
the cheapest up, and picks the largest one that still gets enough epochs within the
budget; the epochs keep the paper's 1000 : 50 : 450 stage ratio.  All the knobs are
arguments with defaults, so the choice can be tuned without touching the logic.
"""

from __future__ import annotations

import copy
import os
import time
from typing import NamedTuple, Sequence

import numpy as np
import torch

from .device import available_cores, resolve_device, set_cpu_threads
from .recipe import (
    Recipe,
    TimeBudget,
    budget_epochs,
    budget_recipe,
    equivalent_epochs,
    warmup_epochs_for,
)
from .schedule import DEFAULT_EPOCHS, DEFAULT_LR_FACTORS, StagePlan, default_base_lr
from .trainer import Trainer

__all__ = [
    "BudgetChoice",
    "plan_for_budget",
    "DEFAULT_CANDIDATES",
    "TARGET_EPOCHS",
    "CPU_BATCH_SIZE",
    "CPU_MAX_SIDE",
    "time_training_steps",
]

#: (backbone, width), cheapest first.
DEFAULT_CANDIDATES: tuple[tuple[str, int], ...] = (
    ("resnet10", 8),
    ("resnet10", 16),
    ("resnet18", 16),
    ("resnet18", 32),
    ("resnet18", 64),
)
_BLOCK_COST = {"resnet10": 0.5, "resnet18": 1.0}
_WARMUP_STEPS, _MEASURED_STEPS = 1, 3
_TIMED_STEPS = _WARMUP_STEPS + _MEASURED_STEPS


class BudgetChoice(NamedTuple):
    """What :func:`plan_for_budget` chose.

    ``stage_ratio`` is the split the plan was made with, in epochs (it is also the
    most epochs per stage), for :meth:`time_budget`; ``num_threads`` is the CPU
    thread count that trained fastest (None: not measured, on accelerators or when
    the caller or ``OMP_NUM_THREADS`` chose).
    """

    backbone: str
    width: int | None
    plan: StagePlan
    image_size: tuple[int, int]
    stage_ratio: tuple[float, ...] = DEFAULT_EPOCHS
    num_threads: int | None = None
    #: bf16 autocast (faster here), fp32 (False), or None: the device's default.
    mixed_precision: bool | None = None

    def time_budget(self, seconds: float) -> "TimeBudget":
        """A :class:`TimeBudget` of ``seconds`` that re-fits with this choice's split."""
        return TimeBudget(float(seconds), stage_ratio=tuple(self.stage_ratio))


def _relative_cost(backbone: str, width: int) -> float:
    # Convolution FLOPs grow with the square of the width.
    return _BLOCK_COST[backbone] * (width / 64.0) ** 2


# The knobs below were chosen by measurement: benchmarks/README.md, "Short-run recipe"
# and "Planner measurements".

#: Full-cost epochs a budget should afford before a larger network is chosen.
TARGET_EPOCHS = 85.0
#: On a CPU a smaller batch gives more optimiser steps in the same time (a CPU step
#: costs about the same per view at any batch size); 128 images is still 254
#: negatives per view.
CPU_BATCH_SIZE = 128
#: On a CPU, larger images train at this size when even the cheapest network misses
#: ``target_epochs`` (crops are still cut from the full-resolution images).
CPU_MAX_SIDE = 16


def plan_for_budget(
    time_budget: float,
    n_images: int,
    image_size: int | tuple[int, int],
    device="auto",
    batch_size: int = 512,
    *,
    stage_ratio: Sequence[float] = DEFAULT_EPOCHS,
    candidates: Sequence[tuple[str, int]] = DEFAULT_CANDIDATES,
    target_epochs: float = TARGET_EPOCHS,
    min_epochs: Sequence[int] = (3, 1, 1),
    overhead_fraction: float = 0.1,
    measure_fraction: float = 0.1,
    max_side: int | None = None,
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
        Images per step (capped at ``n_images``, and at :data:`CPU_BATCH_SIZE` on a
        CPU).
    stage_ratio : sequence of float
        The largest epochs per stage (default 1000, 50, 450): a generous budget never
        trains longer than this.  With the default, the split and the stage-3
        learning rate follow :func:`budget_recipe` (short runs give stage 3 a larger
        learning rate); any other value is kept as the split, with the paper's
        learning rates.
    candidates : sequence of (str, int)
        Backbones and widths, cheapest first.
    target_epochs : float
        The largest candidate that still reaches this many full-cost epochs (stage-2
        epochs count :data:`STAGE2_COST`) wins; if none does, the cheapest is used.
    min_epochs : sequence of int
        Floor per stage (a tiny budget may therefore be exceeded).  Stage 1 gets at
        least three epochs, so that the trainer can measure its real speed there and
        re-fit the plan before the stages that cannot be re-fitted.
    overhead_fraction : float
        Share of the budget kept for maps, checkpoints and start-up.
    measure_fraction : float
        Measuring stops once it has used this share of the budget.
    max_side : int, optional
        Images larger than this train at ``max_side`` pixels when even the cheapest
        candidate misses ``target_epochs`` at the native size (default
        :data:`CPU_MAX_SIDE` on a CPU, 32 on accelerators).
    learning_rate : float, optional
        Stage-1 learning rate of the plan (default ``0.03 * batch_size / 256`` times the
        recipe's ``lr_scale``: up to 4x for short runs).
    hidden_dim : int
        Width of the head's hidden layer.
    num_threads : int, optional
        CPU threads, as the training will use them.
    verbose : bool
        Print what was measured.

    Returns
    -------
    BudgetChoice
        ``(backbone, width, plan, image_size, stage_ratio, num_threads)``.
    """
    if not (isinstance(time_budget, (int, float)) and time_budget > 0):
        raise ValueError(f"time_budget must be a positive number of seconds, got {time_budget!r}")
    if not candidates:
        raise ValueError("candidates must name at least one (backbone, width)")
    started = time.perf_counter()
    device = resolve_device(device)
    native = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if max_side is None:
        max_side = CPU_MAX_SIDE if device.type == "cpu" else 32
    batch = min(int(batch_size), int(n_images))
    if device.type == "cpu":
        batch = min(batch, CPU_BATCH_SIZE)
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
        return budget_epochs(
            seconds_left(), seconds_per_epoch, stage_ratio, max_epochs, min_epochs
        )

    def measure(candidate, resolution) -> float:
        return _time_candidate(
            *candidate, resolution, measure_batch, device, hidden_dim, num_threads
        )

    resolution = native
    step_time = measure(candidates[0], resolution)
    # Only a thread count nobody chose is ours to measure (Binder's start script sets
    # OMP_NUM_THREADS to the CPU quota).
    threads_chosen_here = (
        device.type == "cpu" and num_threads is None and not os.environ.get("OMP_NUM_THREADS")
    )
    if threads_chosen_here:
        num_threads, step_time = _fastest_thread_count(
            step_time, lambda threads: _time_candidate(
                *candidates[0], resolution, measure_batch, device, hidden_dim, threads
            )
        )
    if equivalent_epochs(epochs_for(step_time)) < target_epochs and max(native) > max_side:
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
        # FLOPs overstate the cost of wider networks on small images (per-layer
        # overheads dominate), so only a clear miss is skipped without timing.
        if equivalent_epochs(epochs_for(chosen_time * ratio)) < target_epochs / 3:
            break  # predicted far too slow: not worth timing
        step_time = measure(candidate, resolution)
        measured[candidate] = step_time
        if equivalent_epochs(epochs_for(step_time)) < target_epochs:
            break
        chosen, chosen_time = candidate, step_time
    if threads_chosen_here and num_threads == 1 and chosen != candidates[0]:
        # One thread won on the cheapest network; a larger one may use more cores well.
        cores = available_cores()
        if cores > 1:
            all_cores_time = _time_candidate(
                *chosen, resolution, measure_batch, device, hidden_dim, cores
            )
            if all_cores_time < chosen_time:
                num_threads, chosen_time = cores, all_cores_time
    mixed_precision = None
    if device.type == "cpu":
        # The candidates were timed in the CPU's default precision; the other one is
        # timed only where bf16 can win (engine/precision.py), i.e. never on AVX2.
        from .precision import default_mixed_precision, faster_precision

        default = default_mixed_precision(device)

        def time_in(bf16: bool) -> float:
            if bf16 == default:
                return chosen_time
            return _time_candidate(*chosen, resolution, measure_batch, device, hidden_dim,
                                   num_threads, bf16)

        mixed_precision, chosen_time = faster_precision(time_in, device)
    seconds_per_epoch = chosen_time * (batch / measure_batch) * steps_per_epoch
    if stage_ratio == tuple(float(e) for e in DEFAULT_EPOCHS):
        recipe = budget_recipe(seconds_left() / seconds_per_epoch)
    else:  # the caller chose the split: keep it, with the paper's learning rates
        recipe = Recipe(stage_ratio, DEFAULT_LR_FACTORS)
    epochs = budget_epochs(
        seconds_left(), seconds_per_epoch, recipe.stage_ratio, max_epochs, min_epochs
    )[: len(stage_ratio)]
    if learning_rate is None:
        learning_rate = default_base_lr(batch) * recipe.lr_scale
    plan = StagePlan.from_total_epochs(
        epochs, n_images, batch, base_lr=learning_rate, lr_factors=recipe.lr_factors,
        warmup_epochs=warmup_epochs_for(epochs),
    )
    if verbose:
        for candidate, seconds in measured.items():
            views_per_second = measure_batch * 2 / seconds
            print(f"  {_describe(candidate)}: {views_per_second:.0f} views/s at {resolution}")
        print(f"  budget plan: {_describe(chosen)}, epochs {epochs}, resolution {resolution}, "
              f"batch {batch}, lr {plan.base_lr:.3g}, stage-3 lr factor {plan.lr_factors[-1]:.3g}, "
              f"{num_threads or 'default'} thread(s)")
    width = None if chosen[1] is None else int(chosen[1])
    return BudgetChoice(
        chosen[0], width, plan, resolution,
        stage_ratio=tuple(float(r) for r in recipe.stage_ratio), num_threads=num_threads,
        mixed_precision=mixed_precision,
    )


def _describe(candidate) -> str:
    backbone, width = candidate
    name = backbone if isinstance(backbone, str) else type(backbone).__name__
    return name if width is None else f"{name}-w{width}"


def _fastest_thread_count(step_time, time_with_threads):
    """(threads, seconds per step) on the CPU: all cores, or one when that is faster.

    ``step_time`` was measured with all cores.  On a machine shared with other work
    (Binder, CI, a second kernel) torch's threads wait for each other while a neighbour
    holds a core (benchmarks/README.md, "Short-run recipe").
    """
    set_cpu_threads(None)
    threads = torch.get_num_threads()
    if threads <= 1:
        return threads, step_time
    single = time_with_threads(1)
    if single < step_time:
        return 1, single
    set_cpu_threads(threads)
    return threads, step_time


def _time_candidate(backbone, width, resolution, batch, device, hidden_dim, num_threads,
                    mixed_precision=None) -> float:
    """Seconds per training step of a throw-away model on random images."""
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
            mixed_precision=mixed_precision,
        )
        return time_training_steps(trainer, n_steps=_MEASURED_STEPS, warmup=_WARMUP_STEPS)


def time_training_steps(trainer: Trainer, n_steps: int = 3, warmup: int = 1) -> float:
    """Fastest seconds per optimiser step of ``trainer`` at its plan's batch size.

    Runs :meth:`~tsimcne_widgets.engine.trainer.Trainer.train_step` ``warmup + n_steps``
    times on random batches at the stage-1 learning rate, outside the plan: time a
    throw-away trainer (one run afterwards starts from the timed weights).

    Parameters
    ----------
    trainer : Trainer
        Not started.
    n_steps : int
        Timed steps (at least 1).
    warmup : int
        Untimed steps first (allocation, kernel selection).

    Returns
    -------
    float
        The fastest timed step in seconds, the device synchronised around each step.

    Raises
    ------
    RuntimeError
        When the trainer has started its run.
    """
    if trainer.state != "idle":
        raise RuntimeError(f"time_training_steps needs a trainer that has not started; this "
                           f"one is {trainer.state}: time a new one")
    if trainer.optimizer is None:
        trainer.enter_stage()
    for group in trainer.optimizer.param_groups:
        group["lr"] = trainer.plan.stage_lr(1)
    batch_size = trainer.plan.batch_size
    durations = []
    for index in range(warmup + max(1, n_steps)):
        trainer.synchronize()
        started = time.perf_counter()
        order = torch.randperm(trainer.n_images, generator=trainer.cpu_generator)[:batch_size]
        trainer.train_step(trainer.images[order.to(trainer.device)])
        trainer.synchronize()
        if index >= warmup:
            durations.append(time.perf_counter() - started)
    # The fastest step is this machine's speed; slower ones were slowed by other work.
    # A plan from a load spike would be short for good (a refit can only shorten a run
    # whose stage 1 is already over), while an optimistic plan is shortened by the
    # trainer's refit early in stage 1.
    return float(np.min(durations))
