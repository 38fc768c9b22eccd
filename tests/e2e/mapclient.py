"""Helpers for driving the map's browser-side hover and selection in JupyterLab.

Shared by ``test_map_client_browser.py`` and ``benchmarks/browser.py``: a notebook that
shows an Explorer on a synthetic clustered map (no training needed), the map's frame on
the page, data <-> page coordinates, kernel code started without waiting, and timings
taken in page time from the input event (``performance.now()`` at dispatch) to the DOM
change that shows the answer.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from .jupyter import TIMEOUT_SCALE
from .test_quickstart_browser import CANVAS_HOOK, QuickstartSession

COUNT_HOOK = ".tsw-map-count"
CARD_HOOK = ".tsw-client-card"
TABLE_HOOK = ".tsw-selection-table"


def write_notebook(path: Path, n: int, seed: int = 0, image_size: int = 16,
                   show: str = "explorer") -> None:
    """A notebook whose first cell makes an Explorer of ``n`` images on a fixed map and
    ends with ``show`` (code whose last line is what the cell shows)."""
    import nbformat

    setup = f"""\
import numpy as np, time
from tsimcne_widgets import Explorer
rng = np.random.default_rng({seed})
n = {n}
centres = rng.normal(scale=6.0, size=(8, 2))
labels = rng.integers(0, 8, n)
xy = (centres[labels] + rng.normal(size=(n, 2))).astype(np.float32)
palette = rng.integers(40, 220, (8, 3))
images = np.clip(palette[labels][:, None, None, :] + rng.normal(0, 25, (n, {image_size}, {image_size}, 3)),
                 0, 255).astype(np.uint8)
