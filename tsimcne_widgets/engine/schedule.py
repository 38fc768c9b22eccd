"""Training schedule of t-SimCNE: epochs, learning rate and warm-up per stage.

t-SimCNE trains in up to three stages (paper defaults 1000 / 50 / 450 epochs):
128-D output with everything training; a fresh 2-D output layer with the rest frozen;
everything again at lr / 1000.  Within each stage the learning rate rises linearly
from 0 over the warm-up steps and then follows a cosine down to 0, reached at the
stage's last step.  Stages are numbered from 1; steps within a stage from 0.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Sequence

__all__ = [
    "StagePlan",
    "default_base_lr",
    "epoch_tuple",
    "scale_epochs",
    "DEFAULT_EPOCHS",
    "DEFAULT_LR_FACTORS",
]

DEFAULT_EPOCHS = (1000, 50, 450)
#: The paper's learning rate per stage, relative to stage 1.
DEFAULT_LR_FACTORS = (1.0, 1.0, 1.0 / 1000.0)
_DEFAULT_WARMUP_EPOCHS = (10, 0, 10)


def default_base_lr(batch_size: int) -> float:
    """SimCLR's linear scaling rule used by t-SimCNE: ``0.03 * batch_size / 256``."""
    return 0.03 * batch_size / 256.0


def epoch_tuple(epochs: int | Sequence[int], name: str = "epochs") -> tuple[int, ...]:
    """Epochs per stage as a tuple of 1 to 3 positive ints.

    The one place that reads an epoch count: the plan, the estimator's
    ``total_epochs`` and the widget's budget box all go through it.

    Parameters
    ----------
    epochs : int or sequence of int
        One int (a single stage) or one int per stage, e.g. ``(1000, 50, 450)``.
    name : str
        The argument's name in the user's call, for the error messages.

    Returns
    -------
    tuple of int

    Raises
    ------
    TypeError
        For a bool or anything that is neither an int nor a sequence.
    ValueError
        For no stage or more than 3, a stage below 1 epoch, or a fraction.
    """
    usage = f"{name} must be an int or a sequence of 1 to 3 ints, e.g. (1000, 50, 450)"
    if isinstance(epochs, bool):
        raise TypeError(f"{usage}, not a bool")
    if isinstance(epochs, (str, bytes)):
        raise TypeError(f"{usage}, got {epochs!r}")
    if isinstance(epochs, numbers.Real):
        values: tuple = (epochs,)
    else:
        try:
            values = tuple(epochs)
        except TypeError:
            raise TypeError(f"{usage}, got {epochs!r}") from None
    if not 1 <= len(values) <= 3:
        raise ValueError(f"{name} needs 1 to 3 stages, got {len(values)}: {values!r}; {usage}")
    result = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{usage}, got {values!r}")
        if not float(value).is_integer():
            raise ValueError(f"{name} must be whole numbers, got {values!r}")
        if int(value) < 1:
            raise ValueError(f"every stage needs at least 1 epoch: {name}={values!r}")
        result.append(int(value))
    return tuple(result)


def scale_epochs(ratio: Sequence[float], total: int) -> tuple[int, ...]:
    """Epochs per stage in the proportions of ``ratio``, summing to ``total``.

    Each stage gets at least 1 epoch, so the sum is the number of stages when
    ``total`` is smaller than that.

    Examples
    --------
    >>> scale_epochs((1000, 50, 450), 150)
    (100, 5, 45)
    """
    weight = sum(ratio)
    epochs = [max(1, int(round(r * total / weight))) for r in ratio]
    while sum(epochs) > max(total, len(epochs)):
        epochs[epochs.index(max(epochs))] -= 1
    return tuple(epochs)


