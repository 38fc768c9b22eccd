"""Atomic, safe-to-load checkpoints.

Checkpoints hold tensors and plain Python values only (dict, list, tuple, str, int,
float, bool, None), so they always load with ``torch.load(..., weights_only=True)``:
opening a checkpoint never runs code from the file.
"""

from __future__ import annotations

import errno
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from .augment import Augmenter
from .device import images_to_tensor
from .schedule import StagePlan

__all__ = [
    "save_checkpoint",
    "load_checkpoint",
    "to_plain",
    "CHECKPOINT_FORMAT",
    "augmenter_config",
    "augmenter_from_config",
    "plan_config",
    "plan_from_config",
    "training_state",
    "restore_training_state",
    "resume_trainer",
]

CHECKPOINT_FORMAT = 1
_PLAIN_SCALARS = (str, int, float, bool, type(None))
_AUGMENTER_FIELDS = ("crop_scale", "crop_ratio", "flip_p", "jitter", "jitter_p", "grayscale_p")


def to_plain(value: Any) -> Any:
    """Convert ``value`` to types that ``weights_only`` loading accepts.

    numpy arrays become tensors, numpy scalars Python scalars, tuples lists (they load
    back as lists), and mappings ``dict`` with string keys.

    Raises
    ------
    TypeError
        For anything else (e.g. a module or a custom object): store its state or its
        configuration instead.
    """
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value).copy())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, _PLAIN_SCALARS):
        return value
    if isinstance(value, Mapping):
        return {_plain_key(key): to_plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(item) for item in value]
    raise TypeError(
        f"cannot store a {type(value).__name__} in a checkpoint; store plain values "
        "(dict, list, str, int, float, bool, None), arrays or tensors instead"
    )


def _plain_key(key: Any) -> Any:
    # Optimiser state dicts use int keys; weights_only loading accepts them.
    if isinstance(key, (str, int)):
        return key
    if isinstance(key, np.integer):
        return int(key)
    raise TypeError(f"checkpoint keys must be str or int, got {type(key).__name__}")


