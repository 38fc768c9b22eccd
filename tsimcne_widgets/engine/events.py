"""The immutable progress record a training run hands to its listeners.

numpy only, so code that merely displays snapshots need not import torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Snapshot", "STATES"]

#: Trainer states, in the order a run passes through them.
STATES = ("idle", "running", "paused", "stopping", "finished", "stopped", "failed")


@dataclass(frozen=True)
class Snapshot:
    """The state of a training run at one moment, with its current map.

    Attributes
    ----------
    stage : int
        Training stage, 1 to 3.
    epoch : int
        Completed epochs within the stage.
    epochs_in_stage : int
    total_epoch : int
        Completed epochs over all stages.
    total_epochs : int
    step : int
        Optimiser steps so far.
    loss : float
        Mean loss of the last completed epoch (NaN before the first).
    learning_rate : float
        Learning rate of the last step.
    images_per_second : float
        Training throughput over the last epoch (images, not views).
    elapsed : float
        Seconds of training (pauses excluded).
    eta : float or None
        Estimated seconds left.
    embedding : numpy.ndarray
        ``(N, 2)`` float32, read-only: the head output of the un-augmented images,
        or its 2-D PCA while the output is wider (stage 1).
    provisional : bool
        True while ``embedding`` is a PCA view of a wider output.
    state : str
        Trainer state at emission.
    losses : tuple of float
        Mean loss of every completed epoch so far.
    """

    stage: int
    epoch: int
    epochs_in_stage: int
    total_epoch: int
    total_epochs: int
    step: int
    loss: float
    learning_rate: float
    images_per_second: float
    elapsed: float
    eta: float | None
    embedding: np.ndarray
    provisional: bool
    state: str
    losses: tuple[float, ...]
