"""What a user feels in the browser: pointer to hover card, mouse-up to count, wheel to raster.

JupyterLab in headless Chromium (the end-to-end tests' helpers, ``tests/e2e/``) shows an
Explorer of N synthetic 16 px images on a fixed clustered map.  Every time is page time
from the input event (its ``timeStamp``) to the first animation frame at which the
answer is in the DOM:

* **sweep → card**: 30 pointer moves over 200 px ending on a point, from the last move
  to the card of that point (``.tsw-client-card`` with its index; 0 when it already
  shows, as the last moves land within the hover radius; while training, any card,
  since the map moves under the pointer);
* **lasso → count**: a hand-speed lasso (90 moves, ~2 s), from mouse-up to the map's
  "N selected" (``.tsw-map-count``); "not drawn" counts drags BokehJS took as a press
  (pointer within 5 px for 300 ms, which happens when the machine is loaded);
* **wheel → raster**: one wheel notch, to the first frame after the kernel's new raster
  arrived (the raster's ColumnDataSource changed); from a kernel that has finished the
  lasso's updates (``--wheel-after-lasso``: at once, while it still works on them).

Each in three kernel states: **idle**; **training** (``explorer.start()``, 2k points only:
the training thread then streams maps); **sleeping** (another cell runs ``time.sleep``).

Examples
--------
    python benchmarks/browser.py                        # 2k and 100k points, ~5 min
    python benchmarks/browser.py --sizes 2000 --repeats 5
    python benchmarks/browser.py --out benchmarks/results/browser.md
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.e2e.jupyter import LabPage, LabServer, chromium  # noqa: E402
from tests.e2e.mapclient import MapPage, card_test, count_test, write_notebook  # noqa: E402

JS_RASTER_WATCH = """
(figureId) => {
  for (const view of window.Bokeh.index) {
    if (view.model.id !== figureId || !view.el.isConnected) continue;
    const source = view.model.renderers[0].data_source;
    if (!window.__tswRasterTimes) {
      window.__tswRasterTimes = [];
      source.properties.data.change.connect(() => window.__tswRasterTimes.push(performance.now()));
    }
    return true;
  }
  return false;
}
"""


def _percentiles(values) -> str:
    v = np.asarray(values, dtype=float)
    missed = int(np.isnan(v).sum())
    v = v[~np.isnan(v)]
    text = f"p50 {np.percentile(v, 50):.0f}, p95 {np.percentile(v, 95):.0f} ms (n={v.size})"
    return text + (f", {missed} not drawn" if missed else "")


def _sample(m: MapPage, frame, size: int = 3000):
    """Indices, page positions and nearest-neighbour gaps (page px) of a sample of the
    shown map (the whole of a big map would exceed the server's output rate limit)."""
    index, xy, gap = m.kernel(
        "(lambda xy, s: [s.tolist(), xy[s].tolist(), __import__('scipy.spatial').spatial"
        ".cKDTree(xy).query(xy[s], k=2)[0][:, 1].tolist()])(explorer.canvas.xy, "
        f"np.sort(np.random.default_rng(0).permutation(len(explorer.canvas.xy))[:{size}]))")
    per_pixel = (frame["x_range"][1] - frame["x_range"][0]) / frame["width"]
    return np.array(index), m.to_page(np.array(xy), frame), np.array(gap) / per_pixel


def _sweep_to_card(m: MapPage, sample, frame, rng, any_card: bool = False) -> float:
    page = m.page
    index, on_page, gap = sample
    inner = np.flatnonzero((on_page[:, 0] > frame["x"] + 40)
                           & (on_page[:, 0] < frame["x"] + frame["width"] - 40)
                           & (on_page[:, 1] > frame["y"] + 40)
                           & (on_page[:, 1] < frame["y"] + frame["height"] - 40))
    # A point whose position picks it (no other point within the hover radius), if any.
    isolated = inner[gap[inner] > 7]
    k = int(rng.choice(isolated if isolated.size else inner))
    target, on_page = int(index[k]), on_page[k:k + 1]
    start = on_page[0] + [rng.choice([-200, 200]), rng.uniform(-40, 40)]
    page.mouse.move(*start)
    time.sleep(0.1)
    # While training the map moves between the kernel's read and the sweep: any card.
    m.watch("const c = find('.tsw-client-card'); return !!c && c.offsetParent !== null;"
            if any_card else card_test(target))
    for point in np.linspace(start, on_page[0], 30)[1:]:
        page.mouse.move(float(point[0]), float(point[1]))
    # From the last move (the pointer stops): a card already showing the target counts 0.
    ms = max(m.watched_ms(), 0.0)
    page.mouse.move(frame["x"] - 5, frame["y"] - 5)
    return ms


def _lasso_to_count(m: MapPage, sample, frame, rng) -> float:
    on_page = sample[1]
    page = m.page
    page.mouse.move(frame["x"] + 20, frame["y"] + 20)
    page.keyboard.press("Escape")
    time.sleep(0.1)
    radius = min(frame["width"], frame["height"]) * rng.uniform(0.1, 0.15)
    # Around a point, so that the loop holds at least one whatever the map looks like.
    inner = np.flatnonzero((np.abs(on_page - [frame["x"] + frame["width"] / 2,
                                               frame["y"] + frame["height"] / 2])
                            < [frame["width"] / 2 - radius - 5,
                               frame["height"] / 2 - radius - 5]).all(1))
    centre = on_page[int(rng.choice(inner))]
    angles = np.linspace(0, 2 * np.pi, 90)
    loop = centre + radius * np.c_[np.cos(angles), np.sin(angles)]
    m.watch("const c = find('.tsw-map-count'); return !!c && !c.innerText.startsWith('0 ');")
    page.mouse.move(*loop[0])
    page.mouse.down()
    for k, point in enumerate(loop[1:]):
        page.mouse.move(float(point[0]), float(point[1]))
        # ~2 s for the loop, as a hand draws it; the first moves come at once, as a hand
        # starts a drag (BokehJS takes a pointer still within 5 px after 300 ms as a press).
        if k > 3:
            time.sleep(0.02)
    page.mouse.up()
    try:
        return m.watched_ms()
    except AssertionError:
        # On a loaded machine BokehJS may take the drag's start as a press (no lasso).
        page.mouse.move(frame["x"] - 5, frame["y"] - 5)
        return float("nan")


def _wheel_to_raster(m: MapPage, frame, rng) -> float:
    page = m.page
    page.mouse.move(frame["x"] + frame["width"] * rng.uniform(0.4, 0.6),
                    frame["y"] + frame["height"] * rng.uniform(0.4, 0.6))
    assert page.evaluate(JS_RASTER_WATCH, m.figure_id)
    m.watch("return false;")  # only to record the wheel event's time
    page.mouse.wheel(0, float(rng.choice([-100, 100])))
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        events = page.evaluate("() => window.__tswEvents")
        if events:
            after = page.evaluate(f"() => window.__tswRasterTimes.filter((t) => t > {events[-1]})")
            if after:
                return after[0] - events[-1]
        time.sleep(0.05)
    raise TimeoutError("no raster after the wheel")


def measure(lab: LabPage, n: int, repeats: int, states, root: Path,
            wheel_after_lasso: bool = False) -> list[tuple]:
    name = f"bench-{n}.ipynb"
    write_notebook(root / name, n)
    lab.open_notebook(name)
    lab.run_cells([0], timeout=600)
    m = MapPage(lab, lab.kernel_json("explorer.canvas.figure.id"))
    lab.page.locator(".tsw-canvas").first.wait_for(state="visible", timeout=60_000)
    rng = np.random.default_rng(0)
    rows = []
    for state in states:
        if state == "training" and n > 5000:
            continue
        if state == "training":
            m.kernel("explorer.start() and None")
        sweep, lasso, wheel = [], [], []
        for _ in range(repeats):
            if state == "sleeping":
                m.start_in_kernel("time.sleep(4)")
                time.sleep(0.2)
            frame = m.frame()
            sample = _sample(m, frame)
            sweep.append(_sweep_to_card(m, sample, frame, rng, any_card=state == "training"))
            lasso.append(_lasso_to_count(m, sample, frame, rng))
            if state != "sleeping":  # a sleeping kernel cannot redraw: nothing to time
                # The lasso's aftermath (gallery, table, highlighted raster) keeps the
                # kernel busy for a while: time the wheel from a kernel that answers
                # ("idle"), or that only trains.  `--wheel-after-lasso` times it at once.
                if not wheel_after_lasso:
                    m.kernel("1")
                    time.sleep(0.3)
                wheel.append(_wheel_to_raster(m, frame, rng))
                m.kernel("explorer.canvas.reset_view()")
                time.sleep(0.5)  # its raster arrives before the next wheel
            if state == "sleeping":
                m.wait_kernel_code()
        if state == "training":
            m.kernel("explorer.stop() and None")
            m.kernel("explorer.wait(60) and None", timeout=90)
        rows.append((n, state, sweep, lasso, wheel))
        print(f"{n:>7} {state:<9} sweep→card {_percentiles(sweep)} | lasso→count "
              f"{_percentiles(lasso)} | wheel→raster "
              f"{_percentiles(wheel) if wheel else 'n/a'}", flush=True)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 100_000])
    parser.add_argument("--states", nargs="+", default=["idle", "training", "sleeping"])
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--out", type=Path, help="write a Markdown table here")
    parser.add_argument("--wheel-after-lasso", action="store_true",
                        help="wheel right after the lasso's count shows, kernel still busy")
    args = parser.parse_args(argv)
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
               platform.processor())
    header = (f"CPU: {cpu}, {len(__import__('os').sched_getaffinity(0))} cores, torch "
              f"{torch.__version__} ({torch.backends.cpu.get_cpu_capability()}), headless Chromium")
    print(header, flush=True)
    root, work = Path(tempfile.mkdtemp()), Path(tempfile.mkdtemp())
    rows = []
    with LabServer(root, work, env={"TSIMCNE_QUICK": "1"}) as server, chromium() as browser:
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        lab = LabPage(context.new_page(), server, work / "artifacts")
        for n in args.sizes:
            rows += measure(lab, n, args.repeats, args.states, root, args.wheel_after_lasso)
    if args.out:
        lines = [f"# Browser latency ({time.strftime('%Y-%m-%d')})", "", header, "",
                 "| points | kernel | sweep → card | lasso → count | wheel → raster |",
                 "|---|---|---|---|---|"]
        for n, state, sweep, lasso, wheel in rows:
            lines.append(f"| {n:,} | {state} | {_percentiles(sweep)} | {_percentiles(lasso)} | "
                         f"{_percentiles(wheel) if wheel else 'n/a (kernel asleep)'} |")
        args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
