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

Ingest decodes on a pool of workers (threads by default: PIL releases the GIL while it
decodes and resizes, so threads scale without pickling pixels; ``executor="process"``
is also offered) that write rows straight into the memory map, chunk by chunk.  After
each chunk a done-bitmap is replaced atomically, so an interrupted ingest resumes with
the chunks still missing.  Unreadable files are skipped as by
:func:`~tsimcne_widgets.data.load.load_images` and listed in ``ImageSet.skipped``.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import mmap
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .files import (
    DEFAULT_MAX_PIXELS, DEFAULT_MAX_SIDE, MIN_SIDE, common_size, decode, pil_limits, probe,
    skipped_message,
)
from .load import ImageSet, MissingFilesError, folder_images

__all__ = ["open_store", "default_cache_dir", "is_disk_backed", "remove_store", "store_folder",
           "store_key"]

#: Bumped whenever the layout of a cache folder changes (old folders are then ignored).
FORMAT_VERSION = 1
#: Rows decoded per task; the done-bitmap is saved once per chunk.
DEFAULT_CHUNK = 512
# Headers probed to choose a size when none is given: enough to see the common size.
_PROBE_SAMPLE = 256
_SCRATCH = "rows.npy"
_FINAL = "images.npy"
_DONE = "done.npy"
_INFO = "store.json"


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
        columns the metadata), or a list of image files.
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
    paths, labels, metadata = _inputs(data, labels)
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
    folder = Path(cache_dir if cache_dir is not None else default_cache_dir()).expanduser()
    folder = folder / store_key(paths, size, max_pixels)
    _ingest(folder, paths, size, max_pixels, executor, workers, int(chunk_size), progress, callback)
    info = json.loads((folder / _INFO).read_text())
    kept = np.asarray(info["kept"], dtype=np.intp)
    skipped = tuple((paths[i], reason) for i, reason in info["skipped"])
    if len(kept) == 0:
        raise ValueError(f"none of the {len(paths)} image files could be read; first: "
                         f"{skipped[0][0]}: {skipped[0][1]}")
    if skipped:
        warnings.warn(skipped_message(skipped, len(kept)), UserWarning, stacklevel=2)
    images = np.load(folder / _FINAL, mmap_mode="r")
    return ImageSet(
        images=images,
        labels=None if label_array is None else label_array[kept],
        paths=tuple(paths[i] for i in kept),
        metadata=None if metadata is None else metadata.iloc[kept],
        skipped=skipped,
    )


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


# ----------------------------------------------------------------------------- ingest

def _decode_chunk(scratch: str, start: int, paths: Sequence[str], size: tuple[int, int],
                  max_pixels: int | None) -> tuple[int, list[tuple[int, str]]]:
    """Decode ``paths`` into rows ``start...`` of the scratch array; (start, failures)."""
    rows = np.load(scratch, mmap_mode="r+")
    failures = []
    with pil_limits(max_pixels):
        for offset, path in enumerate(paths):
            decoded = decode(path, size, max_pixels)
            if isinstance(decoded, str):
                failures.append((start + offset, decoded))
            else:
                rows[start + offset] = decoded
    rows.flush()
    del rows
    return start, failures


def _save_atomic(path: Path, write: Callable[[Any], object], binary: bool = True) -> None:
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if binary else "w") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _ingest(folder: Path, paths: list[str], size: tuple[int, int], max_pixels: int | None,
            executor: str, workers: int | None, chunk: int, progress: bool,
            callback: Callable[[int, int], object] | None) -> None:
    if (folder / _INFO).exists() and (folder / _FINAL).exists():
        return  # built before from the same files: reuse
    folder.mkdir(parents=True, exist_ok=True)
    with _exclusive(folder / ".lock"):
        # Another process (a torchrun rank, a second notebook) may have built it meanwhile.
        if not (folder / _INFO).exists():
            _ingest_locked(folder, paths, size, max_pixels, executor, workers, chunk, progress,
                           callback)


