"""Decoding files into an image store's memory map: parallel, chunked, resumable.

:func:`ingest` fills ``images.npy`` in a store folder (see
:mod:`tsimcne_widgets.data.store`): a pool of workers (threads by default: PIL releases
the GIL while it decodes and resizes, so threads scale without pickling pixels;
processes are offered too) writes rows straight into a scratch memory map, chunk by
chunk.  After each chunk a done-bitmap is replaced atomically, so an interrupted ingest
resumes with the chunks still missing.  Unreadable files are skipped and recorded.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from pathlib import Path

import numpy as np

from tsimcne_widgets.io.atomic import atomic_write_bytes

from .files import decode, pil_limits

__all__ = ["ingest", "FORMAT_VERSION", "DEFAULT_CHUNK", "IMAGES", "INFO"]

#: Bumped whenever the layout of a cache folder changes (old folders are then ignored).
FORMAT_VERSION = 1
#: Rows decoded per task; the done-bitmap is saved once per chunk.
DEFAULT_CHUNK = 512
#: The finished array and the record that marks a store folder complete.
IMAGES = "images.npy"
INFO = "store.json"
_SCRATCH = "rows.npy"
_DONE = "done.npy"
_FAILURES = "failures.json"


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


def _save_array(path: Path, array: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, array)
    atomic_write_bytes(path, buffer.getvalue(), overwrite=True)


def _save_json(path: Path, value) -> None:
    atomic_write_bytes(path, json.dumps(value).encode(), overwrite=True)


def ingest(folder: Path, paths: list[str], size: tuple[int, int], max_pixels: int | None,
            executor: str, workers: int | None, chunk: int, progress: bool,
            callback: Callable[[int, int], object] | None) -> None:
    """Decode ``paths`` into ``folder/images.npy`` unless a finished store is there.

    Takes an exclusive lock on the folder (another process, e.g. a torchrun rank, may
    be ingesting the same files); resumes an interrupted ingest; on completion writes
    ``store.json`` (``kept`` indices, ``skipped`` ``[index, reason]`` pairs).  A
    ``callback(rows_done, rows_total)`` after each chunk may raise to interrupt.
    """
    if (folder / INFO).exists() and (folder / IMAGES).exists():
        return  # built before from the same files: reuse
    folder.mkdir(parents=True, exist_ok=True)
    with _exclusive(folder / ".lock"):
        # Another process (a torchrun rank, a second notebook) may have built it meanwhile.
        if not (folder / INFO).exists():
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
    failures_path = folder / _FAILURES
    if scratch.exists() and done_path.exists():
        done = np.load(done_path)
        failures = {int(k): v for k, v in json.loads(failures_path.read_text()).items()} \
            if failures_path.exists() else {}
        if done.shape != (n_chunks,):
            done, failures = np.zeros(n_chunks, bool), {}
    else:
        np.lib.format.open_memmap(scratch, mode="w+", dtype=np.uint8, shape=(n, *size, 3)).flush()
        done, failures = np.zeros(n_chunks, bool), {}
        _save_array(done_path, done)
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
                _save_json(failures_path, failures)
                _save_array(done_path, done)
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
    scratch, final = folder / _SCRATCH, folder / IMAGES
    kept = [i for i in range(n) if i not in failures]
    if len(kept) == n:
        os.replace(scratch, final)
    else:
        rows = np.load(scratch, mmap_mode="r")
        tmp = folder / (IMAGES + ".tmp")
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
    _save_json(folder / INFO, info)
    for name in (_DONE, _FAILURES):
        with contextlib.suppress(OSError):
            os.unlink(folder / name)


