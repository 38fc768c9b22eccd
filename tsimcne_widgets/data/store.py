"""An on-disk image store: a collection decoded once into a memory-mapped uint8 array.

:func:`open_store` ingests a folder, a CSV with a ``path`` column or a list of image
files into ``images.npy`` (N, H, W, 3) at training resolution, in a cache folder named
after a hash of the file list, every file's size and modification time, the size and the
pixel limit.  A second call with unchanged files opens that array with
``np.load(mmap_mode="r")`` at once; the returned :class:`~tsimcne_widgets.data.load.ImageSet`
holds the read-only memory map, so the pixels stay in the page cache (file-backed,
reclaimable memory) instead of the process's anonymous memory.

Why a ``.npy`` memory map and not zarr: the access pattern is a random gather of a
few hundred rows per training step, which a flat C-ordered array serves with one
``memcpy`` per row straight from the page cache, and ``np.load(mmap_mode="r")`` is
zero-copy and needs no new dependency.  zarr's chunked, compressed layout pays off for
cloud object stores and for arrays larger than the disk, neither of which applies to a
cache of 3 KB (32 px) to 12 KB (64 px) per image; a compressed chunk would have to be
decoded whole for every random row.

Ingest (:mod:`tsimcne_widgets.data.ingest`) decodes on all cores, resumes when
interrupted and skips unreadable files as
:func:`~tsimcne_widgets.data.load.load_images` does, listing them in ``ImageSet.skipped``.

The store also outlives its originals.  ``files.json`` beside the array lists the source
files (and their labels), so ``open_store`` of the store folder itself, or of a source
folder or CSV that was moved or deleted, opens the store without them, with a warning
that says so.  Hover cards and the gallery then show the stored images: no separate
thumbnail store is kept, because the map's browser-side hover card is drawn from this
array in any case (sprite cells of at most 96 px), and a card-size copy (160 px) of a
million images would be 77 GB.
"""
from __future__ import annotations

import hashlib
import json
import mmap
import os
import shutil
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tsimcne_widgets.io.atomic import atomic_write_bytes

from .files import (
    DEFAULT_MAX_PIXELS, DEFAULT_MAX_SIDE, MIN_SIDE, common_size, pil_limits, probe, skipped_message,
)
from .ingest import DEFAULT_CHUNK, FORMAT_VERSION, IMAGES, INFO, ingest
from .load import ImageSet, MissingFilesError, folder_images

__all__ = ["open_store", "default_cache_dir", "is_disk_backed", "remove_store", "store_folder",
           "store_key"]

# Headers probed to choose a size when none is given: enough to see the common size.
_PROBE_SAMPLE = 256
# Originals checked for existence when a store opens without them.
_CHECK_SAMPLE = 256
_FILES = "files.json"  # every source file and its label, to open the store without them
_ORIGIN = "origin.json"  # the source folder or CSV and the size: found when it is gone


def default_cache_dir() -> Path:
    """``$TSIMCNE_CACHE`` or ``~/.cache/tsimcne_widgets/stores``."""
    env = os.environ.get("TSIMCNE_CACHE")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tsimcne_widgets" / "stores"


def is_disk_backed(array: Any) -> bool:
    """Whether ``array`` (or the array it views) lives in a memory-mapped file."""
    seen = 0
    while array is not None and seen < 32:
        if isinstance(array, (np.memmap, mmap.mmap)):
            return True
        array = getattr(array, "base", None)
        seen += 1
    return False


def store_key(paths: Sequence[str], size: tuple[int, int], max_pixels: int | None) -> str:
    """Hash of the file list, each file's size and mtime, the image size and pixel limit.

    Raises
    ------
    MissingFilesError
        When a listed file no longer exists.
    """
    digest = hashlib.sha256(f"v{FORMAT_VERSION} {size} {max_pixels}\n".encode())
    missing = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            missing.append(path)
            continue
        digest.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise MissingFilesError(f"{len(missing)} of {len(paths)} image files do not exist: {shown}")
    return digest.hexdigest()[:24]