explorer = Explorer(images, labels=[f"class {{k}}" for k in labels])
explorer.set_embedding(xy)
"""
    setup += show
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(setup)]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                       "language": "python"}
    nbformat.write(notebook, path)


_JS_START_CODE = """
(code) => {
  const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
  const future = kernel.requestExecute({code, silent: false, store_history: false});
  window.__tswBusy = future.done.then(() => true);
  return true;
}
"""

# Bokeh renders into shadow roots: finds `selector` under `root`, through them.
_JS_DEEP = """() => {
window.__tswDeep = (root, selector) => {
  const found = root.querySelector(selector);
  if (found) return found;
  for (const el of root.querySelectorAll('*')) {
    if (el.shadowRoot) {
      const inner = window.__tswDeep(el.shadowRoot, selector);
      if (inner) return inner;
    }
  }
  return null;
};
}
"""

# Resolves with the page time (ms) of the first animation frame (the first paint) at
# which `test` holds; and records the page time of every input event from now on.
_JS_WATCH = """
([hook, test]) => {
  const host = document.querySelector(hook);
  const check = new Function('host', 'find', test);
  const find = (selector) => window.__tswDeep(host, selector);
  const id = (window.__tswWatchId = (window.__tswWatchId || 0) + 1);  // a newer watch ends this one
  window.__tswWatch = new Promise((resolve) => {
    const poll = (now) => {
      if (id !== window.__tswWatchId) return;
      if (check(host, find)) resolve(now); else requestAnimationFrame(poll);
    };
    requestAnimationFrame(poll);
  });
  window.__tswEvents = [];
  const note = (e) => window.__tswEvents.push(e.timeStamp);
  for (const kind of ['pointermove', 'pointerup', 'wheel']) {
    window.removeEventListener(kind, window['__tswNote' + kind], true);
    window['__tswNote' + kind] = note;
    window.addEventListener(kind, note, true);
  }
  return true;
}
"""


class MapPage(QuickstartSession):
    """The map of the first Explorer in a :class:`~tests.e2e.jupyter.LabPage`."""

    def __init__(self, lab, figure_id: str):
        super().__init__(lab)
        self.figure_id = figure_id

    def to_page(self, xy: np.ndarray, frame: dict | None = None) -> np.ndarray:
        """Page pixel positions of data points (N, 2)."""
        f = frame or self.frame()
        (x0, x1), (y0, y1) = f["x_range"], f["y_range"]
        xy = np.atleast_2d(np.asarray(xy, dtype=float))
        return np.c_[f["x"] + (xy[:, 0] - x0) / (x1 - x0) * f["width"],
                     f["y"] + (y1 - xy[:, 1]) / (y1 - y0) * f["height"]]

    def to_data(self, points: np.ndarray, frame: dict | None = None) -> np.ndarray:
        f = frame or self.frame()
        (x0, x1), (y0, y1) = f["x_range"], f["y_range"]
        points = np.atleast_2d(np.asarray(points, dtype=float))
        return np.c_[x0 + (points[:, 0] - f["x"]) / f["width"] * (x1 - x0),
                     y1 - (points[:, 1] - f["y"]) / f["height"] * (y1 - y0)]

    def start_in_kernel(self, code: str) -> None:
        """Run ``code`` in the kernel without waiting (e.g. a cell that sleeps)."""
        self.page.evaluate(_JS_START_CODE, code)

    def wait_kernel_code(self, timeout: float = 60.0) -> None:
        self.page.evaluate(f"() => Promise.race([window.__tswBusy, new Promise((r) => "
                           f"setTimeout(r, {int(timeout * 1000)}))])")

    def watch(self, test_js: str) -> None:
        """Start timing: resolves when ``test_js`` (body of ``(host, find) => bool``) holds."""
        self.page.evaluate(_JS_DEEP)
        self.page.evaluate(_JS_WATCH, [CANVAS_HOOK, test_js])

    def watched_ms(self, which_event: int = -1, timeout: float = 10.0) -> float:
        """Milliseconds from the chosen input event (default: the last) to the DOM change."""
        shown = self.page.evaluate(
            f"() => Promise.race([window.__tswWatch, new Promise((r) => setTimeout(() => r(null), {int(timeout * 1000)}))])")
        assert shown is not None, "the expected change never showed"
        events = self.page.evaluate("() => window.__tswEvents")
        assert events, "no input event was seen"
        return shown - events[which_event]

    def card_index(self) -> int | None:
        self.page.evaluate(_JS_DEEP)
        found = self.page.evaluate(
            f"""() => {{ const c = window.__tswDeep(document.querySelector('{CANVAS_HOOK}'), '{CARD_HOOK}');
                       if (!c || !c.isConnected || c.offsetParent === null) return null;
                       return Number(c.dataset.index); }}""")
        return None if found is None else int(found)

    def count(self) -> int | None:
        self.page.evaluate(_JS_DEEP)
        text = self.page.evaluate(
            f"() => {{ const c = window.__tswDeep(document.querySelector('{CANVAS_HOOK}'), "
            f"'{COUNT_HOOK}'); return c ? c.innerText : null; }}")
        if not text:
            return None
        return int(text.split()[0].replace(",", ""))


def card_test(index: int) -> str:
    """JS test body: the client card for point ``index`` is shown."""
    return (f"const c = find({json.dumps(CARD_HOOK)});"
            f" return !!c && c.offsetParent !== null && Number(c.dataset.index) === {int(index)};")


def count_test(count: int) -> str:
    """JS test body: the map shows ``count`` selected."""
    return (f"const c = find({json.dumps(COUNT_HOOK)});"
            f" return !!c && c.innerText.replace(/,/g, '').startsWith('{int(count)} selected');")


def source_data(page, model_id: str):
    """The browser's copy of a Bokeh ColumnDataSource (by model id), as lists."""
    return page.evaluate(
        """(id) => {
  for (const view of window.Bokeh.index) {
    const model = view.model.document && view.model.document.get_model_by_id(id);
    if (!model) continue;
    const out = {};
    for (const [key, column] of Object.entries(model.data)) out[key] = Array.from(column);
    return out;
  }
  return null;
}""", model_id)


def run_story(lab, failure_name: str, story) -> None:
    """Run ``story(lab)``; on failure save ``<failure_name>.png`` and print the logs."""
    try:
        story(lab)
    except BaseException:
        lab.screenshot(failure_name)
        print(lab.diagnostics())
        raise


def show_map(lab, timeout: float = 120.0) -> MapPage:
    """Run the notebook's first cell and return its map, once on the page."""
    lab.run_cells([0], timeout=timeout)
    m = MapPage(lab, lab.kernel_json("explorer.canvas.figure.id"))
    lab.page.locator(CANVAS_HOOK).first.wait_for(state="visible", timeout=30_000)
    return m


def wait_until(condition, what: str, timeout: float = 30.0):
    """Poll ``condition()`` every 0.2 s until it is truthy and return it, or fail naming
    ``what`` after ``timeout`` s (scaled by ``TSW_E2E_TIMEOUT_SCALE``)."""
    deadline = time.monotonic() + timeout * TIMEOUT_SCALE
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)
