"""A real folder of CIFAR-10 JPEGs explored in JupyterLab, driven by headless Chromium.

The story a user with their own photos would follow:

1. a notebook builds ``Explorer("<folder>")`` on a folder with one sub-folder per class,
   shows it, starts training and waits for it to end;
2. the user lassos a region of the final map with the mouse;
3. types a tag name into the tag box and clicks *Tag*;
4. types a folder name into the export box and clicks *Export files*.

Then the test checks, against the kernel and the disk, that the export folder holds exactly
the tagged (= lassoed) files: one sub-folder named after the tag, one file per selected
image, ``manifest.csv`` naming each image's source file, and the bytes of every exported
file equal to its source. Finally the tags must survive ``save`` / ``Explorer.load``.

Skipped when the CIFAR-10 JPEGs (``shared/data``) are absent. Screenshots land in
``test-artifacts/`` (``folder-lasso.png``, ``folder-export.png``).
"""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from .jupyter import TIMEOUT_SCALE
from .jupyter import lab, lab_browser, lab_root, lab_server  # noqa: F401 - pytest fixtures
from .test_quickstart_browser import (
    CANVAS_HOOK,
    SELECTION_COUNT_HOOK,
    QuickstartSession,
    _densest_pixel,
    drag_loop,
    _inside,
    _saturated,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

NOTEBOOK = "folder-explorer.ipynb"
IMAGE_FOLDER = "cifar_subset"
# 320 images: two training steps of 128 per epoch, which keeps training near a minute on
# two busy cores (each step costs the same whatever the folder's size).
PER_CLASS = 32
TAG_NAME = "picked"
EXPORT_FOLDER = "picked_export"
SESSION_FOLDER = "picked_session"


@pytest.fixture(scope="module")
def image_folder(lab_root) -> Path:
    """``PER_CLASS`` real test-split JPEGs per class, copied into the Lab's root."""
    from tsimcne_widgets.data.datasets import cifar10_folder

    source = cifar10_folder()
    if source is None:
        pytest.skip("the CIFAR-10 JPEGs are absent (shared/data/cifar10-jpeg.tar.gz or "
                    "TSIMCNE_CIFAR10): nothing to explore")
    target = lab_root / IMAGE_FOLDER
    for class_dir in sorted(p for p in (source / "test").iterdir() if p.is_dir()):
        files = sorted(class_dir.glob("*.jpg"))[:PER_CLASS]
        (target / class_dir.name).mkdir(parents=True, exist_ok=True)
        for file in files:
            shutil.copyfile(file, target / class_dir.name / file.name)
    return target


def _write_notebook(path: Path) -> None:
    import nbformat

    cells = [
        "from tsimcne_widgets import Explorer",
        f"explorer = Explorer({IMAGE_FOLDER!r}, total_epochs=(2, 1, 1), batch_size=128,\n"
        "                    backbone='resnet10', backbone_width=8, random_state=0)\n"
        "explorer",
        "explorer.start();  # the semicolon: no second view of the widget",
        "explorer.wait()\nprint('training finished:', explorer.state)",
    ]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                       "language": "python"}
    nbformat.write(notebook, str(path))


def _draw_lasso(page, session) -> np.ndarray:
    """Drag a 10-cornered loop around the densest drawn region; return the path (page px)."""
    image, frame = session.map_image()
    radius = int(min(frame["width"], frame["height"]) / 6)
    row, col = _densest_pixel(_saturated(image), window=radius, margin=radius + 12)
    centre = np.array([frame["x"] + col, frame["y"] + row], dtype=float)
    return drag_loop(page, centre, radius)


def test_folder_of_images_in_jupyterlab(lab, lab_root, image_folder):
    begin = time.monotonic()
    _write_notebook(lab_root / NOTEBOOK)
    lab.open_notebook(NOTEBOOK)
    try:
        _run_story(lab, lab_root, image_folder)
    except BaseException:
        lab.screenshot("folder-failure")
        print(lab.diagnostics())
        raise
    finally:
        print(f"folder story took {time.monotonic() - begin:.1f} s")


