"""Turn whatever images a user has into one :class:`~tsimcne_widgets.data.imageset.ImageSet`.

Every input kind (arrays, tensors, torchvision-style datasets, folders, lists of
files, DataFrames, CSV files) ends as the same thing: a read-only uint8 array of
shape (N, H, W, 3) plus optional labels, source paths and metadata. Only numpy,
PIL and pandas are used here; torch tensors and datasets are duck-typed so this
module imports without torch.
"""
from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from .files import (
    DEFAULT_MAX_PIXELS, DEFAULT_MAX_SIDE, IMAGE_EXTENSIONS, MIN_SIDE, discover, load_files,
    resize_all, skipped_message, to_rgb_image,
)
from .imageset import UNLABELLED, ImageSet, label_array, to_numpy

# ImageSet and UNLABELLED are defined in .imageset; listed here because they are what
# load_images returns and uses, and "from tsimcne_widgets.data.load import ImageSet" is
# the 0.1 spelling.
__all__ = [
    "DEFAULT_MAX_PIXELS", "DEFAULT_MAX_SIDE", "IMAGE_EXTENSIONS", "MIN_SIDE",
    "UNLABELLED", "ImageSet", "MissingFilesError", "folder_images", "load_images",
]

_CHANNEL_SIZES = (1, 3, 4)
_ACCEPTED_KINDS = (
    "a numpy array or torch tensor (N, H, W[, C]) or (N, C, H, W); an ImageSet; a "
    "torchvision-style dataset; a folder path; a list of image paths, PIL images or arrays; "
    "a pandas DataFrame or .csv file with a 'path' column"
)


class MissingFilesError(FileNotFoundError, ValueError):
    """Paths that do not exist. Both a ``FileNotFoundError`` and a ``ValueError``."""


