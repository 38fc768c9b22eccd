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

Usage::

    python benchmarks/ingest.py --n 100000 --size 32 --work /tmp/ingest-bench
"""
from __future__ import annotations

import argparse
import io
import os
import shutil
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--work", type=Path, default=Path("/tmp/tsimcne-ingest-bench"))
    parser.add_argument("--train-seconds", type=float, default=20.0)
    args = parser.parse_args()

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
