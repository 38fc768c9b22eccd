"""The t-SimCNE training loop: three stages, on any device, in the foreground or a thread.

:class:`Trainer` keeps the whole data set once on the training device as uint8, draws
both views of every batch with the batched :class:`~tsimcne_widgets.engine.augment.Augmenter`,
and runs one forward pass over the 2B views per step.  On accelerators it trains in
bf16 autocast with channels-last tensors and never waits for the device inside an
epoch.  Progress leaves the loop as immutable :class:`Snapshot` objects handed to
callbacks; pausing, unpausing and stopping are safe from any thread
(:class:`~tsimcne_widgets.engine.control.RunControl`).  :meth:`Trainer.state_dict`
holds everything a checkpoint needs; :meth:`Trainer.resume_from` continues one.
"""

from __future__ import annotations

import math
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from .augment import Augmenter
from .checkpoint import (
    augmenter_config,
    plan_config,
    plan_from_config,
    resume_trainer,
    save_checkpoint,
    training_checkpoint,
)
from .control import RunControl
from .device import choose_memory_layout, resolve_device, set_cpu_threads
from .distributed import is_main_process, prepare_model, shard_batch
from .events import STATES, Snapshot
from .maps import MapReporting
from .inference import uses_mixed_precision
from .models import TSimCNENet, build_network
from .recipe import TimeBudget
from .schedule import StagePlan
from .stepping import StageStepping, TrainingError
from .tensors import data_fingerprint, detached_copy, images_to_tensor

__all__ = ["Snapshot", "Trainer", "TrainingError", "STATES"]


