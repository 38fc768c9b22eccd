"""Static map pictures written with datashader + PIL (no matplotlib)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tsimcne_widgets.render.picture import render_map_image, save_map_png
from tsimcne_widgets.render.palette import default_palette


def blobs(n=3000, classes=5, seed=0):
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, classes, n)
    centers = rng.normal(0, 10, (classes, 2))
    return centers[codes] + rng.normal(0, 1, (n, 2)), np.array([f"class {c}" for c in codes])


def hex_rgb(color: str) -> tuple[int, int, int]:
    return tuple(int(color[i:i + 2], 16) for i in (1, 3, 5))


def test_picture_file_is_written_with_map_legend_and_title(tmp_path):
    xy, labels = blobs()
    path = save_map_png(xy, labels, tmp_path / "map.png", title="Five blobs")
    picture = Image.open(path)
    assert picture.size == (900, 700) and picture.format == "PNG"
    pixels = np.asarray(picture.convert("RGB"))
    assert pixels[0, 0].tolist() == [255, 255, 255]
    colours = {tuple(p) for p in pixels.reshape(-1, 3)[::7].tolist()}
    assert len(colours) > 50  # points, anti-aliasing and text, not a blank canvas
    # Every class colour shows up (points and legend swatches).
    for color in default_palette(5):
        assert (np.abs(pixels.astype(int) - hex_rgb(color)).sum(-1) <= 6).sum() > 50
    # The title is dark text in the top band; the legend sits on the right.
    assert (pixels[:40, :300].min(-1) < 100).any()
    swatch = (np.abs(pixels.astype(int) - hex_rgb(default_palette(5)[0])).sum(-1) <= 6)
    assert swatch[:, 760:].any()


def test_unlabelled_map_nan_rows_and_sizes(tmp_path):
    xy, _ = blobs(500)
    xy[:10] = np.nan
    picture = render_map_image(xy, None, width=400, height=300)
    pixels = np.asarray(picture)
    assert picture.size == (400, 300)
    assert (np.abs(pixels.astype(int) - hex_rgb(default_palette(1)[0])).sum(-1) <= 6).sum() > 100
    missing = np.where(np.arange(500) % 4 == 0, None, "a")
    render_map_image(xy, missing, width=400, height=300)  # None labels become "(unlabelled)"


def test_bad_input_is_explained(tmp_path):
    xy, labels = blobs(100)
    with pytest.raises(ValueError, match="labels"):
        render_map_image(xy, labels[:5])
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        render_map_image(np.zeros((5, 3)))
    with pytest.raises(FileNotFoundError, match="create it first"):
        save_map_png(xy, labels, tmp_path / "no" / "such" / "map.png")
    assert not list(tmp_path.iterdir())
