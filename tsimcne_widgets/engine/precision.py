"""Which precision to train in: bf16 autocast where the hardware computes it fast.

On CUDA and MPS the backbone has always trained under bf16 autocast.  On a CPU, bf16
is fast only where oneDNN has bf16 instructions to use: AVX-512 with ``avx512_bf16``
(AMD Zen 4 and later, Intel Cooper Lake) or AMX (Intel Sapphire Rapids and later).
A 2-core AMD EPYC with avx512_bf16 ran a 2048² matrix product at 221 bf16 vs 100
fp32 GFLOP/s and a channels-last ResNet-18 (width 64, 32 px, batch 64) training step
2.19x faster under ``torch.autocast("cpu", torch.bfloat16)`` (issue 13).  Elsewhere
(AVX2, older AVX-512, ARM) torch emulates bf16 in fp32 arithmetic plus conversions:
correct but slower, so those CPUs train in fp32.

The map never leaves float32: autocast covers only the backbone, the head and the
Cauchy loss run in float32 (:func:`~tsimcne_widgets.engine.inference.project`), as on
accelerators.  A capable CPU is necessary but not sufficient: small networks on small
images are bound by per-layer overheads and gain nothing (ResNet-18 width 16 at 16
px: 1,431 vs 1,413 images/s), so the planner times both precisions for its choice
(:func:`faster_precision`) and trains in the faster.
"""

from __future__ import annotations

from typing import Callable

import torch

from .device import onednn_cpu_isa

__all__ = ["BF16_CPU_ISAS", "cpu_has_fast_bf16", "default_mixed_precision", "faster_precision"]

#: oneDNN ISAs (after the ``ONEDNN_MAX_CPU_ISA`` cap) that compute bf16 natively.
BF16_CPU_ISAS = frozenset({
    "avx512_core_bf16", "avx10_1_512", "avx10_1_512_amx", "avx10_1_512_amx_fp16",
})


def cpu_has_fast_bf16(
    flags: set[str] | frozenset[str] | None = None,
    env: dict[str, str] | None = None,
    machine: str | None = None,
) -> bool:
    """Whether oneDNN on this CPU computes bf16 with native instructions.

    Parameters
    ----------
    flags, env, machine
        As for :func:`~tsimcne_widgets.engine.device.onednn_cpu_isa` (CPU flags as in
        ``/proc/cpuinfo``, the environment with the ``ONEDNN_MAX_CPU_ISA`` cap, and
        ``platform.machine()``); default: this machine.

    Returns
    -------
    bool
        True for avx512_bf16 and AMX CPUs whose ISA is not capped below them; False
        for AVX2 and plain AVX-512, non-x86 CPUs and CPUs that cannot be told.

    Examples
    --------
    >>> cpu_has_fast_bf16({"avx", "avx2", "fma"}, env={}, machine="x86_64")
    False
    >>> cpu_has_fast_bf16({"avx2", "avx512f", "avx512bw", "avx512vl", "avx512dq",
    ...                    "avx512_bf16"}, env={}, machine="x86_64")
    True
    """
    if flags is not None and "avx512f" in flags and "avx512_bf16" not in flags \
            and not any(flag.startswith("amx") for flag in flags):
        return False  # avx512_fp16 alone maps to avx10_1_512 but says nothing of bf16
    return onednn_cpu_isa(flags, env, machine) in BF16_CPU_ISAS


def default_mixed_precision(
    device: torch.device | str,
    flags: set[str] | frozenset[str] | None = None,
    env: dict[str, str] | None = None,
    machine: str | None = None,
) -> bool:
    """Whether to train the backbone under bf16 autocast on ``device`` by default.

    Always on CUDA and MPS; on the CPU where :func:`cpu_has_fast_bf16`; never
    elsewhere.  The planner refines the CPU default by timing both
    (:func:`faster_precision`).

    Parameters
    ----------
    device : torch.device or str
        Where training runs.
    flags, env, machine
        As for :func:`cpu_has_fast_bf16`.
    """
    kind = torch.device(device).type
    if kind in ("cuda", "mps"):
        return True
    if kind == "cpu":
        return cpu_has_fast_bf16(flags, env, machine)
    return False


def faster_precision(
    time_step: Callable[[bool], float],
    device: torch.device | str = "cpu",
    fp32_seconds: float | None = None,
    flags: set[str] | frozenset[str] | None = None,
    env: dict[str, str] | None = None,
    machine: str | None = None,
) -> tuple[bool, float]:
    """Time fp32 and bf16 training steps where both can be fast; keep the faster.

    Parameters
    ----------
    time_step : callable
        ``time_step(mixed_precision) -> seconds`` of one training step.
    device : torch.device or str
        Where training runs.  On CUDA and MPS bf16 is kept without timing; on a CPU
        without native bf16 (:func:`cpu_has_fast_bf16`) fp32 is kept without timing
        bf16, whose emulation is always slower.
    fp32_seconds : float, optional
        An fp32 step time already measured (saves one measurement).
    flags, env, machine
        As for :func:`cpu_has_fast_bf16`.

    Returns
    -------
    (bool, float)
        Whether to train under bf16 autocast, and the seconds per step of that choice.
    """
    kind = torch.device(device).type
    if kind in ("cuda", "mps"):
        return True, time_step(True)
    if kind != "cpu" or not cpu_has_fast_bf16(flags, env, machine):
        return False, time_step(False) if fp32_seconds is None else float(fp32_seconds)
    fp32 = time_step(False) if fp32_seconds is None else float(fp32_seconds)
    bf16 = time_step(True)
    return (True, bf16) if bf16 < fp32 else (False, fp32)