def save_checkpoint(path: str | os.PathLike, state: Mapping[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically.

    The data goes to a temporary file in the same folder, is flushed to disk and then
    renamed over ``path`` with :func:`os.replace`, so a crash mid-write leaves the
    previous checkpoint intact.

    Parameters
    ----------
    path : str or path-like
        Destination file; missing parent folders are created.
    state : mapping
        Tensors, arrays and plain values (see :func:`to_plain`).

    Returns
    -------
    pathlib.Path
        The written path.

    Raises
    ------
    IsADirectoryError
        When ``path`` is a folder.
    NotADirectoryError
        When a regular file stands where a parent folder should be; the message names it.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(
            errno.EISDIR, f"cannot write the checkpoint {str(path)!r}: it is a folder; give "
            "a file name, e.g. run.ckpt inside it")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:
        blocker = _file_in_the_way(path)
        if blocker is None:
            raise
        raise NotADirectoryError(
            errno.ENOTDIR, f"cannot write the checkpoint {str(path)!r}: {str(blocker)!r} is "
            "a file, not a folder; choose a location inside a folder, or move that file away"
        ) from exc
    payload = to_plain(dict(state))
    payload.setdefault("format", CHECKPOINT_FORMAT)
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            torch.save(payload, stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp_name, path)
    except BaseException:
        try:
            os.unlink(temp_name)
        except FileNotFoundError:
            pass
        raise
    return path


def _file_in_the_way(path: Path) -> Path | None:
    # The nearest existing ancestor, when it is a regular file (then no folder can be
    # created on the way, and "create it first" would be the wrong advice).
    for ancestor in path.parents:
        if ancestor.exists() or ancestor.is_symlink():
            return None if ancestor.is_dir() else ancestor
    return None


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint written by :func:`save_checkpoint`.

    Always uses ``torch.load(..., weights_only=True)``.

    Parameters
    ----------
    path : str or path-like
    map_location : str or torch.device
        Where tensors are loaded (default the CPU).

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist.
    ValueError
        When the file is not a checkpoint of this package.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {str(path)!r}; check the path")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # unpickling errors have many types
        raise ValueError(
            f"{str(path)!r} is not a readable tsimcne_widgets checkpoint ({exc}); "
            "pass a file written by TSimCNE.save or a training checkpoint"
        ) from exc
    if not isinstance(state, dict) or "format" not in state:
        raise ValueError(
            f"{str(path)!r} is not a tsimcne_widgets checkpoint (no 'format' entry)"
        )
    if state["format"] > CHECKPOINT_FORMAT:
        raise ValueError(
            f"{str(path)!r} was written by a newer tsimcne_widgets (format "
            f"{state['format']}); upgrade the package to read it"
        )
    return state


def _tuples(config: Mapping[str, Any]) -> dict:
    # Tuples are stored as lists; the constructors want tuples back.
    return {
        key: tuple(value) if isinstance(value, list) else value for key, value in config.items()
    }


def augmenter_config(augmenter: Augmenter) -> dict:
    """Plain-type description of an :class:`~tsimcne_widgets.engine.augment.Augmenter`."""
    config = {"out_size": list(augmenter.out_size)}
    for name in _AUGMENTER_FIELDS:
        value = getattr(augmenter, name)
        config[name] = list(value) if isinstance(value, tuple) else value
    return config


def augmenter_from_config(config: Mapping[str, Any]) -> Augmenter:
    """Rebuild the Augmenter described by :func:`augmenter_config`."""
    return Augmenter(**_tuples(config))


def plan_config(plan: StagePlan) -> dict:
    """Plain-type description of a :class:`~tsimcne_widgets.engine.schedule.StagePlan`."""
    return {
        "epochs": list(plan.epochs),
        "batch_size": plan.batch_size,
        "steps_per_epoch": plan.steps_per_epoch,
        "base_lr": plan.base_lr,
        "lr_factors": list(plan.lr_factors),
        "warmup_epochs": list(plan.warmup_epochs),
    }


def plan_from_config(config: Mapping[str, Any]) -> StagePlan:
    """Rebuild the StagePlan described by :func:`plan_config`."""
    return StagePlan(**_tuples(config))


def _numpy_rng_state() -> dict:
    name, keys, position, has_gauss, cached = np.random.get_state()
    return {
        "name": name,
        "keys": torch.from_numpy(keys.astype(np.int64)),
        "position": int(position),
        "has_gauss": int(has_gauss),
        "cached_gaussian": float(cached),
    }


def _epoch_in_progress(trainer) -> dict | None:
    order = getattr(trainer, "_epoch_order", None)
    if order is None:
        return None
    return {
        "order": order.detach().cpu().clone(),
        "steps_done": int(trainer._epoch_steps_done),
        "loss_sum": float(trainer._epoch_loss_sum),
    }


def training_state(trainer) -> dict:
    """Everything a :class:`~tsimcne_widgets.engine.trainer.Trainer` needs to continue its run.

    Model and optimiser state, the position (stage, completed epochs of the stage,
    steps, and for a checkpoint taken mid-epoch the epoch's batch order, steps done and
    loss so far, so that resuming continues at the next step), the plan, network and
    augmentation settings, the seed, the random state (the trainer's own CPU and device
    generators, which are all it draws from; the process-wide torch and numpy states are
    stored too, for older readers, but never restored), the per-epoch losses and the
    latest map.
    """
    model_state = trainer.model.state_dict()
    return {
        "kind": "training",
        "model_config": dict(trainer.model_config),
        "augmenter": augmenter_config(trainer.augmenter),
        "plan": plan_config(trainer.plan),
        "seed": trainer.seed,
        "n_images": trainer.n_images,
        "image_shape": list(trainer.images.shape[1:]),
        "fingerprint": trainer.fingerprint,
        "stage": trainer.stage,
        "epoch": trainer.epoch,
        "step": trainer.step,
        "epoch_in_progress": _epoch_in_progress(trainer),
        "output_layer_replaced": bool(trainer.output_layer_replaced),
        "losses": list(trainer.losses),
        "elapsed": trainer.elapsed,
        "model": {key: value.detach().cpu().clone() for key, value in model_state.items()},
        "optimizer": trainer.optimizer.state_dict() if trainer.optimizer is not None else None,
        "rng": {
            "torch_cpu": torch.get_rng_state(),
            "cpu_generator": trainer.cpu_generator.get_state(),
            "device_generator": trainer.device_generator.get_state().cpu(),
            "device_type": trainer.device.type,
            "numpy": _numpy_rng_state(),
        },
        "embedding": trainer.last_map,
    }


def restore_training_state(trainer, state: Mapping[str, Any]) -> None:
    """Put a freshly built trainer where :func:`training_state` left off.

    The model's output layer is swapped first when the checkpoint's was, so the state
    dict fits; the optimiser state is kept for the stage's next step unless the stage is
    complete (the next stage starts a fresh optimiser).  A checkpoint taken mid-epoch
    continues that epoch: same batch order, from the next step.

    Only the trainer's own generators are restored: the process-wide torch and numpy
    random states belong to the user (a widget resumes in a background thread while
    the notebook keeps drawing from them), and the trainer never draws from them.
    """
    trainer.stage, trainer.epoch = int(state["stage"]), int(state["epoch"])
    trainer.step = int(state["step"])
    trainer.losses = [float(value) for value in state["losses"]]
    trainer.restore_elapsed(float(state["elapsed"]))
    progress = state.get("epoch_in_progress")
    if progress is not None:
        order, done = progress["order"], int(progress["steps_done"])
        if order.shape != (trainer.n_images,) or not 0 <= done <= trainer.plan.steps_per_epoch:
            raise ValueError(
                f"the checkpoint's epoch in progress ({done} steps over {order.numel()} "
                f"images) does not fit its plan of {trainer.plan.steps_per_epoch} steps over "
                f"{trainer.n_images} images; the file is damaged: use an earlier checkpoint"
            )
        trainer._epoch_order = order.to(trainer.device)
        trainer._epoch_steps_done = done
        trainer._epoch_loss_sum = torch.tensor(
            float(progress["loss_sum"]), device=trainer.device, dtype=torch.float32)
    # Checkpoints taken between a stage's end and the next stage's first step can still
    # hold the 128-D output layer (older files lack the flag: past stage 1, replaced).
    if state.get("output_layer_replaced", trainer.stage >= 2):
        trainer.model.replace_output_layer(trainer.model_config["out_dim"])
        trainer.output_layer_replaced = True
    trainer.model.load_state_dict(state["model"])
    trainer.model.to(trainer.device)
    if trainer.channels_last:
        trainer.model.to(memory_format=torch.channels_last)
    stage_done = trainer.epoch >= trainer.plan.epochs[trainer.stage - 1]
    trainer.pending_optimizer_state = None if stage_done else state["optimizer"]
    rng = state["rng"]
    trainer.cpu_generator.set_state(rng["cpu_generator"])
    if rng["device_type"] == trainer.device.type:
        trainer.device_generator.set_state(rng["device_generator"])
    if state.get("embedding") is not None:
        embedding = state["embedding"].numpy().astype(np.float32)
        embedding.flags.writeable = False
        trainer.last_map = embedding


def resume_trainer(trainer_class, path: str | os.PathLike, images, **kwargs):
    """Build a ``trainer_class`` positioned where the checkpoint at ``path`` left off.

    See :meth:`tsimcne_widgets.engine.trainer.Trainer.resume_from`.
    """
    state = load_checkpoint(path)
    if state.get("kind") != "training":
        raise ValueError(
            f"{str(path)!r} is not a training checkpoint (a saved model?); "
            "pass the checkpoint_path written during fit"
        )
    config = state["model_config"]
    if config["backbone"] == "custom" and kwargs.get("model") is None:
        raise ValueError(
            "this checkpoint used a custom backbone module; pass model=<an identical "
            "TSimCNENet> to resume it"
        )
    host_images = images_to_tensor(images)
    shape = tuple(host_images.shape[1:])
    if host_images.shape[0] != state["n_images"] or list(shape) != state["image_shape"]:
        raise ValueError(
            f"the checkpoint was trained on {state['n_images']} images of shape "
            f"{tuple(state['image_shape'])}, not {host_images.shape[0]} of shape {shape}; "
            "pass the same images"
        )
    trainer = trainer_class(
        host_images,
        plan_from_config(state["plan"]),
        augmenter=augmenter_from_config(state["augmenter"]),
        random_state=state["seed"],
        **{key: value for key, value in config.items() if key != "backbone"},
        backbone=config["backbone"],
        **kwargs,
    )
    if trainer.fingerprint != state["fingerprint"]:
        warnings.warn(
            "these images differ from the ones the checkpoint was trained on; "
            "the run continues on the new images",
            UserWarning,
            stacklevel=3,
        )
    with trainer.model_lock:
        restore_training_state(trainer, state)
    return trainer
