"""Training throughput with the Explorer streaming its map, against headless training.

The same training (images, network, stage plan, seed, threads) runs two ways, in
interleaved rounds (headless, widget, headless, widget, ...), and the medians are
compared:

* **headless**: ``TSimCNE(...).fit(images)``, the public estimator path, no callbacks
  (so no maps are computed during training);
* **widget**: the real :class:`~tsimcne_widgets.Explorer`, started with its Start
  button on the same images, inside a running asyncio loop, as in a Jupyter kernel.
  The trainer thread computes a map after epochs (as often as its
  ``map_time_fraction`` allows) and hands each snapshot to the widget's scheduler,
  which applies the newest one on the loop, at most every ``min_apply_interval``
  seconds and paced by its own CPU cost (``LatestOnlyScheduler``): datashader rasterises the map, the Bokeh figure's data source and ranges
  change (jupyter_bokeh serialises the document patch), and the progress text, bar
  and replay slider update.  Without a browser the comm messages go nowhere, but
  all of the kernel's own work is done; the counts of snapshots applied and frames
  rendered show that the map really streamed.

Throughput is images trained (optimiser steps x batch) divided by the trainer's own
``elapsed`` (the wall time of its training loop: steps, maps, callbacks), so the cost
of the maps and of the kernel's work competing for the cores is included.  The
"steps only" rate (training epochs' time, from the trainer's per-epoch timing) shows
how much of a gap comes from contention rather than from the maps themselves.

A warm-up first runs both paths briefly (torch allocation, numba's compilation of
datashader's kernels); with ``--seconds`` its headless run also measures the speed
from which the epochs that fill the requested time are chosen (in the paper's
1000:50:450 stage ratio), the same plan for every round.

``--browser`` additionally runs the widget inside JupyterLab with headless Chromium
showing it (the comm messages then really reach BokehJS), using the end-to-end
tests' server helpers (``tests/e2e/jupyter.py``).

Examples
--------
    python benchmarks/widget_throughput.py                       # CPU, ~40 s per run, 5 rounds
    python benchmarks/widget_throughput.py --out benchmarks/results/widget-throughput-cpu.md
    python benchmarks/widget_throughput.py --browser           # plus one run in JupyterLab
    python benchmarks/widget_throughput.py --epochs 20 2 9 --rounds 1
    taskset -c 1 python benchmarks/widget_throughput.py --rounds 1 --seconds 15  # a quick check
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402

TARGET = 0.90
STAGE_RATIO = (1000, 50, 450)
WARM_UP_EPOCHS = (4, 1, 1)


# ---------------------------------------------------------------------- data and plan
def load_data(args):
    """The benchmark's images as an ImageSet, and a one-line description."""
    from tsimcne_widgets.data.datasets import load_digits, make_shapes

    if args.data == "digits":
        images = load_digits()
        return images, f"scikit-learn digits ({len(images)} images, 8x8)"
    images = make_shapes(n_samples=args.n, image_size=args.size, random_state=0)
    return images, f"make_shapes({args.n}, image_size={args.size})"


def estimator_params(args, epochs) -> dict:
    """TSimCNE keyword arguments shared by both sides."""
    return dict(total_epochs=tuple(epochs), batch_size=args.batch, backbone=args.backbone,
                backbone_width=args.width, device=args.device, random_state=0,
                num_threads=args.threads)


def epochs_for(seconds: float, seconds_per_epoch: float) -> tuple[int, int, int]:
    """Epochs per stage, in the paper's ratio, that take about ``seconds``."""
    from tsimcne_widgets.engine.recipe import equivalent_epochs
    from tsimcne_widgets.engine.schedule import scale_epochs

    # Stage 2 trains only the new output layer: its epochs cost less (recipe.STAGE2_COST).
    mean_cost = equivalent_epochs(STAGE_RATIO) / sum(STAGE_RATIO)
    total = max(3, int(round(seconds / (seconds_per_epoch * mean_cost))))
    return scale_epochs(STAGE_RATIO, total)


# ---------------------------------------------------------------------- one measurement
def summarise(trainer, wall: float | None) -> dict:
    """Throughput figures of a finished run from the trainer's own timing."""
    if trainer is None or trainer.state != "finished":
        state = None if trainer is None else trainer.state
        error = None if trainer is None else trainer.error
        raise RuntimeError(f"the training run did not finish (state {state}, error {error})")
    images = trainer.step * trainer.plan.batch_size
    epoch_seconds = sum(trainer.epoch_seconds)  # training steps only, per the trainer
    return {
        "images": images,
        "elapsed": trainer.elapsed,
        "wall": wall,
        "rate": images / trainer.elapsed,
        "steps_rate": images / epoch_seconds,
        "outside_steps": trainer.elapsed - epoch_seconds,
        "epochs": trainer.total_epoch,
        "epoch_seconds": list(trainer.epoch_seconds),
    }