@contextlib.contextmanager
def _exclusive(lock_path: Path):
    """Hold an exclusive lock on ``lock_path`` (POSIX ``flock``; elsewhere no lock)."""
    try:
        import fcntl
    except ImportError:  # Windows: one ingest at a time is the caller's business
        yield
        return
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _ingest_locked(folder: Path, paths: list[str], size: tuple[int, int], max_pixels: int | None,
                   executor: str, workers: int | None, chunk: int, progress: bool,
                   callback: Callable[[int, int], object] | None) -> None:
    n = len(paths)
    n_chunks = -(-n // chunk)
    scratch = folder / _SCRATCH
    done_path = folder / _DONE
    failures_path = folder / "failures.json"
    if scratch.exists() and done_path.exists():
        done = np.load(done_path)
        failures = {int(k): v for k, v in json.loads(failures_path.read_text()).items()} \
            if failures_path.exists() else {}
        if done.shape != (n_chunks,):
            done, failures = np.zeros(n_chunks, bool), {}
    else:
        np.lib.format.open_memmap(scratch, mode="w+", dtype=np.uint8, shape=(n, *size, 3)).flush()
        done, failures = np.zeros(n_chunks, bool), {}
        _save_atomic(done_path, lambda f: np.save(f, done))
    todo = [int(c) for c in np.flatnonzero(~done)]
    workers = max(1, int(workers or os.cpu_count() or 1))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, initial=n - sum(min(chunk, n - c * chunk) for c in todo),
                   desc="ingest", unit="img")
    pool_class = ThreadPoolExecutor if executor == "thread" else ProcessPoolExecutor
    rows_done = n - sum(min(chunk, n - c * chunk) for c in todo)
    pool = pool_class(max_workers=workers)
    try:
        pending: set[Future] = set()
        queue = list(reversed(todo))
        while queue or pending:
            while queue and len(pending) < 2 * workers:  # bounded: a few chunks in flight
                c = queue.pop()
                pending.add(pool.submit(_decode_chunk, str(scratch), c * chunk,
                                        paths[c * chunk:(c + 1) * chunk], size, max_pixels))
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                start, failed = future.result()
                failures.update(failed)
                done[start // chunk] = True
                # failures first: a chunk marked done must have its failures on disk
                _save_atomic(failures_path, lambda f: json.dump(failures, f), binary=False)
                _save_atomic(done_path, lambda f: np.save(f, done))
                count = min(chunk, n - start)
                rows_done += count
                if bar is not None:
                    bar.update(count)
                if callback is not None:
                    callback(rows_done, n)
    except BaseException:
        for future in pending:
            future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        if bar is not None:
            bar.close()
    pool.shutdown(wait=True)
    _finish(folder, n, size, failures)


def _finish(folder: Path, n: int, size: tuple[int, int], failures: dict[int, str]) -> None:
    scratch, final = folder / _SCRATCH, folder / _FINAL
    kept = [i for i in range(n) if i not in failures]
    if len(kept) == n:
        os.replace(scratch, final)
    else:
        rows = np.load(scratch, mmap_mode="r")
        tmp = folder / (_FINAL + ".tmp")
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(kept), *size, 3))
        index = np.asarray(kept, dtype=np.intp)
        for s in range(0, len(index), 4096):  # bounded memory: 4096 rows at a time
            out[s:s + 4096] = rows[index[s:s + 4096]]
        out.flush()
        del out, rows
        os.replace(tmp, final)
        os.unlink(scratch)
    info = {"format": FORMAT_VERSION, "n_files": n, "size": list(size), "kept": kept,
            "skipped": sorted([int(i), r] for i, r in failures.items())}
    _save_atomic(folder / _INFO, lambda f: json.dump(info, f), binary=False)
    for name in (_DONE, "failures.json"):
        with contextlib.suppress(OSError):
            os.unlink(folder / name)


def remove_store(image_set: ImageSet) -> None:
    """Delete the cache folder behind ``image_set`` (the set must not be used afterwards)."""
    folder = store_folder(image_set)
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)
