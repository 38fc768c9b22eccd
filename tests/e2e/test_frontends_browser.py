"""The Explorer in Jupyter Notebook 7 and in Voilà, driven by headless Chromium.

One page load per frontend, on a notebook that shows an Explorer of 48 digits images
(ResNet-10 of width 8 on 8×8 pixels, 120 short epochs: about 10 s of training after
about 10 s of setup, with a map every second or so):

1. the widget renders, as the widget (the PNG fallback beside it in the mime bundle is
   not what the frontend shows), and the map's frame is on the page;
2. the Start button trains, and the live map changes at least twice;
3. a hover card with the image shows over a drawn point;
4. a lasso selects: the count on the map, the kernel's ``explorer.selection`` and the
   browser's selection agree.  In Voilà the test has no kernel access, so the notebook
   shows ``explorer.selection`` in a Label that follows the trait (``observe``).

A third test needs no server: the BokehJS loader the Explorer publishes and the map with its
browser-side code, in a page whose every network request is refused (what VS Code and Colab
take from the kernel rather than from a CDN); the map draws and answers a lasso.

Screenshots: ``test-artifacts/frontend-notebook7.png``, ``test-artifacts/frontend-voila.png``,
``test-artifacts/frontend-offline.png``.  Measured on the loaded 2-core machine: Notebook 7
and Voilà about 2 minutes each (server ~14 s, kernel with torch and the Explorer ~40-60 s,
training ~20 s), the offline page about 75 s (mostly creating the Explorer).
"""

from __future__ import annotations

import contextlib
import re
import time

import numpy as np
import pytest

from .jupyter import (
    ARTIFACTS_DIR, TIMEOUT_SCALE, BrowserPage, NotebookPage, NotebookServer, VoilaPage,
    VoilaServer, chromium, require_browser_stack, require_frontend,
)
from .mapclient import MapPage
from .test_quickstart_browser import (
    CANVAS_HOOK, _densest_pixel, _saturated, _save, drag_loop,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

NOTEBOOK = "frontends.ipynb"
N_IMAGES = 48
KERNEL_SELECTION_HOOK = ".tsw-kernel-selection"
MIN_DRAWN_PIXELS = 60

# Shows the Explorer as it will be shown once Explorer's own display carries the static
# fallback (see tsimcne_widgets.widget.notebook.static_fallback): the live frontends must
# still pick the widget.  The Label mirrors the kernel's selection for Voilà.
SETUP = f"""\
import ipywidgets
import numpy as np
from IPython.display import display

from tsimcne_widgets import Explorer
from tsimcne_widgets.data.datasets import load_digits
from tsimcne_widgets.widget.notebook import STATIC_HINT, map_png, static_fallback

digits = load_digits()
explorer = Explorer(digits.images[:{N_IMAGES}], labels=digits.labels[:{N_IMAGES}],
                    total_epochs=(60, 10, 50), batch_size=32, backbone="resnet10",
                    backbone_width=8, device="cpu", random_state=0, num_threads=1,
                    canvas_width=520, canvas_height=420)
kernel_selection = ipywidgets.Label("none")
kernel_selection.add_class("{KERNEL_SELECTION_HOOK[1:]}")
explorer.observe(lambda change: setattr(kernel_selection, "value",
                                        ",".join(map(str, change["new"])) or "none"),
                 "selection")
bundle = explorer._repr_mimebundle_()  # publishes BokehJS, returns the widget's bundle
if "image/png" not in bundle:  # until Explorer puts the static picture in itself
    bundle = static_fallback(bundle, map_png(explorer.embedding, explorer.labels), STATIC_HINT)
display(bundle, raw=True)
display(kernel_selection)
"""

# Model id of the one connected Bokeh plot with a frame (the map) on the page.
_JS_FIGURE_ID = """
() => {
  if (!window.Bokeh || !window.Bokeh.index) return null;
  for (const view of window.Bokeh.index) {
    if (view.frame && view.canvas_view && view.el.isConnected) return view.model.id;
  }
  return null;
}
"""


def _write_notebook(path) -> None:
    import nbformat

    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(SETUP)]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                       "language": "python"}
    nbformat.write(notebook, path)


@pytest.fixture(scope="module")
def frontend_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("frontends-root")
    _write_notebook(root / NOTEBOOK)
    return root


@pytest.fixture(scope="module")
def browser():
    require_browser_stack()  # skips (or fails under CI) before Chromium is asked for
    with chromium() as instance:
        yield instance


def _new_page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000},
                                  device_scale_factor=1)
    return context, context.new_page()


def _map_session(shell, timeout: float = 60.0) -> MapPage:
    """The map of the page's Explorer, found without asking the kernel."""
    page = shell.page
    page.locator(CANVAS_HOOK).first.wait_for(state="visible", timeout=timeout * 1000)
    page.wait_for_function(_JS_FIGURE_ID, timeout=timeout * 1000)
    return MapPage(shell, page.evaluate(_JS_FIGURE_ID))