def run_headless(images, params: dict) -> dict:
    """Train through ``TSimCNE.fit`` with no callbacks."""
    from tsimcne_widgets import TSimCNE

    estimator = TSimCNE(**params)
    started, cpu = time.perf_counter(), time.process_time()
    estimator.fit(images)
    result = summarise(estimator.trainer_, time.perf_counter() - started)
    result["cpu"] = time.process_time() - cpu
    result.update(snapshots=0, applied=0, frames=0, updates=0, apply_cpu=0.0, apply_wall=0.0,
                  apply_max=0.0)
    return result


class WidgetProbe:
    """Counts what the Explorer's kernel side does while it trains.

    Wraps the scheduler's apply (kernel CPU and wall time per update) and the
    training session's ``take_snapshot`` (snapshots that reached the widget).
    """

    def __init__(self, explorer) -> None:
        self.explorer = explorer
        self.snapshots_applied = 0
        self.apply_cpu: list[float] = []
        self.apply_wall: list[float] = []
        scheduler, session = explorer._scheduler, explorer.training
        apply, take = scheduler._apply, session.take_snapshot

        def timed_apply(item):
            wall, cpu = time.perf_counter(), time.thread_time()
            try:
                return apply(item)
            finally:
                self.apply_cpu.append(time.thread_time() - cpu)
                self.apply_wall.append(time.perf_counter() - wall)

        def counted_take():
            snapshot = take()
            self.snapshots_applied += snapshot is not None
            return snapshot

        scheduler._apply = timed_apply
        session.take_snapshot = counted_take
        self.reset()

    def reset(self) -> None:
        """Count from now on (e.g. after a warm-up run in the same Explorer)."""
        self.snapshots_applied = 0
        self.apply_cpu.clear()
        self.apply_wall.clear()
        self._frames = self.explorer.canvas.render_count

    def result(self, wall: float | None = None) -> dict:
        """Throughput of the finished run plus the kernel-side counts."""
        explorer = self.explorer
        if explorer.state != "finished":
            raise RuntimeError(f"the widget's run ended {explorer.state}: {explorer.messages}")
        result = summarise(explorer.training.trainer, wall)
        result.update(
            # The replay restarts with each run, so its count is this run's snapshots.
            snapshots=explorer.replay._appended,
            applied=self.snapshots_applied,
            frames=explorer.canvas.render_count - self._frames,
            updates=len(self.apply_cpu),
            apply_cpu=sum(self.apply_cpu),
            apply_wall=sum(self.apply_wall),
            apply_max=max(self.apply_wall, default=0.0),
        )
        return result


async def run_widget(images, params: dict, args) -> dict:
    """Train through the Explorer's Start button with the map streaming on this loop."""
    from tsimcne_widgets.widget.explorer import Explorer

    explorer = Explorer(images, canvas_width=args.canvas_width,
                        canvas_height=args.canvas_height, **params)
    if explorer._loop is not asyncio.get_running_loop():
        raise RuntimeError("the Explorer did not find the running event loop; snapshots "
                           "would never be applied")
    explorer.widget  # the BokehModel attached to the figure, as when displayed
    probe = WidgetProbe(explorer)
    kind, total = explorer.controls.budget
    if kind != "epochs" or int(total) != sum(params["total_epochs"]):
        raise RuntimeError(f"the widget's budget is {kind} {total}, expected "
                           f"epochs {sum(params['total_epochs'])}")
    started, cpu = time.perf_counter(), time.process_time()
    explorer.controls.start.click()
    # Idle like a kernel between cells: the loop runs the scheduler's callbacks.
    while not explorer.training.wait(timeout=0):
        await asyncio.sleep(0.05)
    wall = time.perf_counter() - started
    # The final snapshot is applied by the loop after the thread ends (paced, so it
    # may take up to the scheduler's max_interval).
    deadline = time.perf_counter() + 10.0
    while explorer._scheduler.has_pending and time.perf_counter() < deadline:
        await asyncio.sleep(0.05)
    result = probe.result(wall)
    result["cpu"] = time.process_time() - cpu
    return result


# ---------------------------------------------------------------------- browser variant
_BROWSER_SETUP = """
import sys, time
sys.path.insert(0, {bench!r})
from widget_throughput import WidgetProbe
from tsimcne_widgets import Explorer
from tsimcne_widgets.data.datasets import load_digits, make_shapes
explorer = Explorer({data}, canvas_width={width}, canvas_height={height}, **{params!r})
probe = WidgetProbe(explorer)
explorer
"""


