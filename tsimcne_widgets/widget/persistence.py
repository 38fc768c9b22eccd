"""Saving and restoring an Explorer session as a folder.

Layout (every file optional except ``explorer.json``)::

    explorer.json     format version, TSimCNE params, colouring, selection mode, training
                      state, and the images' augmentation settings and skipped files (ImageSet)
    images.npy        uint8 (N, H, W, 3), unless every image has a readable source file
    sources.csv       source path of each image (the images are re-read from them)
    labels.json       one label per image
    metadata.json     extra per-image columns (pandas "table" JSON, keeps dtypes)
    map.npy           the newest map, float32 (N, 2)
    replay.npy        replay frames, float16 (F, N, 2), with replay_infos.json
    tags.csv          long-format tags (TagStore.save)
    selection.npy     selected indices
    checkpoint.pt     training checkpoint (weights_only loading), to continue training

Nothing here unpickles: loading a session never runs code from the folder.
The folder is written aside and renamed into place, so an interrupted save
leaves no half-written session.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["save_explorer", "load_explorer", "FORMAT_VERSION"]

FORMAT_VERSION = 1
_MANIFEST = "explorer.json"


def _json_safe_params(params: dict) -> dict:
    safe = {}
    for key, value in params.items():
        if isinstance(value, tuple):
            value = list(value)
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        try:
            json.dumps(value)
        except TypeError:
            raise ValueError(
                f"TSimCNE parameter {key}={value!r} cannot be saved by value (a module or "
                "object); pass it by name (e.g. backbone='resnet18') to use save()"
            ) from None
        safe[key] = value
    return safe


def _json_plain(value):
    # Tuples become lists (restored as tuples by _tuples_back), numpy scalars numbers.
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_json_plain(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _json_plain(item) for key, item in value.items()}
    return value


def _tuples_back(value):
    if isinstance(value, list):
        return tuple(_tuples_back(item) for item in value)
    return value


def _augmentation_json(augmentation) -> dict | None:
    if augmentation is None:
        return None
    plain = _json_plain(dict(augmentation))
    try:
        json.dumps(plain)
    except TypeError:
        raise ValueError(f"the images' augmentation {dict(augmentation)!r} cannot be saved; "
                         "use plain numbers and tuples") from None
    return plain


def save_explorer(explorer, path, overwrite: bool = False, include_images: bool | None = None
                  ) -> Path:
    """Write ``explorer``'s session to folder ``path`` (see the module docstring).

    Parameters
    ----------
    explorer : Explorer
    path : str or path-like
        Destination folder; its parent must exist.
    overwrite : bool
        Replace an existing folder.
    include_images : bool or None
        Store the pixels (``images.npy``).  Default: only when some image has
        no readable source file.

    Returns
    -------
    pathlib.Path
    """
    from tsimcne_widgets.io.atomic import check_parent_folder, swap_in_folder, temporary_sibling

    folder = Path(path).expanduser()
    if folder.exists() and not folder.is_dir():
        raise FileExistsError(errno.EEXIST, f"cannot save to {str(folder)!r}: it is a file, "
                              "not a session folder; choose another name")
    if folder.exists() and not overwrite:
        raise FileExistsError(f"{str(folder)!r} exists; pass overwrite=True or choose a new name")
    check_parent_folder(folder, "save to")
    image_set = explorer.image_set
    paths = image_set.paths
    has_sources = paths is not None and all(p and os.path.isfile(p) for p in paths)
    if include_images is None:
        include_images = not has_sources
    training, state = explorer.training, explorer.model  # ExplorerState: the map, tags, ...
    latest = training.latest_snapshot  # newer than state.map while training runs
    manifest = {
        "format": FORMAT_VERSION,
        "n": explorer.n,
        "image_shape": list(image_set.images.shape[1:]),
        "params": _json_safe_params(training.params),
        "color_by": state.color_column,
        "selection_mode": state.selection_mode,
        "training_state": training.state if not training.active else "stopped",
        "provisional": bool(latest.provisional if latest is not None else state.provisional),
        "augmentation": _augmentation_json(image_set.augmentation),
        "skipped": [[path, reason] for path, reason in image_set.skipped],
    }
    tmp = temporary_sibling(folder, "save to")
    try:
        if include_images:
            np.save(tmp / "images.npy", np.asarray(image_set.images), allow_pickle=False)
        if paths is not None:
            pd.DataFrame({"path": list(paths)}).to_csv(tmp / "sources.csv", index=False)
        if explorer.labels is not None:
            (tmp / "labels.json").write_text(json.dumps([str(v) for v in explorer.labels]))
        if explorer.metadata is not None:
            explorer.metadata.to_json(tmp / "metadata.json", orient="table", index=False)
        xy = explorer.embedding
        if xy is not None:
            np.save(tmp / "map.npy", np.asarray(xy, dtype=np.float32), allow_pickle=False)
        _save_replay(explorer.replay, tmp)
        if len(explorer.tag_store):
            from tsimcne_widgets.io.tables import write_table

            # Read back by TagStore.load: the tag names must stay exact, so no
            # spreadsheet quoting of names such as "=x" or "-1".
            write_table(state.tag_store.to_frame(include_empty=True), tmp / "tags.csv",
                        format="csv", overwrite=True, spreadsheet_safe=False)
        np.save(tmp / "selection.npy", np.asarray(explorer.selection, dtype=np.int64))
        trainer = training.trainer
        if trainer is not None and trainer.latest_snapshot is not None:
            trainer.save_checkpoint(tmp / "checkpoint.pt")
            manifest["checkpoint"] = "checkpoint.pt"
        elif training.checkpoint is not None and os.path.isfile(training.checkpoint):
            shutil.copyfile(training.checkpoint, tmp / "checkpoint.pt")
            manifest["checkpoint"] = "checkpoint.pt"
        (tmp / _MANIFEST).write_text(json.dumps(manifest, indent=1))
        swap_in_folder(tmp, folder, overwrite=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def _save_replay(replay, folder: Path) -> None:
    frames = len(replay)
    if frames == 0:
        return
    stacked = np.stack([replay[k][0].astype(np.float16) for k in range(frames)])
    np.save(folder / "replay.npy", stacked, allow_pickle=False)
    (folder / "replay_infos.json").write_text(json.dumps(replay.infos, default=float))


def load_explorer(cls, path, **kwargs):
    """Rebuild an Explorer from a folder written by :func:`save_explorer`.

    ``kwargs`` go to the Explorer (display options such as ``canvas_width``, or
    TSimCNE parameters such as ``device``, which override the saved ones).
    """
    from tsimcne_widgets.data.load import ImageSet, load_images

    folder = Path(path).expanduser()
    manifest_path = folder / _MANIFEST
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{str(folder)!r} is not a saved Explorer session "
                                f"(no {_MANIFEST}); pass the folder written by Explorer.save")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("format") != FORMAT_VERSION:
        raise ValueError(f"{str(folder)!r} has session format {manifest.get('format')!r}; "
                         f"this version reads format {FORMAT_VERSION}")
    n = int(manifest["n"])
    labels = None
    if (folder / "labels.json").is_file():
        labels = json.loads((folder / "labels.json").read_text())
    paths = None
    if (folder / "sources.csv").is_file():
        paths = pd.read_csv(folder / "sources.csv", dtype=str, keep_default_na=False)["path"]
        paths = tuple(paths)
    augmentation = manifest.get("augmentation")
    if augmentation is not None:
        augmentation = {key: _tuples_back(value) for key, value in augmentation.items()}
    skipped = tuple((str(path), str(reason)) for path, reason in manifest.get("skipped", ()))
    restored = dict(labels=labels, paths=paths, skipped=skipped, augmentation=augmentation)
    metadata = None
    if (folder / "metadata.json").is_file():
        metadata = pd.read_json(folder / "metadata.json", orient="table")
    if (folder / "images.npy").is_file():
        images = np.load(folder / "images.npy", allow_pickle=False)
        image_set = ImageSet(images, metadata=metadata, **restored)
    elif paths is not None:
        height, width = manifest["image_shape"][:2]
        image_set = load_images(list(paths), labels=labels, image_size=(height, width))
        if len(image_set) != n:
            raise ValueError(f"only {len(image_set)} of the {n} source images could be read "
                             f"again; {len(image_set.skipped)} are missing or broken")
        image_set = ImageSet(image_set.images, metadata=metadata, **restored)
    else:
        raise FileNotFoundError(f"{str(folder)!r} holds neither images.npy nor sources.csv")
    if len(image_set) != n:
        raise ValueError(f"the session describes {n} images but {len(image_set)} were found")

    params = {**manifest.get("params", {}), **kwargs}  # the caller's arguments win
    explorer = cls(image_set, **params)
    _restore_state(explorer, folder, manifest)
    return explorer


def _restore_state(explorer, folder: Path, manifest: dict) -> None:
    from tsimcne_widgets.curation.tags import TagStore

    if (folder / "replay.npy").is_file():
        frames = np.load(folder / "replay.npy", allow_pickle=False)
        infos = json.loads((folder / "replay_infos.json").read_text())
        for frame, info in zip(frames, infos):
            explorer.replay.append(frame, info)
    xy = selection = tags = None
    if (folder / "map.npy").is_file():
        xy = np.load(folder / "map.npy", allow_pickle=False)
    if (folder / "tags.csv").is_file():
        tags = TagStore.load(folder / "tags.csv", explorer.n)
    if (folder / "selection.npy").is_file():
        selection = np.load(folder / "selection.npy", allow_pickle=False)
    state = explorer.model
    color = manifest.get("color_by")
    state.restore(map=xy, provisional=bool(manifest.get("provisional", False)),
                  # A metadata column the session no longer has: keep the default colouring.
                  color_column=color if color in state.color_options else None,
                  selection=selection, selection_mode=manifest.get("selection_mode"),
                  tags=tags)
    training = explorer.training
    if manifest.get("checkpoint"):
        training.checkpoint = str(folder / manifest["checkpoint"])
    training.restored_state = manifest.get("training_state") or None
    if training.restored_state == "idle":
        training.restored_state = None
    explorer.refresh()
