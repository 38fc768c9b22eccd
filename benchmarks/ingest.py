"""Image store: ingest rate against a single-threaded PIL loop, and anonymous memory.

Builds a folder of N JPEGs from the CIFAR-10 archive in ``../shared/data`` (the 60,000
originals, then horizontally flipped random crops of them, re-encoded), outside the
repository, and measures in one run on the same folder:

* images/s of a plain single-threaded PIL loop (open, RGB, resize, into one array);
* images/s of :func:`tsimcne_widgets.data.store.open_store` on threads and on processes;
* the peak ``RssAnon`` (anonymous resident memory: what cannot be paged back to a file)
  of this process during the store's ingest, during ``Explorer(store)`` and during
  training from the store, against the array's own size;
* a linear extrapolation of ingest time and store size to 1M and 10M images.

``--part memory`` breaks the anonymous memory of training from the store down (each
configuration in a fresh process, so no allocator state carries over): importing torch
and the package, building the trainer (network, optimiser, DiskImages), training steps
(autograd buffers, the augmented batch), the map of stage 1 (128-D output, then its PCA)
and of stage 3 (2-D); at N = 10k and 100k (rows of the same store) to tell the fixed cost
from what grows with N.

Usage::

    python benchmarks/ingest.py --n 100000 --size 32 --work /tmp/tsimcne-ingest-bench
    python benchmarks/ingest.py --part memory --n 100000 --work /tmp/tsimcne-ingest-bench
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
from _common import cpu_model, load_average
from PIL import Image

ARCHIVE = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg.tar.gz"


def rss_anon_bytes(pid: int | str = "self") -> int:
    """``RssAnon`` of a process from ``/proc/<pid>/status``, in bytes."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    return 0


def children_rss_anon() -> int:
    """Summed ``RssAnon`` of this process's children (process-pool workers)."""
    total = 0
    for task in Path("/proc/self/task").iterdir():
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for pid in children:
            try:
                total += rss_anon_bytes(pid)
            except OSError:
                pass
    return total


class PeakMemory:
    """Samples RssAnon (this process, and its children) every 20 ms while active."""

    def __enter__(self):
        self.base = rss_anon_bytes()
        self.peak = self.base
        self.peak_children = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss_anon_bytes())
            self.peak_children = max(self.peak_children, children_rss_anon())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_anon_bytes())


def make_folder(n: int, dest: Path) -> list[str]:
    """N JPEGs under ``dest/<class>/``: the originals first, then flipped random crops."""
    if dest.exists() and sum(1 for _ in dest.rglob("*.jpg")) == n:
        return sorted(str(p) for p in dest.rglob("*.jpg"))
    shutil.rmtree(dest, ignore_errors=True)
    rng = np.random.default_rng(0)
    with tarfile.open(ARCHIVE) as tar:
        members = [m for m in tar.getmembers() if m.isfile() and m.name.endswith(".jpg")]
        blobs = [(m.name.split("/")[-2], tar.extractfile(m).read()) for m in members]
    for i in range(n):
        label, blob = blobs[i % len(blobs)]
        path = dest / label / f"{i:07d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        if i < len(blobs):
            path.write_bytes(blob)
            continue
        image = Image.open(io.BytesIO(blob)).convert("RGB").transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        side = int(rng.integers(24, 32))
        x, y = rng.integers(0, 32 - side + 1, 2)
        image.crop((x, y, x + side, y + side)).resize((32, 32)).save(path, quality=90)
    return sorted(str(p) for p in dest.rglob("*.jpg"))


def pil_loop(paths: list[str], size: int) -> np.ndarray:
    out = np.empty((len(paths), size, size, 3), np.uint8)
    for i, path in enumerate(paths):
        with Image.open(path) as image:
            out[i] = np.asarray(image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC))
    return out


def memory_one(store: Path, n: int, batch_size: int, steps: int) -> dict:
    """Anonymous memory (MiB above the mark before the trainer) of training on ``n`` rows."""
    import torch

    from tsimcne_widgets.engine.schedule import StagePlan
    from tsimcne_widgets.engine.trainer import Trainer

    mib = 2**20
    marks = {"torch + package imported (absolute)": rss_anon_bytes() / mib}
    images = np.load(store, mmap_mode="r")[:n]
    base = rss_anon_bytes()
    trainer = Trainer(images, StagePlan.from_total_epochs((1, 1, 1), n, batch_size),
                      backbone="resnet10", backbone_width=8, hidden_dim=256, device="cpu",
                      num_threads=1)
    marks["trainer built (network, DiskImages)"] = (rss_anon_bytes() - base) / mib
    trainer.enter_stage()  # the first torch optimiser imports torch._dynamo
    marks["+ first optimiser"] = (rss_anon_bytes() - base) / mib
    order = torch.randperm(n)
    with PeakMemory() as peak:
        for step in range(steps):
            trainer.train_step(trainer.images[order[step * batch_size:(step + 1) * batch_size]])
    marks[f"{steps} training steps, peak"] = (peak.peak - base) / mib
    marks["after the steps"] = (rss_anon_bytes() - base) / mib
    for stage in (1, 3):
        if stage == 3:
            trainer.stage, trainer.epoch = 3, 0
            trainer.enter_stage()
        with PeakMemory() as peak:
            trainer.compute_map()
        width = trainer.model.out_dim
        marks[f"stage-{stage} map ({width}-D output), peak"] = (peak.peak - base) / mib
    marks["at the end"] = (rss_anon_bytes() - base) / mib
    return marks


