"""Endurance: long training with the widget streaming, and a storm of hovers and lassos.

Two phases, both through the real Explorer:

1. **Training** for ``--minutes`` (default 30; a short calibration run first measures
   how many epochs fill them) with the widget's snapshot pipeline streaming exactly as
   in a notebook: the trainer thread hands snapshots to the kernel's asyncio loop (here
   ``asyncio.run``), which redraws the datashader raster and the replay slider.
   Process RSS and tracemalloc's count of live Python allocations (traced from the
   first snapshot on) are sampled throughout; memory is "flat" when, after the first
   fifth of the streaming, RSS and the traced heap stop growing (the replay buffer,
   bounded by ``--replay-mb``, is reported separately).
2. **Storm**: ``--hovers`` (10,000) browser hover events and ``--lassos`` (1,000) lassos
   sent through jupyter_bokeh's event path into the Explorer's handlers, on a map of
   ``--storm-n`` images, after a warm-up that fills every bounded cache.  Reports what
   the storm retained (tracemalloc) as it goes on, the RSS change and the handler
   latency.

Run from the repository root::

    .venv/bin/python benchmarks/endurance.py                  # 30 min; writes the result
    .venv/bin/python benchmarks/endurance.py --minutes 3      # a short run
    .venv/bin/python benchmarks/endurance.py --minutes 1 --hovers 2000 --lassos 200 --no-write
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS_DIR, hardware_lines, write_result  # noqa: E402

MB = 1024 * 1024


def rss_bytes() -> int:
    """Resident set size of this process."""
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:  # Linux without psutil
        with open("/proc/self/statm") as stream:
            return int(stream.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def make_images(n: int, size: int):
    from tsimcne_widgets.data.datasets import make_shapes

    return make_shapes(n_samples=n, image_size=size, random_state=0)


# ----------------------------------------------------------------------------- phase 1
async def training_phase(args) -> dict:
    from tsimcne_widgets.widget.explorer import Explorer

    images = make_images(args.n, args.size)
    # The first run is short and measures this machine; then runs of the epochs that fill
    # the time left (in the paper's 1000:50:450 ratio) follow back to back, each started
    # like the Start button does, until --minutes are used.  One Explorer throughout, so
    # anything a run leaves behind would pile up.
    explorer = Explorer(images, total_epochs=(1000, 50, 450), backbone="resnet10",
                        backbone_width=args.width, batch_size=args.batch, device=args.device,
                        random_state=0, max_replay_bytes=args.replay_mb * MB,
                        canvas_width=640, canvas_height=520)
    explorer.widget  # the Bokeh document attached, as when displayed
    assert explorer._loop is asyncio.get_running_loop()  # snapshots arrive on this loop
    started = time.perf_counter()
    deadline = started + args.minutes * 60
    samples, runs = [], []
    streaming_since = None

    def sample() -> None:
        nonlocal streaming_since
        snapshot = explorer.training.latest_snapshot
        if streaming_since is None and snapshot is not None:
            # Trace Python allocations from the first snapshot on: imports and one-off
            # set-up before it are not the pipeline's doing.
            streaming_since = time.perf_counter() - started
            gc.collect()
            tracemalloc.start()
        samples.append({
            "t": time.perf_counter() - started,
            "run": len(runs),
            "rss": rss_bytes(),
            "traced": tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else 0,
            "replay": explorer.replay.nbytes,
            "frames": len(explorer.replay),
            "epoch": -1 if snapshot is None else snapshot.total_epoch,
            "stage": 0 if snapshot is None else snapshot.stage,
            "applied": explorer._scheduler.applied,
        })

    def start_run(total: int) -> None:
        explorer.controls.budget_kind.value = "epochs"
        explorer.controls.budget_epochs.value = total
        explorer.controls.start.click()
        runs.append({"planned": total})

    interval = max(2.0, args.minutes * 60 / 60)
    seconds_per_epoch = None
    start_run(5)
    sample()
    next_sample = time.perf_counter() + interval
    while True:
        await asyncio.sleep(0.1)
        if time.perf_counter() >= next_sample:
            sample()
            next_sample += interval
        snapshot = explorer.training.latest_snapshot
        if snapshot is not None and "first" not in runs[-1]:
            runs[-1]["first"] = snapshot
        if not explorer.wait(timeout=0):  # the run's thread still works (or emits its end)
            continue
        final = explorer.training.latest_snapshot
        runs[-1].update(state=explorer.state, epochs=final.total_epoch if final else 0,
                        seconds=final.elapsed if final else 0.0)
        if explorer.state != "finished":
            break
        first = runs[-1]["first"]
        if final.total_epoch > first.total_epoch:  # the first epoch carries one-off costs
            seconds_per_epoch = (final.elapsed - first.elapsed) / (
                final.total_epoch - first.total_epoch)
        else:
            seconds_per_epoch = final.elapsed / final.total_epoch
        left = deadline - time.perf_counter()
        if left < 3 * seconds_per_epoch:
            break
        start_run(max(3, int(left / seconds_per_epoch)))
    await asyncio.sleep(max(explorer._scheduler.min_interval, 0.1) * 2)  # the last apply
    explorer._scheduler.flush()
    sample()
    tracemalloc.stop()
    return {"samples": samples, "runs": runs, "state": explorer.state,
            "messages": explorer.messages, "seconds_per_epoch": seconds_per_epoch,
            "streaming_since": streaming_since if streaming_since is not None else 0.0,
            "renders": explorer.canvas.render_count, "device": explorer.training.device_name}


# ----------------------------------------------------------------------------- phase 2
def _event(figure, name: str, values: dict) -> dict:
    """A ``bokeh_event`` message as jupyter_bokeh's front end sends it to the kernel."""
    return {"event": "jsevent", "kind": "MessageSent", "msg_type": "bokeh_event",
            "msg_data": {"type": "event", "name": name,
                         "values": {"model": {"id": figure.id}, **values}}}


