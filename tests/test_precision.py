"""bf16 on CPUs that compute it natively, fp32 elsewhere; the map stays float32."""

import numpy as np
import pytest
import torch

from tsimcne_widgets.engine.planner import plan_for_budget
from tsimcne_widgets.engine.precision import (
    cpu_has_fast_bf16,
    default_mixed_precision,
    faster_precision,
)
from tsimcne_widgets.engine.schedule import StagePlan
from tsimcne_widgets.engine.trainer import Trainer

AVX2 = {"sse4_1", "avx", "avx2", "fma"}
AVX512 = AVX2 | {"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni"}
ZEN4 = AVX512 | {"avx512_bf16"}  # the EPYC
SAPPHIRE_RAPIDS = ZEN4 | {"avx512_fp16", "amx_tile", "amx_bf16", "amx_int8"}
X86 = dict(env={}, machine="x86_64")


@pytest.mark.parametrize("flags, expected", [
    (AVX2, False),
    (AVX512, False),
    (AVX512 | {"avx512_fp16"}, False),
    (ZEN4, True),
    (SAPPHIRE_RAPIDS, True),
])
def test_native_bf16_follows_the_cpu_flags(flags, expected):
    assert cpu_has_fast_bf16(flags, **X86) is expected
    assert default_mixed_precision("cpu", flags, **X86) is expected


@pytest.mark.parametrize("cap", ["AVX2", "avx512_core", "AVX512_CORE_VNNI"])
def test_an_isa_cap_below_bf16_keeps_fp32(cap):
    # oneDNN then emulates bf16: slow, so fp32 it is.
    assert not cpu_has_fast_bf16(SAPPHIRE_RAPIDS, env={"ONEDNN_MAX_CPU_ISA": cap}, machine="x86_64")
    assert not cpu_has_fast_bf16(ZEN4, env={"DNNL_MAX_CPU_ISA": cap}, machine="x86_64")
    assert cpu_has_fast_bf16(ZEN4, env={"ONEDNN_MAX_CPU_ISA": "ALL"}, machine="x86_64")


def test_accelerators_always_and_other_cpus_never():
    assert default_mixed_precision("cuda", AVX2, **X86)
    assert default_mixed_precision("mps", set(), env={}, machine="arm64")
    assert not default_mixed_precision("cpu", {"fp", "asimd", "bf16"}, env={}, machine="aarch64")
    assert not default_mixed_precision("meta", ZEN4, **X86)


def _this_cpus_flags():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            line = next(line for line in cpuinfo if line.startswith("flags"))
    except (OSError, StopIteration):
        return None
    return set(line.split(":", 1)[1].split())


def test_this_cpu_trains_fp32_unless_it_has_native_bf16():
    flags = _this_cpus_flags()
    if flags is None:
        pytest.skip("no /proc/cpuinfo flags")
    native = "avx512_bf16" in flags or any(flag.startswith("amx") for flag in flags)
    assert default_mixed_precision("cpu") is (native and cpu_has_fast_bf16(flags))
    if "avx512f" not in flags:  # AVX2-only, like the project's machine
        assert default_mixed_precision("cpu") is False


def test_the_planner_reports_the_precision_it_chose():
    choice = plan_for_budget(3, 64, (8, 8), "cpu", 32, candidates=[("resnet10", 8)],
                             num_threads=1)
    # Candidates are timed in the default; only a native-bf16 CPU times fp32 as well.
    assert choice.mixed_precision is False or cpu_has_fast_bf16()
    assert isinstance(choice.mixed_precision, bool)


class StepTimes:
    def __init__(self, fp32, bf16):
        self.seconds = {False: fp32, True: bf16}
        self.asked = []

    def __call__(self, mixed_precision):
        self.asked.append(mixed_precision)
        return self.seconds[mixed_precision]


def test_planner_choice_times_both_only_where_bf16_can_win():
    slow_bf16 = StepTimes(fp32=1.0, bf16=3.0)
    assert faster_precision(slow_bf16, "cpu", flags=AVX2, **X86) == (False, 1.0)
    assert slow_bf16.asked == [False]  # emulated bf16 is never worth a measurement
    assert faster_precision(StepTimes(1.0, 3.0), "cpu", fp32_seconds=0.9, flags=AVX2, **X86) \
        == (False, 0.9)

    fast_bf16 = StepTimes(fp32=1.0, bf16=0.45)
    assert faster_precision(fast_bf16, "cpu", flags=ZEN4, **X86) == (True, 0.45)
    assert sorted(fast_bf16.asked) == [False, True]
    # Overhead-bound small networks gain nothing: fp32 stays.
    assert faster_precision(StepTimes(1.0, 1.02), "cpu", flags=ZEN4, **X86) == (False, 1.0)
    on_gpu = StepTimes(fp32=1.0, bf16=2.0)
    assert faster_precision(on_gpu, "cuda") == (True, 2.0) and on_gpu.asked == [True]


def _tiny_run(mixed_precision, dtypes):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (24, 16, 16, 3), dtype=np.uint8)
    plan = StagePlan.from_total_epochs((1,), len(images), 12)
    snapshots = []
    trainer = Trainer(images, plan, backbone="resnet10", backbone_width=8, hidden_dim=32,
                      projection_dim=16, device="cpu", random_state=0,
                      mixed_precision=mixed_precision, callbacks=[snapshots.append])
    first_conv = next(m for m in trainer.model.modules() if isinstance(m, torch.nn.Conv2d))
    hooks = [
        first_conv.register_forward_hook(lambda m, i, out: dtypes.append(("conv", out.dtype))),
        trainer.model.head.register_forward_hook(
            lambda m, i, out: dtypes.append(("head", out.dtype))),
    ]
    assert trainer.run() == "finished"
    for hook in hooks:
        hook.remove()
    return trainer, snapshots


def test_a_bf16_step_runs_on_this_cpu_and_the_map_stays_float32():
    # AVX2 CPUs emulate bf16: slow but correct, so this runs anywhere.
    fp32_dtypes, bf16_dtypes = [], []
    fp32, fp32_snapshots = _tiny_run(False, fp32_dtypes)
    bf16, bf16_snapshots = _tiny_run(True, bf16_dtypes)
    assert ("conv", torch.bfloat16) in bf16_dtypes  # autocast did reach the backbone
    assert ("conv", torch.bfloat16) not in fp32_dtypes
    assert {dtype for name, dtype in bf16_dtypes if name == "head"} == {torch.float32}
    assert all(p.dtype == torch.float32 for p in bf16.model.parameters())
    embedding = bf16_snapshots[-1].embedding
    assert embedding.dtype == np.float32 and np.isfinite(embedding).all()
    # Same seed, weights and views: bf16 rounding moves the loss only slightly.
    loss32, loss16 = fp32_snapshots[-1].loss, bf16_snapshots[-1].loss
    assert np.isfinite(loss16) and abs(loss16 - loss32) < 0.02 * abs(loss32)
