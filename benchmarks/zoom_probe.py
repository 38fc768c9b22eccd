"""Where the wheel -> raster time goes: the wheel, BokehJS's events, the kernel's redraw, the raster.

JupyterLab in headless Chromium shows an Explorer of N points (``tests/e2e`` helpers, as
``browser.py``).  For six wheel notches it prints, in ms after the wheel event (one clock:
``performance.timeOrigin + now`` in the page, ``time.time()`` in the kernel): the events the
figure triggered (minified class names; ``h`` is RangesUpdate, ``d``/``p`` LODStart/LODEnd),
when the kernel's ``set_view`` began and ended, and when the new raster reached the page.
``--select`` selects every third point first (the raster then has two layers).
``--gap=S`` moves the pointer to a random spot S seconds before each notch (as a user who
points, then scrolls; the hover may ask for a thumbnail page); the kernel's timeline then also
shows each channel message (``ch``) and page request (``pg``).

    python benchmarks/zoom_probe.py 2000
    python benchmarks/zoom_probe.py 100000 --select
    python benchmarks/zoom_probe.py 100000 --select --notches=12
    python benchmarks/zoom_probe.py 200000 --select --gap=0.1
"""
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from tests.e2e.jupyter import LabPage, LabServer, chromium  # noqa: E402
from tests.e2e.mapclient import MapPage, write_notebook  # noqa: E402
import browser as B  # noqa: E402

args = [a for a in sys.argv[1:] if not a.startswith("--")]
n = int(args[0]) if args else 2000
select = "--select" in sys.argv
gap = float(next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--gap=")), 0))
notches = int(next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--notches=")), 6))
root, work = Path(tempfile.mkdtemp()), Path(tempfile.mkdtemp())
with LabServer(root, work, env={"TSIMCNE_QUICK": "1"}) as server, chromium() as br:
    ctx = br.new_context(viewport={"width": 1400, "height": 1000})
    lab = LabPage(ctx.new_page(), server, work / "artifacts")
    write_notebook(root / "p.ipynb", n)
    lab.open_notebook("p.ipynb")
    lab.run_cells([0], timeout=600)
    m = MapPage(lab, lab.kernel_json("explorer.canvas.figure.id"))
    lab.page.locator(".tsw-canvas").first.wait_for(state="visible", timeout=60_000)
    m.kernel("""(lambda c: (setattr(c, 'probe_times', []), setattr(c, 'set_view', (lambda orig: (lambda xr, yr: (c.probe_times.append(('in', time.time()*1000)), orig(xr, yr), c.probe_times.append(('out', time.time()*1000)))))(c.set_view))))(explorer.canvas) and None""")
    # Garbage collections in the kernel (generation, start, ms): a gen-2 pass over a
    # kernel with torch and a Bokeh document can stall an event for 100 ms or more.
    m.kernel("""(lambda gc, t: (setattr(explorer.canvas, 'gc_log', []), gc.callbacks.append(lambda phase, info, log=explorer.canvas.gc_log: log.append((phase, info['generation'], time.time()*1000)))))(__import__('gc'), __import__('time')) and None""")
    m.kernel("(lambda c: (c.client.channel.on_change('data', lambda a, o, n: c.probe_times.append(('ch', time.time()*1000))), setattr(c.client, 'send_pages', (lambda orig: (lambda pages: (c.probe_times.append(('pg', time.time()*1000)), orig(pages))))(c.client.send_pages))))(explorer.canvas) and None")
    if select:
        m.kernel("explorer.select(list(range(0, len(explorer.canvas.xy), 3))) and None")
        time.sleep(1.0)
    rng = np.random.default_rng(0)
    frame = m.frame()
    page = m.page
    page.evaluate("() => { window.__wheelEpoch = []; window.addEventListener('wheel', (e) => window.__wheelEpoch.push(performance.timeOrigin + e.timeStamp), {capture: true}); }")
    page.evaluate("""(fid) => { window.__trig = []; for (const view of window.Bokeh.index) { if (view.model.id !== fid || !view.el.isConnected) continue;
        const orig = view.model.trigger_event.bind(view.model);
        view.model.trigger_event = (ev) => { window.__trig.push([ev.constructor.name || ev.event_name, performance.timeOrigin + performance.now()]); return orig(ev); }; } }""", m.figure_id)
    for k in range(notches):
        m.kernel("explorer.canvas.probe_times.clear()")
        page.evaluate(B.JS_RASTER_WATCH, m.figure_id)
        page.evaluate("() => { window.__tswRasterTimes = window.__tswRasterTimes || []; window.__tswRasterTimes.length = 0; window.__wheelEpoch.length = 0; }")
        if gap:
            page.mouse.move(frame["x"] + frame["width"] * rng.uniform(0.3, 0.7),
                            frame["y"] + frame["height"] * rng.uniform(0.3, 0.7), steps=5)
            time.sleep(gap)
        else:
            page.mouse.move(frame["x"] + frame["width"] * 0.5, frame["y"] + frame["height"] * 0.5)
        page.mouse.wheel(0, float(rng.choice([-100, 100])))
        time.sleep(2.0)
        wheel = page.evaluate("() => window.__wheelEpoch")
        trig = page.evaluate("() => { const t = window.__trig.slice(); window.__trig.length = 0; return t; }")
        raster = page.evaluate("() => window.__tswRasterTimes.map((t) => performance.timeOrigin + t)")
        probe = json.loads(lab.kernel_execute(
            "import json; print(json.dumps(explorer.canvas.probe_times))"))
        gcs = json.loads(lab.kernel_execute(
            "import json; print(json.dumps(explorer.canvas.gc_log)); explorer.canvas.gc_log.clear()"))
        w0 = wheel[0] if wheel else float('nan')
        print(f"wheel events {len(wheel)}; kernel " + ", ".join(f"{a}@{t - w0:.0f}" for a, t in probe)
              + "; trig " + ", ".join(f"{a}@{t - w0:.0f}" for a, t in trig) + "; raster " + ", ".join(f"{t - w0:.0f}" for t in raster)
              + "; gc " + ", ".join(f"{p[0]}{g}@{t - w0:.0f}" for p, g, t in gcs
                                    if g == 2 and -500 < t - w0 < 2000), flush=True)
        m.kernel("explorer.canvas.reset_view()")
        time.sleep(0.8)
