"""bf16 against fp32 on the CPU: the same plan trained both ways, speed and map quality.

For each data set the planner chooses network, epochs and resolution for
``--budget`` seconds (as ``TSimCNE(time_budget=...)`` would); that one plan is then
trained in fp32 and under bf16 autocast, interleaved (fp32 first for the first data
set, bf16 first for the next), with the same seed and augmentations.  Reported: 2-D kNN
(k = 15, 15 % held out, 5 splits), wall time and images/s of each, and the ratio.
Quality holds when the bf16 kNN is within the split-to-split noise of the fp32 one.

Meant for CPUs with native bf16 (avx512_bf16, AMX): on others the script says so and
stops, since emulated bf16 is slower and tells nothing (``--force`` runs it anyway,
e.g. to check the script on a tiny ``--epochs`` plan).

Examples
--------
    python benchmarks/bf16_quality.py --out benchmarks/results/bf16.md
    python benchmarks/bf16_quality.py --datasets digits --epochs 2,1,1 --force
"""

from __future__ import annotations

import argparse
import sys
import time

import _common


def _fit(images, choice, settings, mixed_precision: bool, seed: int) -> dict:
    from tsimcne_widgets.engine.augment import Augmenter
    from tsimcne_widgets.engine.evaluation import knn_accuracy
    from tsimcne_widgets.engine.trainer import Trainer

    load_before = _common.load_average()
    trainer = Trainer(images, choice.plan, backbone=choice.backbone,
                      backbone_width=choice.width, image_size=choice.image_size,
                      augmenter=Augmenter(choice.image_size, **settings), device="cpu",
                      random_state=seed, num_threads=choice.num_threads,
                      mixed_precision=mixed_precision)
    started = time.perf_counter()
    trainer.run()
    wall = time.perf_counter() - started
    trained = len(images) // choice.plan.batch_size * choice.plan.batch_size
    steps = sum(choice.plan.epochs)
    return {"knn": knn_accuracy(trainer.embed(), images.labels, k=15, test_size=0.15),
            "wall": wall, "images_per_second": trained * steps / wall,
            "load": f"{load_before} → {_common.load_average()}"}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default="digits,shapes")
    parser.add_argument("--budget", type=float, default=180.0)
    parser.add_argument("--epochs", default=None, help="fix the epochs, e.g. 2,1,1 (a check)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="run without native bf16")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    from tsimcne_widgets.data.datasets import load_digits, make_shapes
    from tsimcne_widgets.engine.augment_policy import augmentation_for
    from tsimcne_widgets.engine.device import onednn_cpu_isa, resolve_device
    from tsimcne_widgets.engine.planner import plan_for_budget
    from tsimcne_widgets.engine.precision import cpu_has_fast_bf16
    from tsimcne_widgets.engine.schedule import StagePlan

    lines = _common.hardware_lines(resolve_device("cpu"))
    isa = onednn_cpu_isa()
    lines.append(f"- oneDNN ISA: {isa}; native bf16: {cpu_has_fast_bf16()}")
    print("\n".join(lines))
    if not cpu_has_fast_bf16() and not args.force:
        print("This CPU has no native bf16 (avx512_bf16 or AMX): fp32 is what trains here, "
              "and emulated bf16 would only be slower. Run this on a bf16 CPU, or --force.")
        return 0
    rows = []
    for index, name in enumerate(d for d in args.datasets.split(",") if d):
        images = load_digits() if name == "digits" else make_shapes()
        choice = plan_for_budget(args.budget, len(images), images.image_size, "cpu", 512)
        if args.epochs:
            epochs = tuple(int(e) for e in args.epochs.split(","))
            choice = choice._replace(plan=StagePlan.from_total_epochs(
                epochs, len(images), choice.plan.batch_size, base_lr=choice.plan.base_lr,
                lr_factors=choice.plan.lr_factors))
        settings = images.augmentation if images.augmentation is not None \
            else augmentation_for(images)
        order = (False, True) if index % 2 == 0 else (True, False)
        results = {mp: _fit(images, choice, settings, mp, args.seed) for mp in order}
        for mp in (False, True):
            r = results[mp]
            rows.append(f"| {name} | {'bf16' if mp else 'fp32'} | {r['knn']} | {r['wall']:.0f} s | "
                        f"{r['images_per_second']:.0f} | {choice.backbone}-w{choice.width}, "
                        f"{choice.image_size[0]} px, epochs {tuple(choice.plan.epochs)} | "
                        f"{r['load']} |")
            print(rows[-1], flush=True)
        speedup = results[True]["images_per_second"] / results[False]["images_per_second"]
        rows.append(f"| {name} | bf16 / fp32 | {results[True]['knn'].mean - results[False]['knn'].mean:+.3f} "
                    f"| | {speedup:.2f}× | | |")
        print(rows[-1], flush=True)
    command = "python benchmarks/bf16_quality.py " + " ".join(argv)
    table = (f"\n`{command}`\n\n| data | precision | 2-D kNN (k=15) | wall | images/s | plan | "
             f"load avg before → after |\n|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n")
    print(table)
    if args.out:
        from plain_arrays import append_table

        print("appended to", append_table(args.out, "bf16 vs fp32 on the CPU", lines, table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