class Trainer(StageStepping, MapReporting, RunControl):
    """Runs t-SimCNE training on one device.

    Parameters
    ----------
    images : ImageSet, numpy.ndarray or torch.Tensor
        uint8 images, ``(N, H, W, 3)`` (array, ImageSet) or ``(N, 3, H, W)`` (tensor).
    plan : StagePlan
        Epochs, batch size, learning rates and warm-up of each stage; its number of
        stages is the number that run.  ``plan.batch_size`` must not exceed N.
    model : TSimCNENet, optional
        A ready network; by default one is built from ``backbone`` and the sizes below.
    backbone, backbone_width, hidden_dim, projection_dim, out_dim
        Network description (see :func:`~tsimcne_widgets.engine.models.build_backbone`).
    image_size : int or (int, int), optional
        Training resolution; default the images' own size.
    augmenter : Augmenter, optional
        Default ``Augmenter(image_size)``.
    device : str or torch.device
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"mps"``.
    random_state : int, optional
        Seed of weights, batch order, augmentations and the stage-2 layer.
    callbacks : sequence of callable, optional
        ``callback(snapshot) -> bool | None``, called in the training thread; True stops
        the run, an exception fails it.  Maps are computed only while there are callbacks.
    checkpoint_path : str or path-like, optional
        Where to write checkpoints (atomically), every ``checkpoint_every`` epochs and
        at the end of each stage.
    compile : bool
        Train through ``torch.compile`` (worth it for long GPU runs).
    channels_last, mixed_precision : bool, optional
        Default: channels-last where :func:`~tsimcne_widgets.engine.device.choose_memory_layout`
        finds it safe and faster (always on CUDA and MPS; on the CPU it depends on the
        ISA oneDNN uses and the network's strided convolutions), bf16 autocast on CUDA
        and MPS.
    map_time_fraction : float
        Epoch-end maps are skipped while the last one took more than this fraction of
        the time since it; stage ends and the end always get one.
    progress : bool
        Show progress: a tqdm bar on a terminal or in a notebook, a few whole lines
        in a log or pipe (see :mod:`tsimcne_widgets.engine.progress`).
    num_threads : int, optional
        CPU threads for torch (process-wide); default all available cores, unless
        the ``OMP_NUM_THREADS`` environment variable chose a number.  On a machine
        shared with other busy processes, fewer threads than cores can be many times
        faster (spinning OpenMP threads compete for the cores).
    time_budget : TimeBudget, optional
        With it, the plan's epochs are re-fitted once, early in stage 1, to the speed
        actually reached (see :meth:`~tsimcne_widgets.engine.recipe.TimeBudget.refit`).

    Attributes
    ----------
    state : str
        One of ``STATES``.
    error : BaseException or None
        Why the run failed.
    latest_snapshot : Snapshot or None
    epoch_seconds : list of float
        Training seconds of each epoch so far (maps, checkpoints and pauses
        excluded), as if whole after a resumed partial epoch.
    model_lock : threading.RLock
        Held during each optimiser step; hold it to use :attr:`model` from another
        thread (:meth:`embed` does).
    """

    thread_name = "tsimcne-trainer"

    def __init__(
        self,
        images,
        plan: StagePlan,
        *,
        model: TSimCNENet | None = None,
        backbone="resnet18",
        backbone_width: int | None = None,
        hidden_dim: int = 1024,
        projection_dim: int = 128,
        out_dim: int = 2,
        image_size: int | tuple[int, int] | None = None,
        augmenter: Augmenter | None = None,
        device="auto",
        random_state: int | None = None,
        callbacks: Sequence[Callable] | None = None,
        checkpoint_path: str | os.PathLike | None = None,
        checkpoint_every: int = 10,
        compile: bool = False,
        channels_last: bool | None = None,
        mixed_precision: bool | None = None,
        map_time_fraction: float = 0.1,
        progress: bool = False,
        num_threads: int | None = None,
        time_budget: TimeBudget | None = None,
    ):
        super().__init__()
        self.device = resolve_device(device)
        host_images = images_to_tensor(images)
        self.n_images = n_images = host_images.shape[0]
        if n_images < 2:
            raise ValueError(f"training needs at least 2 images, got {n_images}")
        if plan.batch_size > n_images:
            raise ValueError(f"batch size {plan.batch_size} exceeds the {n_images} images; "
                             "use a smaller batch_size")
        self._check_plan(plan)
        self.plan = plan
        self.fingerprint = data_fingerprint(host_images)
        self.seed = int(random_state) if random_state is not None else int(
            np.random.SeedSequence().entropy % (2**31)
        )
        if augmenter is None:
            size = tuple(host_images.shape[-2:]) if image_size is None else image_size
            augmenter = Augmenter(size)
        self.augmenter = augmenter
        self.image_size = tuple(self.augmenter.out_size)

        self.mixed_precision = (
            uses_mixed_precision(self.device) if mixed_precision is None else bool(mixed_precision)
        )
        self.compile = bool(compile)
        if self.device.type == "cpu":
            set_cpu_threads(num_threads)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed shapes: autotune once

        self.model_config = {
            "backbone": backbone if isinstance(backbone, str) else "custom",
            "backbone_width": backbone_width,
            "hidden_dim": int(hidden_dim),
            "projection_dim": int(projection_dim),
            "out_dim": int(out_dim),
        }
        if model is None:
            model = build_network(backbone, backbone_width, hidden_dim, projection_dim, self.seed)
        if channels_last is None:
            channels_last = choose_memory_layout(model, self.device)
        self.channels_last = bool(channels_last)
        self.model = prepare_model(model.to(self.device))  # under torchrun: global BatchNorm
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.images = host_images.to(self.device)

        self.cpu_generator = torch.Generator().manual_seed(self.seed)
        self.device_generator = torch.Generator(device=self.device).manual_seed(self.seed + 1)
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path is not None else None
        self.checkpoint_every = max(1, int(checkpoint_every))
        self.progress = bool(progress)
        self.time_budget = time_budget
        self.epoch_seconds: list[float] = []

        # Position: completed epochs of the current stage; step counts optimiser steps.
        # The epoch in progress (its batch order, steps done, loss so far) is kept here,
        # changed only under model_lock, so that a checkpoint taken mid-epoch (e.g. by
        # Explorer.save) resumes at the very next step.
        self.stage = 1
        self.epoch = 0
        self.step = 0
        self._epoch_order: torch.Tensor | None = None
        self._epoch_steps_done = 0
        self._epoch_loss_sum: torch.Tensor | None = None
        self.losses: list[float] = []
        self.learning_rate = 0.0
        self.output_layer_replaced = False
        self.images_per_second = 0.0
        self.model_lock = threading.RLock()
        self._init_stepping()
        self._init_maps(callbacks, map_time_fraction)

    def _check_plan(self, plan: StagePlan) -> None:
        if plan.steps_per_epoch != self.n_images // plan.batch_size:
            raise ValueError(
                f"the plan has {plan.steps_per_epoch} steps per epoch but {self.n_images} "
                f"images in batches of {plan.batch_size} give "
                f"{self.n_images // plan.batch_size}; build it with "
                "StagePlan.from_total_epochs(epochs, n_images, batch_size)"
            )

    @property
    def total_epoch(self) -> int:
        """Completed epochs over all stages."""
        return sum(self.plan.epochs[: self.stage - 1]) + self.epoch

    # ------------------------------------------------------------------ the loop
    def _work(self) -> None:
        self._start_map_clock()
        bar = self._progress_bar()
        try:
            self._train(bar)
        finally:
            if bar is not None:
                bar.close()

    def _progress_bar(self):
        if not self.progress:
            return None
        from .progress import progress_bar

        return progress_bar(self.plan.total_steps, initial=self.step, desc="t-SimCNE", unit="step")

    def _train(self, bar) -> None:
        while self.stage <= self.plan.n_stages:
            if self.epoch >= self.plan.epochs[self.stage - 1]:
                # Stopped at the end of a stage: keep its trained output layer, not a
                # fresh random one that no step has trained yet.
                if self.stage == self.plan.n_stages or self.stop_requested:
                    return
                with self.model_lock:
                    self.stage, self.epoch = self.stage + 1, 0
                    self.optimizer = None
            if self.optimizer is None:
                self.enter_stage()
            while self.epoch < self.plan.epochs[self.stage - 1]:
                if not self._train_epoch(bar):
                    return
                if self._end_of_epoch(bar):
                    return

    def _train_epoch(self, bar) -> bool:
        """Train one epoch; False if it was interrupted (stop or failure)."""
        batch_size, steps = self.plan.batch_size, self.plan.steps_per_epoch
        with self.model_lock:
            if self._epoch_order is None:  # else: continue the epoch a checkpoint was in
                self._epoch_order = torch.randperm(
                    self.n_images, generator=self.cpu_generator).to(self.device)
                self._epoch_steps_done = 0
                self._epoch_loss_sum = torch.zeros((), device=self.device, dtype=torch.float32)
            order, first = self._epoch_order, self._epoch_steps_done
        check_each_step = self.device.type == "cpu"  # free on the CPU: no device to wait for
        epoch_start = time.perf_counter()
        paused_before = self.paused_seconds
        stage_step0 = self.epoch * steps
        for index in range(first, steps):
            self.wait_while_paused()
            if self.stop_requested:
                return False
            self.learning_rate = self.plan.lr_at(self.stage, stage_step0 + index)
            for group in self.optimizer.param_groups:
                group["lr"] = self.learning_rate
            with self.model_lock:
                batch = shard_batch(order[index * batch_size:(index + 1) * batch_size])
                loss = self.train_step(self.images[batch])
                self.step += 1
                self._epoch_steps_done += 1
                self._epoch_loss_sum += loss
            if check_each_step and not math.isfinite(float(loss)):
                self._fail_non_finite()
                return False
            if bar is not None:
                bar.update(1)
        mean_loss = float(self._epoch_loss_sum) / steps
        seconds = time.perf_counter() - epoch_start - (self.paused_seconds - paused_before)
        trained = steps - first
        if trained:
            self.images_per_second = trained * batch_size / max(seconds, 1e-9)
            self.epoch_seconds.append(seconds * steps / trained)  # as if a whole epoch
        if not math.isfinite(mean_loss):
            self._fail_non_finite()
            return False
        with self.model_lock:
            self.losses.append(mean_loss)
            self.epoch += 1
            self._epoch_order = self._epoch_loss_sum = None
            self._epoch_steps_done = 0
        if bar is not None:
            bar.set_postfix(stage=self.stage, loss=f"{mean_loss:.3f}", refresh=False)
        return True

    def _fail_non_finite(self) -> None:
        self._fail(TrainingError(
            f"the loss became non-finite in stage {self.stage}, epoch {self.epoch + 1} "
            f"(learning rate {self.learning_rate:.3g}); lower the learning rate (e.g. by "
            "10x); the last checkpoint written before this is intact"))

    def _refit_to_budget(self, bar) -> None:
        # Epoch 1 carries one-off costs (allocation, kernel selection): measure from 2.
        measured = self.epoch_seconds[1:]
        budget = self.time_budget
        if self.stage != 1 or not measured or budget is None:
            return
        if sum(measured) < 0.1 * budget.seconds and self.epoch < 0.3 * self.plan.epochs[0]:
            return  # too little measured yet: on a busy machine speed swings
        self.time_budget = None  # once
        seconds_per_epoch = sum(measured) / len(measured)
        plan = budget.refit(self.plan, self.epoch, self.elapsed, seconds_per_epoch)
        if plan is not None:
            self.plan = plan
            if bar is not None:
                bar.total = plan.total_steps
                bar.refresh()

    def _end_of_epoch(self, bar) -> bool:
        """Checkpoint and report; True when the run should stop."""
        self._refit_to_budget(bar)
        stage_done = self.epoch == self.plan.epochs[self.stage - 1]
        if self.checkpoint_path is not None and is_main_process() and (  # rank 0 writes
            stage_done or self.total_epoch % self.checkpoint_every == 0
        ):
            self.save_checkpoint(self.checkpoint_path)
        run_done = stage_done and self.stage == self.plan.n_stages
        # The end of the run gets its snapshot from _on_end, with the final state.
        if self.callbacks and not run_done and self._emit(force_map=stage_done):
            self.stop()
            return True
        return self.state == "failed"

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue this run, as plain values and CPU tensors.

        The network's description (``model_config``, ``augmenter``, ``plan``, ``seed``)
        and its data (``n_images``, ``image_shape``, ``fingerprint``); the position
        (``stage``, ``epoch`` completed in it, ``step``, and ``epoch_in_progress``: the
        batch order, steps done and loss so far of an epoch begun, else None); the
        ``model`` and ``optimizer`` states; ``rng``, the states of the trainer's own
        generators (all it draws from); ``losses``, ``elapsed`` and the latest map
        (``embedding``).  A copy: training on does not change it.
        """
        with self.model_lock:
            progress = None
            if self._epoch_order is not None:
                progress = {
                    "order": self._epoch_order.detach().cpu().clone(),
                    "steps_done": int(self._epoch_steps_done),
                    "loss_sum": float(self._epoch_loss_sum),
                }
            return {
                "model_config": dict(self.model_config),
                "augmenter": augmenter_config(self.augmenter),
                "plan": plan_config(self.plan),
                "seed": self.seed,
                "n_images": self.n_images,
                "image_shape": list(self.images.shape[1:]),
                "fingerprint": self.fingerprint,
                "stage": self.stage,
                "epoch": self.epoch,
                "step": self.step,
                "epoch_in_progress": progress,
                "output_layer_replaced": bool(self.output_layer_replaced),
                "losses": list(self.losses),
                "elapsed": self.elapsed,
                "model": detached_copy(self.model.state_dict()),
                "optimizer": self._optimizer_state(),
                "rng": {
                    "cpu_generator": self.cpu_generator.get_state(),
                    "device_generator": self.device_generator.get_state().cpu(),
                    "device_type": self.device.type,
                },
                "embedding": self.last_map,
            }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Put this trainer, not started yet, where :meth:`state_dict` left off.

        A state taken mid-epoch continues that epoch at its next step, with the same
        batch order.  The optimiser state is kept for the stage's next step unless the
        stage is complete (the next stage starts a fresh optimiser).  Only the
        trainer's own generators are restored: the process-wide torch and numpy
        random states belong to the user.

        Parameters
        ----------
        state : mapping
            From :meth:`state_dict` (or a training checkpoint, which holds one).

        Raises
        ------
        ValueError
            When the state is of other data or its epoch in progress does not fit its
            plan (a damaged file).
        RuntimeError
            When this trainer has started.
        """
        if self.state != "idle":
            raise RuntimeError(f"load_state_dict needs a trainer that has not started; this "
                               f"one is {self.state}: build a new one")
        if "n_images" in state and int(state["n_images"]) != self.n_images:
            raise ValueError(f"the state is of {state['n_images']} images, this trainer has "
                             f"{self.n_images}; pass the same images")
        with self.model_lock:
            if "plan" in state:
                plan = plan_from_config(state["plan"])
                self._check_plan(plan)
                self.plan = plan
            self._load_position(state)
            # States taken between a stage's end and the next stage's first step can still
            # hold the 128-D output layer (older files lack the flag: past stage 1, replaced).
            replaced = state.get("output_layer_replaced", self.stage >= 2)
            if replaced and not self.output_layer_replaced:
                self.model.replace_output_layer(  # weights come from the state next
                    self.model_config["out_dim"], generator=torch.Generator().manual_seed(0))
                self.output_layer_replaced = True
            self.model.load_state_dict(state["model"])
            self.model.to(self.device)
            if self.channels_last:
                self.model.to(memory_format=torch.channels_last)
            self.model.set_stage(self.stage)
            stage_done = self.epoch >= self.plan.epochs[self.stage - 1]
            self._defer_optimizer_state(None if stage_done else state["optimizer"])
            rng = state["rng"]
            self.cpu_generator.set_state(rng["cpu_generator"])
            if rng["device_type"] == self.device.type:
                self.device_generator.set_state(rng["device_generator"])
            if state.get("embedding") is not None:
                embedding = np.asarray(state["embedding"], dtype=np.float32).copy()
                embedding.flags.writeable = False
                self.last_map = embedding

    def _load_position(self, state: Mapping[str, Any]) -> None:
        self.stage, self.epoch = int(state["stage"]), int(state["epoch"])
        self.step = int(state["step"])
        self.losses = [float(value) for value in state["losses"]]
        self._restore_elapsed(float(state["elapsed"]))
        self._epoch_order = self._epoch_loss_sum = None
        self._epoch_steps_done = 0
        progress = state.get("epoch_in_progress")
        if progress is None:
            return
        order, done = progress["order"], int(progress["steps_done"])
        if order.shape != (self.n_images,) or not 0 <= done <= self.plan.steps_per_epoch:
            raise ValueError(
                f"the epoch in progress ({done} steps over {order.numel()} images) does not "
                f"fit the plan of {self.plan.steps_per_epoch} steps over {self.n_images} "
                "images; the file is damaged: use an earlier checkpoint"
            )
        self._epoch_order = order.to(self.device)
        self._epoch_steps_done = done
        self._epoch_loss_sum = torch.tensor(
            float(progress["loss_sum"]), device=self.device, dtype=torch.float32)

    def save_checkpoint(self, path: str | os.PathLike) -> Path:
        """Write a training checkpoint (:meth:`state_dict` and more) to ``path`` atomically."""
        return save_checkpoint(path, training_checkpoint(self))

    @classmethod
    def resume_from(cls, path: str | os.PathLike, images, **kwargs) -> "Trainer":
        """A trainer positioned where the checkpoint at ``path`` left off.

        Call :meth:`run` or :meth:`start` on it to continue.  On the CPU with the same
        data, a resumed run reproduces the uninterrupted one.

        Parameters
        ----------
        path : str or path-like
            A checkpoint written during training.
        images
            The same images the run trained on.
        **kwargs
            Other :class:`Trainer` arguments (``callbacks``, ``device``,
            ``checkpoint_path``, ``progress``, and ``model`` for custom backbones);
            the network, plan, augmentations and seed come from the checkpoint.
        """
        return resume_trainer(cls, path, images, **kwargs)

