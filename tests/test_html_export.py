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


def _source_columns(page: str) -> dict[str, np.ndarray]:
    """The scatter's ColumnDataSource, read back from the document JSON in the page."""
    blob = re.search(r'<script type="application/json"[^>]*>(.*?)</script>', page, re.S).group(1)
    doc = json.loads(html.unescape(blob))
    found = {}

    def walk(node):
        if isinstance(node, dict):
            if node.get("name") == "ColumnDataSource":
                entries = node["attributes"]["data"]["entries"]
                columns = {k: _decode(v) for k, v in entries}
                if "thumb" in columns:
                    found.update(columns)
            for child in node.values():
                walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk(doc)
    assert found, "no ColumnDataSource with thumbnails in the page"
    return found


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
    for i in (0, 17, n - 1):
        uri = columns["thumb"][i]
        assert uri.startswith("data:image/png;base64,")
        thumb = np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))))
        # 8x8 images are stored at their own size; the browser enlarges them.
        np.testing.assert_array_equal(thumb, images[i])
    assert "Copy indices" in page and "Download CSV" in page
    assert "LassoSelectTool" in page and "BoxSelectTool" in page and "HoverTool" in page


def test_text_is_escaped_everywhere(tmp_path, small_map):
    xy, labels, images, metadata = small_map
    page = to_html(tmp_path / "map.html", xy, labels, images, metadata=metadata,
                   title=f"map {SCRIPT_LABEL}").read_text(encoding="utf-8")
    assert SCRIPT_LABEL not in page
    assert ATTRIBUTE_BREAKER not in page
    assert "<img src=x" not in page
    assert "odd}name<b>" not in page  # a metadata column name is text in the tooltip
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
    assert _source_columns(page)["thumb"].tolist() == [""] * 10


@pytest.mark.browser
def test_page_in_headless_chromium(tmp_path, small_map):
    """Hover shows the thumbnail with escaped text, a lasso selects, nothing runs injected
    markup, and the page makes no network request."""
    sync_api = pytest.importorskip("playwright.sync_api")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium not installed (apt-get install chromium)")
    xy, labels, images, metadata = small_map
    out = to_html(tmp_path / "map.html", xy, labels, images, metadata=metadata)
    tooltip_js = """() => { const out = [];
      const walk = (n) => { if (n.shadowRoot) walk(n.shadowRoot);
        for (const c of n.children || []) walk(c);
        if (n.classList && n.classList.contains('bk-tooltip-content')) out.push(n.innerHTML); };
      walk(document.body); return out.join(''); }"""
    text_js = """() => { const out = [];
      const walk = (n) => { if (n.shadowRoot) walk(n.shadowRoot);
        for (const c of n.children || []) walk(c);
        if (n.classList && n.classList.contains('bk-clearfix')) out.push(n.innerText); };
      walk(document.body); return out.join('|'); }"""
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--no-first-run"])
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 800})
            problems, requests = [], []
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("dialog", lambda d: (problems.append(f"dialog: {d.message}"), d.dismiss()))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(out.as_uri())
            page.wait_for_function("() => window.Bokeh && Bokeh.documents.length > 0")
            page.wait_for_timeout(500)
            box = page.locator("canvas").first.bounding_box()
            # Where point 0 is on screen, from the plot view's own scales.
            spot = page.evaluate(f"""() => {{
              for (const v of Bokeh.index.all_views()) {{
                if (!v.frame) continue;
                const r = v.canvas_view.el.getBoundingClientRect();
                return [r.left + v.frame.x_scale.compute({xy[0, 0]}),
                        r.top + v.frame.y_scale.compute({xy[0, 1]})];
              }} }}""")
            page.mouse.move(spot[0] - 30, spot[1] - 30)
            page.mouse.move(spot[0], spot[1], steps=3)
            page.wait_for_timeout(200)
            tooltip = page.evaluate(tooltip_js)
            assert "data:image/png;base64," in tooltip and ">#0<" in tooltip
            assert "&lt;img src=x onerror=alert(1)&gt;" in tooltip
            assert "odd}name&lt;b&gt;" in tooltip
            # Lasso the whole plot area: every point gets selected.
            x0, y0, w, h = box["x"], box["y"], box["width"], box["height"]
            corners = [(5, 35), (w - 5, 35), (w - 5, h - 5), (5, h - 5), (5, 36)]
            page.mouse.move(x0 + corners[0][0], y0 + corners[0][1])
            page.mouse.down()
            for cx, cy in corners[1:]:
                page.mouse.move(x0 + cx, y0 + cy, steps=8)
            page.mouse.up()
            page.wait_for_timeout(300)
            assert f"{len(xy)} selected" in page.evaluate(text_js)
            assert problems == []
            assert [u for u in requests if not u.startswith(("file:", "data:", "blob:"))] == []
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

    def size_of(uri):
        return Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).size

    thumbs = _source_columns(page)["thumb"]
    assert [size_of(u) for u in thumbs] == [(32, 32), (8, 8), (8, 8)]


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
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium not installed (apt-get install chromium)")
    hyperlink = '=HYPERLINK("http://x","y")'
    xy = np.array([[-1.5, 2.0], [0.25, -3.0], [4.0, 5.0], [-2.0, -0.5]])
    labels = [hyperlink, "-2+3", "cat", "@SUM(A1)"]
    metadata = pd.DataFrame({"note": ["+1", "\tx", "plain", "\rcr"],
                             "score": [-1.5, 2.0, -3.25, 0.0],
                             "=cmd()": ["a", "b", "c", "d"]})
    out = to_html(tmp_path / "map.html", xy, labels, None, metadata=metadata)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--no-first-run"])
        try:
            page = browser.new_page(accept_downloads=True)
            page.goto(out.as_uri())
            page.wait_for_function("() => window.Bokeh && Bokeh.documents.length > 0")
            page.evaluate("""() => {
              for (const m of Bokeh.documents[0].all_models) {
                if (m.data && m.data.thumb) m.selected.indices = [0, 1, 2, 3];
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
