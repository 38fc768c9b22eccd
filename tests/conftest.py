"""Shared fixtures: small real image files written with PIL, and a seeded RNG."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def write_image(path: Path, size: tuple[int, int] = (16, 16), *, mode: str = "RGB",
                color: tuple[int, int, int] | None = None, seed: int = 0) -> Path:
    """Write a real image file (format from the suffix) of ``size`` (height, width).

    With ``color`` the image is one solid colour, else random noise from ``seed``.
    """
    h, w = size
    rng = np.random.default_rng(seed)
    rgb = (np.broadcast_to(np.asarray(color, np.uint8), (h, w, 3)) if color is not None
           else rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    image = Image.fromarray(np.ascontiguousarray(rgb))
    if mode != "RGB":
        image = image.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def image_writer():
    """The :func:`write_image` helper, for tests that build their own folders."""
    return write_image


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """A nested folder: ``cat/`` and ``dog/``, three 16x16 images each, PNG and JPEG mixed."""
    root = tmp_path / "images"
    for k, label in enumerate(("cat", "dog")):
        for i in range(3):
            suffix = ".png" if i % 2 == 0 else ".jpg"
            write_image(root / label / f"{i:02d}{suffix}", seed=10 * k + i)
    return root


@pytest.fixture
def one_core():
    """Train on one core: on a shared, busy machine two OpenMP threads thrash."""
    if not hasattr(os, "sched_setaffinity"):
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(before)})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


@pytest.fixture
def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for gloo process groups)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