def _shown_as_widget(page) -> None:
    # With image/png and text/html in the bundle, the frontend must still render the widget
    # (the widget renderer sets no data-mime-type; the HTML and image renderers do).
    fallback = page.locator('.tsw-static-map, [data-mime-type="image/png"], '
                            '[data-mime-type="text/plain"]')
    assert fallback.count() == 0, "a fallback of the Explorer's output is shown, not the widget"
    assert page.locator(f".jupyter-widgets {CANVAS_HOOK} canvas").count() >= 1, (
        "no <canvas> of the map inside a rendered widget")


def _differs(a: np.ndarray, b: np.ndarray) -> bool:
    """Another map: 48 points that move change a few hundred pixels, so 40 is no noise."""
    return a.shape != b.shape or int(np.any(np.abs(a - b) > 24, axis=-1).sum()) > 40


def _train_and_watch(m: MapPage, shell, name: str, finished) -> int:
    """Press Start; return how many different maps were seen before training ended."""
    page = m.page
    before, _ = m.map_image()
    page.get_by_role("button", name=re.compile(r"\bStart$")).first.click()
    page.mouse.move(1, 1)
    shots = [before]
    deadline = time.monotonic() + 120 * TIMEOUT_SCALE
    while time.monotonic() < deadline:
        done = finished()
        image, _ = m.map_image()
        if _differs(shots[-1], image) and _saturated(image).sum() >= MIN_DRAWN_PIXELS:
            shots.append(image)
        if done:
            break
        time.sleep(0.1)
    assert finished(), f"training did not finish in {120 * TIMEOUT_SCALE:.0f} s"
    final, _ = m.map_image()
    if _differs(shots[-1], final):
        shots.append(final)
    _save(final, shell.artifacts_dir / f"frontend-{name}-map.png")
    drawn = int(_saturated(final).sum())
    assert drawn >= MIN_DRAWN_PIXELS, f"the final map has only {drawn} coloured pixels"
    assert len(shots) >= 3, f"the map changed {len(shots) - 1} time(s) during training"
    return len(shots) - 1


def _hover(m: MapPage) -> str:
    """Point at a drawn point; return the hover card image's src."""
    page = m.page
    card_image = page.locator(".tsw-client-card img").first
    image, frame = m.map_image()
    row, col = _densest_pixel(_saturated(image), window=9, margin=20)
    x, y = frame["x"] + col + 0.5, frame["y"] + row + 0.5
    page.mouse.move(x - 12, y - 12)
    page.mouse.move(x, y, steps=6)
    card_image.wait_for(state="visible", timeout=10_000)
    natural = card_image.evaluate("(img) => [img.naturalWidth, img.naturalHeight]")
    assert min(natural) >= 8, f"the hover card's image is {natural} pixels"
    return card_image.get_attribute("src") or ""


def _lasso(m: MapPage) -> list[int]:
    """Lasso the densest region; return the browser's selection once the count shows it."""
    page = m.page
    page.mouse.move(1, 1)
    image, frame = m.map_image()
    radius = int(min(frame["width"], frame["height"]) / 5)
    row, col = _densest_pixel(_saturated(image), window=radius, margin=radius + 8)
    drag_loop(page, np.array([frame["x"] + col, frame["y"] + row], dtype=float), radius)
    page.wait_for_function(
        "() => { const m = window.__tswMaps && Array.from(window.__tswMaps.values())[0];"
        " return !!m && m.selection.length > 0; }", timeout=10_000)
    browser_side = sorted(page.evaluate(
        "() => Array.from(Array.from(window.__tswMaps.values())[0].selection)"))
    deadline = time.monotonic() + 10
    while m.count() != len(browser_side):
        assert time.monotonic() < deadline, (
            f"the map shows {m.count()} selected, the browser holds {len(browser_side)}")
        time.sleep(0.1)
    return browser_side


def _label_selection(page) -> list[int]:
    text = page.locator(KERNEL_SELECTION_HOOK).first.inner_text().strip()
    return [] if text == "none" else [int(v) for v in text.split(",")]


