"""Out of device memory: find a batch size that fits, and say so.

When a training step runs out of memory, :func:`explain_out_of_memory` frees what the
failed step held and tries smaller batches (halving each time) with a real forward and
backward pass of the trainer's network on its device, in the same mode as training
(augmentations, mixed precision, channels-last).  The message then names the largest
batch that fitted, or says that none did.  The probe changes nothing: gradients are
dropped, BatchNorm statistics restored, the trainer's random generators left alone.
"""

from __future__ import annotations

import gc
import time
import traceback

import torch

from .loss import cauchy_infonce

__all__ = ["is_out_of_memory", "largest_fitting_batch", "explain_out_of_memory"]

#: At most this many trial batches, and no new trial after this many seconds.
MAX_TRIALS = 8
TIME_LIMIT = 30.0
SMALLEST_BATCH = 2  # the contrastive loss needs two images


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is torch's out-of-memory error (CUDA or any other device)."""
    oom = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError",
                                                               None)
    return oom is not None and isinstance(exc, oom)


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()


def _trial_step(trainer, batch_size: int, generator: torch.Generator) -> None:
    """Forward and backward over ``2 * batch_size`` views, as one training step does."""
    batch = trainer.images[:batch_size]
    views = trainer.augmenter(torch.cat([batch, batch]), generator,
                              channels_last=trainer.channels_last)
    output = trainer._project(views)
    loss = cauchy_infonce(output[:batch_size], output[batch_size:])
    loss.backward()
    if trainer.device.type == "cuda":
        torch.cuda.synchronize(trainer.device)  # an asynchronous failure surfaces here


def largest_fitting_batch(trainer, failed_batch: int, *, max_trials: int = MAX_TRIALS,
                          time_limit: float = TIME_LIMIT) -> tuple[int | None, list[int]]:
    """Halve ``failed_batch`` until a trial training step fits on the trainer's device.

    Parameters
    ----------
    trainer : Trainer
        Its network, augmenter, images and device are used; its state is unchanged
        afterwards (gradients dropped, BatchNorm buffers restored).
    failed_batch : int
        The batch size that ran out of memory.
    max_trials, time_limit
        Bounds of the search: number of trial batches, and seconds after which no
        further trial starts.

    Returns
    -------
    (int or None, list of int)
        The largest batch size that fitted (None if none did) and the sizes tried, in
        order.  The trial trains the whole network (as stages 1 and 3 do) even when the
        failure was in stage 2, so the size found fits every stage.
    """
    model = trainer.model
    stage = getattr(model, "_stage", 1)
    tried: list[int] = []
    found = None
    start = time.perf_counter()
    with trainer.model_lock:
        buffers = {name: value.detach().clone() for name, value in model.named_buffers()}
        was_training = model.training
        generator = torch.Generator(device=trainer.device).manual_seed(0)
        if stage == 2:
            model.set_stage(3)
        model.train()
        try:
            size = failed_batch // 2
            while size >= SMALLEST_BATCH and len(tried) < max_trials:
                if tried and time.perf_counter() - start > time_limit:
                    break
                tried.append(size)
                try:
                    _trial_step(trainer, size, generator)
                except Exception as exc:  # noqa: BLE001 - only out-of-memory means "smaller"
                    if not is_out_of_memory(exc):
                        raise
                    traceback.clear_frames(exc.__traceback__)
                    model.zero_grad(set_to_none=True)
                    _free(trainer.device)
                    size //= 2
                    continue
                found = size
                break
        finally:
            model.zero_grad(set_to_none=True)
            with torch.no_grad():
                for name, value in model.named_buffers():
                    value.copy_(buffers[name])
            if stage == 2:
                model.set_stage(2)
            model.train(was_training)
            _free(trainer.device)
    return found, tried


def explain_out_of_memory(trainer, exc: BaseException) -> BaseException:
    """``exc`` turned into a :class:`TrainingError` naming a batch size that fits.

    Anything but an out-of-memory error is returned unchanged.  The original error
    stays as the new one's ``__cause__`` (its frames' locals are cleared: they hold the
    failed step's tensors).
    """
    from .trainer import TrainingError  # trainer imports this module

    if not is_out_of_memory(exc):
        return exc
    batch = trainer.plan.batch_size
    device = trainer.device
    # The failed step's activations live on in the traceback's frames; the gradients of
    # the previous step in the parameters.  Both must go before anything can be measured.
    traceback.clear_frames(exc.__traceback__)
    if trainer.optimizer is not None:
        trainer.optimizer.zero_grad(set_to_none=True)
    _free(device)
    try:
        fits, tried = largest_fitting_batch(trainer, batch)
    except Exception as probe_error:  # noqa: BLE001 - the probe is a courtesy
        message = (f"out of GPU memory at batch size {batch} on {device} (finding a smaller "
                   f"batch failed: {probe_error}); retry with a smaller batch_size")
    else:
        if fits is not None:
            message = (f"out of GPU memory at batch size {batch} on {device}; a trial "
                       f"training step at batch size {fits} fitted: retry with "
                       f"batch_size={fits}")
        elif tried and tried[-1] <= SMALLEST_BATCH:
            message = (f"out of GPU memory at batch size {batch} on {device}, and not even "
                       f"a batch of {SMALLEST_BATCH} fitted; free the memory other programs "
                       "(or other models in this kernel) hold, or use a narrower backbone "
                       "(backbone_width) or smaller images (image_size)")
        else:
            below = tried[-1] if tried else batch
            message = (f"out of GPU memory at batch size {batch} on {device}; trial steps "
                       f"at batch sizes {', '.join(map(str, tried))} did not fit either "
                       f"(the search stops after {MAX_TRIALS} trials or {TIME_LIMIT:.0f} s): "
                       f"retry with a batch_size below {below}")
    error = TrainingError(message)
    error.__cause__ = exc
    return error
