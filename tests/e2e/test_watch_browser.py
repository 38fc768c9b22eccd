"""A run elsewhere, watched in JupyterLab: ``train --snapshots DIR`` and ``Explorer.watch``.

The test starts ``python -m tsimcne_widgets train FOLDER --snapshots DIR`` as a process of
its own (a tiny network on 48 images, 34 epochs), while a notebook cell shows
``Explorer.watch(DIR, FOLDER)`` in headless Chromium.  One page load:

1. before the run writes anything the widget says it is starting;
2. while the process runs, the map on the page changes at least twice and the progress
   bar stands between empty and full;
3. after the process ends the page shows the final map (the kernel's map equals the
   run's ``map.csv``), a hover card with its image comes up over a point, a lasso's count
   equals ``len(explorer.selection)`` in the kernel, and the replay slider goes back to
   the first frame, which changes the map.

Screenshots land in ``test-artifacts/watch-*.png``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from .jupyter import TIMEOUT_SCALE
from .jupyter import lab, lab_browser, lab_root, lab_server  # noqa: F401 - pytest fixtures
from .mapclient import CANVAS_HOOK, MapPage, card_test, run_story
from .test_quickstart_browser import _inside, _saturated, _save, drag_loop

pytestmark = [pytest.mark.browser, pytest.mark.slow]

NOTEBOOK = "watch.ipynb"
N_IMAGES = 48
# Long enough that a loaded machine still shows a few maps before the end.
EPOCHS = ("3", "1", "30")

_PROGRESS_JS = """() => {
  const bar = document.querySelector('.widget-hprogress .progress-bar, .widget-progress .progress-bar');
  return bar ? parseFloat(bar.style.width) : null;
}"""


def _write_notebook(path, snaps, folder) -> None:
    import nbformat

    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(
        "from tsimcne_widgets import Explorer\n"
        f"explorer = Explorer.watch({str(snaps)!r}, {str(folder)!r}, interval=0.1)\n"
        "explorer")]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                       "language": "python"}
    nbformat.write(notebook, path)


def _images(root) -> None:
    # Two colours, so the map separates into two groups; noise makes every image its own.
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(N_IMAGES):
        label, color = ("red", (200, 40, 40)) if i % 2 else ("blue", (40, 60, 200))
        pixels = np.clip(np.array(color) + rng.normal(0, 30, (16, 16, 3)), 0, 255)
        (root / label).mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels.astype(np.uint8)).save(root / label / f"{i:02d}.png")


def _moved(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether the map picture changed: a sparse map moves too few pixels for the
    quickstart's fraction of the frame, so count them."""
    return a.shape != b.shape or int(np.any(np.abs(a - b) > 24, axis=-1).sum()) > 80


def test_a_watched_run_streams_into_the_browser(lab, lab_root, tmp_path):
    folder, snaps, out = tmp_path / "images", tmp_path / "snaps", tmp_path / "out"
    _images(folder)
    _write_notebook(lab_root / NOTEBOOK, snaps, folder)
    lab.open_notebook(NOTEBOOK)
    started: list[subprocess.Popen] = []
    try:
        run_story(lab, "watch-failure", lambda lab: _story(lab, folder, snaps, out, started))
    finally:
        for process in started:
            if process.poll() is None:
                process.kill()
                process.communicate()


