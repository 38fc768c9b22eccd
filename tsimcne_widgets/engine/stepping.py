"""One optimiser step of t-SimCNE, mixed into :class:`~tsimcne_widgets.engine.trainer.Trainer`.

Entering a stage (output layer, frozen parameters, a fresh SGD optimiser), the
contrastive loss of two augmented views per image, one clipped SGD step, and the
explanation of an out-of-memory failure by trial steps of the same network
(:mod:`~tsimcne_widgets.engine.memory`).
"""

from __future__ import annotations

from typing import Callable

import torch

from .inference import project
from .distributed import augment_shard, average_gradients, global_cauchy_infonce
from .memory import explain_out_of_memory, is_out_of_memory, preserved_state
from .tensors import detached_copy

__all__ = ["StageStepping", "TrainingError", "MOMENTUM", "WEIGHT_DECAY", "GRAD_CLIP_VALUE"]

MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4
GRAD_CLIP_VALUE = 4.0


class TrainingError(RuntimeError):
    """Training could not go on (non-finite loss, out of memory); the message says why."""


class StageStepping:
    """Stages and optimiser steps of a run.

    A mixin: its host (the trainer) provides ``model``, ``model_lock``,
    ``model_config``, ``plan``, ``stage``, ``augmenter``, ``channels_last``,
    ``mixed_precision``, ``compile``, ``device``, ``images``, ``cpu_generator``,
    ``device_generator`` and ``output_layer_replaced``, and calls
    :meth:`_init_stepping` from its constructor.

    Attributes
    ----------
    optimizer : torch.optim.Optimizer or None
        The current stage's optimiser (None before the stage is entered).
    """

    def _init_stepping(self) -> None:
        self.optimizer: torch.optim.Optimizer | None = None
        self._pending_optimizer_state: dict | None = None
        self._features: Callable | None = None
        self._trainable: list[torch.nn.Parameter] = []

    def _optimizer_state(self) -> dict | None:
        # A copy: the live state changes with every step.
        if self.optimizer is not None:
            return detached_copy(self.optimizer.state_dict())
        return self._pending_optimizer_state  # restored, not used yet

    def _defer_optimizer_state(self, state: dict | None) -> None:
        # Loaded into the optimiser that the next enter_stage creates.
        self.optimizer = None
        self._pending_optimizer_state = state

    def enter_stage(self) -> None:
        """Make the network and a fresh optimiser ready for the current stage.

        The run calls this at the start of each stage.  Call it yourself only to train
        steps outside the plan with :meth:`train_step` (e.g. to count their FLOPs).
        From stage 2 on, the 128-D output layer is replaced (once) by a fresh
        ``out_dim`` one.
        """
        with self.model_lock:
            if self.stage >= 2 and not self.output_layer_replaced:
                self.model.replace_output_layer(
                    self.model_config["out_dim"], generator=self.cpu_generator
                )
                self.output_layer_replaced = True
                if self.channels_last:
                    self.model.to(memory_format=torch.channels_last)
            self.model.set_stage(self.stage)
            self.model.train()
            self.optimizer = self._make_optimizer()
            if self._pending_optimizer_state is not None:
                self.optimizer.load_state_dict(self._pending_optimizer_state)
                self._pending_optimizer_state = None
            self._trainable = list(self.model.trainable_parameters())
            features = self.model.features
            self._features = torch.compile(features) if self.compile else features

    def _make_optimizer(self) -> torch.optim.Optimizer:
        kwargs = dict(
            lr=self.plan.stage_lr(self.stage), momentum=MOMENTUM, weight_decay=WEIGHT_DECAY
        )
        parameters = list(self.model.trainable_parameters())
        if self.device.type in ("cuda", "mps"):
            try:
                return torch.optim.SGD(parameters, fused=True, **kwargs)
            except (RuntimeError, TypeError, ValueError):
                pass  # this torch build has no fused SGD for the device
        return torch.optim.SGD(parameters, **kwargs)

    def _loss(self, batch: torch.Tensor, generator: torch.Generator,
              features: Callable | None = None) -> torch.Tensor:
        # Under torchrun, this rank's views of the global batch and the global loss
        # (engine/distributed.py); alone, the plain two views and cauchy_infonce.
        views = augment_shard(self.augmenter, batch, generator, channels_last=self.channels_last)
        output = project(self.model, views, mixed_precision=self.mixed_precision,
                         features=features)
        half = batch.shape[0]
        return global_cauchy_infonce(output[:half], output[half:])

    def train_step(self, batch: torch.Tensor) -> torch.Tensor:
        """One optimiser step on a batch, at the optimiser's current learning rate.

        Enters the current stage first if no optimiser exists yet (see
        :meth:`enter_stage`).  Both views are drawn with the trainer's device generator.

        Parameters
        ----------
        batch : torch.Tensor
            uint8 ``(B, 3, H, W)`` images on the training device, e.g.
            ``trainer.images[indices]``.

        Returns
        -------
        torch.Tensor
            The loss, not synchronised (reading it waits for the device).
        """
        with self.model_lock:
            if self.optimizer is None:
                self.enter_stage()
            loss = self._loss(batch, self.device_generator, self._features)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            average_gradients(self._trainable)
            torch.nn.utils.clip_grad_value_(self._trainable, GRAD_CLIP_VALUE)
            self.optimizer.step()
            return loss.detach()

    def synchronize(self) -> None:
        """Wait for the device to finish queued work (for timing)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        elif self.device.type == "mps":
            torch.mps.synchronize()

    def _explain(self, exc: BaseException) -> BaseException:
        # Out of memory: trial steps of the same network find the largest batch that fits.
        if not is_out_of_memory(exc):
            return exc
        from .distributed import context

        ctx = context()
        if ctx is not None:
            # Trial steps here would run collectives that the other processes never join
            # (they wait in this step's): fail at once, so that they fail too, not hang.
            error = TrainingError(
                f"out of memory in process {ctx.rank} of {ctx.world_size} at "
                f"{self.plan.batch_size // ctx.world_size} images per process (global batch "
                f"{self.plan.batch_size}); restart every process with a smaller --batch-size, "
                "or with more processes; the last checkpoint is intact")
            error.__cause__ = exc
            return error
        model, generator = self.model, torch.Generator(device=self.device).manual_seed(0)

        def trial_step(batch_size: int) -> None:
            self._loss(self.images[:batch_size], generator).backward()
            self.synchronize()  # an asynchronous failure surfaces here

        with self.model_lock, preserved_state(model):
            stage = model.stage
            if stage == 2:  # the trial trains everything, so its batch fits every stage
                model.set_stage(3)
            model.train()
            try:
                message = explain_out_of_memory(
                    exc, self.plan.batch_size, self.device, trial_step,
                    release=lambda: model.zero_grad(set_to_none=True),
                )
            finally:
                model.set_stage(stage)
        error = TrainingError(message)
        error.__cause__ = exc
        return error
