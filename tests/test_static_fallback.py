"""A static PNG of the map where no widget manager runs (nbconvert HTML, GitHub, nbviewer).

``static_fallback`` adds ``text/html`` (the picture and a one-line hint), ``image/png`` and
``text/plain`` beside the widget view of a mime bundle; ``map_png`` draws the picture, also
before training.  The end-to-end check runs ``jupyter nbconvert --to html --execute`` on a
small notebook and reads the page it wrote.  The live frontends' side (the widget is still
what JupyterLab-based frontends and Voilà show) is checked in
``tests/e2e/test_frontends_browser.py``.
"""
from __future__ import annotations

import base64
import html
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tsimcne_widgets.widget.notebook import STATIC_HINT, map_png, static_fallback

REPO_ROOT = Path(__file__).resolve().parents[1]
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
N = 60


def _picture(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int16)


def _coloured_pixels(png: bytes) -> int:
    image = _picture(png)
    return int(((image.max(-1) - image.min(-1)) > 40).sum())


def _clustered_map(n: int = N) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    labels = np.array(["cat", "dog", "bird"] * (n // 3))
    centres = {"cat": (0.0, 0.0), "dog": (6.0, 0.0), "bird": (3.0, 5.0)}
    xy = np.array([centres[k] for k in labels]) + rng.normal(scale=0.7, size=(n, 2))
    return xy, labels


def test_fallback_keeps_the_widget_view_and_adds_picture_and_hint():
    import ipywidgets

    bundle = ipywidgets.Label("x")._repr_mimebundle_()
    before = dict(bundle)
    xy, labels = _clustered_map()
    png = map_png(xy, labels, width=400, height=300)

    out = static_fallback(bundle, png)

    assert bundle == before, "the caller's bundle was changed"
    assert out[WIDGET_VIEW] == bundle[WIDGET_VIEW]
    assert base64.b64decode(out["image/png"]) == png
    assert out["text/plain"] == STATIC_HINT
    page = out["text/html"]
    assert f'src="data:image/png;base64,{out["image/png"]}"' in page
    assert html.escape(STATIC_HINT) in page
    assert _picture(png).shape == (300, 400, 3)


def test_fallback_keeps_metadata_of_a_data_metadata_pair():
    png = map_png(*_clustered_map(), width=200, height=150)
    data, metadata = static_fallback(({WIDGET_VIEW: {"model_id": "m"}}, {"a": 1}), png, "hint")
    assert metadata == {"a": 1}
    assert data["text/plain"] == "hint" and WIDGET_VIEW in data


@pytest.mark.parametrize("bad", [b"GIF89a....", "not bytes", b""])
def test_fallback_refuses_anything_but_a_png(bad):
    with pytest.raises(ValueError, match="PNG"):
        static_fallback({}, bad)


def test_map_png_before_training_is_an_empty_map_with_a_title():
    _, labels = _clustered_map()
    empty = map_png(None, labels)
    also_empty = map_png(np.full((N, 2), np.nan), labels)
    no_labels = map_png(None, n_images=N)
    trained = map_png(*_clustered_map())
    for png in (empty, also_empty, no_labels, trained):
        assert _picture(png).shape == (520, 640, 3)
    # Before training only the legend's swatches are coloured (the same in both); the
    # 60 points add their own.
    assert _coloured_pixels(empty) > 0
    assert _coloured_pixels(trained) - _coloured_pixels(empty) > 300
    assert _coloured_pixels(no_labels) == 0
    # The title says there is no map yet: text pixels at the top that the trained map lacks.
    top = slice(0, 60)
    dark_empty = (_picture(empty)[top].max(-1) < 128).sum()
    dark_trained = (_picture(trained)[top].max(-1) < 128).sum()
    assert dark_empty > dark_trained + 200


def test_explorer_bundle_with_fallback_before_and_after_a_map():
    from tsimcne_widgets.widget.explorer import Explorer

    xy, labels = _clustered_map()
    images = np.random.default_rng(1).integers(0, 256, (N, 8, 8, 3), dtype=np.uint8)
    explorer = Explorer(images, labels=labels, device="cpu")
    bundles = []
    for _ in range(2):
        widget_bundle = explorer.widget._repr_mimebundle_()
        bundles.append(static_fallback(widget_bundle, map_png(explorer.embedding, explorer.labels)))
        explorer.set_embedding(xy)
    before, after = (base64.b64decode(b["image/png"]) for b in bundles)
    assert bundles[0][WIDGET_VIEW]["model_id"] == explorer.widget.model_id
    assert _coloured_pixels(after) - _coloured_pixels(before) > 300


# -- end to end: jupyter nbconvert --to html --execute ----------------------------------------

_SETUP = f"""\
import numpy as np
from IPython.display import display
from tsimcne_widgets import Explorer
from tsimcne_widgets.widget.notebook import STATIC_HINT, map_png, static_fallback
rng = np.random.default_rng(0)
labels = np.array(["cat", "dog", "bird"] * {N // 3})
centres = {{"cat": (0.0, 0.0), "dog": (6.0, 0.0), "bird": (3.0, 5.0)}}
xy = np.array([centres[k] for k in labels]) + rng.normal(scale=0.7, size=({N}, 2))
images = rng.integers(0, 256, ({N}, 8, 8, 3), dtype=np.uint8)
explorer = Explorer(images, labels=labels, device="cpu").set_embedding(xy)"""
# What a user writes: the Explorer's own display.
_PLAIN = "explorer"
# The same, with the fallback put in by hand (what Explorer's display is to do itself).
_WIRED = """\
display(static_fallback(explorer.widget._repr_mimebundle_(),
                        map_png(explorer.embedding, explorer.labels), STATIC_HINT), raw=True)"""

_DATA_PNG = re.compile(r"<img[^>]*\bsrc=\"data:image/png;base64,([A-Za-z0-9+/=]+)\"")


def _nbconvert(tmp_path: Path, cells: list[str], *extra: str) -> str:
    import nbformat

    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                       "language": "python"}
    path = tmp_path / "static.ipynb"
    nbformat.write(notebook, path)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    env.setdefault("OMP_NUM_THREADS", "1")
    result = subprocess.run(
        [sys.executable, "-m", "jupyter", "nbconvert", "--to", "html", "--execute",
         "--ExecutePreprocessor.timeout=300", *extra, str(path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return (tmp_path / "static.html").read_text()


def _pictures_with_hint(page: str) -> list[tuple[int, int]]:
    """Sizes of the data: PNG pictures on ``page`` that have the hint right under them."""
    sizes = []
    for match in _DATA_PNG.finditer(page):
        after = page[match.end():match.end() + 2000]
        if html.escape(STATIC_HINT) in after:
            width, height = Image.open(io.BytesIO(base64.b64decode(match.group(1)))).size
            sizes.append((width, height))
    return sizes


def _cells(page: str) -> list[str]:
    """The page cut into its notebook cells (nbconvert's lab template: one div per cell)."""
    return re.split(r'<div[^>]*class="jp-Cell ', page)[1:]


@pytest.fixture(scope="module")
def saved_without_widget_state(tmp_path_factory) -> list[str]:
    """Cells of the HTML page of a notebook saved without widget state, as JupyterLab saves
    it by default ("Save Widget State Automatically" is off) and as GitHub and nbviewer
    get it."""
    page = _nbconvert(tmp_path_factory.mktemp("nbconvert"), [_SETUP, _WIRED, _PLAIN],
                      "--ExecutePreprocessor.store_widget_state=False")
    cells = _cells(page)
    assert len(cells) == 3, f"expected 3 cells on the page, found {len(cells)}"
    return cells


@pytest.mark.slow
def test_nbconvert_page_shows_the_picture_and_the_hint(saved_without_widget_state):
    sizes = _pictures_with_hint(saved_without_widget_state[1])
    assert sizes == [(640, 520)], sizes


@pytest.mark.slow
def test_nbconvert_page_of_a_plain_explorer_shows_the_picture(saved_without_widget_state):
    assert _pictures_with_hint(saved_without_widget_state[2]) == [(640, 520)]