def _wait_kernel_label(page, expected: list[int], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while (shown := _label_selection(page)) != expected:
        assert time.monotonic() < deadline, (
            f"the kernel's selection {shown} never matched the browser's {expected}")
        time.sleep(0.2)
    count = page.locator(".tsw-selection-count").first.inner_text()
    assert re.search(rf"\b{len(expected)}\s+selected", count), count


@contextlib.contextmanager
def _frontend(name: str, server_class, page_class, root, tmp_path_factory, browser):
    """A server of ``server_class`` on ``root`` and a fresh page on it; on failure a
    screenshot (``test-artifacts/frontend-<name>-failure.png``) and the diagnostics."""
    server = server_class(root, tmp_path_factory.mktemp(f"{name}-work"))
    server.start()
    context, page = _new_page(browser)
    shell = page_class(page, server)
    try:
        yield shell
    except BaseException:
        shell.screenshot(f"frontend-{name}-failure")
        print(shell.diagnostics())
        raise
    finally:
        context.close()
        server.stop()


def _hover_and_lasso(m: MapPage) -> list[int]:
    source = _hover(m)
    assert source.startswith(("blob:", "data:image/")), source[:60]
    return _lasso(m)


def test_explorer_in_notebook7(frontend_root, tmp_path_factory, browser):
    require_frontend("notebook")
    with _frontend("notebook7", NotebookServer, NotebookPage, frontend_root,
                   tmp_path_factory, browser) as shell:
        shell.open_notebook(NOTEBOOK)
        shell.run_cells([0], timeout=180 * TIMEOUT_SCALE)
        m = _map_session(shell)
        _shown_as_widget(shell.page)
        changes = _train_and_watch(
            m, shell, "notebook7",
            finished=lambda: shell.kernel_json("explorer.state") == "finished")
        selected = _hover_and_lasso(m)
        deadline = time.monotonic() + 30
        while (kernel := shell.kernel_json("explorer.selection.tolist()")) != selected:
            assert time.monotonic() < deadline, f"kernel {kernel} vs browser {selected}"
            time.sleep(0.2)
        _wait_kernel_label(shell.page, selected)
        shell.screenshot("frontend-notebook7")
        print(f"notebook 7: {changes} map changes, {len(selected)} selected")


def test_explorer_in_voila(frontend_root, tmp_path_factory, browser):
    require_frontend("voila")
    with _frontend("voila", VoilaServer, VoilaPage, frontend_root,
                   tmp_path_factory, browser) as shell:
        shell.open_notebook(NOTEBOOK, timeout=180 * TIMEOUT_SCALE)
        m = _map_session(shell)
        _shown_as_widget(shell.page)
        finished = shell.page.locator("b", has_text=re.compile(r"^finished$"))
        changes = _train_and_watch(m, shell, "voila", finished=lambda: finished.count() > 0)
        selected = _hover_and_lasso(m)
        _wait_kernel_label(shell.page, selected)
        shell.screenshot("frontend-voila")
        print(f"voila: {changes} map changes, {len(selected)} selected")


# -- no CDN: what VS Code and Colab get from the kernel must work with the network cut ------------

_OFFLINE_PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"></head><body>
<div class="tsw-canvas" id="map"></div>
<script>{loader}</script>
<script>
  // The loader runs BokehJS's inline code, then its callbacks: wait for Bokeh.embed.
  (function embed() {{
    if (!(window.Bokeh && window.Bokeh.embed)) return setTimeout(embed, 20);
    window.Bokeh.embed.embed_item({item}, "map");
  }})();
</script>
</body></html>"""


def _is_local(url: str) -> bool:
    return url.startswith(("about:", "data:", "blob:"))


def test_map_runs_offline_from_the_inline_bundle(browser, tmp_path):
    """The BokehJS loader the Explorer publishes and the map with its browser-side code run
    in a page whose every network request is refused: the map draws and answers a lasso.

    This is the part of the Explorer that VS Code and Colab take from the kernel's output
    (the frontend supplies the ipywidgets and jupyter_bokeh code itself).
    """
    import json

    from bokeh.embed import json_item
    from bokeh.embed.bundle import bundle_for_objs_and_resources
    from bokeh.resources import INLINE

    from tsimcne_widgets import Explorer
    from tsimcne_widgets.widget.notebook import loader_script

    rng = np.random.default_rng(0)
    n = 300
    labels = rng.integers(0, 6, n)
    xy = rng.normal(scale=5.0, size=(6, 2))[labels] + rng.normal(size=(n, 2))
    images = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
    explorer = Explorer(images, labels=[f"class {k}" for k in labels], device="cpu")
    explorer.set_embedding(xy)
    figure = explorer.canvas.figure
    bundle = bundle_for_objs_and_resources([figure], INLINE)
    page_html = _OFFLINE_PAGE.format(loader=loader_script(bundle, register_mime=False),
                                     item=json.dumps(json_item(figure)))

    context, page = _new_page(browser)
    refused: list[str] = []

    def route(request_route):
        url = request_route.request.url
        if _is_local(url):
            request_route.continue_()
        else:
            refused.append(url)
            request_route.abort()

    context.route("**/*", route)
    shell = BrowserPage(page, server=None, artifacts_dir=ARTIFACTS_DIR)
    try:
        page.set_content(page_html, wait_until="load")
        m = _map_session(shell, timeout=30)
        image, _ = m.map_image()
        drawn = int(_saturated(image).sum())
        assert drawn > 500, f"the offline map has only {drawn} coloured pixels"
        selected = _lasso(m)
        assert len(selected) > 0
        shell.screenshot("frontend-offline")
        assert refused == [], f"the page asked the network for {refused}"
        assert not [line for line in shell.console if "pageerror" in line], shell.console
    finally:
        context.close()
