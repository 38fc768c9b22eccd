"""Hover and selection answered in the browser, checked in JupyterLab with headless Chromium.

An Explorer of 600 synthetic images on a fixed clustered map (no training), then:

1. a pointer sweep ends on a point: the right card shows while the kernel sleeps in
   another cell (so no kernel round trip can have answered it);
2. a still pointer keeps its card while the kernel replaces the map several times;
3. a lasso drawn while another cell sleeps: the count shows at once, and once the kernel
   is free ``explorer.selection`` equals the points inside the drawn path and the count;
4. gestures: shift+lasso adds, alt+lasso subtracts, Ctrl+Z undoes, Esc clears, a click
   picks the point under the pointer, a double-click zooms to the selection; the kernel
   agrees after each;
5. a screenshot of the map with a card and a selection (``test-artifacts/map-client.png``).
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from tsimcne_widgets.widget.client import PAGE_SIZE

from .jupyter import TIMEOUT_SCALE
from .jupyter import lab, lab_browser, lab_root, lab_server  # noqa: F401 - pytest fixtures
from .mapclient import CANVAS_HOOK, MapPage, card_test, count_test, run_story, write_notebook
from .test_quickstart_browser import _inside, drag_loop

pytestmark = [pytest.mark.browser, pytest.mark.slow]

NOTEBOOK = "map-client.ipynb"
N = 600


def _sweep(page, start, end, moves: int = 30) -> None:
    for point in np.linspace(start, end, moves):
        page.mouse.move(float(point[0]), float(point[1]))


def _kernel_agrees(m: MapPage, timeout: float = 30.0) -> list[int]:
    """Wait until the kernel's selection equals the browser's; return it."""
    time.sleep(0.4)  # a click is taken 250 ms later (it may become a double-click)
    deadline = time.monotonic() + timeout
    while True:
        shown = m.page.evaluate("() => Array.from(Array.from(window.__tswMaps.values())[0].selection)")
        kernel = m.kernel("explorer.selection.tolist()")
        if kernel == sorted(shown):
            return kernel
        if time.monotonic() > deadline:
            raise AssertionError(f"kernel {len(kernel)} vs browser {len(shown)} selected")
        time.sleep(0.2)


def test_map_answers_in_the_browser(lab, lab_root):
    write_notebook(lab_root / NOTEBOOK, N)
    lab.open_notebook(NOTEBOOK)
    run_story(lab, "map-client-failure", _story)


def _story(lab):
    page = lab.page
    lab.run_cells([0], timeout=120 * TIMEOUT_SCALE)
    m = MapPage(lab, lab.kernel_json("explorer.canvas.figure.id"))
    page.locator(CANVAS_HOOK).first.wait_for(state="visible", timeout=30_000)
    xy = np.array(m.kernel("explorer.embedding.tolist()"))
    assert m.kernel("explorer.canvas.client.active") is True
    frame = m.frame()
    on_page = m.to_page(xy, frame)

    # -- 1. sweep onto a point while another cell sleeps: the card still comes ----------
    isolated = np.argsort(-np.sort(((on_page[:, None] - on_page[None]) ** 2).sum(-1), 1)[:, 1])
    target = next(int(i) for i in isolated
                  if 60 < on_page[i, 0] - frame["x"] < frame["width"] - 60
                  and 60 < on_page[i, 1] - frame["y"] < frame["height"] - 60)
    m.start_in_kernel("time.sleep(4)")
    time.sleep(0.3)
    m.watch(card_test(target))
    _sweep(page, on_page[target] + [-200, 40], on_page[target])
    ms = m.watched_ms()
    assert m.card_index() == target
    assert ms < 200, f"the card took {ms:.0f} ms after the last move"
    # The card's picture arrives once per page (the kernel is asleep: it comes later).
    page.locator(".tsw-client-card img").first.wait_for(state="attached", timeout=15_000)
    natural = page.locator(".tsw-client-card img").first.evaluate(
        "(img) => img.decode().then(() => [img.naturalWidth, img.naturalHeight])")
    assert min(natural) >= 16, natural
    m.wait_kernel_code()

    # -- 2. a still pointer keeps its card while the map is replaced ----------------------
    m.start_in_kernel(
        "for k in range(6):\n"
        "    explorer.set_embedding(xy + np.float32(1e-4 * (k + 1)))\n"
        "    time.sleep(0.25)")
    seen = []
    for _ in range(16):
        time.sleep(0.12)
        seen.append(m.card_index())
    m.wait_kernel_code()
    assert seen.count(target) == len(seen), f"the card vanished or changed: {seen}"
    lab.screenshot("map-client-card", page.locator(CANVAS_HOOK).first)
    page.mouse.move(1, 1)

    # -- 3. lasso while a cell sleeps; the kernel catches up ---------------------------
    frame = m.frame()
    on_page = m.to_page(xy, frame)
    centre = np.array([frame["x"] + frame["width"] * 0.5, frame["y"] + frame["height"] * 0.5])
    radius = min(frame["width"], frame["height"]) / 5
    loaded = set(m.kernel("list(explorer.canvas.client.atlas.data['page'])"))
    asleep = time.monotonic()
    m.start_in_kernel("time.sleep(5)")
    time.sleep(0.3)
    path = drag_loop(page, centre, radius, squash=0.8)
    expected = np.flatnonzero(_inside(on_page, path))
    assert expected.size > 5
    shown = m.count()
    assert shown is not None and abs(shown - expected.size) <= 2, (shown, expected.size)
    # Then, the kernel still asleep, the pointer goes onto a point of a page of thumbnails
    # not loaded yet: its request is the channel's newest change, the only one jupyter_bokeh
    # delivers.  The lasso must not be lost with it.
    fresh = next(int(i) for i in isolated if i // PAGE_SIZE not in loaded
                 and frame["x"] + 20 < on_page[i, 0] < frame["x"] + frame["width"] - 20
                 and frame["y"] + 20 < on_page[i, 1] < frame["y"] + frame["height"] - 20)
    page.mouse.move(*on_page[fresh])
    time.sleep(0.3)
    assert time.monotonic() - asleep < 4.5, "the cell ended before the page request: sleep longer"
    requested = page.evaluate("() => Array.from(Array.from(window.__tswMaps.values())[0].requested)")
    assert fresh // PAGE_SIZE in requested, requested
    # jupyter_bokeh sends the browser's change once the kernel is free.
    selection = np.array(_kernel_agrees(m))
    page.locator(".tsw-client-card img").first.wait_for(state="attached", timeout=15_000)
    assert m.card_index() == fresh  # and the page came: the card has its picture
    page.mouse.move(1, 1)
    assert len(selection) == shown
    polygon = np.array(m.kernel("explorer.last_polygon.tolist()"))
    assert np.array_equal(selection, np.flatnonzero(_inside(xy, polygon)))

    # -- 4. gestures ---------------------------------------------------------------------
    first = set(selection.tolist())
    page.keyboard.down("Shift")
    drag_loop(page, centre + [radius * 2.2, 0], radius * 0.7)
    page.keyboard.up("Shift")
    added = set(_kernel_agrees(m))
    assert first < added, "shift+lasso must add to the selection"
    page.keyboard.down("Alt")
    drag_loop(page, centre, radius * 0.5)
    page.keyboard.up("Alt")
    subtracted = set(_kernel_agrees(m))
    assert subtracted < added and subtracted & first, "alt+lasso must subtract"
    page.mouse.move(*centre)
    page.keyboard.press("Control+z")
    assert set(_kernel_agrees(m)) == added, "Ctrl+Z must undo the subtraction"
    page.mouse.move(*centre)
    page.keyboard.press("Escape")
    assert _kernel_agrees(m) == [] and m.count() == 0, "Esc must clear"
    page.mouse.click(*on_page[target])
    assert _kernel_agrees(m) == [target], "a click must pick the point under the pointer"
    page.keyboard.down("Shift")
    other = int(expected[0])
    page.mouse.click(*m.to_page(xy[other])[0])
    page.keyboard.up("Shift")
    assert _kernel_agrees(m) == sorted({target, other})
    before = m.frame()
    page.mouse.dblclick(*centre)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        after = m.frame()
        if after["x_range"] != before["x_range"]:
            break
        time.sleep(0.1)
    pair = m.to_page(xy[[target, other]], after)
    inside = ((pair[:, 0] > after["x"]) & (pair[:, 0] < after["x"] + after["width"])
              & (pair[:, 1] > after["y"]) & (pair[:, 1] < after["y"] + after["height"]))
    span = np.ptp(pair, axis=0).max()
    assert inside.all() and span > 0.6 * min(after["width"], after["height"]), (
        "double-click must zoom to fit the selection", pair, after)
    deadline = time.monotonic() + 10
    while m.kernel("explorer.canvas.follow") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert m.kernel("explorer.canvas.follow") is False, "the kernel must redraw the zoomed view"
    lab.screenshot("map-client", page.locator(CANVAS_HOOK).first)
    errors = [line for line in lab.console if line.startswith(("pageerror", "error"))]
    assert not errors, errors
