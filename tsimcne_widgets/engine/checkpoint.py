"""Atomic, safe-to-load checkpoints.

Checkpoints hold tensors and plain Python values only (dict, list, tuple, str, int,
float, bool, None), so they always load with ``torch.load(..., weights_only=True)``:
opening a checkpoint never runs code from the file.
"""

from __future__ import annotations

import errno
import os
import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from tsimcne_widgets.io.atomic import atomic_path, file_in_the_way

from .augment import Augmenter
from .schedule import StagePlan
from .tensors import images_to_tensor

__all__ = [
    "save_checkpoint",
    "load_checkpoint",
    "to_plain",
    "CHECKPOINT_FORMAT",
    "augmenter_config",
    "augmenter_from_config",
    "plan_config",
    "plan_from_config",
    "training_checkpoint",
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
        blocker = file_in_the_way(path)
        if blocker is None:
            raise
        raise NotADirectoryError(
            errno.ENOTDIR, f"cannot write the checkpoint {str(path)!r}: {str(blocker)!r} is "
            "a file, not a folder; choose a location inside a folder, or move that file away"
        ) from exc
    payload = to_plain(dict(state))
    payload.setdefault("format", CHECKPOINT_FORMAT)
    with atomic_path(path, overwrite=True) as temporary:
        torch.save(payload, temporary)
    return path


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


def training_checkpoint(trainer) -> dict:
    """The contents of a training checkpoint of ``trainer``.

    Its :meth:`~tsimcne_widgets.engine.trainer.Trainer.state_dict` (network, position,
    optimiser, the trainer's own generators, losses, latest map), marked as a training
    checkpoint.  The process-wide torch and numpy random states are stored too, for
    older readers, but never restored: they belong to the user, and the trainer never
    draws from them.
    """
    state = dict(trainer.state_dict())
    state["kind"] = "training"
    state["rng"] = {**state["rng"], "torch_cpu": torch.get_rng_state(),
                    "numpy": _numpy_rng_state()}
    return state


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
    trainer.load_state_dict(state)
    return trainer
