"""Maps and snapshots of a training run, mixed into :class:`~tsimcne_widgets.engine.trainer.Trainer`.

The map of the un-augmented training images (its 2-D PCA while the output is wider)
is what the callbacks receive, as immutable :class:`~tsimcne_widgets.engine.events.Snapshot`
objects.  Maps cost a forward pass over all images, so epoch-end maps are skipped
while the last one took more than ``map_time_fraction`` of the time since it.
"""

from __future__ import annotations

import time
from typing import Callable, Sequence

import numpy as np
import torch

from .events import Snapshot
from .inference import embed
from .recipe import equivalent_epochs, stage_cost
from .tensors import images_to_tensor, pca_2d

__all__ = ["MapReporting"]


class MapReporting:
    """The maps and snapshots of a run.

    A mixin: its host (the trainer) provides ``model``, ``model_lock``, ``images``,
    ``image_size``, ``channels_last``, ``mixed_precision``, ``plan``, the position
    (``stage``, ``epoch``, ``total_epoch``, ``step``, ``losses``), ``learning_rate``,
    ``images_per_second``, ``elapsed``, ``state`` and ``_fail(error)``, and calls
    :meth:`_init_maps` from its constructor.

    Attributes
    ----------
    callbacks : list of callable
        ``callback(snapshot) -> bool | None``; True asks the run to stop.
    map_time_fraction : float
    last_map : numpy.ndarray or None
        The latest map, read-only.
    latest_snapshot : Snapshot or None
    """

    def _init_maps(self, callbacks: Sequence[Callable] | None, map_time_fraction: float) -> None:
        self.callbacks = list(callbacks or [])
        self.map_time_fraction = float(map_time_fraction)
        self.last_map: np.ndarray | None = None
        self.latest_snapshot: Snapshot | None = None
        self._last_map_cost = 0.0
        self._last_map_end = 0.0

    def _start_map_clock(self) -> None:
        self._last_map_end = time.perf_counter()

    def _on_end(self) -> None:
        # The end of the run always gets a map, with the final state.
        if self.callbacks:
            self._emit(force_map=True)

    def embed(self, images=None, batch_size: int | None = None) -> np.ndarray:
        """Head output of un-augmented images, network in eval mode.

        Parameters
        ----------
        images : optional
            uint8 images (as for the constructor); default the training images.
        batch_size : int, optional
            Images per forward pass; default ``max(256, 2 * plan.batch_size)``.

        Returns
        -------
        numpy.ndarray
            ``(N, out_dim)`` float32, ``out_dim`` being the current output width.
        """
        data = self.images if images is None else images_to_tensor(images)
        return self._embed_tensor(data, batch_size).cpu().numpy()

    def _embed_tensor(self, data: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        with self.model_lock:
            return embed(self.model, data, self.image_size, channels_last=self.channels_last,
                         mixed_precision=self.mixed_precision,
                         batch_size=batch_size or max(256, 2 * self.plan.batch_size))

    def compute_map(self) -> tuple[np.ndarray, bool]:
        """The current 2-D map and whether it is a provisional PCA view."""
        output = self._embed_tensor(self.images)
        if output.shape[1] == 2:
            xy, provisional = output.cpu().numpy(), False
        else:
            xy, provisional = pca_2d(output, self.last_map), True
        xy = np.ascontiguousarray(xy, dtype=np.float32)
        xy.flags.writeable = False
        self.last_map = xy
        return xy, provisional

    def _emit(self, force_map: bool) -> bool:
        """Make a snapshot and call the callbacks; True if one asked to stop."""
        now = time.perf_counter()
        previous = self.latest_snapshot
        if previous is not None and previous.step == self.step:
            # Nothing trained since the last map (e.g. a stop right after an epoch end).
            embedding, provisional = previous.embedding, previous.provisional
        else:
            if not force_map and self.last_map is not None:
                if self._last_map_cost > self.map_time_fraction * (now - self._last_map_end):
                    return False
            embedding, provisional = self.compute_map()
            self._last_map_end = time.perf_counter()
            self._last_map_cost = self._last_map_end - now
        snapshot = self._make_snapshot(embedding, provisional)
        self.latest_snapshot = snapshot
        stop = False
        for callback in list(self.callbacks):
            try:
                stop = bool(callback(snapshot)) or stop
            except Exception as exc:  # noqa: BLE001 - a broken callback fails the run
                self._fail(exc)
                return True
        return stop

    def _make_snapshot(self, embedding: np.ndarray, provisional: bool) -> Snapshot:
        return Snapshot(
            stage=self.stage,
            epoch=self.epoch,
            epochs_in_stage=self.plan.epochs[self.stage - 1],
            total_epoch=self.total_epoch,
            total_epochs=self.plan.total_epochs,
            step=self.step,
            loss=self.losses[-1] if self.losses else float("nan"),
            learning_rate=self.learning_rate,
            images_per_second=self.images_per_second,
            elapsed=self.elapsed,
            eta=self._eta(),
            embedding=embedding,
            provisional=provisional,
            state=self.state,
            losses=tuple(self.losses),
        )

    def _eta(self) -> float | None:
        epochs = self.plan.epochs
        done = equivalent_epochs(epochs[: self.stage - 1]) + stage_cost(self.stage) * self.epoch
        if done <= 0:
            return None
        return self.elapsed / done * (equivalent_epochs(epochs) - done)