def run_browser(params: dict, args) -> dict:
    """One widget run in JupyterLab, the Explorer shown in headless Chromium.

    The kernel is idle while it trains (polled from the page between runs of
    small code), as in a notebook where a user watches the map.  A short run in
    the same Explorer first warms the kernel up (torch, numba's kernels).
    """
    import json
    import tempfile

    if str(_common.REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(_common.REPO_ROOT))
    from tests.e2e.jupyter import LabPage, LabServer, browser_stack_problem, chromium

    problem = browser_stack_problem()
    if problem is not None:
        raise SystemExit(f"--browser: {problem}")
    data = (f"make_shapes(n_samples={args.n}, image_size={args.size}, random_state=0)"
            if args.data == "shapes" else "load_digits()")
    setup = _BROWSER_SETUP.format(bench=str(Path(__file__).resolve().parent), data=data,
                                  width=args.canvas_width, height=args.canvas_height,
                                  params=params).strip()
    notebook = {"cells": [{"cell_type": "code", "metadata": {}, "execution_count": None,
                           "outputs": [], "source": setup}],
                "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                            "language": "python"}},
                "nbformat": 4, "nbformat_minor": 5}
    env = {"OMP_NUM_THREADS": str(args.threads)} if args.threads else {}
    with tempfile.TemporaryDirectory(prefix="tsw-widget-bench-") as scratch:
        root, work = Path(scratch) / "root", Path(scratch) / "work"
        root.mkdir()
        (root / "bench.ipynb").write_text(json.dumps(notebook))
        with LabServer(root, work, env=env) as server, chromium() as browser:
            page = LabPage(browser.new_page(viewport={"width": 1400, "height": 1000}),
                           server, artifacts_dir=Path(scratch) / "artifacts")
            page.open_notebook("bench.ipynb")
            page.run_all(timeout=300)
            # The map's BokehModel is really shown: BokehJS draws into its canvas.
            page.page.locator(".tsw-canvas canvas").first.wait_for(state="visible",
                                                                   timeout=60_000)

            def train(epochs: int) -> float:
                page.kernel_execute(
                    "probe.reset()\n"
                    f"explorer.controls.budget_epochs.value = {epochs}\n"
                    "_started = time.perf_counter()\n"
                    "explorer.controls.start.click()")
                deadline = time.monotonic() + 60 + 10 * args.expected_seconds
                while not page.kernel_json("explorer.training.wait(timeout=0)"):
                    if time.monotonic() > deadline:
                        raise TimeoutError("the browser run did not finish")
                    time.sleep(1.0)
                time.sleep(3.0)  # the last, paced apply
                return page.kernel_json("time.perf_counter() - _started")

            train(sum(WARM_UP_EPOCHS))
            # The same page and once-a-second polling with no training: the browser's
            # and server's cost that is not the streaming map's.
            idle_groups, idle_started = cpu_by_process_group(), time.perf_counter()
            for _ in range(20):
                page.kernel_json("explorer.training.wait(timeout=0)")
                time.sleep(1.0)
            idle_after, idle_wall = cpu_by_process_group(), time.perf_counter() - idle_started
            idle_share = {name: (idle_after[name] - idle_groups[name]) / idle_wall
                          for name in idle_after}
            busy, groups = machine_busy_seconds(), cpu_by_process_group()
            wall = train(sum(params["total_epochs"]))
            result = page.kernel_json(f"probe.result({wall!r})")
            after = cpu_by_process_group()
            # Everything on the machine in that time: the kernel, Chromium drawing the
            # map and running BokehJS, the Jupyter server relaying comm messages.
            result["machine_cpu"] = machine_busy_seconds() - busy
            result["group_cpu"] = {name: after.get(name, 0.0) - groups.get(name, 0.0)
                                   for name in after}
            result["idle_share"] = idle_share
            return result


_PROCESS_GROUPS = (("kernel", "ipykernel"), ("Chromium", "chrom"),
                   ("Jupyter server", "jupyter"))


def cpu_by_process_group() -> dict[str, float]:
    """CPU seconds so far of the kernel, the browser and the server processes (Linux)."""
    totals = dict.fromkeys((name for name, _ in _PROCESS_GROUPS), 0.0)
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                command = handle.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process ended meanwhile
        for name, marker in _PROCESS_GROUPS:  # first match: the kernel's command names jupyter too
            if marker in command:
                totals[name] += (int(fields[11]) + int(fields[12])) / tick  # utime + stime
                break
    return totals