@dataclass(frozen=True)
class StagePlan:
    """Epochs, learning rate and warm-up of each training stage.

    Parameters
    ----------
    epochs : int or sequence of int
        Epochs per stage, 1 to 3 stages; an int means a single stage.
    batch_size : int
        Images per optimiser step (each gives two views).
    steps_per_epoch : int
        Optimiser steps per epoch.
    base_lr : float, optional
        Stage-1 learning rate; default ``0.03 * batch_size / 256``.
    lr_factors : sequence of float
        Multiplier of ``base_lr`` per stage (only the first ``len(epochs)`` are used).
    warmup_epochs : sequence of int
        Linear warm-up length per stage, clipped to the stage length.

    Examples
    --------
    >>> plan = StagePlan((1000, 50, 450), batch_size=512, steps_per_epoch=117)
    >>> plan.stage_lr(3) == plan.base_lr / 1000
    True
    """

    epochs: tuple[int, ...]
    batch_size: int
    steps_per_epoch: int
    base_lr: float | None = None
    lr_factors: tuple[float, ...] = DEFAULT_LR_FACTORS
    warmup_epochs: tuple[int, ...] = _DEFAULT_WARMUP_EPOCHS
    _stage_starts: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        epochs = epoch_tuple(self.epochs)
        if int(self.batch_size) < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size!r}")
        if int(self.steps_per_epoch) < 1:
            raise ValueError(
                f"steps_per_epoch must be at least 1, got {self.steps_per_epoch!r}"
            )
        lr_factors = tuple(float(f) for f in self.lr_factors)
        warmup = tuple(int(w) for w in self.warmup_epochs)
        if len(lr_factors) < len(epochs) or len(warmup) < len(epochs):
            raise ValueError(
                f"lr_factors and warmup_epochs need an entry for each of the "
                f"{len(epochs)} stages, got {lr_factors!r} and {warmup!r}"
            )
        if any(f < 0 for f in lr_factors) or any(w < 0 for w in warmup):
            raise ValueError("lr_factors and warmup_epochs must not be negative")
        base_lr = default_base_lr(int(self.batch_size)) if self.base_lr is None else self.base_lr
        if not (float(base_lr) > 0 and math.isfinite(float(base_lr))):
            raise ValueError(f"base_lr must be a positive number, got {base_lr!r}")
        object.__setattr__(self, "epochs", epochs)
        object.__setattr__(self, "batch_size", int(self.batch_size))
        object.__setattr__(self, "steps_per_epoch", int(self.steps_per_epoch))
        object.__setattr__(self, "base_lr", float(base_lr))
        object.__setattr__(self, "lr_factors", lr_factors[: len(epochs)])
        object.__setattr__(
            self, "warmup_epochs", tuple(min(w, e) for w, e in zip(warmup, epochs))
        )
        starts, total = [], 0
        for e in epochs:
            starts.append(total)
            total += e * int(self.steps_per_epoch)
        object.__setattr__(self, "_stage_starts", tuple(starts))

    @classmethod
    def from_total_epochs(
        cls,
        total_epochs: int | Sequence[int],
        n_images: int,
        batch_size: int = 512,
        *,
        drop_last: bool = True,
        **kwargs,
    ) -> "StagePlan":
        """Plan for a data set of ``n_images`` images.

        When the data set is smaller than ``batch_size`` the whole set is one batch
        (and the plan's ``batch_size``, hence the default learning rate, shrinks to it).

        Parameters
        ----------
        total_epochs : int or sequence of int
            Epochs per stage.
        n_images : int
            Images in the training set (at least 2: a batch needs negatives).
        batch_size : int
            Requested images per step.
        drop_last : bool
            Whether an incomplete last batch is skipped (the trainer's choice).
        **kwargs
            ``base_lr``, ``lr_factors``, ``warmup_epochs``.
        """
        n_images = int(n_images)
        if n_images < 2:
            raise ValueError(
                f"t-SimCNE needs at least 2 images (a batch needs negatives), got {n_images}"
            )
        effective_batch = min(int(batch_size), n_images)
        if effective_batch < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size!r}")
        if drop_last:
            steps = n_images // effective_batch
        else:
            steps = math.ceil(n_images / effective_batch)
        return cls(
            epochs=total_epochs,
            batch_size=effective_batch,
            steps_per_epoch=steps,
            **kwargs,
        )

    @property
    def n_stages(self) -> int:
        """Number of stages (1 to 3)."""
        return len(self.epochs)

    @property
    def total_epochs(self) -> int:
        """Epochs over all stages."""
        return sum(self.epochs)

    @property
    def total_steps(self) -> int:
        """Optimiser steps over all stages."""
        return self.total_epochs * self.steps_per_epoch

    def _check_stage(self, stage: int) -> int:
        if isinstance(stage, bool) or int(stage) != stage or not 1 <= stage <= self.n_stages:
            raise ValueError(
                f"stage must be 1..{self.n_stages} for this {self.n_stages}-stage plan, "
                f"got {stage!r}"
            )
        return int(stage) - 1

    def stage_steps(self, stage: int) -> int:
        """Optimiser steps in ``stage``."""
        return self.epochs[self._check_stage(stage)] * self.steps_per_epoch

    def warmup_steps(self, stage: int) -> int:
        """Warm-up steps of ``stage`` (already clipped to the stage length)."""
        return self.warmup_epochs[self._check_stage(stage)] * self.steps_per_epoch

    def stage_lr(self, stage: int) -> float:
        """Peak learning rate of ``stage``: ``base_lr * lr_factors[stage - 1]``."""
        return self.base_lr * self.lr_factors[self._check_stage(stage)]

    def lr_at(self, stage: int, step_in_stage: int) -> float:
        """Learning rate for optimiser step ``step_in_stage`` (0-based) of ``stage``.

        Linear warm-up reaching the stage lr at the last warm-up step, then a cosine
        that starts there and is exactly 0 at the stage's last step.
        """
        peak = self.stage_lr(stage)
        n_steps = self.stage_steps(stage)
        if not 0 <= step_in_stage < n_steps:
            raise ValueError(
                f"step_in_stage must be in 0..{n_steps - 1} for stage {stage}, "
                f"got {step_in_stage!r}"
            )
        warmup = self.warmup_steps(stage)
        if step_in_stage < warmup:
            return peak * (step_in_stage + 1) / warmup
        decay_steps = n_steps - warmup
        progress = (step_in_stage - warmup + 1) / decay_steps
        return peak * 0.5 * (1.0 + math.cos(math.pi * progress))

    def locate(self, global_step: int) -> tuple[int, int]:
        """Map a 0-based step over the whole run to ``(stage, step_in_stage)``."""
        if not 0 <= global_step < self.total_steps:
            raise ValueError(
                f"global_step must be in 0..{self.total_steps - 1}, got {global_step!r}"
            )
        for index in range(self.n_stages - 1, -1, -1):
            if global_step >= self._stage_starts[index]:
                return index + 1, global_step - self._stage_starts[index]
        raise AssertionError("unreachable")  # pragma: no cover

    def stage_start(self, stage: int) -> int:
        """Global index of the first step of ``stage``."""
        return self._stage_starts[self._check_stage(stage)]