def open_store(data: Any, labels: Any = None, *, image_size: int | tuple[int, int] | None = None,
               cache_dir: str | os.PathLike | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS,
               executor: str = "thread", workers: int | None = None, chunk_size: int = DEFAULT_CHUNK,
               progress: bool = True, callback: Callable[[int, int], object] | None = None,
               ) -> ImageSet:
    """Images of a folder, CSV or file list as an :class:`ImageSet` backed by a file on disk.

    Parameters
    ----------
    data : str, path-like, list of paths or pandas.DataFrame
        A folder (searched recursively; first-level sub-folders are labels), a ``.csv``
        file or DataFrame with a ``path`` column (``label`` becomes the labels, other
        columns the metadata), or a list of image files.  Also a store folder itself
        (``store_folder(images)``), or a folder or CSV that no longer exists but was
        stored before: then the store opens without its originals (with a warning),
        its labels as first stored, without metadata columns.
    labels : array-like or str, optional
        As for :func:`~tsimcne_widgets.data.load.load_images`.
    image_size : int or (int, int), optional
        Training resolution of the stored images.  Default: the common size of a sample
        of the files, its longer side capped at 64 px.
    cache_dir : str or path-like, optional
        Parent of the store folders; default :func:`default_cache_dir`.
    max_pixels : int or None
        Files with more pixels are skipped (decompression-bomb guard).
    executor : {"thread", "process"}
        Decode on threads (default) or processes.
    workers : int, optional
        Pool size; default the number of cores.
    chunk_size : int
        Rows per task and per done-bitmap save.
    progress : bool
        Show a tqdm bar.
    callback : callable, optional
        ``callback(rows_done, rows_total)`` after every chunk (e.g. for a widget's
        progress bar), called on the calling thread.  An exception it raises (also
        ``KeyboardInterrupt``) stops the ingest; the chunks done so far are kept and the
        next call resumes.

    Returns
    -------
    ImageSet
        ``images`` is a read-only view of the memory-mapped ``images.npy``; nothing is
        read into memory until used.  :func:`store_folder` finds its folder.

    Raises
    ------
    ValueError
        For no images, a bad ``executor``, or when no file could be read.
    MissingFilesError
        For listed paths that do not exist.
    """
    if executor not in ("thread", "process"):
        raise ValueError(f"executor must be 'thread' or 'process', got {executor!r}")
    if int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size!r}")
    parent = Path(cache_dir if cache_dir is not None else default_cache_dir()).expanduser()
    if _is_store(data):
        return _reopen(Path(data), labels, image_size)
    try:
        paths, labels, metadata = _inputs(data, labels)
    except MissingFilesError:
        stored = _store_of_source(data, image_size, parent)
        if stored is None:
            raise
        return _reopen(stored, labels, image_size)
    label_array = None
    if labels is not None:
        if isinstance(labels, (str, bytes)) or not hasattr(labels, "__len__"):
            raise TypeError(f"labels must be one value per image, got {type(labels).__name__}")
        if len(labels) != len(paths):
            raise ValueError(f"labels has {len(labels)} entries but there are {len(paths)} image "
                             "files; pass one label per file, in the order found")
        label_array = np.empty(len(paths), dtype=object)
        label_array[:] = list(labels)
    size = _choose_size(paths, image_size, max_pixels)
    folder = parent / store_key(paths, size, max_pixels)
    ingest(folder, paths, size, max_pixels, executor, workers, int(chunk_size), progress, callback)
    if not (folder / _ORIGIN).exists():
        _record_files(folder, data, paths, label_array, size)
    info = json.loads((folder / INFO).read_text())
    kept = np.asarray(info["kept"], dtype=np.intp)
    skipped = tuple((paths[i], reason) for i, reason in info["skipped"])
    if len(kept) == 0:
        raise ValueError(f"none of the {len(paths)} image files could be read; first: "
                         f"{skipped[0][0]}: {skipped[0][1]}")
    if skipped:
        warnings.warn(skipped_message(skipped, len(kept)), UserWarning, stacklevel=2)
    images = np.load(folder / IMAGES, mmap_mode="r")
    return ImageSet(
        images=images,
        labels=None if label_array is None else label_array[kept],
        paths=tuple(paths[i] for i in kept),
        metadata=None if metadata is None else metadata.iloc[kept],
        skipped=skipped,
    )


