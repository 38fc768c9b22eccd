"""Datashader rasters for Bokeh image_rgba: layout, colours, selection, edge cases."""
from __future__ import annotations

import ast
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tsimcne_widgets.render.palette import MISSING_COLOR, continuous_palette, default_palette
from tsimcne_widgets.render import shading
from tsimcne_widgets.render.raster import Rasterizer, data_range, to_png_bytes

RED, BLUE = "#ff0000", "#0000ff"


def rgba_of(image: np.ndarray) -> np.ndarray:
    """(H, W) packed uint32 → (H, W, 4) uint8 as Bokeh reads the bytes (R, G, B, A)."""
    return image.view(np.uint8).reshape(image.shape + (4,))


def pixel_of(x, y, x_range, y_range, width, height):
    """(row, column) datashader bins a point into; row 0 is the lowest y."""
    column = int((x - x_range[0]) / (x_range[1] - x_range[0]) * width)
    row = int((y - y_range[0]) / (y_range[1] - y_range[0]) * height)
    return row, column


def test_shape_dtype_and_bottom_up_rows():
    rasterizer = Rasterizer(None, palette=[RED])
    xy = np.array([[0.25, 0.9]])
    image = rasterizer.render(xy, None, (0, 1), (0, 1), width=40, height=30, spread=0)
    assert image.shape == (30, 40) and image.dtype == np.uint32
    row, column = pixel_of(0.25, 0.9, (0, 1), (0, 1), 40, 30)
    assert row == 27  # near the top of the map, so near the END of the rows (bottom-up)
    filled = np.argwhere(image != 0)
    assert filled.tolist() == [[row, column]]
    assert rgba_of(image)[row, column].tolist() == [255, 0, 0, 255]


def test_categorical_colours_and_legend():
    rasterizer = Rasterizer(["cat", "dog"], palette=[RED, BLUE])
    assert rasterizer.colors == {"cat": RED, "dog": BLUE}
    xy = np.array([[0.2, 0.2], [0.8, 0.7]])
    image = rasterizer.render(xy, np.array([0, 1]), (0, 1), (0, 1), 50, 50, spread=0)
    rgba = rgba_of(image)
    assert rgba[pixel_of(0.2, 0.2, (0, 1), (0, 1), 50, 50)].tolist() == [255, 0, 0, 255]
    assert rgba[pixel_of(0.8, 0.7, (0, 1), (0, 1), 50, 50)].tolist() == [0, 0, 255, 255]
    # Two categories in one pixel mix by count: 3 red + 1 blue.
    mixed = rasterizer.render(np.full((4, 2), 0.5), np.array([0, 0, 0, 1]), (0, 1), (0, 1), 10, 10, spread=0)
    r, g, b, a = rgba_of(mixed)[5, 5].tolist()
    assert (r, g, b) == (191, 0, 64) and a == 255


def test_default_palettes_are_distinct():
    for n in (1, 10, 20, 100):
        palette = default_palette(n)
        assert len(palette) == n and len(set(palette)) == n
    assert list(Rasterizer([str(k) for k in range(12)]).colors.values()) == default_palette(12)


def test_denser_pixels_are_more_opaque():
    xy = np.concatenate([np.full((50, 2), 0.25), np.full((1, 2), 0.75), np.full((5, 2), [0.25, 0.75])])
    for how in ("eq_hist", "log", "linear", "cbrt"):
        image = Rasterizer(None).render(xy, None, (0, 1), (0, 1), 20, 20, spread=0, how=how, min_alpha=40)
        alpha = rgba_of(image)[..., 3]
        dense, sparse = alpha[5, 5], alpha[15, 15]
        assert dense == 255 and 40 <= sparse < dense, how


def test_selection_fades_the_rest_and_accepts_indices():
    rasterizer = Rasterizer(["a", "b"], palette=[RED, BLUE])
    xy = np.array([[0.2, 0.2], [0.8, 0.8]])
    codes = np.array([0, 1])
    plain = rasterizer.render(xy, codes, (0, 1), (0, 1), 20, 20, spread=0)
    mask = np.array([True, False])
    selected = rasterizer.render(xy, codes, (0, 1), (0, 1), 20, 20, spread=0, selected=mask)
    by_index = rasterizer.render(xy, codes, (0, 1), (0, 1), 20, 20, spread=0, selected=[0])
    assert np.array_equal(selected, by_index)
    kept, faded = (4, 4), (16, 16)
    assert rgba_of(selected)[kept].tolist() == rgba_of(plain)[kept].tolist()
    assert 0 < rgba_of(selected)[faded][3] < rgba_of(plain)[faded][3] // 2
    assert rgba_of(selected)[faded][:3].tolist() == [0, 0, 255]  # same hue, only fainter
    # An empty selection highlights nothing.
    nothing = rasterizer.render(xy, codes, (0, 1), (0, 1), 20, 20, spread=0, selected=np.zeros(2, bool))
    assert np.array_equal(nothing, plain)