def storm_phase(args) -> dict:
    from tsimcne_widgets.widget.explorer import Explorer

    rng = np.random.default_rng(0)
    images = make_images(args.storm_n, 32)
    explorer = Explorer(images, device="cpu")
    explorer.set_embedding(rng.normal(size=(args.storm_n, 2)).astype(np.float32))
    explorer.canvas.min_hover_interval = 0.0  # count every event (the UI throttles to 30 ms)
    explorer.widget
    model, figure = explorer._bokeh_model, explorer.canvas.figure
    xy = explorer.embedding
    modifiers = {"shift": False, "ctrl": False, "alt": False}
    hover_ms, lasso_ms = [], []

    def hover(k: int) -> None:
        x, y = xy[(k * 7919) % len(xy)]
        message = _event(figure, "mousemove", {"x": float(x), "y": float(y), "sx": 100,
                                               "sy": 100, "modifiers": modifiers})
        t0 = time.perf_counter()
        model._sync_model(model, message, [])
        hover_ms.append((time.perf_counter() - t0) * 1e3)

    def lasso() -> None:
        centre, radius = rng.normal(size=2), rng.uniform(0.1, 0.8)
        angles = np.sort(rng.uniform(0, 2 * np.pi, 16))
        geometry = {"type": "map", "entries": [
            ["type", "poly"], ["x", (centre[0] + radius * np.cos(angles)).tolist()],
            ["y", (centre[1] + radius * np.sin(angles)).tolist()],
            ["sx", [0] * 16], ["sy", [0] * 16]]}
        t0 = time.perf_counter()
        model._sync_model(model, _event(figure, "selectiongeometry",
                                        {"geometry": geometry, "final": True}), [])
        lasso_ms.append((time.perf_counter() - t0) * 1e3)

    def storm(hovers: int, lassos: int, checkpoints: list | None = None) -> None:
        every = max(1, hovers // max(lassos, 1))
        done = 0
        for k in range(hovers):
            hover(k)
            if k % every == 0 and done < lassos:
                lasso()
                done += 1
            if checkpoints is not None and (k + 1) % max(1, hovers // 10) == 0:
                gc.collect()
                checkpoints.append((k + 1, done, tracemalloc.get_traced_memory()[0],
                                    rss_bytes()))
        for _ in range(lassos - done):
            lasso()

    # Warm-up: every thumbnail of the hover size and the gallery size encoded once (both
    # fit the default LRU bound), the undo history full.
    storm(args.storm_n, 2 * explorer.selection_model.history)
    for i in range(args.storm_n):
        explorer.thumbnails.data_uri(i, explorer.gallery.size)
    hover_ms.clear()
    lasso_ms.clear()
    gc.collect()
    rss_before = rss_bytes()
    tracemalloc.start()
    started = time.perf_counter()
    checkpoints: list[tuple[int, int, int, int]] = []
    storm(args.hovers, args.lassos, checkpoints)
    seconds = time.perf_counter() - started
    gc.collect()
    retained, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_after = rss_bytes()

    def q(values, p):
        return float(np.percentile(values, p)) if values else float("nan")

    return {"hovers": len(hover_ms), "lassos": len(lasso_ms), "seconds": seconds,
            "retained": retained, "peak": peak, "rss_before": rss_before,
            "rss_after": rss_after, "hover_median": q(hover_ms, 50), "hover_p99": q(hover_ms, 99),
            "lasso_median": q(lasso_ms, 50), "lasso_p99": q(lasso_ms, 99),
            "cache": explorer.thumbnails.cache_info(), "checkpoints": checkpoints,
            "canvas_bytes": explorer.canvas.width * explorer.canvas.height * 4,
            "errors": [t for kind, t in explorer.messages if kind == "error"]}


# ----------------------------------------------------------------------------- report
def steady(samples, since: float, fraction: float = 0.2) -> list[dict]:
    """Samples after the first ``fraction`` of the streaming period (which starts at
    ``since`` seconds, the first snapshot)."""
    t0 = since + fraction * (samples[-1]["t"] - since)
    return [s for s in samples if s["t"] >= t0]


def slope_mb_per_min(samples, key: str) -> float:
    """Least-squares growth of ``key`` in MB per minute."""
    kept = samples
    if len(kept) < 3:
        return float("nan")
    t = np.array([s["t"] for s in kept]) / 60
    v = np.array([s[key] for s in kept]) / MB
    return float(np.polyfit(t, v, 1)[0])


def report(args, training: dict | None, storm: dict | None, seconds: float) -> str:
    import torch

    device = training["device"] if training else "cpu"
    lines = ["# Endurance", "",
             f"`{' '.join(['benchmarks/endurance.py'] + sys.argv[1:])}` "
             f"({seconds / 60:.1f} min in all)", "", "## Hardware", ""]
    lines += hardware_lines(torch.device(device))
    if training:
        s = training["samples"]
        kept = steady(s, training["streaming_since"])
        rss_growth = (kept[-1]["rss"] - kept[0]["rss"]) / MB
        traced_growth = (kept[-1]["traced"] - kept[0]["traced"]) / MB
        replay_growth = (kept[-1]["replay"] - kept[0]["replay"]) / MB
        epochs = sum(run["epochs"] for run in training["runs"])
        lines += ["", f"## Training for {args.minutes} min with the snapshot pipeline streaming",
                  "",
                  f"make_shapes({args.n}, {args.size}×{args.size}), ResNet-10 width "
                  f"{args.width}, batch {args.batch}, device {device}; replay bound "
                  f"{args.replay_mb} MB.  {len(training['runs'])} run{'s' * (len(training['runs']) != 1)} back to back in one "
                  f"Explorer (a 5-epoch run to measure the speed, then runs of the epochs "
                  f"that fill the time left): {epochs} epochs in all, "
                  f"{s[-1]['applied']} snapshots applied on the event loop, "
                  f"{training['renders']} raster renders.  Runs (planned epochs → state): "
                  + ", ".join(f"{r['planned']} → {r.get('state', '?')}"
                              for r in training["runs"]) + ".", "",
                  "| minute | run | stage | epoch | RSS (MB) | Python heap, traced (MB) "
                  "| replay (MB) | frames | snapshots applied |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        step = max(1, len(s) // 12)
        for x in s[::step] + ([s[-1]] if (len(s) - 1) % step else []):
            lines.append(f"| {x['t'] / 60:.1f} | {x['run']} | {x['stage']} | {x['epoch']} | "
                         f"{x['rss'] / MB:.1f} | {x['traced'] / MB:.2f} | "
                         f"{x['replay'] / MB:.3f} | {x['frames']} | {x['applied']} |")
        lines += ["",
                  f"Snapshots streamed from minute {training['streaming_since'] / 60:.1f} "
                  "(the first epoch's end).  From minute "
                  f"{kept[0]['t'] / 60:.1f} (a fifth into the streaming) to the end: "
                  f"RSS {rss_growth:+.1f} MB (slope {slope_mb_per_min(kept, 'rss'):+.2f} "
                  f"MB/min), traced Python heap {traced_growth:+.2f} MB (slope "
                  f"{slope_mb_per_min(kept, 'traced'):+.3f} MB/min), replay buffer "
                  f"{replay_growth:+.3f} MB (bounded by {args.replay_mb} MB)."]
        if any(r.get("state") != "finished" for r in training["runs"]):
            lines += ["", f"Messages: {training['messages']}"]
    if storm:
        cache = storm["cache"]
        lines += ["", f"## {storm['hovers']:,} hovers and {storm['lassos']:,} lassos", "",
                  f"Through jupyter_bokeh's event path into the Explorer (hover card, lasso, "
                  f"selection highlight, gallery), map of {args.storm_n} images, after a "
                  f"warm-up that filled the thumbnail cache and the undo history.", "",
                  "| measure | value |", "|---|---:|",
                  f"| storm duration (tracemalloc on) | {storm['seconds']:.1f} s |",
                  f"| Python allocations retained after the storm | "
                  f"{storm['retained'] / 1024:.0f} KiB |",
                  f"| peak traced during the storm | {storm['peak'] / MB:.1f} MB |",
                  f"| RSS before → after | {storm['rss_before'] / MB:.1f} → "
                  f"{storm['rss_after'] / MB:.1f} MB |",
                  f"| hover handler, median / p99 | {storm['hover_median']:.2f} / "
                  f"{storm['hover_p99']:.2f} ms |",
                  f"| lasso handler (incl. redraw + gallery), median / p99 | "
                  f"{storm['lasso_median']:.1f} / {storm['lasso_p99']:.1f} ms |",
                  f"| thumbnail cache hits / misses / size (bound) | {cache.hits} / "
                  f"{cache.misses} / {cache.currsize} ({cache.maxsize}) |",
                  f"| errors shown | {len(storm['errors'])} |"]
        marks = storm["checkpoints"]
        if len(marks) >= 2:
            half = marks[len(marks) // 2 - 1]
            lines += ["", "Python allocations retained (tracemalloc, after `gc.collect()`) as "
                      "the storm goes on: flat means nothing accumulates per event.  What "
                      "stays is the current state (the raster on screen alone is "
                      f"{storm['canvas_bytes'] / 1024:.0f} KiB, plus the hover card, the "
                      "gallery and the undo history, all replaced, not added to).", "",
                      "| hovers | lassos | retained (KiB) | RSS (MB) |", "|---:|---:|---:|---:|"]
            lines += [f"| {h:,} | {l:,} | {r / 1024:.0f} | {m / MB:.1f} |"
                      for h, l, r, m in marks]
            growth = (marks[-1][2] - half[2]) / 1024
            lines += ["", f"Second half of the storm ({half[0]:,} → {marks[-1][0]:,} hovers): "
                      f"retained {growth:+.0f} KiB, RSS "
                      f"{(marks[-1][3] - half[3]) / MB:+.1f} MB."]
    lines += ["", "Latencies are measured with tracemalloc on (it slows Python code "
              "2–3×); see `benchmarks/ui.py` for untraced UI latency."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0,
                        help="training phase length (default 30)")
    parser.add_argument("--n", type=int, default=2000, help="training images")
    parser.add_argument("--size", type=int, default=16, help="training image side")
    parser.add_argument("--width", type=int, default=8, help="ResNet-10 width")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--replay-mb", type=int, default=64, help="replay buffer bound")
    parser.add_argument("--hovers", type=int, default=10_000)
    parser.add_argument("--lassos", type=int, default=1_000)
    parser.add_argument("--storm-n", type=int, default=1000, help="images on the storm's map")
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--skip-storm", action="store_true")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "endurance.md")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    training = None if args.skip_training else asyncio.run(training_phase(args))
    storm = None if args.skip_storm else storm_phase(args)
    text = report(args, training, storm, time.perf_counter() - started)
    print(text)
    if not args.no_write:
        print(f"wrote {write_result(args.output, text)}")
    failed = (training is not None and any(r.get("state") != "finished"
                                           for r in training["runs"])) or (
        storm is not None and storm["errors"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