def _story(lab, folder, snaps, out, started) -> None:
    page = lab.page
    lab.run_cells([0], timeout=120 * TIMEOUT_SCALE)
    m = MapPage(lab, lab.kernel_json("explorer.canvas.figure.id"))
    page.locator(CANVAS_HOOK).first.wait_for(state="visible", timeout=30_000)
    assert m.kernel("explorer.state") == "starting"
    before, _ = m.map_image()

    # -- 1. the run, in a process of its own --------------------------------------------
    command = [sys.executable, "-m", "tsimcne_widgets", "train", str(folder), "--out", str(out),
               "--epochs", *EPOCHS, "--batch-size", "8", "--backbone", "resnet10-w8",
               "--device", "cpu", "--quiet", "--snapshots", str(snaps)]
    process = subprocess.Popen(command, env=dict(os.environ, OMP_NUM_THREADS="1"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started.append(process)

    # -- 2. live maps and progress while it runs -----------------------------------------
    page.mouse.move(1, 1)
    shots, progress = [before], []
    deadline = time.monotonic() + 240 * TIMEOUT_SCALE
    while process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.3)
        image, _ = m.map_image()
        width = page.evaluate(_PROGRESS_JS)
        running = process.poll() is None
        if width is not None and running:
            progress.append(width)
        if running and _moved(shots[-1], image) and _saturated(image).sum() > 50:
            shots.append(image)
            if len(shots) == 3:
                lab.screenshot("watch-running")
    stdout, stderr = process.communicate(timeout=120 * TIMEOUT_SCALE)
    assert process.returncode == 0, stderr[-3000:]
    assert len(shots) >= 3, f"the map changed {len(shots) - 1} time(s) while the run went on"
    assert any(0 < w < 100 for w in progress), f"progress seen during the run: {progress[-10:]}"

    # -- 3. the end: final map, hover, lasso, replay --------------------------------------
    assert m.kernel("explorer.wait(60)") is True
    assert m.kernel("explorer.state") == "finished"
    final = pd.read_csv(out / "map.csv")[["x", "y"]].to_numpy()
    xy = np.array(m.kernel("explorer.embedding.tolist()"))
    np.testing.assert_allclose(xy, final, atol=2e-3 * float(np.abs(final).max()))
    deadline = time.monotonic() + 15
    while page.evaluate(_PROGRESS_JS) != 100 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert page.evaluate(_PROGRESS_JS) == 100
    time.sleep(1.0)  # the final map's raster reaches the page
    final_image, frame = m.map_image()
    _save(final_image, lab.artifacts_dir / "watch-final-map.png")
    on_page = m.to_page(xy, frame)
    inside = ((on_page > [frame["x"] + 20, frame["y"] + 20])
              & (on_page < [frame["x"] + frame["width"] - 20,
                            frame["y"] + frame["height"] - 20])).all(1)
    assert inside.mean() > 0.9, "the final map is not what the page shows"

    # hover: the most isolated point inside the frame
    gaps = np.sort(((on_page[:, None] - on_page[None]) ** 2).sum(-1), 1)[:, 1]
    target = int(np.argmax(np.where(inside, gaps, -1)))
    m.watch(card_test(target))
    page.mouse.move(*(on_page[target] + [-60, 30]))
    page.mouse.move(*on_page[target], steps=8)
    m.watched_ms(timeout=15)
    card = page.locator(".tsw-client-card img").first
    card.wait_for(state="attached", timeout=15_000)
    natural = card.evaluate("(img) => img.decode().then(() => [img.naturalWidth, img.naturalHeight])")
    assert min(natural) >= 16, natural
    lab.screenshot("watch-hover")
    page.mouse.move(1, 1)

    # lasso around the middle of the points
    centre = np.median(on_page[inside], axis=0)
    radius = 0.6 * float(np.median(np.abs(on_page[inside] - centre).max(1)))
    path = drag_loop(page, centre, max(radius, 25.0), squash=0.9)
    expected = np.flatnonzero(_inside(on_page, path))
    assert expected.size > 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        shown, kernel = m.count(), m.kernel("len(explorer.selection)")
        if shown is not None and shown == kernel > 0:
            break
        time.sleep(0.3)
    assert shown == kernel and abs(shown - expected.size) <= 2, (shown, kernel, expected.size)
    lab.screenshot("watch-lasso")

    # replay: back to the first frame
    frames = m.kernel("len(explorer.replay)")
    assert frames >= 3
    replay = page.locator(".widget-slider", has_text="Replay").first
    replay.scroll_into_view_if_needed()
    assert replay.locator(".widget-readout").inner_text().strip() == str(frames - 1)
    track = replay.locator(".noUi-target, .slider-container").first
    box = track.bounding_box()
    page.mouse.click(box["x"] + 1, box["y"] + box["height"] / 2)
    deadline = time.monotonic() + 15
    while m.kernel("explorer.controls.replay.value") != 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert m.kernel("explorer.controls.replay.value") == 0
    time.sleep(1.0)
    first_image, _ = m.map_image()
    assert _moved(final_image, first_image), "the first frame of the replay looks like the final map"
    lab.screenshot("watch-replay")
    errors = [line for line in lab.console if line.startswith("pageerror")]
    assert not errors, errors
