"""The selection table (widget/table.py) and its links with the map's ring and the gallery,
driven from Python through the same widgets and hooks the browser uses (no training)."""
from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from tsimcne_widgets.data.load import ImageSet
from tsimcne_widgets.widget.explorer import Explorer
from tsimcne_widgets.widget.gallery import FOCUS_CLASS

N = 150


@pytest.fixture
def explorer() -> Explorer:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (N, 8, 8, 3), dtype=np.uint8)
    labels = np.array(["cat", "dog", "<b>&bird"] * (N // 3), dtype=object)
    metadata = pd.DataFrame({"weight": np.arange(N) * 0.5, "site": ["x", "y"] * (N // 2)})
    explorer = Explorer(ImageSet(images, labels=labels, metadata=metadata), device="cpu")
    return explorer.set_embedding(rng.normal(size=(N, 2)).astype(np.float32))


def _pick(row):
    return row.children[0]


def _shown_rows(table):
    return [int(_pick(row).description[1:]) for row in table.rows
            if row.layout.display != "none"]


def _focused_rows(table):
    return [int(_pick(row).description[1:]) for row in table.rows
            if FOCUS_CLASS in row._dom_classes]


def test_pages_follow_the_selection_and_only_the_shown_page_is_built(explorer):
    table = explorer.table
    assert _shown_rows(table) == [] and "nothing selected" in table.caption.value
    explorer.thumbnails.clear()
    before = explorer.thumbnails.cache_info().misses
    explorer.select(range(5, N))  # 145 rows: 8 pages of 20
    assert table.n_pages == 8 and _shown_rows(table) == list(range(5, 25))
    assert "rows 1–20 of 145 selected" in table.caption.value
    assert "page 1 of 8" in table.caption.value
    # The table encodes its 20 thumbnails, the gallery its 64: nothing for the other rows.
    assert explorer.thumbnails.cache_info().misses - before == 20 + 64
    header = table.header.value
    for column in ("label", "weight", "site", "tags"):
        assert f">{column}<" in header
    assert ">path<" not in header  # images from an array have no files
    cells = table.rows[3].children[1].value  # image 8
    assert "&lt;b&gt;&amp;bird" in cells and "<b>&bird" not in cells  # escaped
    assert ">4<" in cells  # its weight
    table.next_button.click()
    assert _shown_rows(table) == list(range(25, 45)) and table.previous_button.disabled is False
    table.show_page(99)  # clipped
    assert _shown_rows(table) == list(range(145, N)) and table.next_button.disabled
    explorer.tag("keep", [146])
    assert ">keep<" in table.rows[1].children[1].value  # tags refresh the page
    explorer.select([1, 2, 3])  # a new selection starts at page 1
    assert table.page == 0 and _shown_rows(table) == [1, 2, 3]


def test_a_large_selection_renders_one_page_quickly():
    n = 100_000
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
    explorer = Explorer(ImageSet(images, labels=rng.integers(0, 9, n)), device="cpu")
    explorer.set_embedding(rng.normal(size=(n, 2)).astype(np.float32))
    table = explorer.table
    explorer.select(np.arange(n))
    start = time.perf_counter()
    table.show_page(2000)
    seconds = time.perf_counter() - start
    assert _shown_rows(table) == list(range(40_000, 40_020))
    assert seconds < 0.5, f"one page of a 100k selection took {seconds:.2f} s"


def test_row_click_rings_the_point_marks_the_gallery_and_highlights_the_row(explorer):
    table = explorer.table
    explorer.select(range(40))
    client, xy = explorer.canvas.client, explorer.embedding
    _pick(table.rows[3]).click()
    assert table.focused == client.focused == 3
    assert client.ring.data["index"] == [3]
    assert np.allclose([client.ring.data["x"][0], client.ring.data["y"][0]], xy[3])
    assert _focused_rows(table) == [3]
    assert explorer.gallery.marked == 3
    marked = [k for k, cell in enumerate(explorer.gallery.cells) if FOCUS_CLASS in cell._dom_classes]
    assert [int(explorer.gallery.shown[k]) for k in marked] == [3]
    # The ring follows the point when the map changes.
    explorer.set_embedding(xy + 10)
    assert np.allclose([client.ring.data["x"][0], client.ring.data["y"][0]], xy[3] + 10)
    # A selection without the focused image takes the ring away.
    explorer.select(range(10, 20))
    assert client.focused is None and client.ring.data["index"] == []
    assert _focused_rows(table) == [] and explorer.gallery.marked is None


def test_gallery_click_focuses_and_turns_the_table_to_its_page(explorer):
    table = explorer.table
    explorer.select(range(60))
    explorer.gallery.click(45)
    assert explorer.canvas.client.focused == 45 and explorer.canvas.client.ring.data["index"] == [45]
    assert table.page == 2 and _focused_rows(table) == [45]
    with pytest.raises(ValueError, match="not in the gallery"):
        explorer.gallery.click(100)


def test_remove_takes_the_image_out_undoably(explorer):
    table = explorer.table
    explorer.select(range(30))
    with pytest.raises(ValueError, match="nothing to remove"):
        table.remove()
    table.show_page(1)
    _pick(table.rows[2]).click()  # image 22
    table.rows[2].children[2].click()  # its ✕
    assert 22 not in explorer.selection and len(explorer.selection) == 29
    assert table.focused is None and explorer.canvas.client.ring.data["index"] == []
    assert table.page == 1 and _shown_rows(table) == [20, 21] + list(range(23, 30))
    explorer.controls.undo.click()
    assert explorer.selection.tolist() == list(range(30))
    table.focus(7)
    table.remove()
    assert 7 not in explorer.selection
    explorer.model.undo()
    assert 7 in explorer.selection


def test_the_browsers_delete_message_removes_and_unfocuses(explorer):
    table = explorer.table
    explorer.select(range(10))
    table.focus(4)
    client = explorer.canvas.client
    # What lib_map.js sends on Delete over the map: the selection without the ringed image.
    client.channel.data = {"seq": [1], "action": ["remove"], "indices": [[0, 1, 2, 3, 5, 6, 7, 8, 9]],
                           "px": [[]], "py": [[]]}
    assert explorer.selection.tolist() == [0, 1, 2, 3, 5, 6, 7, 8, 9]
    assert client.focused is None and _focused_rows(table) == []
    assert client.sync.data["ack"] == [1]
    explorer.model.undo()
    assert 4 in explorer.selection


def test_bad_focus_is_reported_and_changes_nothing(explorer):
    table = explorer.table
    table.focus(2)
    with pytest.raises(ValueError, match="cannot focus image 999"):
        table.focus(999)
    assert table.focused == 2 and explorer.canvas.client.ring.data["index"] == [2]


@pytest.mark.filterwarnings("ignore:original files are gone")  # the paths are made up
def test_files_show_by_name_with_the_full_path_as_tooltip():
    images = np.random.default_rng(2).integers(0, 256, (12, 8, 8, 3), dtype=np.uint8)
    paths = tuple(f"/data/set/<dir>/img{i}.png" for i in range(12))
    explorer = Explorer(ImageSet(images, paths=paths), device="cpu")
    table = explorer.table
    explorer.select([4])
    assert ">path<" in table.header.value
    cells = table.rows[0].children[1].value
    assert ">img4.png<" in cells and 'title="/data/set/&lt;dir&gt;/img4.png"' in cells


def test_an_undo_standing_for_changes_the_kernel_missed_ends_where_the_browser_is(explorer):
    # The browser selected A, then B, then undid B while the kernel was busy: jupyter_bokeh
    # delivered only A and the undo (the newest change of the channel).  The kernel's own
    # undo would go back before A; the user sees A, so the kernel must end on A.
    client = explorer.canvas.client

    def post(seq, action, indices):
        client.channel.data = {"seq": [seq], "action": [action], "indices": [indices],
                               "px": [[]], "py": [[]], "pages": [[]], "vseq": [0],
                               "vx": [[]], "vy": [[]]}

    post(1, "select", [1, 2, 3])
    post(3, "undo", [1, 2, 3])
    assert explorer.selection.tolist() == [1, 2, 3] and client.sync.data["ack"] == [3]
    post(4, "undo", [])  # an undo the kernel heard of in full goes back normally
    assert explorer.selection.tolist() == []
