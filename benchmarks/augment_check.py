"""Calibration of the augmentation check (engine/augment_check.py) on data with known maps.

Prints a Markdown table: view retrieval (the check's score) and verdict for digits
(scikit-learn, 8 px) with the paper's, the hand-tuned and the data-derived settings;
shapes at 8, 16 and 32 px; CIFAR-10 test images (512, from ``../shared/data``) with the
paper's settings and destructive crops; plus the seconds each check took.

Examples
--------
    python benchmarks/augment_check.py
    python benchmarks/augment_check.py --out benchmarks/results/augment-check.md
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import torch

import _common

from tsimcne_widgets.data.datasets import DIGITS_AUGMENTATION, SHAPES_AUGMENTATION, make_shapes
from tsimcne_widgets.engine.augment_check import RETRIEVAL_LIMIT, check_augmentation
from tsimcne_widgets.engine.augment_policy import augmentation_for

DESTROY = {"crop_scale": (0.01, 0.02)}


def cases(limit: int):
    from sklearn.datasets import load_digits as sklearn_digits

    digits = np.rint(sklearn_digits().images * (255 / 16)).astype(np.uint8)
    digits = np.repeat(digits[..., None], 3, -1)  # as load_images makes a bare (N, 8, 8, 1)
    yield "digits 8 px", digits, [("paper's", {}, "bad: kNN 0.38"),
                                  ("tuned", DIGITS_AUGMENTATION, "good: kNN 0.99"),
                                  ("derived", None, "good"), ("crops 0.01-0.02", DESTROY, "")]
    for side in (8, 16, 32):
        shapes = np.array(make_shapes(image_size=side).images)
        yield f"shapes {side} px", shapes, [("paper's", {}, ""),
                                            ("tuned (crops 0.5)", SHAPES_AUGMENTATION, "good"),
                                            ("derived", None, "good"),
                                            ("crops 0.01-0.02", DESTROY, "")]
    cifar = _common.cifar10_images("test", limit=limit)
    if cifar is None:
        print("CIFAR-10 not found: set TSIMCNE_CIFAR10; skipped")
        return
    yield "CIFAR-10 32 px", cifar.images, [("paper's", {}, "good: the paper's"),
                                           ("crops 0.05-0.1", {"crop_scale": (0.05, 0.1)}, ""),
                                           ("crops 0.01-0.02", DESTROY, "")]


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=512, help="CIFAR-10 test images")
    parser.add_argument("--n", type=int, default=512, help="images per check")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per row (spread shown)")
    parser.add_argument("--out", type=Path, help="also write the table there")
    args = parser.parse_args(argv)
    lines = [f"- CPU: {_common.cpu_model()}, ISA {torch.backends.cpu.get_cpu_capability()}, "
             f"torch threads {torch.get_num_threads()}",
             f"- torch {torch.__version__}, Python {platform.python_version()}",
             f"- load average (1/5/15 min) at start: {_common.load_average()}",
             f"- threshold RETRIEVAL_LIMIT = {RETRIEVAL_LIMIT}", "",
             "| data | settings | retrieval (seed 0) | seeds 0..%d min-max | verdict | known | seconds |"
             % (args.seeds - 1), "|---|---|---|---|---|---|---|"]
    for data, images, rows in cases(args.limit):
        for name, settings, known in rows:
            if settings is None:
                settings = augmentation_for(images)
                name = f"derived {settings}"
            results = [check_augmentation(images, settings, n=args.n, seed=s)
                       for s in range(args.seeds)]
            scores = [r.score for r in results]
            first = results[0]
            lines.append(f"| {data} | {name} | {first.score:.3f} | {min(scores):.3f}-"
                         f"{max(scores):.3f} | {first.verdict} | {known} | "
                         f"{np.median([r.seconds for r in results]):.2f} |")
            print(lines[-1], flush=True)
    text = "\n".join(lines)
    if args.out:
        _common.write_result(args.out, text + "\n")
    return text


if __name__ == "__main__":
    started = time.perf_counter()
    print(main())
    print(f"total {time.perf_counter() - started:.0f} s")
