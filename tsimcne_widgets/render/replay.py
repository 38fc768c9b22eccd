"""Bounded history of maps for replaying a training run."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

__all__ = ["ReplayBuffer"]


class ReplayBuffer:
    """Memory-bounded list of (N, 2) maps with their info dicts.

    Frames are stored at reduced precision.  When the next frame would push
    the stored bytes past ``max_bytes``, every other stored frame is dropped
    (the first and the last are always kept) and from then on only every
    other incoming frame is kept for good, so the buffer keeps covering the
    whole run evenly, at a coarser time resolution, instead of forgetting its
    beginning.

    Parameters
    ----------
    max_bytes : int, default 256 MB
        Upper bound on :attr:`nbytes`.
    dtype : numpy dtype, default float16
        Storage precision.  float16 keeps ~3 significant digits, far finer
        than a pixel of a rendered map.

    Attributes
    ----------
    stride : int
        Appends between two kept frames (1 until the first thinning, then
        doubling at each); the newest frame is kept whatever its position.

    Notes
    -----
    All methods are safe to call from the trainer's thread and the kernel's
    event loop at the same time.  If two frames do not fit in ``max_bytes``,
    only the newest frame is kept.
    """

    def __init__(self, max_bytes: int = 256 * 1024 * 1024, dtype=np.float16) -> None:
        if not max_bytes > 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes!r}")
        self.max_bytes = int(max_bytes)
        self.dtype = np.dtype(dtype)
        if self.dtype.kind != "f":
            raise ValueError(f"dtype must be a floating-point type, got {self.dtype}")
        self._lock = threading.Lock()
        self.clear()

    def append(self, frame, info: dict[str, Any] | None = None) -> None:
        """Store a copy of ``frame`` (shape (N, 2)) with its ``info`` dict.

        Raises
        ------
        ValueError
            If ``frame`` is not (N, 2) or alone exceeds ``max_bytes``
            (raise ``max_bytes``).
        """
        stored = np.array(frame, dtype=self.dtype, copy=True)
        if stored.ndim != 2 or stored.shape[1] != 2:
            raise ValueError(f"frame must be an (N, 2) map, got shape {stored.shape}")
        if stored.nbytes > self.max_bytes:
            raise ValueError(
                f"one frame needs {stored.nbytes} bytes but max_bytes is {self.max_bytes}; "
                "raise max_bytes"
            )
        stored.flags.writeable = False
        info = dict(info or {})
        with self._lock:
            sequence = self._appended
            self._appended += 1
            # The previous newest frame was only kept for being the newest.
            if len(self._sequence) > 1 and self._sequence[-1] % self.stride != 0:
                self._keep_locked(list(range(len(self._sequence) - 1)))
            self._frames.append(stored)
            self._infos.append(info)
            self._sequence.append(sequence)
            self._nbytes += stored.nbytes
            while self._nbytes > self.max_bytes:
                self._thin_locked()

    def _keep_locked(self, keep: list[int]) -> None:
        self._frames = [self._frames[k] for k in keep]
        self._infos = [self._infos[k] for k in keep]
        self._sequence = [self._sequence[k] for k in keep]
        self._nbytes = sum(frame.nbytes for frame in self._frames)

    def _thin_locked(self) -> None:
        count = len(self._frames)
        if count <= 2:
            # Nothing left to thin while keeping both ends: make room for the newest.
            self._keep_locked([count - 1])
            return
        self.stride *= 2
        newest = count - 1
        self._keep_locked(
            [k for k in range(count) if k in (0, newest) or self._sequence[k] % self.stride == 0]
        )

    def clear(self) -> None:
        """Forget every frame and start a new run (stride back to 1)."""
        with self._lock:
            self._frames: list[np.ndarray] = []
            self._infos: list[dict[str, Any]] = []
            self._sequence: list[int] = []
            self._nbytes = 0
            self._appended = 0
            self.stride = 1

    def __len__(self) -> int:
        with self._lock:
            return len(self._frames)

    def __getitem__(self, k: int) -> tuple[np.ndarray, dict[str, Any]]:
        """Frame ``k`` as a fresh float32 (N, 2) array, and a copy of its info."""
        with self._lock:
            frame, info = self._frames[k], self._infos[k]
        return frame.astype(np.float32), dict(info)

    @property
    def infos(self) -> list[dict[str, Any]]:
        """list of dict : Copies of the info of every stored frame, oldest first."""
        with self._lock:
            return [dict(info) for info in self._infos]

    @property
    def nbytes(self) -> int:
        """int : Bytes held by the stored frames."""
        with self._lock:
            return self._nbytes
