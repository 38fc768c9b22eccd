"""Helpers shared by the benchmark scripts: hardware description, data, result files.

Kept out of the package on purpose: the benchmarks may call ``lscpu`` and
``nvidia-smi`` and read the CIFAR-10 archive, none of which the library needs.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
if str(REPO_ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(REPO_ROOT))


def load_average() -> str:
    """The 1, 5 and 15-minute load averages as text (``"n/a"`` where unknown)."""
    try:
        return "{:.2f} / {:.2f} / {:.2f}".format(*os.getloadavg())
    except (AttributeError, OSError):
        return "n/a"


def cpu_model() -> str:
    """CPU model name from ``lscpu`` (falls back to :func:`platform.processor`)."""
    if shutil.which("lscpu"):
        try:
            text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
            for line in text.splitlines():
                if line.strip().lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine()


def gpu_model() -> str | None:
    """``nvidia-smi`` name, memory and driver of the first GPU, or None."""
    if not shutil.which("nvidia-smi"):
        return None
    try:
        text = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return text.splitlines()[0] if text else None


def hardware_lines(device) -> list[str]:
    """Markdown bullet lines naming the machine, torch and the current load."""
    import torch

    from tsimcne_widgets.engine.device import available_cores

    lines = [
        f"- CPU: {cpu_model()}, {available_cores()} cores available "
        f"(torch threads {torch.get_num_threads()})",
        f"- torch {torch.__version__}, Python {platform.python_version()}, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}",
    ]
    if str(device).startswith("cuda"):
        lines.append(f"- GPU (nvidia-smi): {gpu_model() or torch.cuda.get_device_name()}")
    elif str(device).startswith("mps"):
        lines.append("- GPU: Apple MPS")
    lines.append(f"- load average (1/5/15 min) at start: {load_average()}")
    lines.append(f"- date: {time.strftime('%Y-%m-%d %H:%M %Z')}")
    return lines


def cifar10_images(subset: str = "test", limit: int | None = None, seed: int = 0):
    """CIFAR-10 from the team archive as an ImageSet, or None when the data is absent.

    Parameters
    ----------
    subset : {"test", "train", "all"}
        The 10k test images, the 50k training images, or all 60k.
    limit : int, optional
        Keep a stratification-free random subset of this many images.
    seed : int
        Seed of that subset.
    """
    from tsimcne_widgets.data.load import ImageSet, load_images
    from tsimcne_widgets.data.datasets import cifar10_folder

    if subset not in ("test", "train", "all"):
        raise ValueError(f"subset must be 'test', 'train' or 'all', got {subset!r}")
    folder = cifar10_folder()
    if folder is None:
        return None
    parts = ["train", "test"] if subset == "all" else [subset]
    sets = [load_images(str(folder / part)) for part in parts]
    images = np.concatenate([s.images for s in sets])
    labels = np.concatenate([s.labels for s in sets])
    if limit is not None and limit < len(images):
        keep = np.sort(np.random.default_rng(seed).permutation(len(images))[:limit])
        images, labels = images[keep], labels[keep]
    return ImageSet(images=images, labels=labels, paths=None, metadata=None, skipped=())


def random_images(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    """``(n, size, size, 3)`` uniform random uint8 images."""
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def write_result(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (a temporary file, then a rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path
