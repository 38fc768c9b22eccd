"""Map quality of tsimcne_widgets: kNN accuracy of the 2-D map and the wall time to get it.

The protocol is the t-SimCNE paper's (SPEC §1): a Euclidean kNN classifier with
k = 15 on the 2-D map, stratified random held-out points, mean over 5 splits.
CIFAR-10 train + test pooled (60k) holds out 10k as in the paper; the smaller sets
(CIFAR-10 test 10k, digits 1797, shapes 2000) hold out 15 %, as the pixel-t-SNE
anchors of SPEC §2 do.

Examples
--------
    python benchmarks/quality.py digits --budget 180
    python benchmarks/quality.py shapes --budget 180 --baseline
    python benchmarks/quality.py cifar --subset test --budget 900 --device cpu
    python benchmarks/quality.py cifar --subset all --epochs 400,25,75 --device cuda
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

import _common

# Pixel-space t-SNE kNN accuracy measured by the team (SPEC §2), used when --baseline
# is not asked for (CIFAR's 10k-image t-SNE takes many CPU minutes).
_KNOWN_PIXEL_TSNE = {("cifar", "test"): 0.29, ("digits", None): 0.974}


def load_dataset(name: str, subset: str, limit: int | None):
    """The ImageSet for ``name``, or None when its data is missing."""
    from tsimcne_widgets.data.datasets import load_digits, make_shapes

    if name == "digits":
        return load_digits()
    if name == "shapes":
        return make_shapes()
    return _common.cifar10_images(subset, limit=limit)


def held_out(name: str, subset: str):
    # The paper's 10k of 60k for full CIFAR (knn_accuracy's default), else 15 %.
    return None if (name == "cifar" and subset == "all") else 0.15


def run(args) -> dict:
    """Fit, score and time one configuration; the result as a dict."""
    from tsimcne_widgets.engine.estimator import TSimCNE
    from tsimcne_widgets.engine.evaluation import knn_accuracy, pixel_tsne

    images = load_dataset(args.dataset, args.subset, args.limit)
    if images is None:
        raise SystemExit("CIFAR-10 not found: set TSIMCNE_CIFAR10 to the archive or folder "
                         "(default ../shared/data/cifar10-jpeg.tar.gz)")
    kwargs = dict(device=args.device, random_state=args.seed, verbose=args.verbose)
    if args.batch:
        kwargs["batch_size"] = args.batch
    if args.backbone:
        kwargs["backbone"] = args.backbone
    if args.epochs:
        kwargs["total_epochs"] = tuple(int(e) for e in args.epochs.split(","))
    if args.budget:
        kwargs["time_budget"] = float(args.budget)
    load_before = _common.load_average()
    started = time.perf_counter()
    estimator = TSimCNE(**kwargs).fit(images)
    wall = time.perf_counter() - started
    load_after = _common.load_average()
    test_size = held_out(args.dataset, args.subset)
    score = knn_accuracy(estimator.embedding_, images.labels, k=15, test_size=test_size)
    trainer = estimator.trainer_
    plan = trainer.plan
    result = {
        "dataset": args.dataset if args.dataset != "cifar" else f"cifar10-{args.subset}",
        "n": len(images),
        "knn": score,
        "wall": wall,
        "epochs": tuple(plan.epochs),
        "batch": plan.batch_size,
        "lr": tuple(round(plan.stage_lr(s), 6) for s in range(1, plan.n_stages + 1)),
        "network": f"{trainer.model_config['backbone']}"
                   + (f"-w{trainer.model_config['backbone_width']}"
                      if trainer.model_config.get("backbone_width") else ""),
        "resolution": tuple(trainer.augmenter.out_size),
        "crop_scale": tuple(trainer.augmenter.crop_scale),
        "load": f"{load_before} → {load_after}",
    }
    baseline = _KNOWN_PIXEL_TSNE.get((args.dataset, args.subset if args.dataset == "cifar" else None))
    result["baseline_source"] = "SPEC §2" if baseline is not None else None
    if args.baseline or baseline is None and args.dataset == "shapes":
        started = time.perf_counter()
        xy = pixel_tsne(images.images, random_state=args.seed)
        baseline = knn_accuracy(xy, images.labels, k=15, test_size=test_size).mean
        result["baseline_source"] = f"measured ({time.perf_counter() - started:.0f} s)"
    result["baseline"] = baseline
    return result


def report_row(result: dict) -> str:
    baseline = result["baseline"]
    gain = "" if baseline is None else f"{100 * (result['knn'].mean - baseline):+.1f} pts"
    base = "n/a" if baseline is None else f"{baseline:.3f} ({result['baseline_source']})"
    return (f"| {result['dataset']} ({result['n']}) | {result['knn']} | {base} | {gain} | "
            f"{result['wall']:.0f} s | {result['network']}, {result['resolution'][0]}×"
            f"{result['resolution'][1]} px, crops {result['crop_scale']}, epochs "
            f"{result['epochs']}, batch {result['batch']}, lr {result['lr']} | {result['load']} |")


_TABLE_HEADER = ("| data (images) | 2-D kNN (k=15) | pixel t-SNE kNN | gain | wall time | "
                 "what ran | load avg (1/5/15) before → after |\n|---|---|---|---|---|---|---|")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", choices=("digits", "shapes", "cifar"))
    parser.add_argument("--subset", choices=("test", "train", "all"), default="test",
                        help="CIFAR-10 part: test (10k), train (50k), all (60k)")
    parser.add_argument("--limit", type=int, default=None, help="random subset of CIFAR images")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--budget", type=float, default=None, help="time_budget in seconds")
    group.add_argument("--epochs", default=None, help="epochs per stage, e.g. 400,25,75")
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--backbone", default=None, help="fix the network, e.g. resnet18")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--baseline", action="store_true", help="measure pixel t-SNE too")
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--out", default=None,
                        help="append a row (and the command) to this markdown file")
    args = parser.parse_args(argv)
    if args.budget is None and args.epochs is None:
        parser.error("give --budget SECONDS or --epochs E1,E2,E3")

    from tsimcne_widgets.engine.device import resolve_device

    device = resolve_device(args.device)
    command = "python benchmarks/quality.py " + " ".join(argv)
    print("\n".join(_common.hardware_lines(device)))
    result = run(args)
    row = report_row(result)
    print(_TABLE_HEADER)
    print(row)
    if args.out:
        path = Path(args.out)
        text = path.read_text() if path.exists() else ""
        if not text:
            text = ("# Map quality\n\n" + "\n".join(_common.hardware_lines(device)) + "\n\n")
        text += f"\n`{command}`\n\n{_TABLE_HEADER}\n{row}\n"
        _common.write_result(path, text)
        print("appended to", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
