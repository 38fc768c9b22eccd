"""The Bokeh map canvas: raster, view fitting, hover hit-tests and browser-event plumbing."""
from __future__ import annotations

import numpy as np
import pytest
from bokeh import events

from tsimcne_widgets.render.palette import MISSING_COLOR
from tsimcne_widgets.widget.canvas import (
    PROVISIONAL_TEXT,
    MapCanvas,
    fit_ranges,
    geometry_to_polygon,
)
from tsimcne_widgets.widget.coloring import coloring_of

W, H = 200, 150


def _grid_map() -> np.ndarray:
    """25 points on a 5×5 grid with spacing 1, centred on the origin."""
    g = np.arange(5, dtype=np.float32) - 2
    return np.stack(np.meshgrid(g, g), axis=-1).reshape(-1, 2)


def _image(canvas: MapCanvas) -> np.ndarray:
    return np.asarray(canvas.source.data["image"][0])


def _alpha(image: np.ndarray) -> np.ndarray:
    return image.astype("<u4").view(np.uint8).reshape(image.shape + (4,))[..., 3]


# ---------------------------------------------------------------------------- view
def test_fit_ranges_frames_every_point_with_square_pixels():
    xy = np.array([[0, 0], [10, 1], [5, np.nan]], dtype=float)
    (x0, x1), (y0, y1) = fit_ranges(xy, W, H)
    assert x0 < 0 and x1 > 10 and y0 < 0 and y1 > 1
    assert (x1 - x0) / W == pytest.approx((y1 - y0) / H)


def test_map_is_rasterised_at_frame_resolution_and_follows_until_the_user_zooms():
    canvas = MapCanvas(W, H)
    assert _image(canvas).shape == (1, 1)  # no map yet: a blank pixel
    xy = _grid_map()
    canvas.set_map(xy)
    image = _image(canvas)
    assert image.shape == (H, W) and image.dtype == np.uint32
    assert (_alpha(image) > 0).sum() >= len(xy)
    assert canvas.figure.x_range.start == pytest.approx(canvas.x_range[0])

    assert canvas.source.data["follow"] == [True]  # the browser moves the view with the raster
    canvas.set_map(xy * 10)  # the map grows: the view follows
    assert canvas.x_range[1] > 20
    canvas.set_view((0, 1), (0, 1))  # a user zoom: stop following
    assert not canvas.follow
    canvas.set_map(xy * 100)
    assert canvas.x_range == (0.0, 1.0)
    data = canvas.source.data
    assert (data["x"][0], data["dw"][0]) == (0.0, 1.0)  # image placed at the zoomed window
    assert data["follow"] == [False]  # the browser keeps the user's view
    canvas.reset_view()
    assert canvas.follow and canvas.x_range[1] > 200


