"""The quickstart notebook, driven in JupyterLab by headless Chromium, as a user would.

One test walks the whole story in one kernel (quick mode: about a minute of training):

1. run the cells that create, show and start the Explorer;
2. see the map image change at least twice while training runs;
3. type and run a new cell during training: its output must appear within 1 s;
4. hover a drawn point: the hover card shows its thumbnail;
5. wait for training to end (the notebook's last cells), then lasso a region with the mouse;
6. the selection count appears, ``explorer.selection`` equals an independent point-in-polygon
   test of ``explorer.embedding`` against the polygon the widget received
   (``explorer.last_polygon``), that polygon is the path the mouse drew (mapped through the
   plot's ranges), and the selected points are those drawn inside the path on screen;
7. export the selection as CSV with the widget's button and read the file back, then run the
   notebook's own export cells.

Screenshots land in ``test-artifacts/``.

DOM hooks the Explorer must provide (CSS classes):
``tsw-canvas`` on the map's BokehModel, ``tsw-hover-card`` on the hover card, and
``tsw-selection-count`` on the "N selected" text; and ``Explorer.last_polygon``: the (M, 2)
polygon in data units of the last finished lasso.
"""

from __future__ import annotations

import io
import re
import time

import numpy as np
import pandas as pd
import pytest

from .jupyter import TIMEOUT_SCALE
from .jupyter import lab, lab_browser, lab_root, lab_server  # noqa: F401 - pytest fixtures

pytestmark = [pytest.mark.browser, pytest.mark.slow]

QUICKSTART = "01-quickstart.ipynb"
CANVAS_HOOK = ".tsw-canvas"
HOVER_CARD_HOOK = ".tsw-hover-card"
SELECTION_COUNT_HOOK = ".tsw-selection-count"

RESPONSIVE_CELL_LIMIT_S = 1.0
# A map update redraws most of the frame; legend or status-text changes touch far fewer pixels.
CHANGED_FRACTION = 0.002
# Category colours are saturated; the white background and grey text are not.
SATURATION_MIN = 40

# Geometry of the map's Bokeh plot, found by model id among BokehJS's live views: the
# frame (the area between the axes, where the raster is drawn) in page pixels and the
# data ranges it shows.
_JS_FRAME = """
([modelId, hostSelector]) => {
  const host = document.querySelector(hostSelector);
  for (const view of window.Bokeh.index) {
    if (view.model.id !== modelId || !view.frame || !view.canvas_view) continue;
    if (!view.el.isConnected) continue;
    const rect = view.canvas_view.el.getBoundingClientRect();
    const hostRect = host ? host.getBoundingClientRect() : rect;
    const bbox = view.frame.bbox;
    return {x: rect.x + bbox.x0, y: rect.y + bbox.y0, width: bbox.width, height: bbox.height,
            // Offset inside the canvas hook element: does not change when the page scrolls.
            dx: rect.x + bbox.x0 - hostRect.x, dy: rect.y + bbox.y0 - hostRect.y,
            x_range: [view.frame.x_range.start, view.frame.x_range.end],
            y_range: [view.frame.y_range.start, view.frame.y_range.end]};
  }
  return null;
}
"""


def _image(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int16)


def _save(image: np.ndarray, path) -> None:
    from PIL import Image

    Image.fromarray(image.astype(np.uint8)).save(path)


