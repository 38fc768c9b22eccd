"""Training throughput of tsimcne_widgets against the reference package ``tsimcne``.

Both sides train the same model (CIFAR ResNet-18, width 64, 1024-wide head, 128-D
stage-1 output) on the same uint8 images with the same batch, on the same device.
The reference runs in a subprocess with its own venv (``benchmarks/setup_reference.sh``)
and is timed by wrapping ``PLtSimCNE.training_step``: the interval between the starts
of consecutive steps covers its whole step (data loading in DataLoader workers,
forward, backward, clipping, optimiser).  Ours is timed with ``planner.time_training_steps``
(augmentation on the device, forward, backward, clipping, optimiser).  Both skip
warm-up steps, synchronise the device around every timed step and report the median
step, which resists the spikes of a shared machine.

Measurements are interleaved (reference, ours, ours, reference, ...) and repeated so
that background load on a shared machine hits both sides alike; the medians are
compared.  Extra rows time our faster configurations (narrow backbones, lower
resolution, channels-last off, one thread) without the reference.

Examples
--------
    python benchmarks/speed.py                       # CPU, batch 256, 3 rounds
    python benchmarks/speed.py --device cuda --batch 512 --steps 20 --warmup 5
    python benchmarks/speed.py --reference none --configs resnet18-w16,resnet18-w16:res=16
    python benchmarks/speed.py --epoch-timing all    # one real 60k-image epoch (GPU)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_RESULT_TAG = "REFERENCE_RESULT "
_DEFAULT_CPU_CONFIGS = (
    "resnet18-w64:cl=0",
    "resnet18-w64:threads=1",
    "resnet18-w32",
    "resnet18-w16",
    "resnet18-w16:res=16",
    "resnet10-w16",
    "resnet10-w16:res=16",
)
_DEFAULT_GPU_CONFIGS = ("resnet18-w64:amp=0", "resnet18-w64:cl=0", "resnet18-w64:compile=1")


# ---------------------------------------------------------------------- reference side
class _WindowDone(Exception):
    """Raised inside the reference's training loop once the timed window is over."""