def load_images(data: Any, labels: Any = None, *, image_size: int | tuple[int, int] | None = None,
                max_pixels: int | None = DEFAULT_MAX_PIXELS) -> ImageSet:
    """Load images from any supported source into an :class:`ImageSet`.

    Parameters
    ----------
    data
        One of:

        * numpy array or torch tensor: (N, H, W) grayscale, (N, H, W, C) or
          (N, C, H, W) with C in 1, 3, 4. uint8 as is; bool as 0/255; other
          integers taken as 0..255, or as 16-bit when the maximum exceeds 255;
          floats as [0, 1] when the maximum is at most 1, else as [0, 255].
        * :class:`ImageSet`: passed through (``labels``/``image_size`` still apply).
        * torchvision-style dataset: ``len(ds)`` and ``ds[i] -> (image, label)``
          with a PIL image, array or tensor; ``ds.classes`` maps integer labels
          to names; ``ds.samples`` (as in ``ImageFolder``) supplies paths.
        * folder path: image files found recursively by extension
          (:data:`IMAGE_EXTENSIONS`, hidden files skipped) in sorted order.
          Nested folders are labelled by their first-level sub-folder (as in
          ``ImageFolder``; files directly in the root then get
          :data:`UNLABELLED`); a flat folder has no labels.
        * list or tuple of image paths, PIL images or arrays.
        * pandas DataFrame or ``.csv`` path with a ``path`` column (relative
          paths resolved against the CSV's folder, or the working directory for
          a DataFrame); a ``label`` column becomes the labels, other columns the
          metadata.
    labels : array-like or str, optional
        N labels of any type (converted to ``str``; NA becomes
        :data:`UNLABELLED`), overriding labels found in ``data``; for file
        inputs, one per file in the order found, before unreadable ones are
        dropped. A string names a DataFrame/CSV column.
    image_size : int or (int, int), optional
        Resize every image to this (height, width). By default images keep
        their size when all sizes agree; mixed sizes are brought to the most
        common size, scaled down so the longer side is at most
        :data:`DEFAULT_MAX_SIDE` (64). Resizing scales an image to cover the
        target and crops the centre, so shapes are never stretched.
    max_pixels : int or None
        Files with more pixels are skipped as possible decompression bombs.
        ``None`` disables the check: only for trusted files.

    Returns
    -------
    ImageSet
        Images as a read-only C-contiguous uint8 array (N, H, W, 3). Grayscale
        is repeated to three channels; alpha is composited on white. A single
        image is accepted here, although a map of one image cannot be trained.

    Raises
    ------
    TypeError
        For an unsupported kind of ``data``.
    ValueError
        For no images, images under :data:`MIN_SIDE` pixels, NaN/inf values,
        ambiguous layouts or labels of the wrong length.
    MissingFilesError
        For a path, or paths listed in a list/DataFrame/CSV, that do not exist.

    Warns
    -----
    UserWarning
        Once, naming the files that could not be decoded (see ``skipped``).
    """
    size = _check_image_size(image_size)
    if max_pixels is not None and (isinstance(max_pixels, bool) or int(max_pixels) < 1):
        raise ValueError(f"max_pixels must be a positive int or None, got {max_pixels!r}")
    is_frame = isinstance(data, pd.DataFrame) or (
        isinstance(data, (str, os.PathLike)) and str(data).lower().endswith(".csv"))
    if isinstance(labels, str) and not is_frame:
        raise TypeError(f"labels={labels!r} names a column, which needs a DataFrame or .csv input; "
                        "otherwise pass one label per image")

    if isinstance(data, Image.Image):
        data = [data]
    if isinstance(data, ImageSet):
        result = data if labels is None else replace(data, labels=labels)
        if size is not None and result.image_size != size:
            result = replace(result, images=resize_all(list(result.images), size))
    elif isinstance(data, pd.DataFrame):
        result = _from_frame(data, labels, Path.cwd(), size, max_pixels)
    elif isinstance(data, (str, os.PathLike)):
        result = _from_path(Path(data).expanduser(), labels, size, max_pixels)
    elif isinstance(data, (list, tuple, pd.Series)):
        result = _from_sequence(list(data), labels, size, max_pixels)
    elif isinstance(data, Mapping):  # would pass for a dataset below, then fail on ds[0]
        raise TypeError(f"cannot load images from a {type(data).__name__}; accepted: {_ACCEPTED_KINDS}")
    elif hasattr(data, "detach") or isinstance(data, np.ndarray):
        result = _from_array(data, labels, size)
    elif hasattr(data, "__len__") and hasattr(data, "__getitem__"):
        result = _from_dataset(data, labels, size)
    elif hasattr(data, "__array__"):
        result = _from_array(data, labels, size)
    else:
        raise TypeError(f"cannot load images from {type(data).__name__}; accepted: {_ACCEPTED_KINDS}")

    if result.skipped and not isinstance(data, ImageSet):
        warnings.warn(skipped_message(result.skipped, len(result)), UserWarning, stacklevel=2)
    h, w = result.image_size
    if min(h, w) < MIN_SIDE:
        raise ValueError(f"images are {h}x{w} pixels, smaller than the {MIN_SIDE}-pixel minimum; "
                         "upscale with image_size=32")
    return result


# ----------------------------------------------------------------------------- arrays

def _to_nhwc(arr: np.ndarray) -> np.ndarray:
    shape = arr.shape
    if arr.ndim == 3:
        if shape[-1] in (3, 4) and shape[-1] < MIN_SIDE:
            raise ValueError(f"a 3-D array of shape {shape} looks like one (H, W, C) image; "
                             "load_images expects a batch: pass x[None]")
        return arr[..., None]
    if arr.ndim == 4:
        last, second = shape[3] in _CHANNEL_SIZES, shape[1] in _CHANNEL_SIZES
        if last and not second:
            return arr
        if second and (not last or (shape[1] == 3 and shape[3] != 3)):
            return arr.transpose(0, 2, 3, 1)
        if last:  # both fit: images of at most 4 px either way, so the size check will speak
            return arr
        raise ValueError(f"cannot tell the channel axis of shape {shape}: expected axis 1 (NCHW) "
                         "or axis 3 (NHWC) of size 1, 3 or 4")
    if arr.ndim == 2:
        side = math.isqrt(shape[1])
        hint = f", e.g. x.reshape(-1, {side}, {side})" if side * side == shape[1] else ""
        raise ValueError(f"a 2-D array of shape {shape} holds flat vectors; reshape it to "
                         f"(N, H, W) or (N, H, W, C){hint}")
    raise ValueError(f"expected a 3-D (N, H, W) or 4-D (N, H, W, C)/(N, C, H, W) array, got shape {shape}")