def test_selected_point_is_drawn_on_top_of_others_in_its_pixel():
    rasterizer = Rasterizer(["a", "b"], palette=[RED, BLUE])
    xy = np.full((10, 2), 0.5)
    codes = np.array([0] * 9 + [1])
    image = rasterizer.render(xy, codes, (0, 1), (0, 1), 4, 4, spread=0, selected=[9])
    r, g, b, a = rgba_of(image)[2, 2].tolist()
    assert b > 200 and r < 60 and a == 255


def test_codes_change_between_frames_is_not_served_from_cache():
    rasterizer = Rasterizer(["a", "b"], palette=[RED, BLUE])
    xy = np.array([[0.5, 0.5]])
    first = rasterizer.render(xy, np.array([0]), (0, 1), (0, 1), 4, 4, spread=0)
    second = rasterizer.render(xy + 0.1, np.array([0]), (0, 1), (0, 1), 4, 4, spread=0)
    assert rasterizer._cached_codes is not None  # frames share the colour columns...
    recoloured = rasterizer.render(xy, np.array([1]), (0, 1), (0, 1), 4, 4, spread=0)
    assert rgba_of(first)[2, 2].tolist() == [255, 0, 0, 255]
    assert rgba_of(second)[2, 2].tolist() == [255, 0, 0, 255]
    assert rgba_of(recoloured)[2, 2].tolist() == [0, 0, 255, 255]  # ...until the codes change


def test_spread_grows_points_into_discs():
    image = Rasterizer(None).render(np.array([[0.5, 0.5]]), None, (0, 1), (0, 1), 21, 21, spread=2)
    filled = rgba_of(image)[..., 3] > 0
    assert filled.sum() == 21  # radius-2 disc: 5x5 square minus its 4 corners
    assert filled[10, 8:13].all() and filled[8:13, 10].all() and not filled[8, 8]


def test_spread_where_discs_meet_the_more_opaque_point_wins():
    from tsimcne_widgets.render.shading import spread as _spread

    rgba = np.zeros((5, 9, 4), dtype=np.uint8)
    rgba[2, 2] = [255, 0, 0, 120]  # faint red
    rgba[2, 5] = [0, 0, 255, 250]  # opaque blue, three pixels to the right
    rgba[2, 6] = [0, 255, 0, 250]  # opaque green beside it, same opacity
    grown = _spread(rgba, 1)
    assert grown[2, 3].tolist() == [255, 0, 0, 120]  # only red reaches it
    assert grown[2, 4].tolist() == [0, 0, 255, 250]  # red and blue reach it: blue wins
    # Equal opacity: a point keeps its own colour rather than its neighbour's.
    assert grown[2, 5].tolist() == [0, 0, 255, 250]
    assert grown[2, 6].tolist() == [0, 255, 0, 250]
    assert grown[2, 2].tolist() == [255, 0, 0, 120] and grown[0, 2, 3] == 0
    assert rgba[2, 3, 3] == 0  # the input is left alone


# ---------------------------------------------------------------------------- values
def hex_of(pixel) -> str:
    return "#{:02x}{:02x}{:02x}".format(*(int(c) for c in pixel[:3]))


