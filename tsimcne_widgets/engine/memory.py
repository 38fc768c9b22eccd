"""Out of device memory: find a batch size that fits, and say so.

When a training step runs out of memory, :func:`explain_out_of_memory` frees what the
failed step held and tries smaller batches (halving each time) through a ``step``
callable: one real forward and backward pass at a given batch size, in the same mode
as training (the trainer supplies it).  The message then names the largest batch that
fitted, or says that none did.  :func:`preserved_state` lets the trial passes change
nothing: gradients are dropped and BatchNorm statistics restored.
"""

from __future__ import annotations

import contextlib
import gc
import time
import traceback
from typing import Callable, Iterator

import torch

__all__ = [
    "is_out_of_memory",
    "free_device_memory",
    "preserved_state",
    "largest_fitting_batch",
    "explain_out_of_memory",
    "MAX_TRIALS",
    "TIME_LIMIT",
    "SMALLEST_BATCH",
]

#: At most this many trial batches, and no new trial after this many seconds.
MAX_TRIALS = 8
TIME_LIMIT = 30.0
SMALLEST_BATCH = 2  # the contrastive loss needs two images


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is torch's out-of-memory error (CUDA or any other device)."""
    oom = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError",
                                                               None)
    return oom is not None and isinstance(exc, oom)


def free_device_memory(device: torch.device) -> None:
    """Collect garbage and return the caching allocator's free blocks of ``device``."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()


@contextlib.contextmanager
def preserved_state(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Undo what trial passes do to ``model``: its buffers (BatchNorm statistics) and
    training mode are restored, and its gradients dropped, on exit."""
    buffers = {name: value.detach().clone() for name, value in model.named_buffers()}
    was_training = model.training
    try:
        yield model
    finally:
        model.zero_grad(set_to_none=True)
        with torch.no_grad():
            for name, value in model.named_buffers():
                value.copy_(buffers[name])
        model.train(was_training)


def largest_fitting_batch(
    step: Callable[[int], object],
    failed_batch: int,
    device: torch.device,
    *,
    release: Callable[[], object] | None = None,
    max_trials: int = MAX_TRIALS,
    time_limit: float = TIME_LIMIT,
) -> tuple[int | None, list[int]]:
    """Halve ``failed_batch`` until ``step(batch_size)`` runs without running out of memory.

    Parameters
    ----------
    step : callable
        ``step(batch_size)``: one trial training pass (forward and backward) at that
        batch size; it raises torch's out-of-memory error when it does not fit.
    failed_batch : int
        The batch size that ran out of memory.
    device : torch.device
        Where ``step`` runs; its cached memory is freed after each failed trial.
    release : callable, optional
        Drops what a failed trial left behind (e.g. ``model.zero_grad``).
    max_trials, time_limit
        Bounds of the search: number of trial batches, and seconds after which no
        further trial starts.

    Returns
    -------
    (int or None, list of int)
        The largest batch size that fitted (None if none did) and the sizes tried, in
        order.

    Raises
    ------
    Exception
        Whatever ``step`` raised other than running out of memory.
    """
    tried: list[int] = []
    start = time.perf_counter()
    size = failed_batch // 2
    while size >= SMALLEST_BATCH and len(tried) < max_trials:
        if tried and time.perf_counter() - start > time_limit:
            break
        tried.append(size)
        try:
            step(size)
        except Exception as exc:  # noqa: BLE001 - only out-of-memory means "smaller"
            if not is_out_of_memory(exc):
                raise
            traceback.clear_frames(exc.__traceback__)
            if release is not None:
                release()
            free_device_memory(device)
            size //= 2
            continue
        return size, tried
    return None, tried


def explain_out_of_memory(
    exc: BaseException,
    batch_size: int,
    device: torch.device,
    step: Callable[[int], object],
    *,
    release: Callable[[], object] | None = None,
) -> str | None:
    """A message for an out-of-memory failure at ``batch_size`` naming a batch that fits.

    Parameters
    ----------
    exc : BaseException
        The error of the failed training step.  Its frames' locals are cleared: they
        hold the failed step's tensors.
    batch_size : int
        The batch size that failed.
    device : torch.device
        Where training ran.
    step, release
        As for :func:`largest_fitting_batch`; ``release`` is also called before the
        search (the previous step's gradients must go before anything is measured).

    Returns
    -------
    str or None
        The message, or None when ``exc`` is not an out-of-memory error.
    """
    if not is_out_of_memory(exc):
        return None
    traceback.clear_frames(exc.__traceback__)
    if release is not None:
        release()
    free_device_memory(device)
    try:
        fits, tried = largest_fitting_batch(step, batch_size, device, release=release)
    except Exception as probe_error:  # noqa: BLE001 - the probe is a courtesy
        return (f"out of GPU memory at batch size {batch_size} on {device} (finding a smaller "
                f"batch failed: {probe_error}); retry with a smaller batch_size")
    finally:
        free_device_memory(device)
    if fits is not None:
        return (f"out of GPU memory at batch size {batch_size} on {device}; a trial "
                f"training step at batch size {fits} fitted: retry with batch_size={fits}")
    if tried and tried[-1] <= SMALLEST_BATCH:
        return (f"out of GPU memory at batch size {batch_size} on {device}, and not even "
                f"a batch of {SMALLEST_BATCH} fitted; free the memory other programs "
                "(or other models in this kernel) hold, or use a narrower backbone "
                "(backbone_width) or smaller images (image_size)")
    below = tried[-1] if tried else batch_size
    return (f"out of GPU memory at batch size {batch_size} on {device}; trial steps "
            f"at batch sizes {', '.join(map(str, tried))} did not fit either "
            f"(the search stops after {MAX_TRIALS} trials or {TIME_LIMIT:.0f} s): "
            f"retry with a batch_size below {below}")
