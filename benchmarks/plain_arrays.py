"""Maps of data that carries no augmentation settings, beside the hand-tuned ones.

Each case fits ``TSimCNE(time_budget=..., random_state=0)`` twice in the same
invocation, interleaved (tuned first in odd cases, plain first in even ones, so that
the load of a shared machine hits both alike):

* **tuned**: the ImageSet as the package ships it (digits: ``DIGITS_AUGMENTATION``,
  shapes: ``SHAPES_AUGMENTATION``; CIFAR-10: the paper's settings, passed explicitly);
* **plain**: the same pixels as a bare uint8 numpy array (digits as ``(N, 8, 8, 1)``),
  so the settings come from :func:`tsimcne_widgets.engine.augment_policy.augmentation_for`.

The score is the paper's protocol (kNN, k = 15, on the 2-D map, 15 % held out, mean
of 5 splits).  ``--cases`` picks what runs; ``shapes@16`` is the shapes set drawn at
16 px, ``cifar@64`` CIFAR-10 test images resized to 64 px, ``cifar-folder`` the JPEG
folder itself (plain only: a folder carries no settings).

Examples
--------
    python benchmarks/plain_arrays.py --cases digits,shapes --budget 180
    python benchmarks/plain_arrays.py --cases shapes@8,shapes@16,shapes@28,shapes@64 --budget 60
    python benchmarks/plain_arrays.py --cases cifar --limit 10000 --budget 900
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

import _common


def _cifar(limit: int, size: int | None):
    from tsimcne_widgets.data.load import ImageSet

    cifar = _common.cifar10_images("test", limit=limit)
    if cifar is None:
        raise SystemExit("CIFAR-10 not found: set TSIMCNE_CIFAR10 to the archive or folder")
    images = cifar.images
    if size is not None and size != images.shape[1]:
        import torch
        import torch.nn.functional as F

        x = torch.from_numpy(images.copy()).permute(0, 3, 1, 2).float()
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True,
                          align_corners=False)
        images = x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    # The paper's settings are CIFAR's tuned ones: say so explicitly, so that the
    # data-derived defaults do not apply to the tuned side.
    return ImageSet(images=images, labels=cifar.labels), {}


def tuned_and_plain(case: str, limit: int):
    """(tuned ImageSet, augmentation override for it, plain input, labels)."""
    from tsimcne_widgets.data.datasets import load_digits, make_shapes

    name, _, size = case.partition("@")
    size = int(size) if size else None
    if name == "digits":
        from sklearn.datasets import load_digits as sklearn_digits

        tuned = load_digits()
        plain = np.rint(sklearn_digits().images * (255 / 16)).astype(np.uint8)[..., None]
        return tuned, None, plain, tuned.labels
    if name == "shapes":
        tuned = make_shapes(image_size=size or 32)
        return tuned, None, np.array(tuned.images), tuned.labels
    if name == "cifar":
        tuned, override = _cifar(limit, size)
        return tuned, override, np.array(tuned.images), tuned.labels
    if name == "cifar-folder":
        from tsimcne_widgets.data.datasets import cifar10_folder
        from tsimcne_widgets.data.load import load_images

        folder = cifar10_folder()
        if folder is None:
            raise SystemExit("CIFAR-10 not found: set TSIMCNE_CIFAR10")
        images = load_images(str(folder / "test"))
        if limit < len(images):
            keep = np.sort(np.random.default_rng(0).permutation(len(images))[:limit])
            images = images.subset(keep)
        return None, None, images, images.labels
    raise SystemExit(f"unknown case {case!r}: digits, shapes[@SIZE], cifar[@SIZE], cifar-folder")


def fit_and_score(data, labels, augmentation, budget: float, seed: int) -> dict:
    from tsimcne_widgets.engine.estimator import TSimCNE
    from tsimcne_widgets.engine.evaluation import knn_accuracy

    load_before = _common.load_average()
    started = time.perf_counter()
    estimator = TSimCNE(time_budget=budget, random_state=seed, augmentation=augmentation)
    estimator.fit(data, labels)
    wall = time.perf_counter() - started
    trainer = estimator.trainer_
    augmenter = trainer.augmenter
    config = trainer.model_config
    return {
        "knn": knn_accuracy(estimator.embedding_, labels, k=15, test_size=0.15),
        "wall": wall,
        "what": (f"{config['backbone']}-w{config['backbone_width']}, "
                 f"{augmenter.out_size[0]} px, epochs {tuple(trainer.plan.epochs)}"),
        "augment": (f"crops {augmenter.crop_scale}, flip {augmenter.flip_p}, "
                    f"jitter {augmenter.jitter}, gray {augmenter.grayscale_p}"),
        "load": f"{load_before} → {_common.load_average()}",
    }


def _tuned_settings(tuned, override) -> dict:
    return dict(override if override is not None else tuned.augmentation or {})


def _same_augmenter(a: dict, b: dict) -> bool:
    from tsimcne_widgets.engine.augment import Augmenter

    return repr(Augmenter(8, **a)) == repr(Augmenter(8, **b))


def append_table(path, title: str, hardware: list[str], table: str) -> Path:
    """Append ``table`` to the markdown file ``path``; a new file starts with ``title``
    and the hardware lines."""
    path = Path(path)
    text = path.read_text() if path.exists() else f"# {title}\n\n" + "\n".join(hardware) + "\n"
    return _common.write_result(path, text + table)


_HEADER = ("| case | settings | 2-D kNN (k=15) | wall | augmentations | what ran | "
           "load avg before → after |\n|---|---|---|---|---|---|---|")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default="digits,shapes")
    parser.add_argument("--budget", type=float, default=180.0)
    parser.add_argument("--limit", type=int, default=10000, help="CIFAR-10 test images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="append the table to this markdown file")
    parser.add_argument("--settings-only", action="store_true",
                        help="derive and compare the settings, fit nothing (seconds)")
    args = parser.parse_args(argv)

    from tsimcne_widgets.data.load import load_images
    from tsimcne_widgets.engine.augment_policy import augmentation_for, measure_traits
    from tsimcne_widgets.engine.device import resolve_device

    command = "python benchmarks/plain_arrays.py " + " ".join(argv)
    lines = _common.hardware_lines(resolve_device("cpu"))
    print("\n".join(lines))
    rows = []
    for index, case in enumerate(c for c in args.cases.split(",") if c):
        tuned, override, plain, labels = tuned_and_plain(case, args.limit)
        traits = measure_traits(load_images(plain))
        print(f"{case}: {traits}", flush=True)
        derived = augmentation_for(load_images(plain), traits)
        if args.settings_only:
            tuned_text = "none (a folder)" if tuned is None else _tuned_settings(tuned, override)
            row = (f"| {case} | tuned {tuned_text} | derived {derived} | mirror ratio "
                   f"{traits.mirror_ratio:.2f}, content area {traits.content_area:.2f}, "
                   f"grayscale {traits.grayscale} |")
            print(row, flush=True)
            rows.append(row)
            continue
        if tuned is not None and _same_augmenter(_tuned_settings(tuned, override), derived):
            # Same settings, same seed: a second fit would only measure the load.
            row = (f"| {case} | plain = tuned | not refitted | | {derived} | | "
                   f"{_common.load_average()} |")
            print(row, flush=True)
            rows.append(row)
            continue
        sides = [("plain", plain)] if tuned is None else [("tuned", tuned), ("plain", plain)]
        if index % 2:
            sides.reverse()
        for side, data in sides:
            result = fit_and_score(data, labels, override if side == "tuned" else None,
                                   args.budget, args.seed)
            row = (f"| {case} | {side} | {result['knn']} | {result['wall']:.0f} s | "
                   f"{result['augment']} | {result['what']} | {result['load']} |")
            print(row, flush=True)
            rows.append(row)
    header = _HEADER if not args.settings_only else (
        "| case | tuned settings | derived from the pixels | traits |\n|---|---|---|---|")
    table = f"\n`{command}`\n\n{header}\n" + "\n".join(rows) + "\n"
    print(table)
    if args.out:
        print("appended to", append_table(args.out, "Plain arrays vs tuned settings", lines, table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