# ----------------------------------------------------------------------------- without originals

def _is_store(data: Any) -> bool:
    if not isinstance(data, (str, os.PathLike)):
        return False
    folder = Path(data).expanduser()
    return (folder / INFO).is_file() and (folder / IMAGES).is_file()


def _plain_labels(label_array: np.ndarray | None) -> list | None:
    if label_array is None:
        return None
    values = [x.item() if isinstance(x, np.generic) else x for x in label_array]
    return values if all(isinstance(x, (str, int, float, bool)) for x in values) else None


def _record_files(folder: Path, data: Any, paths: list[str], label_array, size) -> None:
    """files.json (every source path, labels) then origin.json (source, size)."""
    source = os.path.abspath(os.path.expanduser(data)) if isinstance(data, (str, os.PathLike)) \
        else None
    files = {"paths": paths, "labels": _plain_labels(label_array)}
    atomic_write_bytes(folder / _FILES, json.dumps(files).encode(), overwrite=True)
    origin = {"source": source, "size": list(size), "n_files": len(paths)}
    atomic_write_bytes(folder / _ORIGIN, json.dumps(origin).encode(), overwrite=True)


def _store_of_source(data: Any, image_size: Any, parent: Path) -> Path | None:
    """The newest complete store made from the folder or CSV ``data`` (at that size)."""
    if not isinstance(data, (str, os.PathLike)) or not parent.is_dir():
        return None
    source = os.path.abspath(os.path.expanduser(data))
    size = None if image_size is None else list(_choose_size([], image_size, None))
    found = []
    for folder in parent.iterdir():
        try:
            origin = json.loads((folder / _ORIGIN).read_text())
            finished = (folder / INFO).stat().st_mtime
        except (OSError, ValueError):
            continue
        if origin.get("source") == source and size in (None, origin.get("size")):
            found.append((finished, folder))
    return max(found)[1] if found else None


