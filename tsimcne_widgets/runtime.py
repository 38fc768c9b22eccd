"""Device choice, tensor conversion and map helpers shared by the trainer, estimator and budget."""

from __future__ import annotations

import ctypes
import os
import zlib

import numpy as np
import torch

__all__ = [
    "resolve_device",
    "mps_available",
    "available_cores",
    "images_to_tensor",
    "data_fingerprint",
    "pca_2d",
    "set_cpu_threads",
    "release_idle_openmp_threads",
    "has_narrow_strided_conv",
]


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Turn ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"`` into a usable device.

    ``"auto"`` picks CUDA, then Apple's MPS, then the CPU.

    Raises
    ------
    ValueError
        For a device this machine lacks or an unknown name; the message names the
        devices that work here.
    """
    if device is None or (isinstance(device, str) and device.strip().lower() == "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device.strip().lower() if isinstance(device, str) else device)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"unknown device {device!r}; use 'auto', 'cpu', 'cuda', 'cuda:<index>' or 'mps'"
        ) from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device={device!r} but CUDA is not available on this machine (or this torch "
                "build has no CUDA support); use device='auto' or device='cpu'"
            )
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(
                f"device={device!r} but only {torch.cuda.device_count()} CUDA device(s) exist"
            )
    elif resolved.type == "mps" and not mps_available():
        raise ValueError(f"device={device!r} but MPS is not available; use device='auto' or 'cpu'")
    elif resolved.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unsupported device {device!r}; use 'auto', 'cpu', 'cuda' or 'mps'")
    return resolved


def mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def images_to_tensor(images) -> torch.Tensor:
    """uint8 ``(N, 3, H, W)`` CPU tensor from an ImageSet, NHWC uint8 array or NCHW tensor."""
    images = getattr(images, "images", images)
    if isinstance(images, torch.Tensor):
        tensor = images.detach().cpu()
        if tensor.ndim == 4 and tensor.shape[1] != 3 and tensor.shape[-1] == 3:
            tensor = tensor.permute(0, 3, 1, 2)
    else:
        array = np.asarray(images)
        if array.ndim != 4 or array.shape[-1] != 3:
            raise ValueError(
                f"expected uint8 (N, H, W, 3) images, got shape {array.shape}; "
                "convert them with tsimcne_widgets.load_images"
            )
        # A copy: ImageSet arrays are read-only and torch wants writable memory.
        tensor = torch.from_numpy(np.array(array, copy=True, order="C")).permute(0, 3, 1, 2)
    if tensor.dtype != torch.uint8 or tensor.ndim != 4 or tensor.shape[1] != 3:
        raise ValueError(
            f"expected uint8 RGB images, got {tensor.dtype} with shape {tuple(tensor.shape)}; "
            "convert them with tsimcne_widgets.load_images"
        )
    return tensor.contiguous()


def data_fingerprint(images: torch.Tensor) -> int:
    """A cheap checksum of a strided sample of the images (to match checkpoints to data)."""
    stride = max(1, images.shape[0] // 64)
    return zlib.crc32(images[::stride].numpy().tobytes())


def pca_2d(output: torch.Tensor, previous: np.ndarray | None = None) -> np.ndarray:
    """First two principal components of ``(N, D)`` outputs as float32.

    Each axis's sign is chosen to agree with ``previous`` (the last frame), so the
    provisional map does not flip between frames.  Outputs narrower than 2 are padded.
    """
    z = output.detach().to(torch.float64)
    z = z - z.mean(dim=0, keepdim=True)
    if z.shape[1] <= 2:
        xy = torch.nn.functional.pad(z, (0, 2 - z.shape[1]))
    else:
        # eigh of the D x D covariance: cheaper than an SVD of N x D and free of the
        # global RNG that torch.pca_lowrank would consume.
        _, vectors = torch.linalg.eigh(z.T @ z)
        xy = z @ vectors[:, -2:].flip(1)
    xy = xy.cpu().numpy().astype(np.float32)
    if previous is not None and previous.shape == xy.shape:
        signs = np.where((xy * previous).sum(axis=0) < 0, -1.0, 1.0).astype(np.float32)
        xy *= signs
    return xy


def set_cpu_threads(num_threads: int | None) -> None:
    """Set torch's CPU threads: ``num_threads``, or all available cores when None,
    unless the ``OMP_NUM_THREADS`` environment variable already chose."""
    if num_threads is None:
        if os.environ.get("OMP_NUM_THREADS"):
            return  # the user already chose; torch applied it at start-up
        num_threads = available_cores()
    if int(num_threads) < 1:
        raise ValueError(f"num_threads must be a positive int, got {num_threads!r}")
    if torch.get_num_threads() != int(num_threads):
        torch.set_num_threads(int(num_threads))


def _loaded_libgomps() -> list[ctypes.CDLL]:
    """Every GNU OpenMP runtime in this process (torch's, and e.g. scikit-learn's copy)."""
    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            paths = {line.split()[-1] for line in maps if "libgomp" in line}
    except OSError:
        return []
    libraries = []
    for path in sorted(paths):
        try:
            library = ctypes.CDLL(path)  # already loaded: the same handle, nothing new runs
        except OSError:
            continue
        if hasattr(library, "omp_pause_resource_all"):
            library.omp_pause_resource_all.argtypes = [ctypes.c_int]
            libraries.append(library)
    return libraries


def release_idle_openmp_threads() -> bool:
    """Free the calling thread's idle OpenMP worker threads before training elsewhere.

    Each thread that runs parallel torch code keeps its own GNU OpenMP team.  When the
    teams together hold more threads than there are cores (the kernel's main thread
    ran torch once, a training thread now runs it on all cores), libgomp cuts its
    workers' spin-wait from ~300,000 to 100 spins, so they sleep and wake around every
    parallel region: on 2 cores, thousands of context switches a second and a training
    thread 5-20 % slower.  Call this on the thread that is about to hand training to another
    one; its team is rebuilt if it runs parallel torch code again.

    Returns
    -------
    bool
        Whether a runtime accepted the release (False without GNU OpenMP, e.g. on
        macOS).
    """
    # Each copy of libgomp keeps its own teams, and which copy torch uses is not
    # recorded anywhere public (scikit-learn ships another): release them all.
    # omp_pause_soft (1) frees only the calling thread's idle team and does nothing
    # inside a parallel region, so it cannot disturb work in progress.
    results = [library.omp_pause_resource_all(1) == 0 for library in _loaded_libgomps()]
    return any(results)


def has_narrow_strided_conv(model: torch.nn.Module) -> bool:
    """Whether ``model`` has a strided convolution with fewer than 8 input channels."""
    # torch 2.14's CPU backward of a channels-last strided convolution with fewer than
    # 8 input channels corrupts the heap when running single-threaded; such tiny
    # networks stay contiguous on the CPU.
    return any(
        isinstance(m, torch.nn.Conv2d) and max(m.stride) > 1 and m.in_channels < 8
        for m in model.modules()
    )
