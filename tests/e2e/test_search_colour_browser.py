"""The search box and colouring by a number, in JupyterLab with headless Chromium.

One notebook, one page load: an Explorer of 400 synthetic images on a fixed map (no
training) with a numeric metadata column that grows from left to right, then:

1. type a query into the search box and press Enter: the shown count and
   ``explorer.selection`` in the kernel are the images whose metadata contains it
   (case-insensitive); then a regular expression over the labels with the ``.*`` toggle;
2. pick the numeric column in the colour dropdown: the colour bar is drawn below the
   map (the colormap's dark and bright ends), the legend's colours right of the map are
   gone, and the map's left and right ends take the colormap's two ends.

Screenshots: ``test-artifacts/search-colour.png`` (the map) and
``test-artifacts/search-colour-page.png`` (the page with the search box).
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from tsimcne_widgets.render.palette import continuous_palette, default_palette

from .jupyter import TIMEOUT_SCALE
from .jupyter import lab, lab_browser, lab_root, lab_server  # noqa: F401 - pytest fixtures
from .mapclient import MapPage, run_story, wait_until
from .test_quickstart_browser import CANVAS_HOOK, SELECTION_COUNT_HOOK, _image

pytestmark = [pytest.mark.browser, pytest.mark.slow]

NOTEBOOK = "search-colour.ipynb"
N = 400
SETUP = f"""\
import numpy as np, pandas as pd
from tsimcne_widgets import Explorer
rng = np.random.default_rng(0)
n = {N}
centres = rng.normal(scale=6.0, size=(8, 2))
classes = rng.integers(0, 8, n)
xy = (centres[classes] + rng.normal(size=(n, 2))).astype(np.float32)
images = rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)
label_names = [f"class {{k}}" for k in classes]
metadata = pd.DataFrame({{"brightness": xy[:, 0] * 1.5 + 3.0,
                          "site": [f"Site-{{k % 5}}" for k in range(n)]}})