def test_values_are_drawn_through_the_colormap_by_the_pixel_mean():
    ramp = continuous_palette()
    rasterizer = Rasterizer(None, value_range=(10.0, 20.0))
    assert rasterizer.colors == {} and rasterizer.colormap == ramp
    # Two clusters of 50 points with low and high values, one point without a value.
    rng = np.random.default_rng(0)
    low = rng.uniform(0.1, 0.2, (50, 2))
    high = rng.uniform(0.7, 0.8, (50, 2))
    xy = np.vstack([low, high, [[0.45, 0.45]]])
    values = np.r_[np.full(50, 10.0), np.full(50, 20.0), np.nan]
    image = rasterizer.render(xy, values, (0, 1), (0, 1), 50, 50, spread=0)
    rgba = rgba_of(image)
    at = lambda x, y: rgba[pixel_of(x, y, (0, 1), (0, 1), 50, 50)]  # noqa: E731
    for point in low:
        assert hex_of(at(*point)) == ramp[0]
    for point in high:
        assert hex_of(at(*point)) == ramp[-1]
    assert hex_of(at(0.45, 0.45)) == MISSING_COLOR and at(0.45, 0.45)[3] > 0
    # One pixel holding 10, 20 and a point without a value: the mean of the two values.
    one_pixel = np.full((3, 2), 0.5)
    mixed = rasterizer.render(one_pixel, np.array([10.0, 20.0, np.nan]), (0, 1), (0, 1), 10, 10,
                              spread=0)
    assert hex_of(rgba_of(mixed)[5, 5]) == ramp[128]
    # Outside the range: clipped to the ends; inf counts as no value.
    outside = rasterizer.render(np.array([[0.25, 0.25], [0.85, 0.85], [0.55, 0.55]]),
                                np.array([-5.0, 99.0, np.inf]), (0, 1), (0, 1), 10, 10, spread=0)
    rgba = rgba_of(outside)
    assert [hex_of(rgba[2, 2]), hex_of(rgba[8, 8]), hex_of(rgba[5, 5])] == [
        ramp[0], ramp[-1], MISSING_COLOR]


def test_values_keep_the_selection_highlight_and_spreading():
    rasterizer = Rasterizer(None, value_range=(0.0, 1.0))
    xy = np.array([[0.25, 0.5], [0.75, 0.5]])
    values = np.array([0.0, 1.0])
    plain = rgba_of(rasterizer.render(xy, values, (0, 1), (0, 1), 20, 20, spread=1))
    assert (plain[..., 3] > 0).sum() == 2 * 9  # two radius-1 discs (3x3 pixels each)
    chosen = rgba_of(rasterizer.render(xy, values, (0, 1), (0, 1), 20, 20, spread=1,
                                       selected=[1]))
    left, right = pixel_of(0.25, 0.5, (0, 1), (0, 1), 20, 20), pixel_of(0.75, 0.5, (0, 1), (0, 1), 20, 20)
    assert chosen[right].tolist() == plain[right].tolist()  # selected: full colour
    assert chosen[left][3] < plain[left][3] and chosen[left][:3].tolist() == plain[left][:3].tolist()


def test_bad_values_name_the_fix():
    with pytest.raises(ValueError, match="not both"):
        Rasterizer(["a"], value_range=(0, 1))
    with pytest.raises(ValueError, match="low <= high"):
        Rasterizer(None, value_range=(1, 0))
    with pytest.raises(ValueError, match="needs a value_range"):
        Rasterizer(None, colormap=[RED, BLUE])
    with pytest.raises(ValueError, match="one per point"):
        Rasterizer(None, value_range=(0, 1)).render(np.zeros((2, 2)), None)
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        Rasterizer(None, value_range=(0, 1)).render(np.zeros((2, 2)), np.zeros(3))
    with pytest.raises(TypeError, match="numbers"):
        Rasterizer(None, value_range=(0, 1)).render(np.zeros((2, 2)), np.array(["a", "b"]))
    # A range of one value: every valued point in the colormap's middle.
    image = Rasterizer(None, value_range=(3, 3)).render(np.array([[0.5, 0.5]]), np.array([3.0]),
                                                        (0, 1), (0, 1), 4, 4, spread=0)
    assert hex_of(rgba_of(image)[2, 2]) == continuous_palette()[128]


def test_empty_nan_and_degenerate_inputs():
    rasterizer = Rasterizer(None)
    assert not rasterizer.render(np.zeros((0, 2)), None, width=30, height=20).any()
    assert rasterizer.render(np.zeros((0, 2)), None, width=30, height=20).shape == (20, 30)
    assert not rasterizer.render(np.full((5, 2), np.nan), None, width=8, height=8).any()
    xy = np.array([[0.2, 0.2], [np.nan, 0.5], [0.7, np.inf], [0.6, 0.6]])
    with_bad = rasterizer.render(xy, None, (0, 1), (0, 1), 10, 10, spread=0)
    without = rasterizer.render(xy[[0, 3]], None, (0, 1), (0, 1), 10, 10, spread=0)
    assert np.array_equal(with_bad, without)
    # All points in one spot, automatic and zero-width ranges: one visible blob.
    same = np.full((100, 2), 3.0)
    for ranges in ((None, None), ((3, 3), (3, 3))):
        image = rasterizer.render(same, None, *ranges, width=11, height=11, spread=0)
        assert np.count_nonzero(image) == 1 and rgba_of(image)[5, 5, 3] == 255
    integer_xy = rasterizer.render(np.array([[1, 1]]), None, (0, 2), (0, 2), 4, 4, spread=0)
    assert np.count_nonzero(integer_xy) == 1