def _reopen(folder: Path, labels: Any, image_size: Any) -> ImageSet:
    """The store in ``folder`` as an ImageSet, whether or not its source files exist."""
    info = json.loads((folder / INFO).read_text())
    try:
        files = json.loads((folder / _FILES).read_text())
    except FileNotFoundError:
        raise ValueError(f"the store {folder} does not list its source files (an older store); "
                         "open it once from the original files, open_store(<folder or CSV>), "
                         "to record them") from None
    images = np.load(folder / IMAGES, mmap_mode="r")
    if image_size is not None and tuple(images.shape[1:3]) != _choose_size([], image_size, None):
        raise ValueError(f"the store {folder} holds {images.shape[1]}x{images.shape[2]} px "
                         f"images, not {image_size!r}; pass image_size={images.shape[1]} or "
                         "the original files to build another")
    kept = info["kept"]
    paths = tuple(files["paths"][i] for i in kept)
    if labels is None and files.get("labels") is not None:
        labels = [files["labels"][i] for i in kept]
    label_array = None
    if labels is not None:
        if len(labels) != len(kept):
            raise ValueError(f"labels has {len(labels)} entries but the store {folder} holds "
                             f"{len(kept)} images; pass one label per stored image")
        label_array = np.empty(len(kept), dtype=object)
        label_array[:] = list(labels)
    sample = paths[::max(1, len(paths) // _CHECK_SAMPLE)]
    gone = [p for p in sample if not os.path.exists(p)]
    if gone:
        warnings.warn(
            f"{len(gone)} of {len(sample)} original files checked are gone (first: {gone[0]}); "
            f"the store's own {images.shape[1]}x{images.shape[2]} px images stand in for them: "
            "hover cards and the gallery show those", UserWarning, stacklevel=3)
    return ImageSet(images=images, labels=label_array, paths=paths, metadata=None,
                    skipped=tuple((files["paths"][i], r) for i, r in info["skipped"]))


def store_folder(image_set: ImageSet) -> Path | None:
    """The store folder whose ``images.npy`` backs ``image_set``, or None."""
    filename = getattr(_memmap_of(image_set.images), "filename", None)
    return None if filename is None else Path(filename).parent


def _memmap_of(array: Any) -> np.memmap | None:
    while array is not None:
        if isinstance(array, np.memmap):
            return array
        array = getattr(array, "base", None)
    return None


# ----------------------------------------------------------------------------- inputs

def _inputs(data: Any, labels: Any) -> tuple[list[str], Any, pd.DataFrame | None]:
    if isinstance(data, (str, os.PathLike)):
        path = Path(data).expanduser()
        if path.is_dir():
            paths, labels = folder_images(path, labels)
            return paths, labels, None
        if not path.exists():
            raise MissingFilesError(f"{path} does not exist; pass a folder of images, a .csv or "
                                    "a list of image files")
        if path.suffix.lower() != ".csv":
            raise ValueError(f"{path} is a file; an image store is built from a folder, a .csv "
                             "with a 'path' column or a list of image files")
        return _frame_inputs(pd.read_csv(path), labels, Path(os.path.abspath(path)).parent)
    if isinstance(data, pd.DataFrame):
        return _frame_inputs(data, labels, Path.cwd())
    if isinstance(data, (list, tuple)) and data and all(isinstance(p, (str, os.PathLike)) for p in data):
        paths = [os.path.abspath(os.path.expanduser(os.fspath(p))) for p in data]
        return paths, labels, None
    raise TypeError(f"an image store is built from a folder, a .csv file or DataFrame with a "
                    f"'path' column, or a non-empty list of image paths; got {type(data).__name__}. "
                    "Arrays already in memory need no store: use load_images")


def _frame_inputs(frame: pd.DataFrame, labels: Any, base: Path):
    columns = list(frame.columns)
    if "path" not in columns:
        raise ValueError(f"the table needs a 'path' column of image files; its columns are {columns}")
    if frame["path"].isna().any() or len(frame) == 0:
        raise ValueError("every row needs a path, and the table needs at least one row")
    paths = [os.path.abspath(base / os.path.expanduser(str(p))) for p in frame["path"]]
    label_column = None
    if isinstance(labels, str):
        if labels not in columns:
            raise ValueError(f"labels={labels!r} is not a column; the columns are {columns}")
        label_column = labels
    elif labels is None and "label" in columns:
        label_column = "label"
    if label_column is not None:
        labels = frame[label_column]
    extra = frame.drop(columns=[c for c in ("path", label_column) if c is not None])
    return paths, labels, (extra.reset_index(drop=True) if len(extra.columns) else None)


def _choose_size(paths: list[str], image_size: Any, max_pixels: int | None) -> tuple[int, int]:
    if image_size is not None:
        side = image_size if isinstance(image_size, (tuple, list)) else (image_size, image_size)
        if len(side) != 2 or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool)
                                     for s in side):
            raise TypeError(f"image_size must be an int or an (height, width) pair, got {image_size!r}")
        if min(side) < MIN_SIDE:
            raise ValueError(f"image_size={image_size!r} is below the {MIN_SIDE}-pixel minimum; "
                             "use e.g. 32")
        return int(side[0]), int(side[1])
    step = max(1, len(paths) // _PROBE_SAMPLE)
    with pil_limits(max_pixels):
        sizes = [s for s in (probe(p, max_pixels) for p in paths[::step]) if not isinstance(s, str)]
    if not sizes:
        raise ValueError(f"none of the {len(paths[::step])} image files probed could be read; "
                         f"first: {paths[0]}")
    h, w = common_size(sizes)
    if max(h, w) > DEFAULT_MAX_SIDE:  # a store is at training resolution, never full size
        scale = DEFAULT_MAX_SIDE / max(h, w)
        h, w = max(1, round(h * scale)), max(1, round(w * scale))
    return h, w


def remove_store(image_set: ImageSet) -> None:
    """Delete the cache folder behind ``image_set`` (the set must not be used afterwards)."""
    folder = store_folder(image_set)
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)
