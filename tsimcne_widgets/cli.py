"""Command line: ``python -m tsimcne_widgets demo|train``.

``demo`` trains on an embedded data set and compares the map with pixel-space t-SNE;
``train`` maps a folder (or CSV) of images, e.g. on a GPU server, resuming from its
checkpoint when one exists.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Sequence

__all__ = ["main", "build_parser"]

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UserError(Exception):
    """A problem with the user's input: reported in one line, without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m tsimcne_widgets``."""
    parser = argparse.ArgumentParser(
        prog="python -m tsimcne_widgets",
        description="t-SimCNE maps of image collections.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo",
        help="train on an embedded data set and compare with pixel t-SNE",
        description="Train on an embedded data set, write map.csv, map.png and pixel_tsne.png, "
        "and print the 15-NN accuracy of both maps.",
    )
    demo.add_argument("--out", required=True, type=Path, help="output folder")
    demo.add_argument("--budget", type=float, default=180.0,
                      help="training time budget in seconds (default 180)")
    demo.add_argument("--dataset", choices=("shapes", "digits"), default="shapes",
                      help="shapes: pixel similarity misleads (default); digits: sklearn's 8x8")
    demo.add_argument("--n-samples", type=int, default=2000,
                      help="images for shapes (default 2000)")
    demo.add_argument("--image-size", type=int, default=32,
                      help="side of the shapes (default 32; a CPU trains on 16 px views of them)")
    demo.add_argument("--epochs", type=int, nargs="+", metavar="E",
                      help="epochs per stage instead of a budget (e.g. 100 10 40)")
    demo.add_argument("--backbone", default="resnet18", help="backbone (with --epochs)")
    _add_common(demo)

    train = commands.add_parser(
        "train",
        help="map a folder or CSV of images",
        description="Train t-SimCNE on DATA (a folder: sub-folders are labels; or a CSV with a "
        "'path' column) and write map.csv, map.png and model.pt into --out.",
    )
    train.add_argument("data", help="image folder or CSV file")
    train.add_argument("--out", required=True, type=Path, help="output folder")
    train.add_argument("--epochs", type=int, nargs="+", default=[1000, 50, 450], metavar="E",
                       help="epochs per stage (default 1000 50 450)")
    train.add_argument("--batch-size", type=int, default=512, help="images per step (default 512)")
    train.add_argument("--backbone", default="resnet18",
                       help="resnet18, resnet10, resnet18-w32, ...")
    train.add_argument("--budget", type=float,
                       help="time budget in seconds (then --epochs only sets the stage ratio)")
    train.add_argument("--checkpoint", type=Path,
                       help="checkpoint file written during training; resumed when it exists")
    train.add_argument("--image-size", type=int, help="resize images to this side")
    train.add_argument("--compile", action="store_true", help="use torch.compile (long GPU runs)")
    train.add_argument("--snapshots", type=Path,
                       help="write every map into this folder, for Explorer.watch elsewhere")
    train.add_argument("--store", action="store_true",
                       help="decode the images once into a memory-mapped cache and train from "
                       "disk (collections larger than memory; $TSIMCNE_CACHE sets its folder)")
    _add_common(train)
    return parser


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto",
                        help="auto, cpu, cuda, cuda:1, mps (default auto)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _write_map_csv(path: Path, xy, labels, paths=None) -> None:
    # Through the package's table writer, like every other table: atomic (no partial file
    # when the disk fills or the run is interrupted) and safe to open in a spreadsheet
    # (a folder named "=HYPERLINK(...)" becomes a label that shows as text).
    import numpy as np
    import pandas as pd

    from tsimcne_widgets.io.tables import write_table

    n = len(xy)
    columns = {
        "index": np.arange(n),
        # float32 keeps the file as short as the network's own precision warrants.
        "x": np.asarray(xy[:, 0], dtype=np.float32),
        "y": np.asarray(xy[:, 1], dtype=np.float32),
        "label": [""] * n if labels is None else [str(label) for label in labels],
    }
    if paths is not None:
        columns["path"] = list(paths)
    write_table(pd.DataFrame(columns), path, overwrite=True)


def _as_2d(embedding):
    """The map itself, or a PCA view when the run ended before the 2-D stage."""
    if embedding.shape[1] == 2:
        return embedding
    import torch

    from tsimcne_widgets.engine.tensors import pca_2d

    return pca_2d(torch.from_numpy(embedding))


def _prepare_out(folder: Path) -> Path:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(
            f"cannot create the output folder {str(folder)!r}: {exc.strerror}"
        ) from None
    return folder