def memory_table(args) -> None:
    store = next((args.work / "cache-thread").glob("*/images.npy"))
    print(f"CPU: {cpu_model()}, load {load_average()}; store {store}")
    sizes = sorted({min(10_000, args.n), args.n})
    results = {}
    for n in sizes:
        for batch in (64, 256):
            done = subprocess.run(
                [sys.executable, __file__, "--part", "memory-one", "--n", str(n), "--batch-size",
                 str(batch), "--store", str(store), "--steps", str(args.steps)],
                capture_output=True, text=True, check=True)
            results[(n, batch)] = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"N={n} B={batch}: {results[(n, batch)]}", flush=True)
    rows = list(next(iter(results.values())))
    header = " | ".join(f"N={n:,} B={b}" for n, b in results)
    print(f"| RssAnon, MiB | {header} |")
    print("|---" * (len(results) + 1) + "|")
    for row in rows:
        print(f"| {row} | " + " | ".join(f"{r[row]:.1f}" for r in results.values()) + " |")
    print(f"array: {args.n * args.size ** 2 * 3 / 2**20:.0f} MiB at N={args.n:,}, "
          f"bound a third: {args.n * args.size ** 2 * 3 / 3 / 2**20:.0f} MiB; load {load_average()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--work", type=Path, default=Path("/tmp/tsimcne-ingest-bench"))
    parser.add_argument("--train-seconds", type=float, default=20.0)
    parser.add_argument("--part", choices=("all", "memory", "memory-one"), default="all")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--store", type=Path)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    if args.part == "memory-one":
        print(json.dumps(memory_one(args.store, args.n, args.batch_size, args.steps)))
        return
    if args.part == "memory":
        memory_table(args)
        return

    import torch

    from tsimcne_widgets.data.store import open_store

    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__} "
          f"({torch.backends.cpu.get_cpu_capability()}), load {load_average()}")
    started = time.perf_counter()
    paths = make_folder(args.n, args.work / "images")
    print(f"folder of {len(paths)} JPEGs in {time.perf_counter() - started:.0f} s")
    array_bytes = args.n * args.size * args.size * 3

    started = time.perf_counter()
    pil_loop(paths, args.size)
    pil_seconds = time.perf_counter() - started
    print(f"single-threaded PIL loop: {args.n / pil_seconds:,.0f} images/s ({pil_seconds:.1f} s)")

    results = {}
    for executor in ("thread", "process"):
        cache = args.work / f"cache-{executor}"
        shutil.rmtree(cache, ignore_errors=True)
        with PeakMemory() as memory:
            started = time.perf_counter()
            stored = open_store(args.work / "images", image_size=args.size, cache_dir=cache,
                                executor=executor, progress=False)
            seconds = time.perf_counter() - started
        results[executor] = seconds
        print(f"open_store(executor={executor!r}, {os.cpu_count()} workers): {args.n / seconds:,.0f} images/s "
              f"({seconds:.1f} s, {args.n / seconds / (args.n / pil_seconds):.2f}x the PIL loop); "
              f"RssAnon +{(memory.peak - memory.base) / 2**20:.0f} MiB here, children "
              f"{memory.peak_children / 2**20:.0f} MiB; array {array_bytes / 2**20:.0f} MiB")
        del stored

    started = time.perf_counter()
    with PeakMemory() as memory:
        stored = open_store(args.work / "images", image_size=args.size,
                            cache_dir=args.work / "cache-thread", progress=False)
    print(f"reopen: {time.perf_counter() - started:.2f} s, RssAnon "
          f"+{(memory.peak - memory.base) / 2**20:.0f} MiB")

    from tsimcne_widgets.widget.explorer import Explorer

    with PeakMemory() as memory:
        explorer = Explorer(stored, total_epochs=(1, 1, 1), batch_size=256)
    print(f"Explorer(store): RssAnon +{(memory.peak - memory.base) / 2**20:.0f} MiB "
          f"(bound: a third of the array, {array_bytes / 3 / 2**20:.0f} MiB)")
    del explorer

    from tsimcne_widgets.engine.schedule import StagePlan
    from tsimcne_widgets.engine.trainer import Trainer

    with PeakMemory() as memory:
        trainer = Trainer(stored, StagePlan.from_total_epochs((1, 1, 1), args.n, 256),
                          backbone="resnet10", backbone_width=8, hidden_dim=256, device="cpu")
        trainer.start()
        time.sleep(args.train_seconds)
        trainer.stop()
        trainer.wait()
    print(f"training from the store ({type(trainer.images).__name__}, {trainer.step} steps in "
          f"{args.train_seconds:.0f} s): RssAnon +{(memory.peak - memory.base) / 2**20:.0f} MiB")

    per_image = results["thread"] / args.n
    for n in (1_000_000, 10_000_000):
        print(f"extrapolated to {n:,}: ingest {per_image * n / 60:.0f} min on these cores, "
              f"store {n * args.size * args.size * 3 / 2**30:.1f} GiB on disk")


if __name__ == "__main__":
    main()
