"""Watch a training run elsewhere through a shared folder of snapshots.

The training job (``python -m tsimcne_widgets train DIR --out OUT --snapshots SNAPS``,
on a GPU node) hands every map to a :class:`SnapshotWriter`, which writes it into
SNAPS as ``frame-NNNNNNNN.npy`` (the map, float16: 4 bytes a point) plus
``frame-NNNNNNNN.json`` (stage, epochs, loss, progress, state).  Each file is written
to a temporary name and renamed, and the JSON goes last, so a reader that sees the
JSON finds a whole frame.  Like the widget's replay buffer, the folder is bounded:
past ``max_frames`` every other older frame is deleted (first and newest kept).

In the notebook, :meth:`Explorer.watch <tsimcne_widgets.widget.explorer.Explorer.watch>`
puts a :class:`WatchedSession` where a local run's session would be: a thread polls
SNAPS and hands each new frame to the same path a local snapshot takes (the replay
buffer, then the scheduler that redraws on the kernel's event loop), so progress,
replay, hover, lasso, tags and export work as during a local run, during the run and
after it.  Only the folder is shared (NFS, a synced disk).
"""
from __future__ import annotations

import json
import math
import os
import re
import tempfile
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from .session import TrainingSession

__all__ = ["SnapshotWriter", "WatchedSession", "read_frames"]

_FRAME = re.compile(r"^frame-(\d{8})\.json$")
_FIELDS = ("stage", "epoch", "epochs_in_stage", "total_epoch", "total_epochs", "step", "loss",
           "learning_rate", "images_per_second", "elapsed", "eta", "provisional", "state")
_FINAL_STATES = ("finished", "stopped", "failed")


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix="." + path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


class SnapshotWriter:
    """A trainer callback that writes every snapshot's map into ``folder``.

    Parameters
    ----------
    folder : str or path-like
        Created if needed; frames of an earlier run in it are removed.
    max_frames : int
        Most frames kept in the folder (at least 2).

    Notes
    -----
    Returns None (never asks the run to stop).  Write errors (a full disk) propagate
    and fail the run, as any callback's do, rather than leave the watcher with a
    silently frozen map.
    """

    def __init__(self, folder: str | os.PathLike, max_frames: int = 256) -> None:
        if int(max_frames) < 2:
            raise ValueError(f"max_frames must be at least 2, got {max_frames!r}")
        self.folder = Path(folder)
        self.max_frames = int(max_frames)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ValueError(f"cannot create the snapshot folder {str(self.folder)!r}: "
                             f"{exc.strerror}") from None
        for name in os.listdir(self.folder):
            if name.startswith("frame-"):
                (self.folder / name).unlink(missing_ok=True)
        self._kept: list[int] = []
        self._next = 0
        self._stride = 1

    def __call__(self, snapshot) -> None:
        sequence = self._next
        self._next += 1
        stem = self.folder / f"frame-{sequence:08d}"
        xy = np.ascontiguousarray(snapshot.embedding, dtype=np.float16)
        meta = {name: _plain(getattr(snapshot, name)) for name in _FIELDS}
        meta["losses"] = [_plain(x) for x in snapshot.losses]
        meta["n"] = int(xy.shape[0])
        meta["sequence"] = sequence
        with tempfile.SpooledTemporaryFile() as buffer:
            np.save(buffer, xy)
            buffer.seek(0)
            _write_atomic(stem.with_suffix(".npy"), buffer.read())
        _write_atomic(stem.with_suffix(".json"), json.dumps(meta).encode())
        # The previous newest frame was kept only for being the newest.
        if len(self._kept) > 1 and self._kept[-1] % self._stride:
            self._remove(self._kept.pop())
        self._kept.append(sequence)
        while len(self._kept) > self.max_frames:
            self._stride *= 2
            keep = [s for i, s in enumerate(self._kept)
                    if i in (0, len(self._kept) - 1) or s % self._stride == 0]
            for s in set(self._kept) - set(keep):
                self._remove(s)
            self._kept = keep

    def _remove(self, sequence: int) -> None:
        stem = self.folder / f"frame-{sequence:08d}"
        stem.with_suffix(".json").unlink(missing_ok=True)  # first: a reader never sees half
        stem.with_suffix(".npy").unlink(missing_ok=True)