def _run_demo(args) -> int:
    from tsimcne_widgets.data.datasets import load_digits, make_shapes
    from tsimcne_widgets.engine.estimator import TSimCNE
    from tsimcne_widgets.engine.evaluation import knn_accuracy, pixel_tsne
    from tsimcne_widgets.render.picture import save_map_png

    out = _prepare_out(args.out)
    if args.dataset == "shapes":
        images = make_shapes(
            n_samples=args.n_samples, image_size=args.image_size, random_state=args.seed
        )
    else:
        images = load_digits()
    height, width = images.image_size
    print(f"{args.dataset}: {len(images)} images of {height}x{width} px")
    common = dict(device=args.device, random_state=args.seed, verbose=not args.quiet)
    if args.epochs:
        estimator = TSimCNE(total_epochs=args.epochs, backbone=args.backbone, **common)
    else:
        estimator = TSimCNE(time_budget=args.budget, **common)
    started = time.perf_counter()
    xy = _as_2d(estimator.fit_transform(images))
    seconds = time.perf_counter() - started
    labels = images.labels
    _write_map_csv(out / "map.csv", xy, labels)
    save_map_png(xy, labels, out / "map.png", title=f"t-SimCNE, {args.dataset}")
    print(f"trained in {seconds:.0f} s on {estimator.device_}")

    started = time.perf_counter()
    pixel_xy = pixel_tsne(images.images, random_state=args.seed)
    save_map_png(pixel_xy, labels, out / "pixel_tsne.png", title=f"pixel t-SNE, {args.dataset}")
    tsne_seconds = time.perf_counter() - started
    ours = knn_accuracy(xy, labels, k=15)
    baseline = knn_accuracy(pixel_xy, labels, k=15)
    print(f"15-NN accuracy on the 2-D map: t-SimCNE {ours}   pixel t-SNE {baseline}"
          f"  (t-SNE took {tsne_seconds:.0f} s)")
    print(f"wrote {out / 'map.csv'}, {out / 'map.png'}, {out / 'pixel_tsne.png'}")
    return 0


def _run_train(args) -> int:
    from tsimcne_widgets.data.load import load_images
    from tsimcne_widgets.engine.estimator import TSimCNE
    from tsimcne_widgets.render.picture import save_map_png

    if not Path(args.data).exists():
        raise UserError(f"{args.data!r} does not exist; pass an image folder or a CSV file")
    from tsimcne_widgets.engine.distributed import device_for, setup_from_env, shutdown

    ctx = setup_from_env(args.device)  # under torchrun: join the other processes
    main_rank = ctx is None or ctx.rank == 0  # only rank 0 writes files
    if ctx is not None and (args.budget is not None or args.batch_size % ctx.world_size):
        raise UserError(f"with {ctx.world_size} processes pass --epochs (not --budget) and a "
                        f"--batch-size divisible by {ctx.world_size}")
    out = _prepare_out(args.out)
    if args.store:
        from tsimcne_widgets.data.store import open_store

        images = open_store(args.data, image_size=args.image_size, progress=not args.quiet)
    else:
        images = load_images(args.data, image_size=args.image_size)
    print(f"{len(images)} images of {images.image_size[0]}x{images.image_size[1]} px"
          + (f", {len(images.label_names)} labels" if images.labels is not None else ""))
    callbacks = []
    if args.snapshots is not None and main_rank:
        from tsimcne_widgets.widget.watch import SnapshotWriter

        callbacks.append(SnapshotWriter(args.snapshots))
    estimator = TSimCNE(
        total_epochs=args.epochs, batch_size=args.batch_size, backbone=args.backbone,
        device=device_for(ctx, args.device), random_state=args.seed, time_budget=args.budget,
        checkpoint_path=args.checkpoint if main_rank else None, compile=args.compile,
        verbose=not args.quiet and main_rank,
    )
    if args.checkpoint is not None and args.checkpoint.exists():
        print(f"resuming from {args.checkpoint}")
        estimator.resume(images, args.checkpoint, callbacks=callbacks)
    else:
        estimator.fit(images, callbacks=callbacks)
    if not main_rank:
        shutdown()
        return 0
    xy = _as_2d(estimator.embedding_)
    _write_map_csv(out / "map.csv", xy, images.labels, images.paths)
    save_map_png(xy, images.labels, out / "map.png", title=f"t-SimCNE, {Path(args.data).name}")
    estimator.save(out / "model.pt")
    print(f"wrote {out / 'map.csv'}, {out / 'map.png'}, {out / 'model.pt'}")
    shutdown()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from sklearn.exceptions import NotFittedError

    from tsimcne_widgets.engine.trainer import TrainingError

    user_errors = (
        UserError, ValueError, TypeError, FileNotFoundError, NotFittedError, TrainingError
    )
    try:
        return _run_demo(args) if args.command == "demo" else _run_train(args)
    except KeyboardInterrupt:
        checkpoint = getattr(args, "checkpoint", None)
        hint = " (the checkpoint keeps the last completed epochs)" if checkpoint else ""
        print(f"interrupted{hint}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except user_errors as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
