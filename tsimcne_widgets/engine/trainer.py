"""The t-SimCNE training loop: three stages, on any device, in the foreground or a thread.

:class:`Trainer` keeps the whole data set once on the training device as uint8, draws
both views of every batch with the batched :class:`~tsimcne_widgets.engine.augment.Augmenter`,
and runs one forward pass over the 2B views per step.  On accelerators it trains in
bf16 autocast with channels-last tensors and never waits for the device inside an
epoch.  Progress leaves the loop as immutable :class:`Snapshot` objects handed to
callbacks; pausing, resuming and stopping are safe from any thread.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import torch

from .augment import Augmenter
from .checkpoint import resume_trainer, save_checkpoint, training_state
from .loss import cauchy_infonce
from .models import TSimCNENet, build_backbone
from .memory import explain_out_of_memory
from .device import (
    choose_memory_layout,
    data_fingerprint,
    images_to_tensor,
    pca_2d,
    resolve_device,
    set_cpu_threads,
)
from .schedule import StagePlan
from .threads import start_training_thread
from .events import STATES, Snapshot

if TYPE_CHECKING:  # budget imports this module
    from .planner import TimeBudget

__all__ = ["Snapshot", "Trainer", "TrainingError", "STATES"]

MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4
GRAD_CLIP_VALUE = 4.0


class TrainingError(RuntimeError):
    """Training could not go on (non-finite loss, out of memory); the message says why."""


class Trainer:
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
        actually reached (see :meth:`~tsimcne_widgets.engine.planner.TimeBudget.refit`).

    Attributes
    ----------
    state : str
        One of ``STATES``.
    error : BaseException or None
        Why the run failed.
    latest_snapshot : Snapshot or None
    model_lock : threading.RLock
        Held during each optimiser step; hold it to use :attr:`model` from another
        thread (:meth:`embed` does).
    """

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
        time_budget: "TimeBudget | None" = None,
    ):
        self.device = resolve_device(device)
        host_images = images_to_tensor(images)
        n_images = host_images.shape[0]
        if n_images < 2:
            raise ValueError(f"training needs at least 2 images, got {n_images}")
        if plan.batch_size > n_images:
            raise ValueError(
                f"batch size {plan.batch_size} exceeds the {n_images} images; "
                "use a smaller batch_size"
            )
        if plan.steps_per_epoch != n_images // plan.batch_size:
            raise ValueError(
                f"the plan has {plan.steps_per_epoch} steps per epoch but {n_images} images "
                f"in batches of {plan.batch_size} give {n_images // plan.batch_size}; "
                "build it with StagePlan.from_total_epochs(epochs, n_images, batch_size)"
            )
        self.plan = plan
        self.n_images = n_images
        self.fingerprint = data_fingerprint(host_images)
        self.seed = int(random_state) if random_state is not None else int(
            np.random.SeedSequence().entropy % (2**31)
        )
        if augmenter is None:
            size = tuple(host_images.shape[-2:]) if image_size is None else image_size
            augmenter = Augmenter(size)
        self.augmenter = augmenter
        self.image_size = tuple(self.augmenter.out_size)

        on_accelerator = self.device.type in ("cuda", "mps")
        self.mixed_precision = on_accelerator if mixed_precision is None else bool(mixed_precision)
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
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                module, feature_dim = build_backbone(backbone, backbone_width)
                model = TSimCNENet(
                    module, feature_dim, hidden_dim=hidden_dim, out_dim=projection_dim
                )
        if channels_last is None:
            channels_last = choose_memory_layout(model, self.device)
        self.channels_last = bool(channels_last)
        self.model = model.to(self.device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.images = host_images.to(self.device)

        self.cpu_generator = torch.Generator().manual_seed(self.seed)
        self.device_generator = torch.Generator(device=self.device).manual_seed(self.seed + 1)
        self.callbacks = list(callbacks or [])
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path is not None else None
        self.checkpoint_every = max(1, int(checkpoint_every))
        self.map_time_fraction = float(map_time_fraction)
        self.progress = bool(progress)
        self.time_budget = time_budget
        self._epoch_seconds: list[float] = []

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
        self.latest_snapshot: Snapshot | None = None
        self.error: BaseException | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.pending_optimizer_state: dict | None = None
        self.output_layer_replaced = False
        self._elapsed_before = 0.0
        self._epoch_images_per_second = 0.0
        self.last_map: np.ndarray | None = None
        self._last_map_cost = 0.0
        self._last_map_end = 0.0
        self._state = "idle"
        self._state_lock = threading.Lock()
        self.model_lock = threading.RLock()
        self._run_gate = threading.Event()
        self._run_gate.set()
        self._stop_requested = threading.Event()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._features: Callable | None = None
        self._trainable: list[torch.nn.Parameter] = []
        self._run_started = 0.0
        self._paused_seconds = 0.0
        self._interrupted = False

    # ------------------------------------------------------------------ control
    @property
    def state(self) -> str:
        """``"idle"``, ``"running"``, ``"paused"``, ``"stopping"``, ``"finished"``,
        ``"stopped"`` or ``"failed"``."""
        with self._state_lock:
            return self._state

    def _set_state(self, state: str, only_from: tuple[str, ...] | None = None) -> bool:
        with self._state_lock:
            if only_from is not None and self._state not in only_from:
                return False
            self._state = state
            return True

    def start(self) -> "Trainer":
        """Run :meth:`run` in a daemon thread and return at once."""
        self._claim_run()
        self._thread = start_training_thread(self._execute, self.stop, name="tsimcne-trainer")
        return self

    def run(self) -> str:
        """Train to the end (blocking) and return the final state.

        Raises
        ------
        BaseException
            The error of a failed run (also kept in :attr:`error`).
        KeyboardInterrupt
            After an interrupt, once the run is cleanly ``"stopped"``.
        """
        self._claim_run()
        self._execute()
        if self.error is not None:
            raise self.error
        if self._interrupted:
            raise KeyboardInterrupt
        return self.state

    def _claim_run(self) -> None:
        if not self._set_state("running", only_from=("idle",)):
            raise RuntimeError(
                f"this trainer is {self.state}; a Trainer runs once: create a new one or "
                "continue from a checkpoint with Trainer.resume_from"
            )

    def pause(self) -> None:
        """Pause after the current step (no effect unless running)."""
        if self._set_state("paused", only_from=("running",)):
            self._run_gate.clear()

    def resume(self) -> None:
        """Continue a paused run."""
        if self._set_state("running", only_from=("paused",)):
            self._run_gate.set()

    def stop(self) -> None:
        """Stop after the current step; the state becomes ``"stopped"``."""
        self._stop_requested.set()
        self._set_state("stopping", only_from=("running", "paused"))
        if self._set_state("stopped", only_from=("idle",)):
            self._done.set()
        self._run_gate.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the run ends or ``timeout`` seconds pass; True if it ended."""
        return self._done.wait(timeout)

    @property
    def elapsed(self) -> float:
        """Seconds of training so far, pauses excluded."""
        if self._run_started and not self._done.is_set():
            live = time.perf_counter() - self._run_started - self._paused_seconds
            return self._elapsed_before + live
        return self._elapsed_before

    @property
    def total_epoch(self) -> int:
        """Completed epochs over all stages."""
        return sum(self.plan.epochs[: self.stage - 1]) + self.epoch

    # ------------------------------------------------------------------ the loop
    def _execute(self) -> None:
        self._run_started = time.perf_counter()
        self._paused_seconds = 0.0
        self._last_map_end = self._run_started
        bar = self._progress_bar()
        try:
            self._train(bar)
            if self.state == "failed":
                return
            final = "stopped" if self._stop_requested.is_set() else "finished"
            with self._state_lock:
                self._state = final
            if self.callbacks:
                self._emit(force_map=True)
        except KeyboardInterrupt:
            # Ctrl-C in a blocking run means "stop": the model so far stays usable, and
            # run() re-raises the interrupt once the trainer is in a clean state.
            self._interrupted = True
            with self._state_lock:
                self._state = "stopped"
        except BaseException as exc:  # noqa: BLE001 - reported through state and error
            self._fail(self._explain(exc))
        finally:
            run_seconds = time.perf_counter() - self._run_started - self._paused_seconds
            total = self._elapsed_before + run_seconds
            self._run_started = 0.0  # first, so a concurrent reader never counts this run twice
            self._elapsed_before = total
            if bar is not None:
                bar.close()
            self._done.set()

    def _fail(self, error: BaseException) -> None:
        self.error = error
        with self._state_lock:
            self._state = "failed"

    def _explain(self, exc: BaseException) -> BaseException:
        # Out of memory: trial steps find the largest batch that fits (see oom.py).
        return explain_out_of_memory(self, exc)

    def _progress_bar(self):
        if not self.progress:
            return None
        from .progress import progress_bar

        return progress_bar(self.plan.total_steps, initial=self.step, desc="t-SimCNE", unit="step")

    def _train(self, bar) -> None:
        while self.stage <= self.plan.n_stages:
            if self.epoch >= self.plan.epochs[self.stage - 1]:
                if self.stage == self.plan.n_stages:
                    return
                if self._stop_requested.is_set():
                    # Stopped at the end of a stage: keep its trained output layer, not
                    # a fresh random one that no step has trained yet.
                    return
                with self.model_lock:
                    self.stage, self.epoch = self.stage + 1, 0
                    self.optimizer = None
            if self.optimizer is None:
                self._enter_stage()
            while self.epoch < self.plan.epochs[self.stage - 1]:
                if not self._train_epoch(bar):
                    return
                if self._end_of_epoch(bar):
                    return

    def _enter_stage(self) -> None:
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
            if self.pending_optimizer_state is not None:
                self.optimizer.load_state_dict(self.pending_optimizer_state)
                self.pending_optimizer_state = None
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

    def _autocast(self):
        if not self.mixed_precision:
            return contextlib.nullcontext()
        try:
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        except (RuntimeError, ValueError):
            return contextlib.nullcontext()

    def _project(self, views: torch.Tensor, features: Callable | None = None) -> torch.Tensor:
        # The backbone runs in bf16 where enabled; the head runs in float32 because
        # bf16's 8-bit mantissa would quantise the coordinates of the 2-D map visibly.
        with self._autocast():
            hidden = (features or self.model.features)(views)
        return self.model.head(hidden.float())

    def _train_step(self, batch: torch.Tensor) -> torch.Tensor:
        """One optimiser step on a uint8 batch; returns the loss (not synchronised)."""
        half = batch.shape[0]
        views = self.augmenter(
            torch.cat([batch, batch]), self.device_generator, channels_last=self.channels_last
        )
        output = self._project(views, self._features)
        loss = cauchy_infonce(output[:half], output[half:])
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_value_(self._trainable, GRAD_CLIP_VALUE)
        self.optimizer.step()
        return loss.detach()

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
        paused_before = self._paused_seconds
        stage_step0 = self.epoch * steps
        for index in range(first, steps):
            if not self._run_gate.is_set():
                paused_at = time.perf_counter()
                self._run_gate.wait()
                self._paused_seconds += time.perf_counter() - paused_at
            if self._stop_requested.is_set():
                return False
            self.learning_rate = self.plan.lr_at(self.stage, stage_step0 + index)
            for group in self.optimizer.param_groups:
                group["lr"] = self.learning_rate
            with self.model_lock:
                batch = order[index * batch_size:(index + 1) * batch_size]
                loss = self._train_step(self.images[batch])
                self.step += 1
                self._epoch_steps_done += 1
                self._epoch_loss_sum += loss
            if check_each_step and not math.isfinite(float(loss)):
                self._fail_non_finite()
                return False
            if bar is not None:
                bar.update(1)
        mean_loss = float(self._epoch_loss_sum) / steps
        seconds = time.perf_counter() - epoch_start - (self._paused_seconds - paused_before)
        trained = steps - first
        if trained:
            self._epoch_images_per_second = trained * batch_size / max(seconds, 1e-9)
            self._epoch_seconds.append(seconds * steps / trained)  # as if a whole epoch
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

    def synchronize(self) -> None:
        """Wait for the device to finish queued work (for timing)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        elif self.device.type == "mps":
            torch.mps.synchronize()

    def _fail_non_finite(self) -> None:
        self._fail(
            TrainingError(
                f"the loss became non-finite in stage {self.stage}, epoch {self.epoch + 1} "
                f"(learning rate {self.learning_rate:.3g}); lower the learning rate (e.g. by "
                "10x); the last checkpoint written before this is intact"
            )
        )

    def _refit_to_budget(self, bar) -> None:
        # Epoch 1 carries one-off costs (allocation, kernel selection): measure from 2.
        measured = self._epoch_seconds[1:]
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
        if self.checkpoint_path is not None and (
            stage_done or self.total_epoch % self.checkpoint_every == 0
        ):
            self.save_checkpoint(self.checkpoint_path)
        run_done = stage_done and self.stage == self.plan.n_stages
        # The end of the run gets its snapshot from _execute, with the final state.
        if self.callbacks and not run_done and self._emit(force_map=stage_done):
            self.stop()
            return True
        return self.state == "failed"

    # ------------------------------------------------------------------ maps and snapshots
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
        batch_size = int(batch_size or max(256, 2 * self.plan.batch_size))
        outputs = []
        with self.model_lock:
            was_training = self.model.training
            self.model.eval()
            try:
                with torch.no_grad():
                    for start in range(0, data.shape[0], batch_size):
                        chunk = data[start:start + batch_size].to(self.device, non_blocking=True)
                        views = self.augmenter.to_float(chunk, channels_last=self.channels_last)
                        outputs.append(self._project(views))
            finally:
                self.model.train(was_training)
        return torch.cat(outputs)

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
            images_per_second=self._epoch_images_per_second,
            elapsed=self.elapsed,
            eta=self._eta(),
            embedding=embedding,
            provisional=provisional,
            state=self.state,
            losses=tuple(self.losses),
        )

    def _eta(self) -> float | None:
        # Stage 2 skips the backbone's backward pass: about a third of a full step.
        costs = [0.35 if stage == 2 else 1.0 for stage in range(1, self.plan.n_stages + 1)]
        done = sum(c * e for c, e in zip(costs, self.plan.epochs[: self.stage - 1]))
        done += costs[self.stage - 1] * self.epoch
        total = sum(c * e for c, e in zip(costs, self.plan.epochs))
        if done <= 0:
            return None
        return self.elapsed / done * (total - done)

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_state(self) -> dict:
        """Everything needed to continue this run (see :func:`checkpoint.training_state`)."""
        with self.model_lock:
            return training_state(self)

    def save_checkpoint(self, path: str | os.PathLike) -> Path:
        """Write :meth:`checkpoint_state` to ``path`` atomically."""
        return save_checkpoint(path, self.checkpoint_state())

    def restore_elapsed(self, seconds: float) -> None:
        """Count ``seconds`` of earlier training in :attr:`elapsed` (used when resuming)."""
        self._elapsed_before = float(seconds)

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