def _plain(value: Any) -> Any:
    if isinstance(value, (np.generic,)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def read_frames(folder: str | os.PathLike, after: int = -1) -> list[SimpleNamespace]:
    """The whole frames in ``folder`` newer than sequence number ``after``, oldest first.

    Each is a record with the fields of a
    :class:`~tsimcne_widgets.engine.events.Snapshot` (``embedding`` read-only float32)
    plus ``sequence``.  Frames deleted while being read are left out.
    """
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    sequences = sorted(int(m.group(1)) for m in map(_FRAME.match, names) if m)
    frames = []
    for sequence in (s for s in sequences if s > after):
        stem = Path(folder) / f"frame-{sequence:08d}"
        try:
            meta = json.loads(stem.with_suffix(".json").read_text())
            xy = np.load(stem.with_suffix(".npy")).astype(np.float32)
        except (FileNotFoundError, ValueError, OSError):
            continue  # thinned out by the writer meanwhile
        xy.flags.writeable = False
        meta["loss"] = float("nan") if meta.get("loss") is None else meta["loss"]
        meta["losses"] = tuple(float("nan") if x is None else x for x in meta.get("losses", ()))
        meta.pop("n", None)
        frames.append(SimpleNamespace(embedding=xy, **meta))
    return frames


class WatchedSession(TrainingSession):
    """A :class:`~tsimcne_widgets.widget.session.TrainingSession` fed from a snapshot folder.

    Parameters
    ----------
    folder : str or path-like
        Where the run's :class:`SnapshotWriter` writes (it may not exist yet).
    image_set : ImageSet
        The images the run trains on, in the same order.
    replay : ReplayBuffer
        Every frame read is appended here.
    interval : float
        Seconds between two looks at the folder.

    Notes
    -----
    Training itself is controlled where it runs: start, pause and resume raise here;
    :meth:`stop` stops watching (the run goes on).
    """

    def __init__(self, folder: str | os.PathLike, image_set, replay, interval: float = 0.5) -> None:
        super().__init__(image_set, {}, replay)
        self.folder = Path(folder)
        self.interval = float(interval)
        self._seen = -1
        self._watch_state = "starting"
        self._halt = threading.Event()
        self._watcher: threading.Thread | None = None

    def begin(self) -> "WatchedSession":
        """Start the polling thread."""
        self.replay.clear()
        with self._lock:
            self._generation += 1  # a run of its own, announced once at its end
        self._watcher = threading.Thread(target=self._poll, name="tsimcne-watch", daemon=True)
        self._watcher.start()
        return self

    def _poll(self) -> None:
        while not self._halt.is_set():
            try:
                if self._read_new():
                    return
            except Exception as error:  # noqa: BLE001 - shown in the widget
                self.error = error
                self._finish("failed")
                return
            self._halt.wait(self.interval)

    def _read_new(self) -> bool:
        """Hand new frames on; True once the run's final frame was read."""
        frames = read_frames(self.folder, self._seen)
        for frame in frames:
            if frame.embedding.shape[0] != len(self.image_set):
                raise ValueError(
                    f"the run in {self.folder} maps {frame.embedding.shape[0]} images but this "
                    f"explorer has {len(self.image_set)}; watch with the same images, in the "
                    "same order, as the run trains on")
            self._seen = frame.sequence
            with self._lock:
                self._watch_state = frame.state
                generation = self._generation
            self._receive(generation, frame)
        if frames and frames[-1].state in _FINAL_STATES:
            self._finish(frames[-1].state)
            return True
        return False

    def _finish(self, state: str) -> None:
        with self._lock:
            self._watch_state = state
            self._phase = "done"
        self._notify()

    @property
    def state(self) -> str:
        """The state in the newest frame (``"starting"`` before the first)."""
        with self._lock:
            return self._watch_state

    @property
    def device_name(self) -> str:
        """str : Where training runs, as far as this kernel knows."""
        return f"a run writing to {self.folder}"

    def _refuse(self, *args, **kwargs) -> None:
        raise RuntimeError(f"this explorer watches a run that writes to {self.folder}; start, "
                           "pause and resume it where it runs")

    start = pause = resume = continue_run = unpause = _refuse

    def stop(self) -> None:
        """Stop watching; the run itself goes on."""
        self._halt.set()
        if self.state not in _FINAL_STATES:
            self._finish("stopped")

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the run's final frame was read (or ``timeout`` s); True if it was."""
        watcher = self._watcher
        if watcher is None:
            return True
        watcher.join(timeout)
        return not watcher.is_alive()