def machine_busy_seconds() -> float:
    """CPU seconds all processes on this machine have used since boot (Linux)."""
    with open("/proc/stat", encoding="ascii") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")  # without guest time


# ---------------------------------------------------------------------- report
def _median(values):
    return statistics.median(values) if values else float("nan")


def cpu_ratio(rows) -> float:
    """Median CPU seconds per image, headless over widget."""
    per_image = {side: _median([r["cpu"] / r["images"] for r in rows if r["side"] == side])
                 for side in ("headless", "widget")}
    return per_image["headless"] / per_image["widget"]


def build_report(args, hardware, description, epochs, rows, browser, command) -> str:
    headless = [r for r in rows if r["side"] == "headless"]
    widget = [r for r in rows if r["side"] == "widget"]
    h_rate, w_rate = _median([r["rate"] for r in headless]), _median([r["rate"] for r in widget])
    ratio = w_rate / h_rate
    lines = [f"# Training throughput with the widget streaming: {args.device_type.upper()}", "",
             *hardware, "", f"Command: `{command}`", "",
             f"Images: {description}; backbone {args.backbone} width {args.width}, batch "
             f"{args.batch}, epochs {epochs[0]}/{epochs[1]}/{epochs[2]} "
             f"({sum(epochs)} in all), seed 0, torch threads {args.torch_threads}; "
             f"canvas {args.canvas_width}x{args.canvas_height}; {args.rounds} interleaved "
             "round(s) after a warm-up; medians reported.", "",
             "| round | side | load (1 min) | images/s | images/s, steps only | "
             "loop s | outside steps s | process CPU s | snapshots | applied | frames | "
             "kernel CPU s (wall s, max ms) |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['round']} | {r['side']} | {r['load']} | {r['rate']:.0f} | "
            f"{r['steps_rate']:.0f} | {r['elapsed']:.1f} | {r['outside_steps']:.2f} | "
            f"{r['cpu']:.1f} | {r['snapshots']} | {r['applied']} | {r['frames']} | "
            f"{r['apply_cpu']:.2f} ({r['apply_wall']:.2f}, {1e3 * r['apply_max']:.0f}) |")
    verdict = "met" if ratio >= TARGET else "NOT met"
    lines += ["", f"Median images/s: headless {h_rate:.0f}, widget {w_rate:.0f}; "
              f"widget / headless = **{ratio:.3f}** (target ≥ {TARGET:.2f}: {verdict}).",
              f"Steps only (maps and callbacks excluded): headless "
              f"{_median([r['steps_rate'] for r in headless]):.0f}, widget "
              f"{_median([r['steps_rate'] for r in widget]):.0f} images/s.  Process CPU "
              f"time per image, headless / widget: {cpu_ratio(rows):.3f} (the ratio a machine "
              "whose cores the training saturates would see; less sensitive to other "
              "processes' load than the wall-time ratio).", ""]
    if browser is not None:
        lines += [f"In JupyterLab with headless Chromium showing the widget (one run, after "
                  f"the in-process rounds): {browser['rate']:.0f} images/s "
                  f"({browser['rate'] / h_rate:.3f} of the headless median; steps only "
                  f"{browser['steps_rate']:.0f}), {browser['snapshots']} snapshots, "
                  f"{browser['applied']} applied, {browser['frames']} frames rendered, "
                  f"kernel CPU in updates {browser['apply_cpu']:.2f} s.  CPU used meanwhile "
                  f"({browser['wall']:.0f} s): "
                  + ", ".join(f"{name} {seconds:.1f} s ({seconds / browser['wall']:.2f} of a "
                              "core)" for name, seconds in browser["group_cpu"].items())
                  + f"; the whole machine {browser['machine_cpu']:.1f} s.  With the same page "
                  "and polling but no training (20 s): "
                  + ", ".join(f"{name} {share:.2f} of a core"
                              for name, share in browser["idle_share"].items())
                  + ".  A browser on the "
                  "same cores takes its share from training; on Binder it runs on the "
                  "user's computer.", ""]
    lines += ["images/s = images trained / the trainer's `elapsed` (its training loop's wall "
              "time: steps, maps, callbacks).  'steps only' divides by the epochs' own "
              "timing; 'outside steps' is the loop time spent on maps, snapshots and stage "
              "changes.  'snapshots' were emitted by the trainer, 'applied' reached the "
              "widget on the event loop (newer ones replace older ones waiting there), "
              "'frames' are datashader renders; 'kernel CPU s' is the event-loop thread's "
              "CPU time in those updates (raster, Bokeh patch, progress widgets), with "
              "their wall time and the longest one."]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto (default cpu)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--seconds", type=float, default=45.0,
                        help="approximate length of each run; epochs chosen after a warm-up "
                             "(default 45)")
    budget.add_argument("--epochs", type=int, nargs=3, metavar=("S1", "S2", "S3"),
                        help="fixed epochs per stage instead of --seconds")
    parser.add_argument("--data", choices=("shapes", "digits"), default="shapes")
    parser.add_argument("--n", type=int, default=2000, help="shapes: number of images")
    parser.add_argument("--size", type=int, default=16, help="shapes: image side")
    parser.add_argument("--backbone", default="resnet10")
    parser.add_argument("--width", type=int, default=8, help="backbone width")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: the trainer's own choice)")
    parser.add_argument("--canvas-width", type=int, default=640)
    parser.add_argument("--canvas-height", type=int, default=520)
    parser.add_argument("--browser", action="store_true",
                        help="also run the widget in JupyterLab + headless Chromium")
    parser.add_argument("--out", default=None, help="markdown result file (default: print only)")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    # The in-process rounds run inside an asyncio loop, as a kernel's cells do; the
    # browser run drives Playwright's sync API, which must run outside any loop.
    hardware, description, epochs, params, rows = asyncio.run(measure(args))
    browser = None
    if args.browser:
        args.expected_seconds = max(r["wall"] for r in rows)
        browser = run_browser(params, args)
        print(f"browser: {browser['rate']:.0f} images/s, applied {browser['applied']}, "
              f"frames {browser['frames']}", flush=True)

    command = " ".join(["python benchmarks/widget_throughput.py", *argv]).strip()
    report = build_report(args, hardware, description, epochs, rows, browser, command)
    print(report)
    h = _median([r["rate"] for r in rows if r["side"] == "headless"])
    w = _median([r["rate"] for r in rows if r["side"] == "widget"])
    widget_rows = [r for r in rows if r["side"] == "widget"]
    print(f"images/s headless {h:.0f}, widget {w:.0f}, widget/headless {w / h:.3f}; "
          f"snapshots applied {sum(r['applied'] for r in widget_rows)} "
          f"(of {sum(r['snapshots'] for r in widget_rows)} emitted), "
          f"frames rendered {sum(r['frames'] for r in widget_rows)}; CPU per image "
          f"headless/widget {cpu_ratio(rows):.3f}")
    if args.out:
        print("written:", _common.write_result(Path(args.out), report))
    return 0


