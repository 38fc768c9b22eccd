"""The standalone HTML map: offline, complete, escaped, sampled as stated, atomic."""
from __future__ import annotations

import base64
import csv
import gzip
import html
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tsimcne_widgets.render.html import to_html

SCRIPT_LABEL = "<script>alert(1)</script>"
ATTRIBUTE_BREAKER = '"><img src=x onerror=alert(1)>'


@pytest.fixture
def small_map():
    rng = np.random.default_rng(0)
    n = 60
    xy = rng.normal(size=(n, 2))
    xy[: n // 2] += 6.0
    labels = np.array(["cat", "dog", SCRIPT_LABEL], dtype=object)[np.arange(n) % 3]
    images = rng.integers(0, 256, size=(n, 8, 8, 3), dtype=np.uint8)
    metadata = pd.DataFrame({"source": [ATTRIBUTE_BREAKER] * n, "odd}name<b>": np.arange(n)})
    return xy, labels, images, metadata


def _decode(value):
    """Bokeh's serialised ndarray (base64 bytes) or plain list, as a numpy array."""
    if isinstance(value, dict) and value.get("type") == "ndarray":
        raw = value["array"]
        data = base64.b64decode(raw["data"]) if isinstance(raw, dict) else None
        if data is None:
            return np.asarray(raw)
        if data[:2] == b"\x1f\x8b":  # Bokeh gzips large arrays
            data = gzip.decompress(data)
        return np.frombuffer(data, dtype=np.dtype(value["dtype"]).newbyteorder("<"))
    return np.asarray(value, dtype=object)


def _sources(page: str) -> list[dict[str, np.ndarray]]:
    """Every ColumnDataSource's columns, read back from the document JSON in the page."""
    blob = re.search(r'<script type="application/json"[^>]*>(.*?)</script>', page, re.S).group(1)
    doc = json.loads(html.unescape(blob))
    found = []

    def walk(node):
        if isinstance(node, dict):
            if node.get("name") == "ColumnDataSource":
                entries = node["attributes"]["data"]["entries"]
                found.append({k: _decode(v) for k, v in entries})
            for child in node.values():
                walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk(doc)
    return found


def _source_columns(page: str) -> dict[str, np.ndarray]:
    """The points source lib_map.js reads (coordinates, and the columns of the CSV)."""
    points = [c for c in _sources(page) if "index" in c and "label" in c]
    assert len(points) == 1, "no single points ColumnDataSource in the page"
    return points[0]


def _atlas(page: str) -> list[tuple[np.ndarray, dict]]:
    """The embedded sprite sheets, page by page: (decoded sheet, info)."""
    atlas = [c for c in _sources(page) if "sheet" in c]
    assert len(atlas) == 1, "no atlas ColumnDataSource in the page"
    pages = []
    for number, (uri, info) in enumerate(zip(atlas[0]["sheet"], atlas[0]["info"])):
        assert int(atlas[0]["page"][number]) == number
        raw = base64.b64decode(uri.split(",", 1)[1])
        pages.append((np.asarray(Image.open(io.BytesIO(raw)).convert("RGB")), json.loads(info)))
    return pages


def _cell(sheet: np.ndarray, info: dict, k: int) -> np.ndarray:
    c = info["cell"]
    return sheet[c * (k // 8):c * (k // 8 + 1), c * (k % 8):c * (k % 8 + 1)]


def test_page_is_self_contained_and_holds_the_data(tmp_path, small_map):
    xy, labels, images, metadata = small_map
    out = to_html(tmp_path / "map.html", xy, labels, images, metadata=metadata, thumb_size=64)
    assert [p.name for p in tmp_path.iterdir()] == ["map.html"]  # no temp file left
    page = out.read_text(encoding="utf-8")
    assert not re.search(r"<script[^>]+src\s*=\s*[\"']?(https?:)?//", page, re.I)
    assert not re.search(r"<link[^>]+href\s*=\s*[\"']?(https?:)?//", page, re.I)
    assert "Bokeh" in page and len(page) > 500_000  # BokehJS itself is inlined
    columns = _source_columns(page)
    n = len(xy)
    assert columns["index"].astype(int).tolist() == list(range(n))
    np.testing.assert_allclose(columns["x"], xy[:, 0])
    np.testing.assert_allclose(columns["y"], xy[:, 1])
    assert columns["label"].tolist() == labels.tolist()
    assert columns["meta_0"].tolist() == [ATTRIBUTE_BREAKER] * n
    # Every thumbnail is embedded up front (no kernel to ask): 60 images, one page of 64.
    (sheet, info), = _atlas(page)
    assert info["cell"] == 8
    for k in (0, 17, n - 1):
        # 8x8 images are stored at their own size, pixel for pixel; the browser enlarges them.
        np.testing.assert_array_equal(_cell(sheet, info, k), images[k])
    assert info["labels"] == labels.tolist() and info["index"] == list(range(n))
    # Raw text in the data: lib_map.js escapes it when it builds the card.
    assert info["meta"][5] == [["source", ATTRIBUTE_BREAKER], ["odd}name<b>", "5"]]
    assert "Copy indices" in page and "Download CSV" in page
    doc = re.search(r'<script type="application/json"[^>]*>(.*?)</script>', page, re.S).group(1)
    # The live map's lib_map.js answers hover and selection, not Bokeh's tooltip.
    assert "LassoSelectTool" in doc and "BoxSelectTool" in doc and "HoverTool" not in doc
    assert "onMapEvent" in doc and "static" in doc


def test_text_is_escaped_everywhere(tmp_path, small_map):
    xy, labels, images, metadata = small_map
    page = to_html(tmp_path / "map.html", xy, labels, images, metadata=metadata,
                   title=f"map {SCRIPT_LABEL}").read_text(encoding="utf-8")
    assert SCRIPT_LABEL not in page
    assert ATTRIBUTE_BREAKER not in page
    assert "<img src=x" not in page
    assert "odd}name<b>" not in page  # a metadata column name is text on the card
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    # No field is marked {safe}, which is what would make Bokeh insert raw HTML.
    assert "{safe}" not in page


def test_large_maps_are_a_stated_random_sample(tmp_path):
    rng = np.random.default_rng(3)
    n = 250
    xy = rng.normal(size=(n, 2))
    images = rng.integers(0, 256, size=(n, 4, 4, 3), dtype=np.uint8)
    page = to_html(tmp_path / "a.html", xy, None, images, max_points=40).read_text()
    assert "showing 40 of 250 points, random sample" in page
    shown = _source_columns(page)["index"].astype(int)
    assert len(set(shown)) == 40 and shown.tolist() == sorted(shown)
    np.testing.assert_allclose(_source_columns(page)["x"], xy[shown, 0])
    # The card shows the image's row in the full data (not its place in the sample).
    (sheet, info), = _atlas(page)
    assert info["index"] == shown.tolist()
    np.testing.assert_array_equal(_cell(sheet, info, 7), images[shown[7]])
    again = _source_columns(to_html(tmp_path / "b.html", xy, None, images,
                                    max_points=40).read_text())["index"]
    other = _source_columns(to_html(tmp_path / "c.html", xy, None, images, max_points=40,
                                    random_state=1).read_text())["index"]
    assert again.tolist() == shown.tolist() and other.tolist() != shown.tolist()
    full = to_html(tmp_path / "d.html", xy, None, images).read_text()
    assert "250 points" in full and "random sample" not in full


def test_refuses_existing_file_and_bad_input(tmp_path, small_map):
    xy, labels, images, _ = small_map
    target = tmp_path / "map.html"
    target.write_text("old")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        to_html(target, xy, labels, images)
    assert target.read_text() == "old"
    to_html(target, xy, labels, images, overwrite=True)
    assert target.read_text() != "old"
    bad_xy = xy.copy()
    bad_xy[3, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        to_html(tmp_path / "x.html", bad_xy, labels, images)
    with pytest.raises(ValueError, match="labels has 59 rows"):
        to_html(tmp_path / "x.html", xy, labels[:-1], images)
    with pytest.raises(OSError, match="Hint"):
        to_html(target / "inside_a_file.html", xy, labels, images)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map.html"]


def test_works_without_images_or_labels(tmp_path):
    xy = np.random.default_rng(0).normal(size=(10, 2))
    page = to_html(tmp_path / "m.html", xy, None, None).read_text()
    (sheet, info), = _atlas(page)
    assert info["cell"] == 1 and info["labels"] is None and info["index"] == list(range(10))
    assert _source_columns(page)["label"].tolist() == [""] * 10


def _launch(sync_api, p):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium not installed (apt-get install chromium)")
    return p.chromium.launch(executable_path=chromium, args=[
        "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"])


# Screen position of data point (x, y), from the plot view's own scales.
_TO_SCREEN = """([x, y]) => {
  for (const v of Bokeh.index.all_views()) {
    if (!v.frame) continue;
    const r = v.canvas_view.el.getBoundingClientRect();
    return [r.left + v.frame.x_scale.compute(x), r.top + v.frame.y_scale.compute(y)];
  } }"""


@pytest.mark.browser
def test_page_in_headless_chromium(tmp_path, small_map):
    """The live map's browser code runs in the page without a kernel: hover shows the
    point's image and escaped texts on lib_map's card, a mouse lasso selects the points
    inside, shift-drag adds, Esc clears, Ctrl+Z undoes, the CSV has exactly the selection,
    nothing runs injected markup and the page makes no network request."""
    sync_api = pytest.importorskip("playwright.sync_api")
    xy, labels, images, metadata = small_map
    out = to_html(tmp_path / "map.html", xy, labels, images, metadata=metadata)
    # Preconditions of the lassos below: the square holds the first cluster, the second
    # lies apart, and a circle around point 30 holds four points with room to spare.
    square = [(2.6, 2.6), (8.1, 2.6), (8.1, 8.15), (2.6, 8.15), (2.6, 2.6)]
    assert 2.6 < xy[:30].min() and xy[:30, 0].max() < 8.1 and xy[:30, 1].max() < 8.15
    assert np.minimum(xy[30:, 0], xy[30:, 1]).max() < 2.6 - 0.3
    near_30 = np.linalg.norm(xy - xy[30], axis=1)
    added = sorted(np.flatnonzero(near_30 < 0.6).tolist())
    assert added == [30, 41, 46, 51] and np.sort(near_30)[4] > 0.75
    with sync_api.sync_playwright() as p:
        browser = _launch(sync_api, p)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 800}, accept_downloads=True)
            problems, blocked = [], []
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("dialog", lambda d: (problems.append(f"dialog: {d.message}"), d.dismiss()))

            def only_local(route):
                if route.request.url.startswith(("file:", "data:", "blob:")):
                    route.continue_()
                else:
                    blocked.append(route.request.url)
                    route.abort()

            page.route("**/*", only_local)
            page.goto(out.as_uri())
            page.wait_for_function("() => window.Bokeh && Bokeh.documents.length > 0")
            page.wait_for_timeout(500)
            count = page.locator(".tsw-map-count")
            assert count.inner_text() == "0 selected"

            def screen(x, y):
                return page.evaluate(_TO_SCREEN, [float(x), float(y)])

            # Hover point 2, whose label is a <script> tag.
            sx, sy = screen(*xy[2])
            page.mouse.move(sx - 40, sy - 40)
            page.mouse.move(sx, sy, steps=4)
            card = page.locator(".tsw-client-card")
            card.wait_for(timeout=5000)
            assert card.get_attribute("data-index") == "2"
            text = card.inner_text()
            assert SCRIPT_LABEL in text and "#2" in text  # shown as text...
            assert ATTRIBUTE_BREAKER in text and "odd}name<b>: 2" in text
            assert card.locator("script").count() == 0  # ...never run as markup
            assert card.locator("img").count() == 1 and card.locator("b").count() == 1
            # The picture is image 2, enlarged 12x from 8 px: sample each source pixel.
            picture = Image.open(io.BytesIO(card.locator(".tsimcne-hover > div").first
                                            .screenshot())).convert("RGB")
            assert picture.size[0] == 96 and picture.size[1] in (96, 97)  # subpixel top
            shown = np.asarray(picture)[6::12, 6::12].astype(int)
            assert np.abs(shown - images[2]).max() <= 2

            def lasso(corners, shift=False):
                ring = [screen(*point) for point in corners]
                page.mouse.move(*ring[0])
                if shift:
                    page.keyboard.down("Shift")
                page.mouse.down()
                for point in ring[1:]:
                    page.mouse.move(*point, steps=4)
                page.mouse.up()
                if shift:
                    page.keyboard.up("Shift")

            lasso(square)
            count.filter(has_text="30 selected").wait_for(timeout=5000)
            lasso([xy[30] + 0.65 * np.array([np.cos(a), np.sin(a)])
                   for a in np.linspace(0, 2 * np.pi, 25)], shift=True)
            count.filter(has_text="34 selected").wait_for(timeout=5000)
            page.keyboard.press("Escape")
            count.filter(has_text="0 selected").wait_for(timeout=5000)
            page.keyboard.press("Control+z")
            count.filter(has_text="34 selected").wait_for(timeout=5000)
            with page.expect_download() as download:
                page.get_by_role("button", name="Download CSV").click()
            table = pd.read_csv(download.value.path())
            assert table["index"].tolist() == list(range(30)) + added
            assert problems == [] and blocked == []
        finally:
            browser.close()


def test_thumbnails_use_larger_source_files(tmp_path, image_writer):
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, size=(3, 8, 8, 3), dtype=np.uint8)
    big = image_writer(tmp_path / "src" / "big.png", size=(40, 40), seed=1)
    same = image_writer(tmp_path / "src" / "same.png", size=(8, 8), seed=2)
    paths = [str(big), str(same), None]
    page = to_html(tmp_path / "m.html", rng.normal(size=(3, 2)), None, images, paths=paths,
                   thumb_size=32).read_text()

    (sheet, info), = _atlas(page)
    assert info["cell"] == 32  # the display size, since one source file has more detail
    from_file = np.asarray(Image.open(big).convert("RGB").resize((32, 32), Image.LANCZOS))
    assert np.abs(_cell(sheet, info, 0).astype(int) - from_file).mean() < 8
    enlarged = np.repeat(np.repeat(images, 4, axis=1), 4, axis=2)
    assert np.abs(_cell(sheet, info, 0).astype(int) - enlarged[0]).mean() > 30
    for k in (1, 2):  # no larger file: the array itself, with sharp pixels
        np.testing.assert_array_equal(_cell(sheet, info, k), enlarged[k])


def test_many_labels_skip_the_legend_and_say_so(tmp_path):
    rng = np.random.default_rng(2)
    labels = np.array([f"class {i}" for i in range(50)], dtype=object)
    page = to_html(tmp_path / "m.html", rng.normal(size=(50, 2)), labels, None).read_text()
    assert "50 labels (too many for a legend" in page
    assert _source_columns(page)["label"].tolist() == labels.tolist()


@pytest.mark.browser
def test_csv_download_neutralises_spreadsheet_formulas(tmp_path):
    """Text cells a spreadsheet would run (=, +, -, @, tab, CR first) get a leading
    quote in the page's CSV download; numbers, negative ones included, stay numbers."""
    sync_api = pytest.importorskip("playwright.sync_api")
    hyperlink = '=HYPERLINK("http://x","y")'
    xy = np.array([[-1.5, 2.0], [0.25, -3.0], [4.0, 5.0], [-2.0, -0.5]])
    labels = [hyperlink, "-2+3", "cat", "@SUM(A1)"]
    metadata = pd.DataFrame({"note": ["+1", "\tx", "plain", "\rcr"],
                             "score": [-1.5, 2.0, -3.25, 0.0],
                             "=cmd()": ["a", "b", "c", "d"]})
    out = to_html(tmp_path / "map.html", xy, labels, None, metadata=metadata)
    with sync_api.sync_playwright() as p:
        browser = _launch(sync_api, p)
        try:
            page = browser.new_page(accept_downloads=True)
            page.goto(out.as_uri())
            page.wait_for_function("() => window.Bokeh && Bokeh.documents.length > 0")
            page.evaluate("""() => {
              for (const m of Bokeh.documents[0].all_models) {
                if (m.data && m.data.label) m.selected.indices = [0, 1, 2, 3];
              } }""")
            with page.expect_download() as download:
                page.get_by_role("button", name="Download CSV").click()
            text = Path(download.value.path()).read_bytes().decode("utf-8")
        finally:
            browser.close()
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert rows[0] == ["index", "label", "x", "y", "note", "score", "'=cmd()"]
    assert rows[1:] == [
        ["0", "'" + hyperlink, "-1.5", "2", "'+1", "-1.5", "a"],
        ["1", "'-2+3", "0.25", "-3", "'\tx", "2.0", "b"],
        ["2", "cat", "4", "5", "plain", "-3.25", "c"],
        ["3", "'@SUM(A1)", "-2", "-0.5", "'\rcr", "0.0", "d"],
    ]
