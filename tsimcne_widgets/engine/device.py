"""Where training runs and how: device choice, CPU threads, OpenMP teams, memory layout."""

from __future__ import annotations

import ctypes
import os
import platform

import torch

__all__ = [
    "resolve_device",
    "mps_available",
    "available_cores",
    "set_cpu_threads",
    "release_idle_openmp_threads",
    "onednn_cpu_isa",
    "cpu_channel_block",
    "channels_last_is_safe",
    "choose_memory_layout",
    "MEASURED_FASTER_ISAS",
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


# oneDNN's CPU ISA names (the values ONEDNN_MAX_CPU_ISA takes), lowest first, with
# aliases folded in.  Only the order matters here: a cap lowers the ISA, never raises it.
_ISA_ORDER = (
    "sse41",
    "avx",
    "avx2",
    "avx2_vnni",
    "avx2_vnni_2",
    "avx512_core",
    "avx512_core_vnni",
    "avx512_core_bf16",
    "avx10_1_512",
    "avx10_1_512_amx",
    "avx10_1_512_amx_fp16",
)
_ISA_ALIASES = {
    "avx512_core_fp16": "avx10_1_512",
    "avx512_core_amx": "avx10_1_512_amx",
    "avx512_core_amx_fp16": "avx10_1_512_amx_fp16",
}
#: Channel block of oneDNN's fp32 x64 convolution kernels for each ISA family.  AMX
#: and anything newer are left out on purpose (see :func:`cpu_channel_block`).
_BLOCK_BY_ISA = {
    "sse41": 8, "avx": 8, "avx2": 8, "avx2_vnni": 8, "avx2_vnni_2": 8,
    "avx512_core": 16, "avx512_core_vnni": 16, "avx512_core_bf16": 16, "avx10_1_512": 16,
}
#: ISAs on which channels-last training was measured faster than contiguous
#: (benchmarks/memory_layout.py; benchmarks/results/memory-layout.md: 1.2-1.6x on a
#: 2-core AVX2 AMD EPYC for ResNet-10/18 of widths 8-64).  Add an ISA only with
#: figures from a CPU that runs it.
MEASURED_FASTER_ISAS = frozenset({"avx2", "avx2_vnni", "avx2_vnni_2"})


def _cpu_flags_from_proc() -> frozenset[str] | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def _isa_from_flags(flags: frozenset[str] | set[str]) -> str | None:
    if any(flag.startswith("amx") for flag in flags):
        return "avx10_1_512_amx"
    if {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= set(flags):
        if "avx512_fp16" in flags:
            return "avx10_1_512"
        if "avx512_bf16" in flags:
            return "avx512_core_bf16"
        if "avx512_vnni" in flags:
            return "avx512_core_vnni"
        return "avx512_core"
    if "avx512f" in flags:
        return None  # AVX-512 without the core subset (Xeon Phi): not classified
    if "avx2" in flags:
        return "avx2"
    if "avx" in flags:
        return "avx"
    if "sse4_1" in flags:
        return "sse41"
    return None


def _isa_from_torch_capability() -> str | None:
    # Used where /proc/cpuinfo is missing (macOS, Windows).  ATen's "AVX512" cannot
    # tell AMX apart, and an ATEN_CPU_CAPABILITY override says nothing about what
    # oneDNN will use: both are left unclassified.
    if os.environ.get("ATEN_CPU_CAPABILITY"):
        return None
    capability = str(torch.backends.cpu.get_cpu_capability()).upper()
    return {"AVX2": "avx2", "DEFAULT": None}.get(capability)


def onednn_cpu_isa(
    flags: set[str] | frozenset[str] | None = None,
    env: dict[str, str] | None = None,
    machine: str | None = None,
) -> str | None:
    """The instruction set oneDNN will use for convolutions on this x86 CPU.

    Parameters
    ----------
    flags : set of str, optional
        CPU feature flags as Linux spells them in ``/proc/cpuinfo`` (``avx2``,
        ``avx512f``, ``avx512_bf16``, ``amx_tile``, ...).  Default: read from
        ``/proc/cpuinfo``, or, where that file is missing, derived from
        ``torch.backends.cpu.get_cpu_capability()``.
    env : dict, optional
        Environment to read the ``ONEDNN_MAX_CPU_ISA`` / ``DNNL_MAX_CPU_ISA`` caps from
        (default ``os.environ``).  As in oneDNN, ``ONEDNN_`` wins over ``DNNL_``, values
        are case-insensitive, and ``ALL`` / ``DEFAULT`` mean no cap.
    machine : str, optional
        ``platform.machine()`` of the CPU (default: this one's).

    Returns
    -------
    str or None
        oneDNN's lower-case ISA name (``"avx2"``, ``"avx512_core_bf16"``, ...): the
        CPU's ISA, lowered to the cap when one is set.  None when it cannot be told:
        a CPU that is not x86-64, or one whose flags this function does not know.

    Notes
    -----
    oneDNN reads the cap once, at its first use in the process; a cap set later in
    ``os.environ`` changes this answer but not oneDNN's.
    """
    machine = (platform.machine() if machine is None else machine).lower()
    if machine not in ("x86_64", "amd64", "x86", "i386", "i686"):
        return None
    if flags is None:
        flags = _cpu_flags_from_proc()
        isa = _isa_from_flags(flags) if flags is not None else _isa_from_torch_capability()
    else:
        isa = _isa_from_flags(frozenset(flags))
    if isa is None:
        return None
    env = os.environ if env is None else env
    cap = (env.get("ONEDNN_MAX_CPU_ISA") or env.get("DNNL_MAX_CPU_ISA") or "").strip().lower()
    cap = _ISA_ALIASES.get(cap, cap)
    if cap in ("", "all", "default") or cap not in _ISA_ORDER:
        # An unknown cap is a name newer than this table, i.e. above every ISA in it,
        # or a typo oneDNN ignores: either way the CPU's own ISA applies.
        return isa
    return min(isa, cap, key=_ISA_ORDER.index)


def cpu_channel_block(
    flags: set[str] | frozenset[str] | None = None,
    env: dict[str, str] | None = None,
    machine: str | None = None,
) -> int | None:
    """Channel block of oneDNN's fp32 convolutions on this CPU, or None if unknown.

    8 for AVX2 and below (8 floats per 256-bit register), 16 for AVX-512 (16 per
    512-bit register), after the ``ONEDNN_MAX_CPU_ISA`` / ``DNNL_MAX_CPU_ISA`` caps
    (see :func:`onednn_cpu_isa`, whose parameters these are).

    Returns
    -------
    int or None
        None for AMX CPUs (fp32 training there has not been seen to pick which
        kernels, so the block is not known), AVX-512 without the core subset, unknown
        x86 CPUs and non-x86 CPUs (ARM/aarch64, where oneDNN's x64 kernels and their
        blocks do not apply).  None means "do not rely on any block".
    """
    isa = onednn_cpu_isa(flags, env, machine)
    return None if isa is None else _BLOCK_BY_ISA.get(isa)


def channels_last_is_safe(
    model: torch.nn.Module,
    flags: set[str] | frozenset[str] | None = None,
    env: dict[str, str] | None = None,
    machine: str | None = None,
) -> bool:
    """Whether training ``model`` in channels-last memory on this CPU is known safe.

    oneDNN's backward pass of a channels-last (nhwc) strided 1x1 convolution with
    fewer input channels than the ISA's channel block writes past its workspace
    (uxlfoundation/oneDNN#6035, open): a segfault with one thread, a hang or silently
    wrong weight gradients with several.  Safe here means every strided convolution
    of ``model`` has a whole number of channel blocks as input (8 on AVX2, 16 on
    AVX-512, from :func:`cpu_channel_block`).  Only ``in_channels < block`` is
    reported broken; odd multiples (e.g. 24 on AVX-512) are refused too because
    their tail goes through the same untested path.  Every strided convolution is
    checked, not only 1x1 ones, for the same reason.

    Parameters
    ----------
    model : torch.nn.Module
        The network to train.
    flags, env, machine
        As for :func:`onednn_cpu_isa`; default: this machine and environment.

    Returns
    -------
    bool
        False whenever the channel block is unknown (AMX, unknown x86, ARM).
    """
    block = cpu_channel_block(flags, env, machine)
    if block is None:
        return False
    return all(
        m.in_channels % block == 0
        for m in model.modules()
        if isinstance(m, torch.nn.Conv2d) and max(m.stride) > 1
    )


def choose_memory_layout(
    model: torch.nn.Module,
    device: torch.device | str,
    flags: set[str] | frozenset[str] | None = None,
    env: dict[str, str] | None = None,
    machine: str | None = None,
) -> bool:
    """Whether to train ``model`` on ``device`` in channels-last memory.

    The rule: on CUDA and MPS, always (faster there, and oneDNN is not involved).  On
    the CPU, only where it is both safe and measured to be faster:

    * safe: :func:`channels_last_is_safe` (every strided convolution gets a whole
      number of oneDNN channel blocks, 8 on AVX2, 16 on AVX-512), and
    * measured: the ISA oneDNN uses (:func:`onednn_cpu_isa`, after the
      ``ONEDNN_MAX_CPU_ISA`` cap) is in ``MEASURED_FASTER_ISAS``.  So far that is the
      AVX2 family, where ``benchmarks/memory_layout.py`` measured channels-last
      1.2-1.6x faster for every planner network, ResNet-10 width 8 included.
      AVX-512, AMX and unknown x86 CPUs train contiguous until measured.

    ARM/aarch64 (and every other non-x86 CPU) trains contiguous: channels-last was
    never measured there, oneDNN's x64 blocks do not apply, and contiguous is the
    layout the rest of the test suite checks.

    Parameters
    ----------
    model : torch.nn.Module
        The network to train.
    device : torch.device or str
        Where it trains.
    flags, env, machine
        As for :func:`onednn_cpu_isa`; default: this machine and environment.

    Returns
    -------
    bool
        True for channels-last, False for contiguous (NCHW) memory.
    """
    if torch.device(device).type in ("cuda", "mps"):
        return True
    if onednn_cpu_isa(flags, env, machine) not in MEASURED_FASTER_ISAS:
        return False
    return channels_last_is_safe(model, flags, env, machine)