def reference_worker(argv: list[str]) -> None:
    """Entry point inside the reference venv: time ``tsimcne`` 0.3.12 and print JSON.

    Imports only the reference package, torch, torchvision and numpy (not ours).
    """
    parser = argparse.ArgumentParser(prog="speed.py --_reference-worker")
    parser.add_argument("images")
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--warmup", type=int, required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--workers", type=int, required=True)
    args = parser.parse_args(argv)

    import numpy as np
    import torch
    from PIL import Image
    from tsimcne import tsimcne as reference

    images = np.load(args.images)

    class PILDataset(torch.utils.data.Dataset):
        # The reference expects a torchvision-style dataset of (PIL image, label).
        def __len__(self):
            return len(images)

        def __getitem__(self, index):
            return Image.fromarray(images[index]), 0

    device_type = "cuda" if torch.cuda.is_available() else "cpu"
    starts: list[float] = []
    original_step = reference.PLtSimCNE.training_step
    last = args.warmup + args.steps

    def timed_step(self, batch):  # Lightning passes batch_idx only if the signature has it
        # A step begins when its batch arrives; synchronising first makes the
        # previous step's asynchronous GPU work count towards the previous interval.
        if device_type == "cuda":
            torch.cuda.synchronize()
        starts.append(time.perf_counter())
        if len(starts) > last:
            raise _WindowDone  # this step only marks the end of the timed window
        return original_step(self, batch)

    reference.PLtSimCNE.training_step = timed_step
    # trainer_kwargs must stay None: 0.3.12 sets them with dict.update(...), which
    # returns None, so any dict passed in would crash fit (so Lightning keeps its
    # default progress bar and logger; they write into this process's cwd).
    model = reference.TSimCNE(
        total_epochs=[1],
        batch_size=args.batch,
        num_workers=args.workers,
    )
    try:
        model.fit(PILDataset())
    except _WindowDone:
        pass  # Lightning tears down and re-raises: the timing is complete
    if len(starts) <= last:
        raise SystemExit(f"the reference ran only {len(starts)} steps, {last + 1} needed")
    intervals = sorted(b - a for a, b in zip(starts[args.warmup:last], starts[args.warmup + 1:]))
    median = intervals[len(intervals) // 2] if len(intervals) % 2 else 0.5 * (
        intervals[len(intervals) // 2 - 1] + intervals[len(intervals) // 2])
    print(_RESULT_TAG + json.dumps({
        "images_per_second": args.batch / median,
        "step_seconds": [round(b - a, 4) for a, b in zip(starts, starts[1:])],
        "device": device_type,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }), flush=True)


def find_reference_python(choice: str) -> Path | None:
    """The reference venv's interpreter: ``auto`` looks in benchmarks/.refvenv."""
    if choice == "none":
        return None
    if choice == "auto":
        here = Path(__file__).resolve().parent
        for candidate in (here / ".refvenv" / "bin" / "python", Path("/tmp/refvenv/bin/python")):
            if candidate.exists():
                return candidate
        return None
    path = Path(choice)
    if path.is_dir():
        path = path / "bin" / "python"
    if not path.exists():
        raise SystemExit(f"no reference interpreter at {path}; run benchmarks/setup_reference.sh")
    return path


def time_reference(python: Path, images_file: Path, args) -> dict:
    """Run the reference worker once in a scratch directory; its parsed result."""
    with tempfile.TemporaryDirectory(prefix="tsimcne-ref-") as scratch:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        command = [
            str(python), str(Path(__file__).resolve()), "--_reference-worker", str(images_file),
            "--batch", str(args.batch), "--warmup", str(args.warmup), "--steps", str(args.steps),
            "--workers", str(args.ref_workers),
        ]
        done = subprocess.run(command, cwd=scratch, env=env, capture_output=True, text=True)
    for line in done.stdout.splitlines():
        # Lightning's progress bar ends its lines with carriage returns, not newlines.
        position = line.find(_RESULT_TAG)
        if position >= 0:
            return json.loads(line[position + len(_RESULT_TAG):])
    tail = "\n".join((done.stdout + done.stderr).splitlines()[-25:])
    raise RuntimeError(f"the reference run failed (exit {done.returncode}):\n{tail}")


# ---------------------------------------------------------------------- our side
def parse_config(text: str) -> dict:
    """``"resnet18-w16:res=16:cl=0:threads=1:amp=1:compile=1"`` -> keyword dict."""
    name, *options = text.split(":")
    config = {"backbone": name, "res": None, "cl": None, "threads": None, "amp": None,
              "compile": False, "label": text}
    for option in options:
        key, _, value = option.partition("=")
        if key not in ("res", "cl", "threads", "amp", "compile"):
            raise SystemExit(f"unknown option {key!r} in config {text!r}; "
                             "use res=, cl=, threads=, amp=, compile=")
        config[key] = int(value)
    return config


def time_ours(images, config: dict, args) -> float:
    """Images per second of one of our training configurations (stage 1)."""
    import torch

    from tsimcne_widgets.engine.planner import time_training_steps
    from tsimcne_widgets.engine.schedule import StagePlan
    from tsimcne_widgets.engine.trainer import Trainer

    plan = StagePlan.from_total_epochs((1,), len(images), args.batch)
    previous_threads = torch.get_num_threads()
    try:
        trainer = Trainer(
            images, plan,
            backbone=config["backbone"],
            image_size=config["res"],
            device=args.device,
            channels_last=None if config["cl"] is None else bool(config["cl"]),
            mixed_precision=None if config["amp"] is None else bool(config["amp"]),
            compile=bool(config["compile"]),
            random_state=0,
        )
        config["bf16"] = trainer.mixed_precision  # the roofline's precision
        if config["threads"]:
            torch.set_num_threads(config["threads"])
        seconds = time_training_steps(trainer, n_steps=args.steps, warmup=args.warmup)
    finally:
        torch.set_num_threads(previous_threads)
    return args.batch / seconds


def training_flops_per_image(images, args) -> float:
    """Floating-point operations of one training step per image (both views, fwd + bwd).

    Counted by ``torch.utils.flop_counter`` (convolutions and matrix products, which
    are nearly all of the work) on a small batch; the count is linear in the batch.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from tsimcne_widgets.engine.schedule import StagePlan
    from tsimcne_widgets.engine.trainer import Trainer

    batch = 8
    plan = StagePlan.from_total_epochs((1,), batch * 2, batch)
    trainer = Trainer(images[:batch * 2], plan, backbone=f"resnet18-w{args.width}",
                      device="cpu", random_state=0)
    trainer.enter_stage()
    with FlopCounterMode(display=False) as counter:
        trainer.train_step(trainer.images[torch.arange(batch)])
    return counter.get_total_flops() / batch


def matmul_peak_flops(device, size: int = 4096, repeats: int = 4, dtype=None) -> float:
    """Best FLOP/s of a square matrix product on ``device`` in ``dtype`` (default
    float32): this machine's roof for training in that precision."""
    import torch

    a = torch.randn(size, size, device=device, dtype=dtype or torch.float32)
    b = torch.randn(size, size, device=device, dtype=dtype or torch.float32)
    best = float("inf")
    for _ in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best


def roofline_lines(flops_per_image, peak, rows, main_label, reference,
                   precision: str = "fp32", isa: str | None = None) -> list[str]:
    """How close each side runs to the machine's measured matmul rate in ``precision``,
    the precision the main row trained in."""
    ceiling = peak / flops_per_image
    lines = ["", f"## Roofline ({precision})", "",
             f"One training image (two views, forward and backward) costs "
             f"{flops_per_image / 1e9:.2f} GFLOP; this machine's {precision} matrix product "
             f"(oneDNN ISA {isa or 'unknown'}) ran at {peak / 1e9:.0f} GFLOP/s, so no "
             f"implementation that does this arithmetic in {precision} can exceed "
             f"**{ceiling:.1f} images/s** here (only a different algorithm, such as Winograd "
             f"convolution, or lower precision could).", "",
             "| implementation | images/s | share of the roof |", "|---|---|---|"]
    if reference:
        lines.append(f"| reference | {_median(reference):.1f} | "
                     f"{_median(reference) / ceiling:.0%} |")
    lines.append(f"| ours, {main_label} | {_median(rows[main_label]):.1f} | "
                 f"{_median(rows[main_label]) / ceiling:.0%} |")
    if reference:
        lines += ["", f"The largest speed-up over the reference this hardware allows at this "
                      f"model and precision: **{ceiling / _median(reference):.2f}×** "
                      f"(measured: {_median(rows[main_label]) / _median(reference):.2f}×)."]
    return lines


def time_full_epoch(images, args) -> tuple[float, float]:
    """Seconds of one real training epoch over ``images`` (after warm-up steps)."""
    from tsimcne_widgets.engine.planner import time_training_steps
    from tsimcne_widgets.engine.schedule import StagePlan
    from tsimcne_widgets.engine.trainer import Trainer

    plan = StagePlan.from_total_epochs((1,), len(images), args.batch)
    trainer = Trainer(images, plan, backbone=f"resnet18-w{args.width}", device=args.device,
                      compile=args.compile, random_state=0)
    time_training_steps(trainer, n_steps=1, warmup=args.warmup)
    started = time.perf_counter()
    trainer.run()  # no callbacks: no maps, only the epoch
    seconds = time.perf_counter() - started
    return seconds, plan.steps_per_epoch * plan.batch_size / seconds


# ---------------------------------------------------------------------- report
def _median(values):
    return statistics.median(values) if values else float("nan")


def _fmt(values):
    return ", ".join(f"{v:.1f}" for v in values)


def build_report(args, hardware, rows, reference, reference_info, loads, command, epoch_line,
                 roofline=()):
    lines = [f"# Training speed: {args.title}", "", *hardware]
    lines += [f"- load average (1/5/15 min) before each measurement: {', '.join(loads)}", ""]
    lines += [f"Command: `{command}`", ""]
    lines += [f"Images: {args.image_source}; batch {args.batch} images (= {2 * args.batch} views) "
              f"per step; {args.warmup} warm-up step(s), then {args.steps} timed steps; "
              f"{args.rounds} interleaved round(s); medians reported.", ""]
    lines += ["| implementation | configuration | images/s (median) | views/s | "
              "rounds (images/s) | vs reference |", "|---|---|---|---|---|---|"]
    ref_median = _median(reference)
    if reference:
        lines.append(f"| tsimcne 0.3.12 (reference) | resnet18-w64, fp32, {args.ref_workers} "
                     f"DataLoader workers | {ref_median:.1f} | {2 * ref_median:.1f} | "
                     f"{_fmt(reference)} | 1.00× |")
    for label, values in rows.items():
        median = _median(values)
        ratio = f"{median / ref_median:.2f}×" if reference else "n/a"
        lines.append(f"| tsimcne_widgets | {label} | {median:.1f} | {2 * median:.1f} | "
                     f"{_fmt(values)} | {ratio} |")
    if reference_info:
        lines += ["", f"Reference process: torch {reference_info.get('torch')}, "
                      f"{reference_info.get('threads')} threads, device "
                      f"{reference_info.get('device')}; per-step seconds of its last round: "
                      f"{reference_info.get('step_seconds')}."]
    if epoch_line:
        lines += ["", epoch_line]
    lines += list(roofline)
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--_reference-worker":
        reference_worker(argv[1:])
        return 0
    import _common  # noqa: E402 - only for our side (adds the repo root to sys.path)

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, mps")
    parser.add_argument("--batch", type=int, default=None, help="default 256 on CPU, 512 else")
    parser.add_argument("--width", type=int, default=64, help="ResNet-18 width of the main row")
    parser.add_argument("--images", choices=("cifar", "random"), default="cifar",
                        help="CIFAR-10 test JPEGs (random images when absent) or random")
    parser.add_argument("--reference", default="auto",
                        help="auto (benchmarks/.refvenv), none, or a venv / python path")
    parser.add_argument("--ref-workers", type=int, default=8,
                        help="the reference's DataLoader workers (its default: 8)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 3 CPU, 20 GPU)")
    parser.add_argument("--warmup", type=int, default=None, help="default 1 CPU, 5 GPU")
    parser.add_argument("--configs", default="default",
                        help="extra rows of ours: 'default', 'none' or comma-separated "
                             "backbone[:res=16][:cl=0][:threads=1][:amp=0][:compile=1]")
    parser.add_argument("--compile", action="store_true", help="torch.compile the main row")
    parser.add_argument("--epoch-timing", choices=("none", "test", "all"), default="none",
                        help="also time one real epoch over CIFAR test (10k) or all (60k)")
    parser.add_argument("--out", default=None, help="markdown result file (default: print only)")
    parser.add_argument("--title", default=None)
    args = parser.parse_args(argv)

    import numpy as np

    from tsimcne_widgets.engine.device import resolve_device

    device = resolve_device(args.device)
    args.device = str(device)
    on_cpu = device.type == "cpu"
    args.batch = args.batch or (256 if on_cpu else 512)
    args.steps = args.steps or (3 if on_cpu else 20)
    args.warmup = args.warmup if args.warmup is not None else (1 if on_cpu else 5)
    args.title = args.title or f"{device.type.upper()}, batch {args.batch}"
    hardware = _common.hardware_lines(device)

    # The reference needs warmup + steps + 1 batches (the last only marks the end).
    n_images = args.batch * (args.warmup + args.steps + 1)
    images = None
    if args.images == "cifar":
        cifar = _common.cifar10_images("test", limit=n_images)
        if cifar is not None and len(cifar) >= n_images:
            images, args.image_source = cifar.images, f"{n_images} CIFAR-10 test JPEGs"
        else:
            print("CIFAR-10 archive not found (set TSIMCNE_CIFAR10): using random images")
    if images is None:
        images = _common.random_images(n_images)
        args.image_source = f"{n_images} random uint8 32x32 images"

    reference_python = find_reference_python(args.reference)
    if reference_python is None and args.reference == "auto":
        print("no reference venv (benchmarks/setup_reference.sh): timing ours only")
    main_label = f"resnet18-w{args.width}" + (":compile=1" if args.compile else "")
    configs = [parse_config(main_label)]
    if args.configs == "default":
        extra = _DEFAULT_CPU_CONFIGS if on_cpu else _DEFAULT_GPU_CONFIGS
        from tsimcne_widgets.engine.precision import cpu_has_fast_bf16

        if on_cpu and cpu_has_fast_bf16():  # bf16 trains the main row: fp32 beside it
            extra = (f"resnet18-w{args.width}:amp=0",) + extra
    elif args.configs == "none":
        extra = ()
    else:
        extra = tuple(c for c in args.configs.split(",") if c)
    configs += [parse_config(c) for c in extra if c != main_label]

    rows = {c["label"]: [] for c in configs}
    reference, reference_info, loads = [], {}, []
    with tempfile.TemporaryDirectory(prefix="tsimcne-speed-") as scratch:
        images_file = Path(scratch) / "images.npy"
        np.save(images_file, images)
        for round_index in range(args.rounds):
            # ABBA order: the reference goes first in even rounds, last in odd ones.
            order = ["reference", "ours"] if round_index % 2 == 0 else ["ours", "reference"]
            for side in order:
                if side == "reference" and reference_python is not None:
                    loads.append(_common.load_average().split(" / ")[0])
                    reference_info = time_reference(reference_python, images_file, args)
                    reference.append(reference_info["images_per_second"])
                    print(f"round {round_index + 1}: reference {reference[-1]:.1f} images/s",
                          flush=True)
                elif side == "ours":
                    for config in configs:
                        loads.append(_common.load_average().split(" / ")[0])
                        rate = time_ours(images, config, args)
                        rows[config["label"]].append(rate)
                        print(f"round {round_index + 1}: ours {config['label']} "
                              f"{rate:.1f} images/s", flush=True)
    epoch_line = None
    if args.epoch_timing != "none":
        cifar = _common.cifar10_images(args.epoch_timing)
        if cifar is None:
            epoch_line = "One-epoch timing skipped: CIFAR-10 archive not found."
        else:
            seconds, rate = time_full_epoch(cifar.images, args)
            epoch_line = (f"One real training epoch over {len(cifar)} CIFAR-10 images "
                          f"(resnet18-w{args.width}, batch {args.batch}, stage 1): "
                          f"{seconds:.2f} s ({rate:.0f} images/s).")
        print(epoch_line)
    roofline = ()
    if on_cpu:  # the GPU runs bf16: an fp32 roof would not bound it
        import torch

        from tsimcne_widgets.engine.device import onednn_cpu_isa

        bf16 = bool(configs[0].get("bf16"))  # the precision the main row trained in
        flops = training_flops_per_image(images, args)
        peak = matmul_peak_flops(device, dtype=torch.bfloat16 if bf16 else torch.float32)
        roofline = roofline_lines(flops, peak, rows, main_label, reference,
                                  "bf16" if bf16 else "fp32", onednn_cpu_isa())
    command = "python benchmarks/speed.py " + " ".join(argv)
    report = build_report(args, hardware, rows, reference, reference_info, loads,
                          command.strip(), epoch_line, roofline)
    print(report)
    if reference:
        ratio = _median(rows[main_label]) / _median(reference)
        print(f"ours / reference at {main_label}, batch {args.batch}: {ratio:.2f}x")
    if args.out:
        print("written:", _common.write_result(Path(args.out), report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