async def measure(args):
    """Warm-up, plan, then the interleaved rounds; returns what the report needs."""
    import torch

    from tsimcne_widgets.engine.device import resolve_device

    device = resolve_device(args.device)
    args.device = str(device)
    args.device_type = device.type
    images, description = load_data(args)

    # Warm-up: both paths once, short (WARM_UP_EPOCHS), not counted.  Its headless run
    # measures the speed that --seconds is turned into epochs with.
    warm_params = estimator_params(args, WARM_UP_EPOCHS)
    print("warm-up: headless ...", flush=True)
    warm = run_headless(images, warm_params)
    print("warm-up: widget ...", flush=True)
    await run_widget(images, warm_params, args)
    hardware = _common.hardware_lines(device)
    args.torch_threads = torch.get_num_threads()
    if args.epochs:
        epochs = tuple(args.epochs)
    else:
        # Stage-1 epochs after the first, which carries one-off costs.
        seconds_per_epoch = statistics.median(warm["epoch_seconds"][1:WARM_UP_EPOCHS[0]])
        print(f"warm-up: {seconds_per_epoch:.2f} s per stage-1 epoch", flush=True)
        epochs = epochs_for(args.seconds, seconds_per_epoch)
    params = estimator_params(args, epochs)
    print(f"plan: epochs {epochs} on {description}", flush=True)

    rows = []
    for round_index in range(args.rounds):
        for side in ("headless", "widget"):
            load = _common.load_average().split(" / ")[0]
            if side == "headless":
                result = run_headless(images, params)
            else:
                result = await run_widget(images, params, args)
            result.update(round=round_index + 1, side=side, load=load)
            rows.append(result)
            print(f"round {round_index + 1} {side:8s}: {result['rate']:.0f} images/s "
                  f"(steps only {result['steps_rate']:.0f}), loop {result['elapsed']:.1f} s, "
                  f"snapshots {result['snapshots']}, applied {result['applied']}, "
                  f"frames {result['frames']}", flush=True)

    return hardware, description, epochs, params, rows


if __name__ == "__main__":
    sys.exit(main())