def _run_story(lab, lab_root: Path, image_folder: Path) -> None:
    page = lab.page
    session = QuickstartSession(lab)
    timings = {}
    t = time.monotonic()

    # -- build, show, train, wait ------------------------------------------------------------
    lab.run_cells(range(lab.find_cell("explorer.start()")), timeout=180 * TIMEOUT_SCALE)
    n_images = lab.kernel_json("explorer.n")
    assert n_images == 10 * PER_CLASS, f"the Explorer read {n_images} of {10 * PER_CLASS} JPEGs"
    session.figure_id = lab.kernel_json("explorer.canvas.figure.id")
    page.locator(CANVAS_HOOK).first.wait_for(state="visible", timeout=30_000)
    timings["load+show"] = time.monotonic() - t
    t = time.monotonic()
    lab.run_cells([lab.find_cell("explorer.start()")], timeout=30)
    finish = lab.find_cell("explorer.wait()")
    lab.run_cells([finish], timeout=180 * TIMEOUT_SCALE)
    finished = lab.wait_for_output(finish, "training finished")
    assert "finished" in finished.split("training finished:")[-1], finished
    page.mouse.move(1, 1)  # keep the pointer (and its hover card) off the map
    deadline = time.monotonic() + 20 * TIMEOUT_SCALE
    while _saturated(session.map_image()[0]).sum() < 200:  # the final map reaches the browser
        assert time.monotonic() < deadline, "the final map is not drawn on the canvas"
        time.sleep(0.3)
    time.sleep(0.5)
    timings["training"] = time.monotonic() - t
    t = time.monotonic()

    # -- lasso with real mouse events -----------------------------------------------------
    drawn_path = _draw_lasso(page, session)
    count = page.locator(SELECTION_COUNT_HOOK).first
    try:
        page.wait_for_function("(el) => /[1-9][0-9]* selected/.test(el.innerText)",
                               arg=count.element_handle(), timeout=15_000)
    except Exception as error:
        raise AssertionError(f"no selection after the lasso; messages: "
                             f"{lab.kernel_json('explorer.messages')}") from error
    shown_count = int(re.search(r"(\d+)\s+selected", count.inner_text()).group(1))
    time.sleep(0.5)
    lab.screenshot("folder-lasso")
    view = lab.kernel_json(
        "{'selection': explorer.selection.tolist(),"
        " 'polygon': explorer.last_polygon.tolist(),"
        " 'embedding': explorer.embedding.tolist()}")
    selection = np.array(view["selection"], dtype=int)
    assert shown_count == len(selection) > 0, (shown_count, len(selection))
    assert len(selection) < n_images, "the lasso took every image: nothing was chosen"
    expected = np.flatnonzero(_inside(np.array(view["embedding"]), np.array(view["polygon"])))
    assert np.array_equal(selection, expected), "the selection is not the points in the lasso"
    assert len(drawn_path) > 10

    # -- tag it with the tag box and the Tag button -----------------------------------------
    page.get_by_placeholder("tag name").first.fill(TAG_NAME)
    # Not get_by_role: the icon's CSS glyph is part of the button's accessible name.
    page.locator("button", has_text=re.compile(r"^\s*Tag\s*$")).first.click()
    page.get_by_text(f"tagged {len(selection)} images as '{TAG_NAME}'").first.wait_for(
        timeout=15_000)

    # -- export with the path box and the Export files button --------------------------------
    files_button = page.get_by_role("button", name="Export files", exact=True).first
    # The innermost box holding the button is its row: [path box, button].
    path_box = (page.locator(".widget-hbox").filter(has=files_button).last
                .locator(".widget-text input").first)
    path_box.fill(EXPORT_FOLDER)
    files_button.click()
    exported_message = page.get_by_text(
        re.compile(rf"exported {len(selection)} files to \S*{EXPORT_FOLDER}")).first
    exported_message.wait_for(timeout=30_000)
    # The message sits below the map and gallery: bring it into the picture.
    exported_message.scroll_into_view_if_needed()
    lab.screenshot("folder-export")

    timings["lasso+tag+export"] = time.monotonic() - t
    t = time.monotonic()

    # -- the kernel's view: selection, tags and the explorer's source paths ---------------------
    kernel = lab.kernel_json(
        "{'selection': explorer.selection.tolist(),"
        " 'tags': explorer.tags.astype({'index': int}).to_dict('list'),"
        " 'paths': {int(i): str(p) for i, p in"
        "           zip(explorer.selected()['index'], explorer.selected()['path'])},"
        " 'cwd': __import__('os').getcwd()}")
    assert kernel["selection"] == selection.tolist()
    assert set(kernel["tags"]["tag"]) == {TAG_NAME}
    assert sorted(kernel["tags"]["index"]) == selection.tolist(), "the tag is not the selection"
    cwd = Path(kernel["cwd"])
    # JSON object keys are strings.
    sources = {int(i): (cwd / p).resolve() for i, p in kernel["paths"].items()}
    assert all(src.is_relative_to(image_folder.resolve()) and src.is_file()
               for src in sources.values()), list(sources.values())[:3]

    # -- the disk: exactly the tagged files, named after their sources, same bytes -----------
    export = lab_root / EXPORT_FOLDER
    assert sorted(p.name for p in export.iterdir()) == sorted(["manifest.csv", TAG_NAME]), \
        sorted(p.name for p in export.iterdir())
    exported = {p.name: p for p in (export / TAG_NAME).iterdir()}
    expected_names = {f"{i}_{src.name}": i for i, src in sources.items()}
    assert set(exported) == set(expected_names), (
        f"{len(exported)} files exported, {len(expected_names)} tagged; extra "
        f"{sorted(set(exported) - set(expected_names))[:5]}, missing "
        f"{sorted(set(expected_names) - set(exported))[:5]}")
    for name, index in expected_names.items():
        assert exported[name].read_bytes() == sources[index].read_bytes(), name

    import pandas as pd

    manifest = pd.read_csv(export / "manifest.csv")
    assert sorted(manifest["index"]) == selection.tolist()
    assert set(manifest["tag"]) == {TAG_NAME}
    for row in manifest.itertuples():
        assert (cwd / row.source_path).resolve() == sources[row.index], row
        assert row.exported_path == f"{TAG_NAME}/{row.index}_{sources[row.index].name}", row
    label_of_folder = {i: sources[i].parent.name for i in sources}
    assert all(row.label == label_of_folder[row.index] for row in manifest.itertuples())

    # -- tags survive save / load -------------------------------------------------------------
    restored = lab.kernel_json(
        f"(explorer.save({SESSION_FOLDER!r}),"
        f" (lambda e: {{'tags': e.tags.astype({{'index': int}}).to_dict('list'),"
        f"              'n': e.n, 'paths': [str(p) for p in e.image_set.paths]}})"
        f"(Explorer.load({SESSION_FOLDER!r})))[1]",
        timeout=120 * TIMEOUT_SCALE)
    assert restored["n"] == n_images
    assert sorted(zip(restored["tags"]["index"], restored["tags"]["tag"])) == \
        sorted(zip(kernel["tags"]["index"], kernel["tags"]["tag"]))
    reloaded_sources = {i: (cwd / restored["paths"][i]).resolve() for i in sources}
    assert reloaded_sources == sources, "the reloaded session maps indices to other files"
    timings["checks+save/load"] = time.monotonic() - t
    print("folder story:", json.dumps({"images": n_images, "selected": len(selection),
                                       **{k: round(v, 1) for k, v in timings.items()}}))
