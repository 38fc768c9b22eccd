"""The kernel side of the browser-answered map (widget/client.py): what it sends, what
it accepts, and when it hands hover and selection back to the kernel."""
from __future__ import annotations

import asyncio
import base64
import io
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tsimcne_widgets.widget.canvas import MapCanvas
from tsimcne_widgets.widget.client import KERNEL_PATH_EVENTS, PAGE_SIZE


def _images(n, size=16, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _canvas(n=100, max_points=None, size=16):
    canvas = MapCanvas(200, 150)
    if max_points is not None:
        canvas.client.max_points = max_points
    canvas.set_point_info(_images(n, size), labels=[f"l{i}" for i in range(n)],
                          metadata=pd.DataFrame({"path": [f"<b>{i}" for i in range(n)]}))
    canvas.set_map(np.random.default_rng(1).normal(size=(n, 2)).astype(np.float32))
    return canvas


def _message(canvas, seq, action, indices=(), px=(), py=(), pages=(), vseq=0, vx=(), vy=()):
    """The browser's state as lib_map.js's post() writes it to the channel."""
    data = {"seq": [seq], "action": [action], "indices": [list(indices)], "px": [list(px)],
            "py": [list(py)], "pages": [list(pages)], "vseq": [vseq], "vx": [list(vx)],
            "vy": [list(vy)]}
    canvas.client.channel.data = data  # runs the on_change handler, as a browser change does
    return data


def test_small_maps_go_to_the_browser_as_float32_and_the_kernel_stops_listening():
    canvas = _canvas(100)
    client = canvas.client
    assert client.active
    x = client.points.data["x"]
    assert x.dtype == np.float32 and np.array_equal(x, canvas.xy[:, 0])
    assert not (KERNEL_PATH_EVENTS & set(canvas.figure.subscribed_events))
    assert {"rangesupdate", "reset"} <= set(canvas.figure.subscribed_events)
    assert "selected" in client.info.text and client.info.visible


def test_large_maps_keep_the_kernel_path_and_say_so():
    canvas = _canvas(100, max_points=50)
    assert not canvas.client.active
    assert len(canvas.client.points.data["x"]) == 0
    assert KERNEL_PATH_EVENTS <= set(canvas.figure.subscribed_events)
    assert "answered by the kernel" in canvas.client.info.text
    assert "50" in canvas.client.info.text


def test_browser_selection_reaches_the_kernel_with_its_polygon_and_is_acknowledged():
    canvas = _canvas(100)
    got = []
    canvas.on_selection = lambda *args: got.append(args)
    _message(canvas, 1, "select", [5, 3], px=[0, 1, 1], py=[0, 0, 1])
    (indices, polygon, action), = got
    assert indices.tolist() == [5, 3] and action == "select"
    assert polygon.shape == (3, 2) and polygon[2].tolist() == [1.0, 1.0]
    # No selection change in the kernel (nobody called set_selected): it still acknowledges.
    assert canvas.client.sync.data["ack"] == [1]


def test_a_message_delivered_twice_is_handled_once():
    canvas = _canvas(100)
    got = []
    canvas.on_selection = lambda *args: got.append(args[2])
    data = _message(canvas, 4, "undo")
    canvas.client._message(data)  # what jupyter_bokeh's second callback call does
    assert got == ["undo"]


def test_kernel_selection_is_pushed_with_the_last_message_number():
    canvas = _canvas(100)
    canvas.on_selection = lambda indices, polygon, action: canvas.set_selected(indices)
    _message(canvas, 7, "select", [1, 2])
    sync = canvas.client.sync.data
    assert sync["ack"] == [7] and sync["indices"][0].tolist() == [1, 2]
    assert sync["indices"][0].dtype == np.int32
    canvas.set_selected([9])  # e.g. explorer.select() from a cell
    assert canvas.client.sync.data["ack"] == [7]
    assert canvas.client.sync.data["indices"][0].tolist() == [9]


def test_a_page_request_that_replaced_a_selection_still_selects():
    # While the kernel is busy, jupyter_bokeh keeps only the channel's newest change: a
    # hover's page request made right after a lasso is all the kernel receives.
    canvas = _canvas(PAGE_SIZE + 10)
    got = []
    canvas.on_selection = lambda indices, polygon, action: (got.append(indices.tolist()),
                                                            canvas.set_selected(indices))
    _message(canvas, 1, "select", [4, 2], px=[0, 1, 1], py=[0, 0, 1], pages=[1])
    assert got == [[4, 2]] and canvas.client.sync.data["ack"] == [1]
    assert canvas.client.atlas.data["page"] == [1]
    # The kernel then changes the selection itself (a cell, the search box); the next page
    # request repeats the browser's old selection change, which must not undo that.
    canvas.set_selected([7])
    _message(canvas, 1, "select", [4, 2], px=[0, 1, 1], py=[0, 0, 1], pages=[0])
    assert got == [[4, 2]] and canvas.client.sync.data["indices"][0].tolist() == [7]
    assert canvas.client.atlas.data["page"] == [1, 0]


def test_a_reloaded_page_numbers_its_changes_from_1_again_and_is_heard():
    canvas = _canvas(100)
    got = []
    canvas.on_selection = lambda indices, polygon, action: got.append(indices.tolist())

    def post(page, seq, indices, vseq=0, vx=(), vy=()):
        canvas.client.channel.data = {
            "seq": [seq], "action": ["select"], "indices": [indices], "px": [[]], "py": [[]],
            "pages": [[]], "vseq": [vseq], "vx": [list(vx)], "vy": [list(vy)], "sid": [page]}

    post("first", 5, [1, 2], vseq=3, vx=[0, 1], vy=[0, 1])
    post("first", 2, [9])  # an old change of the same page: already handled
    post("reloaded", 1, [3, 4], vseq=1, vx=[0, 0.5], vy=[0, 0.5])
    assert got == [[1, 2], [3, 4]] and canvas.client.sync.data["ack"] == [1]
    assert canvas.x_range == (0.0, 0.5)


def test_a_zoom_to_the_selection_is_done_once_whatever_follows_it():
    canvas = _canvas(100)
    _message(canvas, 0, "none", vseq=1, vx=[0.0, 0.5], vy=[-0.2, 0.2])
    assert (canvas.x_range, canvas.y_range) == ((0.0, 0.5), (-0.2, 0.2)) and not canvas.follow
    canvas.reset_view()
    _message(canvas, 0, "none", pages=[0], vseq=1, vx=[0.0, 0.5], vy=[-0.2, 0.2])
    assert canvas.follow and canvas.x_range != (0.0, 0.5)  # the same zoom, not again
    _message(canvas, 0, "none", vseq=2, vx=[0.1, 0.2], vy=[0.0, 0.1])
    assert canvas.x_range == (0.1, 0.2)


def test_bad_messages_are_reported_not_raised():
    canvas = _canvas(10)
    errors = []
    canvas.on_error = errors.append
    _message(canvas, 1, "select", [3, 99])
    _message(canvas, 2, "explode")
    assert len(errors) == 2
    assert "does not have" in str(errors[0]) and "explode" in str(errors[1])


def test_pages_are_sprite_sheets_with_escaped_free_texts_sent_once():
    n = PAGE_SIZE + 10
    canvas = _canvas(n)
    client = canvas.client
    _message(canvas, 0, "none", pages=[1, 0, 1, 99])
    assert client.atlas.data["page"] == [0, 1]
    _message(canvas, 0, "none", pages=[1])
    assert client.atlas.data["page"] == [0, 1]  # nothing new streamed
    sheet, info = client.atlas.data["sheet"][1], json.loads(client.atlas.data["info"][1])
    assert sheet.startswith("data:image/png;base64,")  # 16 px: lossless
    image = np.asarray(Image.open(io.BytesIO(base64.b64decode(sheet.split(",", 1)[1]))))
    assert info["cell"] == 16 and image.shape == (info["h"], info["w"], 3)
    # Image k of the page sits at cell (k % 8, k // 8), pixel for pixel.
    k = 9
    cell = image[16 * (k // 8):16 * (k // 8 + 1), 16 * (k % 8):16 * (k % 8 + 1)]
    assert np.array_equal(cell, canvas.client.images[PAGE_SIZE + k])
    assert info["labels"][k] == f"l{PAGE_SIZE + k}"
    assert info["meta"][k] == [["path", f"<b>{PAGE_SIZE + k}"]]  # raw text: the browser escapes it


def test_in_a_kernel_pages_are_encoded_off_the_event_loop_and_stale_ones_dropped():
    # A page takes 50-250 ms to encode: on the loop it held up the zoom queued behind it.
    canvas = _canvas(2 * PAGE_SIZE)
    client = canvas.client

    async def scenario():
        client.send_pages([0])
        client.send_pages([0])  # asked again while it is encoded: encoded once
        assert client.atlas.data["page"] == []  # the handler returned before the work
        for _ in range(500):
            await asyncio.sleep(0.01)
            if client.atlas.data["page"]:
                break
        assert client.atlas.data["page"] == [0]
        client.send_pages([1])
        # New images while page 1 is encoded: its sheet (of the old images) is dropped.
        images = _images(2 * PAGE_SIZE)[:, ::-1].copy()
        canvas.set_point_info(images)
        await asyncio.sleep(1.0)  # a 16-px page takes a few ms: long done by now
        assert client.atlas.data["page"] == []
        client.send_pages([1])
        for _ in range(500):
            await asyncio.sleep(0.01)
            if client.atlas.data["page"]:
                break
        sheet, info = client.atlas.data["sheet"][0], json.loads(client.atlas.data["info"][0])
        image = np.asarray(Image.open(io.BytesIO(base64.b64decode(sheet.split(",", 1)[1]))))
        assert np.array_equal(image[:16, :16], images[PAGE_SIZE])

    asyncio.run(scenario())


def test_large_images_use_lossy_sheets_of_bounded_cells():
    canvas = _canvas(12, size=200)
    sheet, info = canvas.client.encode_page(0)
    assert sheet.startswith("data:image/webp;base64,") and info["cell"] == 96
    assert info["w"] == 8 * 96 and info["h"] == 2 * 96


def test_point_info_must_be_images():
    canvas = MapCanvas(200, 150)
    with pytest.raises(ValueError, match="uint8"):
        canvas.set_point_info(np.zeros((3, 8, 8), dtype=np.float32))


def test_the_kernel_hears_of_a_wheel_zoom_on_the_first_frame_after_it():
    # BokehJS sends RangesUpdate when it leaves level-of-detail mode: at once on a paint
    # lod_interval ms after the notch, else lod_timeout later; the raster follows it.
    figure = MapCanvas(200, 150).figure
    assert figure.lod_interval == 0 and figure.lod_timeout <= 50


def test_focus_rings_a_point_that_follows_the_map_and_tells_its_observers():
    canvas = _canvas(20)
    client = canvas.client
    heard = []
    unsubscribe = client.observe_focus(heard.append)
    client.focus(np.int64(4))
    assert client.focused == 4 and client.ring.data["index"] == [4]
    assert [client.ring.data["x"][0], client.ring.data["y"][0]] == canvas.xy[4].tolist()
    client.focus(4)  # no change, no news
    moved = canvas.xy + 1
    canvas.set_map(moved)
    assert [client.ring.data["x"][0], client.ring.data["y"][0]] == moved[4].tolist()
    with pytest.raises(ValueError, match="cannot focus image 20"):
        client.focus(20)
    assert client.focused == 4
    client.focus(None)
    assert client.ring.data["index"] == [] and heard == [4, None]
    unsubscribe()
    client.focus(1)
    assert heard == [4, None]
    # The ring is drawn on the kernel path too (maps above the browser's limit).
    big = _canvas(30, max_points=10)
    big.client.focus(7)
    assert not big.client.active and big.client.ring.data["index"] == [7]


def test_the_browsers_remove_message_selects_the_rest_and_drops_the_focus():
    canvas = _canvas(20)
    got = []
    canvas.on_selection = lambda *args: got.append(args)
    canvas.client.focus(3)
    _message(canvas, 5, "remove", [1, 2])
    (indices, polygon, action), = got
    assert indices.tolist() == [1, 2] and polygon is None and action == "select"
    assert canvas.client.focused is None and canvas.client.ring.data["index"] == []
    assert canvas.client.sync.data["ack"] == [5]
