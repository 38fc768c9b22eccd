"""Training speed in channels-last against contiguous (NCHW) memory on this CPU.

``tsimcne_widgets.engine.device.choose_memory_layout`` trains in channels-last on the CPU only
where it is safe (oneDNN's channel block, uxlfoundation/oneDNN#6035) and measured to
be faster.  This script is that measurement: for networks the budget planner can
choose, at the batch sizes and resolutions it uses on a CPU, it times real training
steps (augmentation, forward, backward, clipping, optimiser; ``budget.time_training_steps``)
in both layouts, interleaved round by round so that background load hits both alike,
and prints images/s side by side with the CPU named.  Configurations the rule finds
unsafe for channels-last on this CPU are skipped (they can crash the process).

Examples
--------
    python benchmarks/memory_layout.py
    python benchmarks/memory_layout.py --rounds 5 --threads 1
    python benchmarks/memory_layout.py --configs resnet18-w16:16:128,resnet10-w8:16:256
    python benchmarks/memory_layout.py --out benchmarks/results/memory-layout.md
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import cpu_model, hardware_lines, random_images, write_result  # noqa: E402

import torch  # noqa: E402

from tsimcne_widgets.engine.planner import time_training_steps
from tsimcne_widgets.engine.models import build_backbone
from tsimcne_widgets.engine.device import (
    channels_last_is_safe,
    choose_memory_layout,
    onednn_cpu_isa,
    set_cpu_threads,
)
from tsimcne_widgets.engine.schedule import StagePlan
from tsimcne_widgets.engine.trainer import Trainer

#: backbone-w<width>:<pixels>:<batch>.  The planner trains at batch 128 on a CPU, at
#: 16 px or less unless the budget affords the native size, and times candidates at
#: batch 32; the costlier networks run at smaller batches to keep the script to
#: about ten minutes on 2 cores.
DEFAULT_CONFIGS = (
    "resnet10-w8:16:128",
    "resnet10-w8:16:256",
    "resnet10-w16:16:128",
    "resnet18-w16:16:128",
    "resnet18-w16:32:64",
    "resnet18-w32:16:64",
    "resnet18-w32:32:32",
    "resnet18-w64:16:32",
)


def parse_config(text: str) -> tuple[str, int, int, int]:
    name, pixels, batch = text.split(":")
    backbone, width = name.split("-w")
    return backbone, int(width), int(pixels), int(batch)


def step_seconds(backbone, width, pixels, batch, channels_last, steps, seed) -> float:
    images = random_images(batch, size=pixels, seed=seed)
    plan = StagePlan.from_total_epochs(1, len(images), batch)
    with torch.random.fork_rng(devices=[]):
        trainer = Trainer(
            images, plan, backbone=backbone, backbone_width=width, device="cpu",
            random_state=seed, channels_last=channels_last,
            num_threads=torch.get_num_threads(),
        )
        return time_training_steps(trainer, n_steps=steps, warmup=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default=",".join(DEFAULT_CONFIGS))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per round")
    parser.add_argument("--threads", type=int, default=None, help="default: all cores")
    parser.add_argument("--out", default=None, help="also write the table to this file")
    args = parser.parse_args()

    set_cpu_threads(args.threads)
    header = [
        f"CPU: {cpu_model()}; torch.backends.cpu.get_cpu_capability(): "
        f"{torch.backends.cpu.get_cpu_capability()}; oneDNN ISA per the rule: "
        f"{onednn_cpu_isa()}",
        *hardware_lines("cpu"),
        f"- {args.rounds} rounds, interleaved; per round the fastest of {args.steps} steps "
        "after 1 warm-up; the fastest round is shown (on a shared machine the slower "
        "ones measure the neighbours, as in budget.time_training_steps)",
    ]
    print("\n".join(header), flush=True)
    rows = []
    title = ("| network | px | batch | contiguous img/s | channels-last img/s | "
             "channels-last / contiguous | rule chooses |")
    print(title + "\n|---|---|---|---|---|---|---|", flush=True)
    for text in args.configs.split(","):
        backbone, width, pixels, batch = parse_config(text.strip())
        model, _ = build_backbone(backbone, width)
        chosen = "channels-last" if choose_memory_layout(model, "cpu") else "contiguous"
        if not channels_last_is_safe(model):
            row = (f"| {backbone}-w{width} | {pixels} | {batch} | – | unsafe here, "
                   f"not run | – | {chosen} |")
            print(row, flush=True)
            rows.append(row)
            continue
        timings = {False: [], True: []}
        for index in range(args.rounds):
            order = (False, True) if index % 2 == 0 else (True, False)
            for channels_last in order:
                timings[channels_last].append(step_seconds(
                    backbone, width, pixels, batch, channels_last, args.steps, seed=index
                ))
        contiguous = batch / min(timings[False])
        last = batch / min(timings[True])
        row = (f"| {backbone}-w{width} | {pixels} | {batch} | {contiguous:.0f} | {last:.0f} | "
               f"{last / contiguous:.2f} | {chosen} |")
        print(row, flush=True)
        rows.append(row)
    if args.out:
        text = "\n".join(header) + "\n\n" + title + "\n|---|---|---|---|---|---|---|\n"
        text += "\n".join(rows) + "\n"
        write_result(args.out, text)
        print(f"written to {args.out} ({time.strftime('%H:%M')})")


if __name__ == "__main__":
    main()
