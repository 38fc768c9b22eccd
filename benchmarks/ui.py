"""Kernel-side UI latency on a one-million-point map: raster frame, hover lookup, lasso.

Run from the repository root::

    .venv/bin/python benchmarks/ui.py            # 1M points, writes benchmarks/results/ui-<cpu>.md
    .venv/bin/python benchmarks/ui.py --points 200000 --no-write

Targets (what keeps the widget interactive): a frame rasterised into the packed
RGBA array Bokeh's ``image_rgba`` takes (< 150 ms at 800×600), a nearest-point
lookup for hover (< 2 ms, index built beforehand; its build time is reported
separately) and a lasso covering a quarter of the points (< 100 ms).
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tsimcne_widgets.render.lasso import points_in_polygon  # noqa: E402
from tsimcne_widgets.render.raster import Rasterizer, data_range, to_png_bytes  # noqa: E402
from tsimcne_widgets.render.spatial import SpatialIndex  # noqa: E402

WIDTH, HEIGHT = 800, 600


def cpu_name() -> str:
    """CPU model and core count, e.g. 'AMD EPYC 7B13, 2 cores' (no host name)."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{model}, {cores} cores"


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def timed(function, repeats: int, calls: int = 1):
    """Wall-time median and best, and CPU time, in ms per call, plus the last result.

    One warm-up call first (numba compiles datashader's kernels then).  The
    CPU time (all threads of this process) tells apart a slow code path from
    a machine shared with other busy processes, where wall time inflates.
    """
    result = function()
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(calls):
            result = function()
        walls.append((time.perf_counter() - wall) / calls)
        cpus.append((time.process_time() - cpu) / calls)
    ms = 1000.0
    return (statistics.median(walls) * ms, min(walls) * ms, statistics.median(cpus) * ms), result


def make_map(n_points: int, seed: int = 0):
    """Ten Gaussian blobs of uneven size and spread, like a trained map of 10 classes."""
    rng = np.random.default_rng(seed)
    codes = rng.choice(10, n_points, p=rng.dirichlet(np.full(10, 5.0))).astype(np.int32)
    centers = rng.uniform(-40, 40, (10, 2))
    spread = rng.uniform(2, 6, 10)
    xy = centers[codes] + rng.standard_normal((n_points, 2)) * spread[codes, None]
    return xy.astype(np.float32), codes


def quarter_lasso(xy: np.ndarray, vertices: int = 200) -> np.ndarray:
    """A wobbly hand-drawn-like loop around the median, enclosing ~25% of the points."""
    center = np.median(xy, axis=0)
    radius = np.quantile(np.hypot(*(xy - center).T), 0.25)
    angle = np.linspace(0, 2 * np.pi, vertices, endpoint=False)
    wobble = 1 + 0.03 * np.sin(7 * angle)
    radius = radius / np.sqrt(np.mean(wobble**2))  # keep the enclosed area
    return np.c_[center[0] + radius * wobble * np.cos(angle), center[1] + radius * wobble * np.sin(angle)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)

    xy, codes = make_map(args.points)
    # Consecutive training frames: the points move, the categories stay.
    frames = [xy, xy + np.float32(0.01), xy - np.float32(0.01)]
    x_range, y_range = data_range(xy)
    rasterizer = Rasterizer([f"class {k}" for k in range(10)])
    frame_counter = iter(range(10**9))

    def render_frame(selected=None):
        return rasterizer.render(
            frames[next(frame_counter) % 3], codes, x_range, y_range, WIDTH, HEIGHT, selected=selected
        )

    rows = []
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    frame_ms, image = timed(render_frame, args.repeats)
    assert image.shape == (HEIGHT, WIDTH) and image.dtype == np.uint32
    rows.append(("frame rasterised for image_rgba, 800×600, points moved since last frame", frame_ms, 150))
    selection = np.flatnonzero(codes == 3)
    selected_ms, _ = timed(lambda: render_frame(selection), args.repeats)
    rows.append((f"same, with {len(selection):,} points selected (highlight on)", selected_ms, 150))
    png_ms, _ = timed(lambda: to_png_bytes(image), max(3, args.repeats // 3))
    rows.append(("PNG encoding of that frame (static exports only)", png_ms, None))

    build_ms, index = timed(lambda: SpatialIndex(xy).build(), 3)
    rows.append(("hover index build (k-d tree, once per new map)", build_ms, None))
    rng = np.random.default_rng(1)
    queries = xy[rng.integers(0, len(xy), 2000)] + rng.normal(0, 0.5, (2000, 2))
    radius = 5 * (x_range[1] - x_range[0]) / WIDTH  # 5 screen pixels
    query_iter = iter(np.tile(queries, (args.repeats + 2, 1)))

    def lookup():
        x, y = next(query_iter)
        return index.nearest(float(x), float(y), radius)

    lookup_ms, _ = timed(lookup, args.repeats, calls=len(queries) // 2)
    hits = np.mean([index.nearest(float(x), float(y), radius) is not None for x, y in queries])
    rows.append((f"nearest-point lookup, 5-pixel radius ({hits:.0%} hits)", lookup_ms, 2))

    polygon = quarter_lasso(xy)
    lasso_ms, mask = timed(lambda: points_in_polygon(xy, polygon), args.repeats)
    rows.append((f"lasso, {len(polygon)} vertices, {mask.mean():.1%} of points inside", lasso_ms, 100))
    load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")

    hardware = cpu_name()
    lines = [
        f"# UI latency, {args.points:,} points, 10 categories",
        "",
        f"Hardware: {hardware}. Python {platform.python_version()}, numpy {np.__version__}. "
        f"{datetime.date.today().isoformat()}.",
        f"Command: `.venv/bin/python benchmarks/ui.py --points {args.points} --repeats {args.repeats}` "
        "(after a warm-up call; wall-clock median and best of the repeats, and the process's CPU "
        "time per call, all threads).",
        f"1-minute load average {load_before:.1f} before, {load_after:.1f} after, on "
        f"{os.cpu_count()} logical CPUs: with a load above the CPU count, other processes "
        "inflate wall time; CPU time shows the cost of the code itself.",
        "",
        "| measurement | median (ms) | best (ms) | CPU (ms) | target (ms) | median wall | CPU |",
        "|---|---:|---:|---:|---:|---|---|",
    ]

    def verdict(value, target):
        return "" if target is None else ("ok" if value < target else "MISSED")

    for name, (median, best, cpu), target in rows:
        target_text = "" if target is None else f"< {target}"
        lines.append(
            f"| {name} | {median:.2f} | {best:.2f} | {cpu:.2f} | {target_text} "
            f"| {verdict(median, target)} | {verdict(cpu, target)} |"
        )
    report = "\n".join(lines) + "\n"
    print(report)
    if not args.no_write:
        out = Path(__file__).resolve().parent / "results" / f"ui-{slug(hardware)}.md"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(report)
        print(f"written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