explorer = Explorer(images, labels=label_names, metadata=metadata)
explorer.set_embedding(xy)
explorer"""


def _write_notebook(path) -> None:
    import nbformat

    kernel = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(SETUP)],
                                            metadata={"kernelspec": kernel}), path)


def _rgb(color: str) -> np.ndarray:
    return np.array([int(color[i:i + 2], 16) for i in (1, 3, 5)])


def _has(pixels: np.ndarray, color: str, tolerance: int = 10) -> bool:
    return bool((np.abs(pixels.astype(int) - _rgb(color)).max(axis=-1) <= tolerance).any())


def test_search_box_and_colour_bar(lab, lab_root):
    _write_notebook(lab_root / NOTEBOOK)
    lab.open_notebook(NOTEBOOK)
    run_story(lab, "search-colour-failure", _story)


def _shown_count(page) -> int | None:
    text = page.locator(SELECTION_COUNT_HOOK).first.inner_text()
    found = re.match(r"\s*([\d,]+) selected", text)
    return int(found.group(1).replace(",", "")) if found else None


def _story(lab):
    page = lab.page
    lab.run_cells([0], timeout=120 * TIMEOUT_SCALE)
    m = MapPage(lab, lab.kernel_json("explorer.canvas.figure.id"))
    page.locator(CANVAS_HOOK).first.wait_for(state="visible", timeout=30_000)

    # -- 1. the search box: substring, then a regular expression ----------------------------
    box = page.get_by_placeholder("search labels, file names, metadata")
    box.click()
    box.press_sequentially("SITE-3")
    box.press("Enter")
    expected = [k for k in range(N) if k % 5 == 3]
    wait_until(lambda: _shown_count(page) == len(expected), f"'{len(expected)} selected' shown", timeout=20)
    assert m.kernel("explorer.selection.tolist()") == expected
    page.get_by_text("search 'SITE-3': 80 matched, 80 selected").wait_for(timeout=10_000)

    page.locator("button.widget-toggle-button", has_text=".*").click()
    wait_until(lambda: m.kernel("explorer.controls.search_regex.value"), "the regex toggle", timeout=20)
    box.fill("")
    box.press_sequentially("^class [12]$")
    box.press("Enter")
    expected = m.kernel("[i for i, name in enumerate(label_names) "
                        "if name in ('class 1', 'class 2')]")
    assert 20 < len(expected) < N
    wait_until(lambda: _shown_count(page) == len(expected), f"'{len(expected)} selected' shown", timeout=20)
    assert m.kernel("explorer.selection.tolist()") == expected
    lab.screenshot("search-colour-page")
    # Full colours for the map check below: unselected points would be faded.
    lab.kernel_execute("explorer.select([])")
    wait_until(lambda: _shown_count(page) == 0, "'0 selected' shown", timeout=20)

    # -- 2. colour by the numeric column: a colour bar instead of the legend ----------------
    frame = m.frame()
    before = _image(page.locator(CANVAS_HOOK).first.screenshot())
    right_of = int(round(frame["dx"] + frame["width"])) + 2
    legend_colors = default_palette(8)
    assert _has(before[:, right_of:], legend_colors[1])  # the labels' legend (orange swatch)
    page.locator(".widget-dropdown", has=page.locator("label", has_text="Colour")) \
        .locator("select").select_option("brightness")
    try:
        wait_until(lambda: m.kernel("explorer.canvas.color_bar.visible"), "the colour bar in the kernel",
                   timeout=20)
    except AssertionError as error:
        state = m.kernel("[explorer.controls.color.value, explorer.color_column, "
                         "[str(x) for x in explorer.messages[-3:]]]")
        raise AssertionError(f"{error}; kernel: dropdown, colour column, messages = {state}") from error
    ramp = continuous_palette()
    x0, y0 = int(round(frame["dx"])), int(round(frame["dy"]))
    below = slice(y0 + int(frame["height"]) + 2, None), slice(x0, x0 + int(frame["width"]))

    def drawn():
        shot = _image(page.locator(CANVAS_HOOK).first.screenshot())
        bar = shot[below]
        return [shot] if _has(bar, ramp[0]) and _has(bar, ramp[-1]) else None

    after = wait_until(drawn, "the colour bar below the map", timeout=20)[0]
    side = after[:, right_of:]
    assert not _has(side, legend_colors[1]) and not _has(side, legend_colors[2]), \
        "the legend must hide when the colour bar shows"
    assert m.kernel("[explorer.canvas.color_mapper.low, explorer.canvas.color_mapper.high]") \
        == pytest.approx(m.kernel("[float(metadata.brightness.min()), "
                                  "float(metadata.brightness.max())]"))
    # The map: brightness grows with x, so its leftmost and rightmost points take the
    # colormap's two ends (drawn part-transparent on white: compare hues, purple-blue on
    # the left, yellow-green on the right).
    # Without the bottom line, where the map's help text is written.
    inside = after[y0:y0 + int(frame["height"]) - 26, x0:x0 + int(frame["width"])].astype(int)
    drawn_columns = np.flatnonzero((np.abs(inside - 255).max(axis=-1) > 30).any(axis=0))
    left = inside[:, drawn_columns[:4]].reshape(-1, 3)
    right = inside[:, drawn_columns[-4:]].reshape(-1, 3)
    left = left[np.abs(left - 255).max(axis=1) > 30]
    right = right[np.abs(right - 255).max(axis=1) > 30]
    assert (left[:, 2] > left[:, 1]).mean() > 0.5, "the low end is blue-purple"
    assert (right[:, 1] > right[:, 2]).mean() > 0.5, "the high end is yellow-green"
    lab.screenshot("search-colour", page.locator(CANVAS_HOOK).first)
    errors = [line for line in lab.console if line.startswith(("pageerror", "error"))]
    assert not errors, errors
