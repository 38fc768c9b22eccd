"""Replay buffer: memory bound, whole-run coverage, float16 storage, thread safety."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from tsimcne_widgets.render.replay import ReplayBuffer


def frame(k: int, n: int = 100) -> np.ndarray:
    return np.full((n, 2), float(k), dtype=np.float32)


def test_stores_float16_and_returns_float32_copies():
    buffer = ReplayBuffer()
    original = np.random.default_rng(0).normal(0, 30, (50, 2)).astype(np.float32)
    buffer.append(original, {"epoch": 1})
    original[:] = 0  # the buffer kept its own copy
    restored, info = buffer[0]
    assert restored.dtype == np.float32 and restored.shape == (50, 2)
    assert np.abs(restored).max() > 0
    assert info == {"epoch": 1}
    info["epoch"] = 99
    assert buffer.infos == [{"epoch": 1}]
    assert buffer.nbytes == 50 * 2 * 2
    assert len(buffer) == 1


def test_bound_respected_with_first_and_last_frames_kept():
    frame_bytes = 100 * 2 * 2
    buffer = ReplayBuffer(max_bytes=10 * frame_bytes)
    for k in range(500):
        buffer.append(frame(k), {"epoch": k})
        assert buffer.nbytes <= 10 * frame_bytes
        epochs = [info["epoch"] for info in buffer.infos]
        assert epochs[0] == 0 and epochs[-1] == k
        assert epochs == sorted(epochs)
        assert buffer[len(buffer) - 1][0][0, 0] == k
    epochs = [info["epoch"] for info in buffer.infos]
    assert len(epochs) >= 5
    # Thinning keeps the run covered: no gap is much wider than an even spread.
    assert max(np.diff(epochs)) <= 2 * 500 / (len(epochs) - 1) + 1


def test_tiny_budget_keeps_the_newest_frame():
    buffer = ReplayBuffer(max_bytes=int(1.5 * 400))
    for k in range(4):
        buffer.append(frame(k))
    assert len(buffer) == 1 and buffer[0][0][0, 0] == 3
    with pytest.raises(ValueError, match="raise max_bytes"):
        buffer.append(frame(0, n=1000))


def test_bad_input():
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        ReplayBuffer().append(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="positive"):
        ReplayBuffer(max_bytes=0)
    with pytest.raises(IndexError):
        ReplayBuffer()[0]


def test_concurrent_appends_and_reads():
    buffer = ReplayBuffer(max_bytes=20 * 400)
    failures = []

    def writer():
        for k in range(300):
            buffer.append(frame(k), {"epoch": k})

    def reader():
        for _ in range(300):
            count = len(buffer)
            if count:
                data, info = buffer[-1]
                if data.shape != (100, 2) or data[0, 0] != info["epoch"]:
                    failures.append(info)
            if buffer.nbytes > 20 * 400:
                failures.append("over budget")

    threads = [threading.Thread(target=writer), threading.Thread(target=reader)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures
    assert buffer.infos[0]["epoch"] == 0 and buffer.infos[-1]["epoch"] == 299