def _uint8_factor(arr: np.ndarray) -> float | None:
    """Scale that maps ``arr`` onto 0..255 (None: already uint8), after validating it."""
    kind = arr.dtype.kind
    if arr.dtype == np.uint8:
        return None
    if kind == "b":
        return 255.0
    if kind not in "iuf":
        raise TypeError(f"image arrays must hold numbers, got dtype {arr.dtype}")
    if arr.size == 0:
        return 1.0
    if kind == "f":
        bad = arr.size - int(np.count_nonzero(np.isfinite(arr)))
        if bad:
            raise ValueError(f"the images contain {bad} NaN or infinite values; replace them first, "
                             "e.g. np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=0.0)")
    lo, hi = float(arr.min()), float(arr.max())
    if kind == "f":
        if lo < -1e-3:
            raise ValueError(f"float values span [{lo:.3g}, {hi:.3g}], but images must be in [0, 1] or "
                             "[0, 255]; undo any normalisation first (x * std + mean, or (x + 1) / 2)")
        if hi <= 1.0 + 1e-3:
            return 255.0
        if hi <= 255.5:
            return 1.0
        raise ValueError(f"float values reach {hi:.6g}; scale them to [0, 1] or [0, 255] first")
    if lo < 0:
        raise ValueError(f"integer values start at {lo:.0f}; images need non-negative values, "
                         "e.g. x - x.min()")
    if hi <= 255:
        return 1.0
    if hi <= 65535:
        return 255.0 / 65535.0  # taken as 16-bit
    raise ValueError(f"integer values reach {hi:.0f}; scale them to 0..255 (or 16-bit) first")