def test_bad_input_names_the_fix():
    with pytest.raises(ValueError, match="needs codes"):
        Rasterizer(["a"]).render(np.zeros((2, 2)), None)
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        Rasterizer(["a", "b"]).render(np.zeros((2, 2)), np.array([0, 2]))
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        Rasterizer(None).render(np.zeros((2, 3)), None)
    with pytest.raises(ValueError, match="at least one colour per category"):
        Rasterizer(["a", "b"], palette=[RED])
    with pytest.raises(ValueError, match="hex"):
        Rasterizer(["a"], palette=["reddish"])
    with pytest.raises(ValueError, match="finite"):
        Rasterizer(None).render(np.zeros((2, 2)), None, (0, np.nan), (0, 1))
    with pytest.raises(ValueError, match="spread"):
        Rasterizer(None).render(np.zeros((2, 2)), None, spread=-1)


def test_data_range():
    assert data_range(np.zeros((0, 2))) == ((-1.0, 1.0), (-1.0, 1.0))
    (x0, x1), (y0, y1) = data_range(np.array([[0, 10], [10, 30], [np.nan, 99]]), pad=0.1)
    assert (x0, x1, y0, y1) == pytest.approx((-1, 11, 8, 32))
    assert data_range(np.array([[2.0, 5.0]])) == ((1.5, 2.5), (4.5, 5.5))


def test_png_export_puts_high_y_at_the_top():
    image = Rasterizer(None, palette=[RED]).render(np.array([[0.5, 0.9]]), None, (0, 1), (0, 1), 10, 10, spread=0)
    png = Image.open(io.BytesIO(to_png_bytes(image)))
    assert png.size == (10, 10) and png.mode == "RGBA"
    pixels = np.asarray(png)
    assert pixels[0, 5].tolist() == [255, 0, 0, 255]  # row 9 of the raster is the PNG's top
    with pytest.raises(ValueError, match="uint32"):
        to_png_bytes(np.zeros((4, 4), np.uint8))


def test_render_package_never_imports_torch():
    render_dir = Path(__file__).resolve().parents[1] / "tsimcne_widgets" / "render"
    for source in render_dir.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not any(n.split(".")[0] == "torch" for n in names), source.name


@pytest.mark.parametrize("kind", ["categories", "values", "single"])
def test_a_selection_draws_exactly_the_selected_points_over_the_faded_map(kind):
    # The selected points' layer is aggregated in the same pass as the whole map; it
    # must equal the selected points rendered on their own, over the faded whole.
    rng = np.random.default_rng(3)
    n = 3000
    xy = rng.normal(size=(n, 2)).astype(np.float32)
    xy[::97] = np.nan  # rows without a position are skipped in both layers
    if kind == "categories":
        rasterizer, codes = Rasterizer(["a", "b", "c"]), rng.integers(0, 3, n)
    elif kind == "values":
        codes = rng.normal(size=n)
        codes[::13] = np.nan  # no value: the missing colour
        rasterizer = Rasterizer(None, value_range=(-2, 2))
    else:
        rasterizer, codes = Rasterizer(None), None
    mask = rng.random(n) < 0.3
    view = dict(x_range=(-2, 2), y_range=(-2, 2), width=60, height=50, spread=1)
    drawn = rasterizer.render(xy, codes, selected=mask, **view)

    def unpacked(image):
        return image.view(np.uint8).reshape(image.shape + (4,)).copy()

    whole = unpacked(rasterizer.render(xy, codes, **{**view, "spread": 0}))
    whole[..., 3] = (whole[..., 3] * 0.18).astype(np.uint8)
    alone = unpacked(rasterizer.render(xy[mask], None if codes is None else codes[mask],
                                       **{**view, "spread": 0}))
    expected = shading.pack(shading.over(shading.spread(alone, 1), shading.spread(whole, 1)))
    assert np.array_equal(drawn, expected)
    assert (alone[..., 3] > 0).sum() > 100  # the test draws something