def test_selected_points_are_highlighted_and_the_rest_faded():
    canvas = MapCanvas(W, H)
    xy = np.array([[-1.0, 0.0], [1.0, 0.0]], dtype=np.float32)
    canvas.set_map(xy)
    before = _alpha(_image(canvas))
    left, right = before[:, : W // 2], before[:, W // 2:]
    canvas.set_selected([1])
    after = _alpha(_image(canvas))
    assert after[:, W // 2:].max() == right.max()  # the selected point keeps its opacity
    assert after[:, : W // 2].max() < left.max()   # the other one fades


def test_nan_map_draws_nothing_and_hovers_nothing():
    canvas = MapCanvas(W, H)
    canvas.set_map(np.full((4, 2), np.nan, dtype=np.float32))
    assert _image(canvas).shape == (1, 1)
    assert canvas.nearest(0.0, 0.0) is None


def test_provisional_status_label():
    canvas = MapCanvas(W, H)
    canvas.set_status(PROVISIONAL_TEXT)
    assert canvas.status_label.visible and canvas.status_label.text == PROVISIONAL_TEXT
    canvas.set_status(None)
    assert not canvas.status_label.visible


def test_legend_lists_each_category_with_its_colour():
    canvas = MapCanvas(W, H)
    canvas.set_map(_grid_map())
    canvas.set_colors(["a", "b"], np.arange(25) % 2)
    labels = [item.label.value for item in canvas.legend.items]
    assert labels == ["a", "b"]
    colors = [item.renderers[0].glyph.fill_color for item in canvas.legend.items]
    assert colors == [canvas.rasterizer.colors["a"], canvas.rasterizer.colors["b"]]
    canvas.set_colors(None)
    assert canvas.legend.items == [] and not canvas.legend.visible


def test_values_show_a_colour_bar_with_their_range_and_hide_the_legend():
    canvas = MapCanvas(W, H)
    canvas.set_map(_grid_map())
    canvas.set_colors(["a", "b"], np.arange(25) % 2)
    assert canvas.legend.visible and not canvas.color_bar.visible
    values = np.linspace(-3.0, 7.0, 25)
    values[0] = np.nan
    canvas.set_coloring(coloring_of(values, "depth"))
    assert canvas.color_bar.visible and not canvas.legend.visible and canvas.legend.items == []
    assert (canvas.color_mapper.low, canvas.color_mapper.high) == (values[1], 7.0)
    assert canvas.color_bar.title == "depth (gray: 1 without a value)"
    assert canvas.color_mapper.palette == canvas.rasterizer.colormap  # the bar shows the raster's map
    assert canvas.color_mapper.nan_color == MISSING_COLOR
    image = _image(canvas)
    assert (_alpha(image) > 0).sum() >= 25
    canvas.set_values(values)  # no range given: the finite values' own
    assert (canvas.color_mapper.low, canvas.color_mapper.high) == (values[1], 7.0)
    canvas.set_coloring(coloring_of(np.array(["x", "y"] * 12 + ["x"]), "kind"))
    assert canvas.legend.visible and not canvas.color_bar.visible
    canvas.set_colors(None)
    assert not canvas.legend.visible and not canvas.color_bar.visible


# ---------------------------------------------------------------------------- hover
def test_nearest_uses_screen_pixels_of_the_current_view():
    canvas = MapCanvas(W, H, hover_radius=6)
    canvas.set_map(_grid_map())
    per_x, per_y = canvas.units_per_pixel
    assert canvas.nearest(1.0 + 3 * per_x, 1.0) == 18  # 3 px right of (1, 1)
    assert canvas.nearest(1.0 + 9 * per_x, 1.0) is None
    assert canvas.nearest(0.5, 0.5) is None  # between grid points, > 6 px from all
    canvas.set_view((0.9, 1.1), (0.9, 1.1))  # zoomed in: 3 px is now a tiny distance
    per_x, _ = canvas.units_per_pixel
    assert canvas.nearest(1.0 + 5 * per_x, 1.0) == 18
    assert canvas.nearest(1.0 + 0.05, 1.0) is None


def test_card_is_placed_beside_the_pointer_inside_the_frame():
    canvas = MapCanvas(400, 300)
    def position(canvas):
        # Card corner in frame pixels (the style is relative to the figure's corner).
        return (float(canvas.card.styles["left"][:-2]) - 8, float(canvas.card.styles["top"][:-2]) - 8)

    canvas.show_card("<b>x</b>", 10, 10, size=(100, 120))
    assert canvas.card.visible and canvas.card.text == "<b>x</b>"
    assert position(canvas) == (26, 26)  # below and right of the pointer
    canvas.show_card("y", 390, 290, size=(100, 120))  # near the corner: flips to the other side
    left, top = position(canvas)
    assert left + 100 <= 390 and top + 120 <= 290 and left > 250 and top > 130
    canvas.hide_card()
    assert not canvas.card.visible


# ---------------------------------------------------------------------------- events
def test_geometry_to_polygon():
    poly = geometry_to_polygon({"type": "poly", "x": [0, 1, 0], "y": [0, 0, 1]})
    assert poly.shape == (3, 2)
    rect = geometry_to_polygon({"type": "rect", "x0": 0, "x1": 2, "y0": 1, "y1": 3})
    assert rect.min(axis=0).tolist() == [0, 1] and rect.max(axis=0).tolist() == [2, 3]
    assert geometry_to_polygon({"type": "point", "x": 0, "y": 0}) is None


def _browser_message(figure, name: str, values: dict) -> dict:
    """A ``bokeh_event`` as jupyter_bokeh's front end sends it to the kernel."""
    return {"event": "jsevent", "kind": "MessageSent", "msg_type": "bokeh_event",
            "msg_data": {"type": "event", "name": name,
                         "values": {"model": {"id": figure.id}, **values}}}


def test_browser_events_reach_the_handlers_through_jupyter_bokeh():
    from jupyter_bokeh import BokehModel

    canvas = MapCanvas(W, H)
    canvas.min_hover_interval = 0.0
    canvas.set_map(_grid_map())
    seen = []
    canvas.on_polygon = lambda polygon: seen.append(("polygon", polygon.tolist()))
    canvas.on_hover = lambda x, y, sx, sy: seen.append(("hover", (x, y, sx, sy)))
    canvas.on_leave = lambda: seen.append(("leave",))
    model = BokehModel(canvas.figure)
    send = lambda name, values: model._sync_model(model, _browser_message(canvas.figure, name, values), [])  # noqa: E731

    lasso = {"type": "map", "entries": [["type", "poly"], ["sx", [1, 2, 3]], ["sy", [1, 2, 3]],
                                        ["x", [0, 1, 0]], ["y", [0, 0, 1]]]}
    send("selectiongeometry", {"geometry": lasso, "final": False})  # still drawing: ignored
    send("selectiongeometry", {"geometry": lasso, "final": True})
    send("mousemove", {"x": 0.5, "y": 0.25, "sx": 10, "sy": 20,
                       "modifiers": {"shift": False, "ctrl": False, "alt": False}})
    send("mouseleave", {"x": 0.5, "y": 0.25, "sx": 10, "sy": 20,
                        "modifiers": {"shift": False, "ctrl": False, "alt": False}})
    # A finished lasso hides any hover card first (on_leave), then reports its polygon.
    assert seen == [("leave",), ("polygon", [[0, 0], [1, 0], [0, 1]]),
                    ("hover", (0.5, 0.25, 10, 20)), ("leave",)]

    send("rangesupdate", {"x0": -1, "x1": 1, "y0": -0.5, "y1": 0.5})
    assert not canvas.follow and canvas.x_range == (-1.0, 1.0)
    send("reset", {})
    assert canvas.follow and canvas.x_range[0] < -2


def test_handler_errors_go_to_on_error_not_to_the_kernel():
    canvas = MapCanvas(W, H)
    errors = []
    canvas.on_error = errors.append

    def broken(polygon):
        raise RuntimeError("boom")

    canvas.on_polygon = broken
    geometry = {"type": "rect", "x0": 0, "x1": 1, "y0": 0, "y1": 1}
    canvas.figure._trigger_event(events.SelectionGeometry(canvas.figure, geometry, final=True))
    assert [str(e) for e in errors] == ["boom"]


def test_hover_events_are_throttled():
    canvas = MapCanvas(W, H)
    canvas.min_hover_interval = 10.0
    seen = []
    canvas.on_hover = lambda *args: seen.append(args)
    for k in range(5):
        canvas.figure._trigger_event(events.MouseMove(canvas.figure, sx=k, sy=k, x=k, y=k))
    assert len(seen) == 1


def test_no_hover_card_while_a_lasso_is_drawn():
    canvas = MapCanvas(W, H)
    canvas.min_hover_interval = 0.0
    canvas.set_map(_grid_map())
    seen = []
    canvas.on_hover = lambda *args: seen.append(args)
    canvas.show_card("card", 10, 10)
    fig = canvas.figure
    fig._trigger_event(events.PanStart(fig, sx=1, sy=1, x=0.0, y=0.0))
    assert canvas.dragging and not canvas.card.visible
    fig._trigger_event(events.MouseMove(fig, sx=2, sy=2, x=0.1, y=0.1))
    assert seen == []  # pointer moves of the lasso itself are not hovers
    geometry = {"type": "poly", "x": [0, 1, 0], "y": [0, 0, 1]}
    fig._trigger_event(events.SelectionGeometry(fig, geometry, final=True))
    assert not canvas.dragging
    fig._trigger_event(events.MouseMove(fig, sx=3, sy=3, x=0.0, y=0.0))
    assert len(seen) == 1


def test_the_browser_keeps_its_view_changes_to_itself_and_reports_them_once():
    # Synced ranges made every wheel notch send two range messages before RangesUpdate;
    # with jupyter_bokeh's combine_events (one message per kernel idle cycle) the new
    # raster came ~0.2 s late (benchmarks/browser.py).  The view still reaches the
    # kernel through RangesUpdate, and the kernel's own view changes still reach the
    # browser (syncable only stops browser -> kernel).
    import json

    from bokeh.embed import json_item

    canvas = MapCanvas(W, H)
    canvas.set_map(_grid_map())
    assert canvas.figure.x_range.syncable is False and canvas.figure.y_range.syncable is False
    # What BokehJS receives: both ranges marked not to sync.
    ranges = {canvas.figure.x_range.id: None, canvas.figure.y_range.id: None}

    def walk(node):
        if isinstance(node, dict):
            if node.get("id") in ranges and "attributes" in node:
                ranges[node["id"]] = node["attributes"].get("syncable")
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads(json.dumps(json_item(canvas.figure))))
    assert list(ranges.values()) == [False, False]
    canvas.figure._trigger_event(events.RangesUpdate(canvas.figure, x0=-1, x1=1, y0=-1, y1=1))
    assert canvas.x_range == (-1.0, 1.0) and canvas.y_range == (-1.0, 1.0)


def test_views_arriving_in_a_burst_are_drawn_once_at_the_last_one():
    # Inside a kernel a quick run of wheel notches sends one RangesUpdate per frame; the
    # ones already waiting are handled before the loop's next turn: one redraw, last view.
    import asyncio

    canvas = MapCanvas(64, 48)
    canvas.set_map(np.random.default_rng(0).normal(size=(500, 2)).astype(np.float32))

    async def burst():
        before = canvas.render_count
        for k in range(5):
            canvas.figure._trigger_event(events.RangesUpdate(
                canvas.figure, x0=-1 - k, x1=1 + k, y0=-1, y1=1))
        assert canvas.render_count == before  # nothing drawn while the handlers run
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert canvas.render_count == before + 1
        assert canvas.x_range == (-5.0, 5.0) and not canvas.follow

    asyncio.run(burst())