def _array_to_rgb(x: Any) -> np.ndarray:
    """Any supported array layout/dtype → a new uint8 (N, H, W, 3) array."""
    arr = _to_nhwc(to_numpy(x))
    factor = _uint8_factor(arr)
    n, h, w, c = arr.shape
    out = np.empty((n, h, w, 3), np.uint8)
    chunk = max(1, 2**25 // max(1, h * w * c * 4))  # bounds float temporaries to ~32 MB
    for start in range(0, n, chunk):
        part = arr[start:start + chunk]
        if factor is not None:
            part = np.rint(np.clip(part.astype(np.float32) * np.float32(factor), 0, 255)).astype(np.uint8)
        if c == 4:
            alpha = part[..., 3:4].astype(np.float32) / 255.0
            part = np.rint(part[..., :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
        out[start:start + chunk] = part  # broadcasts a single channel to three
    return out


def _from_array(x: Any, labels: Any, size: tuple[int, int] | None) -> ImageSet:
    images = _array_to_rgb(x)
    if size is not None and images.shape[1:3] != size:
        images = resize_all(list(images), size)
    return ImageSet(images=images, labels=labels)


def _one_image(img: Any, where: str) -> np.ndarray:
    """A PIL image, (H, W), (H, W, C) or (C, H, W) array/tensor → uint8 (H, W, 3)."""
    if isinstance(img, Image.Image):
        return np.asarray(to_rgb_image(img))
    if not (hasattr(img, "detach") or hasattr(img, "__array__")):
        raise TypeError(f"{where} is a {type(img).__name__}; expected a PIL image, array or tensor")
    arr = to_numpy(img)
    if arr.ndim == 2:
        arr = arr[None, ..., None]
    elif arr.ndim == 3 and arr.shape[-1] in _CHANNEL_SIZES:
        arr = arr[None]
    elif arr.ndim == 3 and arr.shape[0] in _CHANNEL_SIZES:
        arr = arr.transpose(1, 2, 0)[None]
    else:
        raise ValueError(f"{where} has shape {arr.shape}; expected (H, W), (H, W, C) or (C, H, W)")
    return _array_to_rgb(arr)[0]


# ----------------------------------------------------------------------------- sizes

def _check_image_size(image_size: Any) -> tuple[int, int] | None:
    if image_size is None:
        return None
    if isinstance(image_size, (int, np.integer)) and not isinstance(image_size, bool):
        size = (int(image_size), int(image_size))
    elif (isinstance(image_size, (tuple, list)) and len(image_size) == 2
          and all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in image_size)):
        size = (int(image_size[0]), int(image_size[1]))
    else:
        raise TypeError(f"image_size must be an int or an (height, width) pair, got {image_size!r}")
    if min(size) < MIN_SIDE:
        raise ValueError(f"image_size={image_size!r} is below the {MIN_SIDE}-pixel minimum; use e.g. 32")
    return size


# ----------------------------------------------------------------------------- files

def _require_existing(paths: list[str], context: str) -> None:
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise MissingFilesError(f"{len(missing)} of {len(paths)} {context} do not exist or are not "
                                f"files: {shown}")


def _set_from_files(paths: list[str], labels: Any, metadata: pd.DataFrame | None,
                    size: tuple[int, int] | None, max_pixels: int | None) -> ImageSet:
    per_file = None if labels is None else label_array(labels, len(paths))
    images, kept, skipped = load_files(paths, size, max_pixels)
    if len(kept) == 0:
        raise ValueError(f"none of the {len(paths)} image files could be read; first: "
                         f"{skipped[0][0]}: {skipped[0][1]}")
    return ImageSet(
        images=images,
        labels=None if per_file is None else per_file[kept],
        paths=tuple(paths[i] for i in kept),
        metadata=None if metadata is None else metadata.iloc[kept],
        skipped=skipped,
    )


def folder_images(root: str | os.PathLike, labels: Any = None) -> tuple[list[str], Any]:
    """The image files under ``root`` and their labels.

    Without ``labels``, a nested folder's first-level sub-folders name the labels (files at
    the top get :data:`UNLABELLED`); a flat folder has none.

    Raises
    ------
    ValueError
        When the folder holds no image file; the message lists the supported extensions.
    """
    root = Path(os.path.abspath(root))
    paths = discover(root)
    if not paths:
        raise ValueError(f"no images found in {root} (sub-folders included); supported extensions "
                         f"are {', '.join(IMAGE_EXTENSIONS)}")
    if labels is None:
        parts = [Path(p).relative_to(root).parts for p in paths]
        if any(len(x) > 1 for x in parts):
            labels = [x[0] if len(x) > 1 else UNLABELLED for x in parts]
    return paths, labels


def _from_folder(root: Path, labels: Any, size: tuple[int, int] | None,
                 max_pixels: int | None) -> ImageSet:
    paths, labels = folder_images(root, labels)
    return _set_from_files(paths, labels, None, size, max_pixels)


def _from_path(path: Path, labels: Any, size: tuple[int, int] | None,
               max_pixels: int | None) -> ImageSet:
    if path.is_dir():
        return _from_folder(path, labels, size, max_pixels)
    if not path.exists():
        raise MissingFilesError(f"{path} does not exist; pass a folder of images, an image file or a .csv")
    if path.suffix.lower() == ".csv":
        frame = pd.read_csv(path)
        return _from_frame(frame, labels, Path(os.path.abspath(path)).parent, size, max_pixels)
    return _set_from_files([os.path.abspath(path)], labels, None, size, max_pixels)


def _from_frame(frame: pd.DataFrame, labels: Any, base: Path, size: tuple[int, int] | None,
                max_pixels: int | None) -> ImageSet:
    columns = list(frame.columns)
    if "path" not in columns:
        raise ValueError(f"the table needs a 'path' column of image files; its columns are {columns}")
    if frame["path"].isna().any():
        raise ValueError(f"{int(frame['path'].isna().sum())} rows have no path; drop them first")
    paths = [os.path.abspath(base / os.path.expanduser(str(p))) for p in frame["path"]]
    if not paths:
        raise ValueError("the table has no rows, so there are no images to load")
    _require_existing(paths, f"paths in the 'path' column (relative ones resolved against {base})")
    label_column = None
    if isinstance(labels, str):
        if labels not in columns:
            raise ValueError(f"labels={labels!r} is not a column; the columns are {columns}")
        label_column, labels = labels, frame[labels]
    elif labels is None and "label" in columns:
        label_column, labels = "label", frame["label"]
    extra = frame.drop(columns=[c for c in ("path", label_column) if c is not None])
    metadata = extra.reset_index(drop=True) if len(extra.columns) else None
    return _set_from_files(paths, labels, metadata, size, max_pixels)


def _from_sequence(items: list[Any], labels: Any, size: tuple[int, int] | None,
                   max_pixels: int | None) -> ImageSet:
    if not items:
        raise ValueError("the list is empty: no images to load")
    if all(isinstance(x, (str, os.PathLike)) for x in items):
        paths = [os.path.abspath(os.path.expanduser(os.fspath(x))) for x in items]
        folders = [p for p in paths if os.path.isdir(p)]
        if folders:
            raise ValueError(f"the list holds folders ({folders[0]}, ...); pass one folder by itself, "
                             "or list image files")
        _require_existing(paths, "listed paths")
        return _set_from_files(paths, labels, None, size, max_pixels)
    if any(isinstance(x, (str, os.PathLike)) for x in items):
        raise TypeError("the list mixes paths with other things; pass only paths or only images")
    arrays = [_one_image(x, f"list item {i}") for i, x in enumerate(items)]
    return ImageSet(images=resize_all(arrays, size), labels=labels)


def _from_dataset(dataset: Any, labels: Any, size: tuple[int, int] | None) -> ImageSet:
    n = len(dataset)
    if n == 0:
        raise ValueError(f"the {type(dataset).__name__} is empty: no images to load")
    classes = getattr(dataset, "classes", None)
    features = getattr(dataset, "features", None)  # Hugging Face datasets: ClassLabel names
    if classes is None and isinstance(features, dict) and hasattr(features.get("label"), "names"):
        classes = features["label"].names
    arrays, found = [], []
    for i in range(n):
        item = dataset[i]
        if isinstance(item, dict):
            image = next((item[k] for k in ("image", "img") if k in item), None)
            target = next((item[k] for k in ("label", "labels") if k in item), None)
        elif isinstance(item, (tuple, list)) and len(item) >= 2:
            image, target = item[0], item[1]
        else:
            image, target = item, None
        arrays.append(_one_image(image, f"dataset item {i}"))
        found.append(_class_name(target, classes))
    samples = getattr(dataset, "samples", None)  # ImageFolder: (path, class index) per item
    paths = None
    if isinstance(samples, (list, tuple)) and len(samples) == n and all(
            isinstance(s, (tuple, list)) and isinstance(s[0], (str, os.PathLike)) for s in samples):
        paths = tuple(os.fspath(s[0]) for s in samples)
    if labels is None and any(t is not None for t in found):
        labels = found
    return ImageSet(images=resize_all(arrays, size), labels=labels, paths=paths)


# ----------------------------------------------------------------------------- labels

def _class_name(target: Any, classes: Any) -> Any:
    if hasattr(target, "detach"):
        target = target.detach().cpu()
        target = target.item() if target.numel() == 1 else target.tolist()
    if isinstance(target, np.generic):
        target = target.item()
    if (classes is not None and isinstance(target, int) and not isinstance(target, bool)
            and 0 <= target < len(classes)):
        return classes[target]
    return target