def _changed_fraction(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape != b.shape:
        return 1.0
    return float(np.any(np.abs(a - b) > 24, axis=-1).mean())


def _saturated(image: np.ndarray) -> np.ndarray:
    """Mask of pixels drawn in a category colour."""
    return (image.max(axis=-1) - image.min(axis=-1)) > SATURATION_MIN



def drag_loop(page, centre, radius: float, squash: float = 1.0, before_release=None) -> np.ndarray:
    """Drag the mouse around a 10-cornered loop; return the path drawn (page px).

    ``before_release`` is called with the button still down (e.g. to measure the page).
    """
    angles = np.linspace(0, 2 * np.pi, 10, endpoint=False)
    corners = centre + radius * np.c_[np.cos(angles), np.sin(angles)] * [1.0, squash]
    drawn = [corners[0]]
    page.mouse.move(*corners[0])
    page.mouse.down()
    for corner in list(corners[1:]) + [corners[0]]:
        # Intermediate pointer events along each side, as a hand makes them.
        steps = np.linspace(drawn[-1], corner, 5)[1:]
        for point in steps:
            page.mouse.move(float(point[0]), float(point[1]))
        drawn.extend(steps)
    if before_release is not None:
        before_release()
    page.mouse.up()
    return np.array(drawn)


def _wait_for_still_frame(session, timeout: float = 20.0) -> None:
    """Return once the map's frame is at the same page position for a whole second."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        frame = session.frame()
        here = (round(frame["x"], 1), round(frame["y"], 1))
        if here == last:
            return
        last = here
        time.sleep(1.0)
    raise AssertionError(f"the map's frame kept moving for {timeout:.0f} s (last at {last})")


def _densest_pixel(mask: np.ndarray, window: int, margin: int) -> tuple[int, int]:
    """(row, col) whose ``window``-sized neighbourhood holds the most masked pixels,
    at least ``margin`` pixels from every edge."""
    counts = np.pad(mask.astype(np.int32), ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    h, w = mask.shape
    half = window // 2
    rows = np.arange(margin, h - margin)
    cols = np.arange(margin, w - margin)
    r0, r1 = np.clip(rows - half, 0, h), np.clip(rows + half, 0, h)
    c0, c1 = np.clip(cols - half, 0, w), np.clip(cols + half, 0, w)
    box = (counts[r1][:, c1] - counts[r0][:, c1] - counts[r1][:, c0] + counts[r0][:, c0])
    box = box * mask[margin:h - margin, margin:w - margin]  # the centre itself must be drawn
    r, c = np.unravel_index(int(np.argmax(box)), box.shape)
    return int(rows[r]), int(cols[c])


def _inside(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Even-odd rule, written out here so the check does not reuse the package's lasso code."""
    x, y = points[:, :1], points[:, 1:]
    x0, y0 = polygon[:, 0][None], polygon[:, 1][None]
    x1, y1 = np.roll(polygon[:, 0], -1)[None], np.roll(polygon[:, 1], -1)[None]
    straddles = (y0 > y) != (y1 > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        x_cross = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
    return (np.sum(straddles & (x < x_cross), axis=1) % 2) == 1


def _distance_to_path(points: np.ndarray, path: np.ndarray) -> np.ndarray:
    """Distance of each point to the closed polyline ``path``."""
    a, b = path, np.roll(path, -1, axis=0)
    ab = b - a
    t = np.clip(np.einsum("pkd,kd->pk", points[:, None] - a[None], ab)
                / np.maximum((ab ** 2).sum(1), 1e-12), 0, 1)
    nearest = a[None] + t[..., None] * ab[None]
    return np.sqrt(((points[:, None] - nearest) ** 2).sum(-1)).min(1)


class QuickstartSession:
    """The quickstart notebook open in a :class:`LabPage`, with map-specific helpers."""

    def __init__(self, lab):
        self.lab = lab
        self.page = lab.page
        self.figure_id = None

    def frame(self) -> dict:
        """Page position, size and data ranges of the map's frame, scrolled into view."""
        self.page.locator(CANVAS_HOOK).first.scroll_into_view_if_needed()
        frame = self.page.evaluate(_JS_FRAME, [self.figure_id, CANVAS_HOOK])
        assert frame is not None, "the map's Bokeh plot is not on the page"
        return frame

    def map_image(self) -> tuple[np.ndarray, dict]:
        """Pixels of the frame (H, W, 3) and the frame, as :meth:`frame`.

        The element screenshot scrolls and waits for a stable layout itself, and the crop
        uses the scroll-independent offset of the frame inside the element, so a notebook
        that scrolls meanwhile cannot shift the picture.
        """
        whole = _image(self.page.locator(CANVAS_HOOK).first.screenshot())
        frame = self.frame()
        x, y = int(round(frame["dx"])), int(round(frame["dy"]))
        return whole[y:y + int(frame["height"]), x:x + int(frame["width"])], frame

    def kernel(self, expression: str, timeout: float = 60.0):
        return self.lab.kernel_json(expression, timeout)


def test_quickstart_in_jupyterlab(lab, lab_root):
    begin = time.monotonic()
    timings = {}
    lab.open_notebook(QUICKSTART)
    session = QuickstartSession(lab)
    page = lab.page
    try:
        _run_story(lab, session, page, lab_root, timings)
    except BaseException:
        lab.screenshot("quickstart-failure")
        print(lab.diagnostics())
        raise
    finally:
        timings["total"] = time.monotonic() - begin
        print("timings (s):", {k: round(v, 1) for k, v in timings.items()})


def _run_story(lab, session, page, lab_root, timings):
    t = time.monotonic()
    create = lab.find_cell("explorer = Explorer(")
    start = lab.find_cell("explorer.start()")
    lab.run_cells(range(create + 1), timeout=180 * TIMEOUT_SCALE)
    timings["imports+create"] = time.monotonic() - t
    session.figure_id = session.kernel("explorer.canvas.figure.id")
    page.locator(CANVAS_HOOK).first.wait_for(state="visible", timeout=30_000)
    before_training, _ = session.map_image()

    # -- start() returns at once; the map redraws while training runs ---------------------------
    t = time.monotonic()
    lab.run_cells([start], timeout=30)
    timings["start cell"] = time.monotonic() - t
    assert timings["start cell"] < 5, f"start() blocked the cell for {timings['start cell']:.1f} s"
    page.mouse.move(1, 1)  # keep the pointer (and its hover card) off the map
    shots = [before_training]
    responsive = None
    deadline = time.monotonic() + 120 * TIMEOUT_SCALE
    while len(shots) < 3 and time.monotonic() < deadline:
        time.sleep(0.5)
        image, _ = session.map_image()
        if _changed_fraction(shots[-1], image) <= CHANGED_FRACTION:
            continue
        # Ranges and raster reach the browser as separate patches: count a new map only
        # once the picture has settled and shows points.
        time.sleep(0.3)
        settled, _ = session.map_image()
        if _changed_fraction(image, settled) > CHANGED_FRACTION or _saturated(settled).sum() < 200:
            continue
        shots.append(settled)
        _save(settled, lab.artifacts_dir / f"quickstart-map-{len(shots) - 1}.png")
        if len(shots) == 2 and responsive is None:
            # Right after the first live map, while training surely runs (on a loaded
            # machine a quick run can end before a third map has been seen).
            responsive = lab.type_and_run_new_cell(
                "print('responsive', explorer.state, len(explorer.embedding))", "responsive")
    state = session.kernel("explorer.state")
    assert len(shots) >= 3, (
        f"the map changed {len(shots) - 1} time(s) in {120 * TIMEOUT_SCALE:.0f} s of training "
        f"(state {state!r})")
    assert state in ("starting", "running"), f"training already {state!r}: changes not seen live"
    timings["two map updates"] = time.monotonic() - t

    # -- the notebook answers while training runs ----------------------------------------------
    assert responsive is not None, "no live map was seen, so the kernel was never asked"
    seconds, text = responsive
    assert "running" in text, f"training was not running during the responsiveness check: {text}"
    assert seconds < RESPONSIVE_CELL_LIMIT_S, (
        f"a cell took {seconds:.2f} s to answer while training runs")
    timings["cell during training"] = seconds

    # -- hover a drawn point: its thumbnail shows ----------------------------------------------
    card_image = page.locator(f"{HOVER_CARD_HOOK} img").first
    for attempt in range(3):  # a new epoch's map may move the point away under the pointer
        image, frame = session.map_image()
        row, col = _densest_pixel(_saturated(image), window=9, margin=30)
        x, y = frame["x"] + col + 0.5, frame["y"] + row + 0.5
        page.mouse.move(x - 12, y - 12)
        page.mouse.move(x, y, steps=6)
        try:
            card_image.wait_for(state="visible", timeout=5_000)
            break
        except Exception:
            if attempt == 2:
                raise
            page.mouse.move(1, 1)
    source = card_image.get_attribute("src") or ""
    # The browser draws cards from its sprite sheets (blob: URLs); the kernel path from PNGs.
    assert source.startswith(("blob:", "data:image/png;base64,")), source[:60]
    natural = card_image.evaluate("(img) => [img.naturalWidth, img.naturalHeight]")
    assert min(natural) >= 8, f"the hover thumbnail is {natural} pixels"
    lab.screenshot("quickstart-hover")
    page.mouse.move(1, 1)

    # -- run the rest up to the end of training: pixel t-SNE, then wait() ------------------------
    t = time.monotonic()
    tsne = lab.find_cell("pixel_tsne(")
    finish = lab.find_cell("explorer.wait(")
    lab.run_cells([tsne], timeout=180 * TIMEOUT_SCALE)
    lab.run_cells([finish, lab.find_cell("explorer.to_html(")], timeout=240 * TIMEOUT_SCALE)
    finished = lab.wait_for_output(finish, "t-SimCNE map: kNN accuracy")
    timings["t-SNE + rest of training"] = time.monotonic() - t
    assert "training finished" in finished, finished
    assert session.kernel("explorer.state") == "finished"
    time.sleep(1.0)  # the final map reaches the browser

    # -- lasso a dense region of the final map -------------------------------------------------
    lab.screenshot("quickstart-before-lasso", page.locator(CANVAS_HOOK).first)
    # Measure the frame right before drawing: a screenshot or a cell run may scroll the page.
    # On a loaded machine the last widget updates (final map, messages) can still shift the
    # layout after the cells finished: wait until the frame stays put.
    _wait_for_still_frame(session)
    image, frame = session.map_image()
    radius = int(min(frame["width"], frame["height"]) / 7)
    row, col = _densest_pixel(_saturated(image), window=radius, margin=radius + 12)
    centre = np.array([frame["x"] + col, frame["y"] + row], dtype=float)
    # The frame is measured with the button still down: once the lasso is released, the
    # selection reaches the kernel and the gallery below the map grows, which may scroll
    # the page, after the drawing is complete.
    during = {}
    drawn_path = drag_loop(page, centre, radius, squash=0.8,
                           before_release=lambda: during.update(session.frame()))
    corners = drawn_path[::4][:-1]  # every side ends on a corner; the last one closes the loop
    moved = {k: during[k] - frame[k] for k in ("x", "y")}
    assert max(map(abs, moved.values())) < 0.5, f"the map moved by {moved} during the lasso"

    count_locator = page.locator(SELECTION_COUNT_HOOK).first
    try:
        page.wait_for_function(
            "(el) => /[1-9][0-9]* selected/.test(el.innerText)",
            arg=count_locator.element_handle(), timeout=15_000)
    except Exception as error:
        seen = session.kernel("[None if explorer.last_polygon is None else"
                              " len(explorer.last_polygon), len(explorer.selection),"
                              " explorer.messages]")
        raise AssertionError(
            f"no selection count after the lasso; kernel: polygon vertices, selected, "
            f"messages = {seen}") from error
    shown_count = int(re.search(r"(\d+)\s+selected", count_locator.inner_text()).group(1))
    time.sleep(0.5)
    lab.screenshot("quickstart-lasso")
    after_lasso, _ = session.map_image()
    assert _changed_fraction(image, after_lasso) > CHANGED_FRACTION, \
        "the map does not highlight the selection"

    kernel_view = session.kernel(
        "{'selection': explorer.selection.tolist(),"
        " 'polygon': None if explorer.last_polygon is None"
        " else np.asarray(explorer.last_polygon, dtype=float).tolist(),"
        " 'embedding': np.asarray(explorer.embedding, dtype=float).tolist()}")
    selection = np.array(kernel_view["selection"], dtype=int)
    assert kernel_view["polygon"] is not None, (
        "the Explorer must keep the last lasso polygon (data units) as explorer.last_polygon")
    polygon = np.array(kernel_view["polygon"])
    embedding = np.array(kernel_view["embedding"])
    assert shown_count == len(selection) > 0, (shown_count, len(selection))

    # The kernel selected exactly the points inside the polygon it received.
    expected = np.flatnonzero(_inside(embedding, polygon))
    assert np.array_equal(np.sort(selection), expected), (
        f"selection has {len(selection)} points, point-in-polygon gives {len(expected)}")

    # That polygon is the mouse path, mapped through the ranges the browser shows.
    (x0, x1), (y0, y1) = frame["x_range"], frame["y_range"]
    to_page = np.c_[
        frame["x"] + (polygon[:, 0] - x0) / (x1 - x0) * frame["width"],
        frame["y"] + (y1 - polygon[:, 1]) / (y1 - y0) * frame["height"],
    ]
    off_path = _distance_to_path(to_page, drawn_path)
    assert off_path.max() < 1.5, f"polygon vertices lie up to {off_path.max():.1f} px off the drawn path"
    missed = _distance_to_path(corners, to_page)
    assert missed.max() < 1.5, f"drawn corners lie up to {missed.max():.1f} px off the polygon"

    # And on screen: the selected points are the ones drawn inside the path (up to points
    # within a pixel of the path, where rounding of the pointer position decides).
    on_page = np.c_[
        frame["x"] + (embedding[:, 0] - x0) / (x1 - x0) * frame["width"],
        frame["y"] + (y1 - embedding[:, 1]) / (y1 - y0) * frame["height"],
    ]
    # The raster is drawn where the data is: mapped points land on coloured pixels.
    drawn_mask = _saturated(image)
    for axis in (0, 1):  # grow the mask by 2 px: points are discs, rounding shifts a pixel
        drawn_mask = np.logical_or.reduce([np.roll(drawn_mask, k, axis) for k in range(-2, 3)])
    pixel = np.floor(on_page - [frame["x"], frame["y"]]).astype(int)
    visible = ((pixel >= 0) & (pixel < [int(frame["width"]), int(frame["height"])])).all(1)
    on_colour = drawn_mask[pixel[visible, 1], pixel[visible, 0]].mean()
    assert visible.mean() > 0.95 and on_colour > 0.95, (
        f"{visible.mean():.0%} of the points fall in the frame and {on_colour:.0%} of those on "
        "coloured pixels: the raster does not match the map's coordinates")
    inside_path = _inside(on_page, drawn_path)
    disagree = np.setxor1d(np.flatnonzero(inside_path), selection)
    assert np.all(_distance_to_path(on_page[disagree], drawn_path) < 1.0), (
        f"{len(disagree)} points disagree with the path drawn on screen")

    # -- export with the widget's button, read the file back ----------------------------------
    page.get_by_role("button", name="Export CSV").first.click()
    page.get_by_text(re.compile(r"wrote \d+ rows to")).first.wait_for(timeout=15_000)
    exported = pd.read_csv(lab_root / "selection.csv")
    assert sorted(exported["index"]) == sorted(selection.tolist())
    assert len(exported) == shown_count
    assert {"x", "y", "label"} <= set(exported.columns), list(exported.columns)

    # -- the notebook's own curation cells, on this selection ------------------------------------
    first = lab.find_cell("len(explorer.selection) == 0")
    last = lab.find_cell("explorer.subset()")
    lab.run_cells(range(first, last + 1), timeout=120)
    from_notebook = pd.read_csv(lab_root / "selection.csv")
    assert sorted(from_notebook["index"]) == sorted(selection.tolist())
    assert (lab_root / "selection_export").is_dir()
    html = (lab_root / "shapes_map.html").read_text()
    assert "<html" in html.lower() and len(html) > 100_000  # BokehJS inlined
    lab.screenshot("quickstart-end")
