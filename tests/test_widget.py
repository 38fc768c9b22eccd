"""The Explorer widget, driven without a browser through its event hooks.

Training uses a real, tiny t-SimCNE (ResNet-10 of width 8 on 8×8 images).
"""
from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import traitlets

from tsimcne_widgets.data.load import ImageSet
from tsimcne_widgets.widget.canvas import PROVISIONAL_TEXT
from tsimcne_widgets.widget.explorer import Explorer

N = 96
TINY = dict(batch_size=32, backbone="resnet10", backbone_width=8, device="cpu", random_state=0)


pytestmark = pytest.mark.usefixtures("one_core")


@pytest.fixture(scope="module")
def image_set() -> ImageSet:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (N, 8, 8, 3), dtype=np.uint8)
    labels = np.array(["cat", "dog", "<b>&bird"] * (N // 3), dtype=object)
    metadata = pd.DataFrame({"weight": np.arange(N) * 0.5, "site": ["x", "y"] * (N // 2)})
    return ImageSet(images, labels=labels, metadata=metadata)


def grid_map(n: int = N) -> np.ndarray:
    """Points on a grid with spacing 1: every point far (in pixels) from the others."""
    side = int(np.ceil(np.sqrt(n)))
    k = np.arange(n)
    return np.column_stack([k % side, k // side]).astype(np.float32)


@pytest.fixture
def explorer(image_set) -> Explorer:
    """An explorer showing a fixed map, without training."""
    return Explorer(image_set, **TINY).set_embedding(grid_map())


@pytest.fixture(scope="module")
def trained(image_set) -> Explorer:
    ex = Explorer(image_set, total_epochs=(2, 1, 1), **TINY)
    ex.start()
    assert ex.wait(timeout=300)
    return ex


def wait_for(condition, timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def errors(ex: Explorer) -> list[str]:
    return [text for kind, text in ex.messages if kind == "error"]


def warnings_(ex: Explorer) -> list[str]:
    return [text for kind, text in ex.messages if kind == "warning"]


# ---------------------------------------------------------------------------- training
def trainer_threads() -> int:
    names = ("tsimcne-explorer-training", "tsimcne-trainer")
    return sum(t.name in names and t.is_alive() for t in threading.enumerate())


def test_start_pause_unpause_stop_restart(image_set):
    ex = Explorer(image_set, total_epochs=(40, 1, 1), **TINY)
    c = ex.controls
    assert ex.state == "idle" and ex.embedding is None
    assert not c.start.disabled and c.pause.disabled and c.stop.disabled
    assert c.unpause_resume.disabled  # nothing paused, no checkpoint to resume from

    c.stop.click()  # Stop before Start: a message, nothing else
    assert ex.state == "idle" and any("nothing to stop" in w for w in warnings_(ex))

    c.start.click()
    assert ex.state in ("starting", "running")
    assert c.start.disabled and not c.stop.disabled
    ex.start()  # Start twice: a message and no second thread
    assert any("already running" in w for w in warnings_(ex))
    assert trainer_threads() == 1

    wait_for(lambda: ex.training.latest_snapshot is not None)
    ex.pause()
    wait_for(lambda: ex.state == "paused")
    ex._apply_pending()
    assert c.start.disabled and c.pause.disabled and not c.unpause_resume.disabled
    assert c.unpause_resume.description == "Unpause"
    time.sleep(0.3)  # the step in flight when pausing may still report
    epoch = ex.training.latest_snapshot.total_epoch
    ex.resume()  # "resume" continues from a checkpoint: a paused run is unpaused
    assert ex.state == "paused" and "unpause()" in warnings_(ex)[-1]
    time.sleep(0.8)
    assert ex.training.latest_snapshot.total_epoch == epoch  # paused: no progress

    c.unpause_resume.click()
    assert ex.state == "running"
    wait_for(lambda: ex.training.latest_snapshot.total_epoch > epoch)
    c.stop.click()
    assert ex.wait(timeout=120)
    assert ex.state == "stopped"
    assert not c.start.disabled and c.stop.disabled and c.pause.disabled
    assert any("stopped" in text for _, text in ex.messages)
    stopped_at = ex.training.latest_snapshot.total_epoch
    assert stopped_at < 42 and ex.embedding.shape == (N, 2)
    assert len(ex.replay) >= 2

    c.budget_kind.value = "epochs"
    c.budget_epochs.value = 3  # Start after Stop: a clean new (short) run
    c.start.click()
    assert ex.wait(timeout=300)
    assert ex.state == "finished" and not errors(ex)
    final = ex.training.latest_snapshot
    assert final.total_epoch == final.total_epochs == 3
    assert len(ex.replay) <= 3  # the replay restarted with the run
    assert trainer_threads() == 0


def test_updates_are_applied_on_the_event_loop_thread_rate_limited(image_set):
    async def scenario():
        ex = Explorer(image_set, total_epochs=(3, 1, 2), min_apply_interval=0.25, **TINY)
        loop_thread = threading.current_thread()
        redraw_threads = set()
        original = ex.canvas.redraw

        def recording_redraw():
            redraw_threads.add(threading.current_thread())
            original()

        ex.canvas.redraw = recording_redraw
        started = time.monotonic()
        ex.start()
        while ex.training.active or ex._scheduler.has_pending:
            await asyncio.sleep(0.05)
        # The rate limit may hold the last apply back (longer on a loaded machine): give
        # the loop time to apply it, but no more than a few intervals of real work.
        final = ex.training.latest_snapshot
        deadline = time.monotonic() + 10.0
        while (ex.canvas.xy is None or not np.array_equal(ex.canvas.xy, final.embedding)) \
                and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return ex, loop_thread, redraw_threads, time.monotonic() - started

    ex, loop_thread, redraw_threads, seconds = asyncio.run(scenario())
    assert ex.state == "finished"
    assert redraw_threads == {loop_thread}  # the training thread never drew
    applied = ex._scheduler.applied
    assert 1 <= applied <= seconds * 4 + 2
    final = ex.training.latest_snapshot
    np.testing.assert_array_equal(ex.canvas.xy, final.embedding)  # the newest map is shown
    assert ex.controls.progress_bar.value == 1.0


def test_trained_map_and_progress(trained):
    snapshot = trained.training.latest_snapshot
    assert trained.state == "finished" and not snapshot.provisional
    assert trained.embedding.shape == (N, 2) and np.isfinite(trained.embedding).all()
    assert not trained.canvas.status_label.visible
    assert "finished" in trained.controls.progress.value
    assert "<svg" in trained.controls.progress.value  # loss sparkline
    # Stage-1 frames were provisional PCA views and are labelled so on replay.
    infos = trained.replay.infos
    first_provisional = next(k for k, info in enumerate(infos) if info["provisional"])
    trained.show_frame(first_provisional)
    assert trained.canvas.status_label.text == PROVISIONAL_TEXT
    trained.show_live()
    assert not trained.canvas.status_label.visible


def test_replay_slider_bounds_and_scrubbing(trained):
    frames = len(trained.replay)
    slider = trained.controls.replay
    assert frames >= 2 and slider.min == 0 and slider.max == frames - 1
    assert not slider.disabled and slider.value == slider.max
    slider.value = 0  # the user scrubs back
    assert trained._shown_frame == 0 and not trained.controls.live.value
    np.testing.assert_allclose(trained.canvas.xy, trained.replay[0][0])
    with pytest.raises(IndexError, match="out of range"):
        trained.show_frame(frames)
    trained.controls.live.value = True  # follow the newest map again
    assert trained._shown_frame is None and slider.value == slider.max
    np.testing.assert_array_equal(trained.canvas.xy, trained.embedding)


def test_replay_before_training(explorer):
    assert explorer.controls.replay.disabled
    with pytest.raises(ValueError, match="nothing to replay"):
        explorer.show_frame(0)


# ---------------------------------------------------------------------------- selection
def crossing_number_inside(point, polygon) -> bool:
    """Independent even-odd test (W. R. Franklin's pnpoly), one point at a time."""
    x, y = point
    inside = False
    j = len(polygon) - 1
    for i in range(len(polygon)):
        xi, yi = polygon[i]
        xj, yj = polygon[j]
        if (yi > y) != (yj > y) and x < (xj - xi) * (y - yi) / (yj - yi) + xi:
            inside = not inside
        j = i
    return inside


def random_polygon(rng, center, vertices: int) -> np.ndarray:
    if rng.random() < 0.5:  # star-shaped, simple
        angles = np.sort(rng.uniform(0, 2 * np.pi, vertices))
    else:  # arbitrary order: self-intersecting
        angles = rng.uniform(0, 2 * np.pi, vertices)
    radii = rng.uniform(0.5, 6, vertices)
    return center + np.column_stack([radii * np.cos(angles), radii * np.sin(angles)])


def test_lasso_matches_an_independent_point_in_polygon(explorer):
    rng = np.random.default_rng(3)
    xy = rng.normal(0, 3, (N, 2)).astype(np.float32)
    explorer.set_embedding(xy)
    expected = np.empty(0, dtype=np.int64)
    for trial in range(25):
        polygon = random_polygon(rng, rng.normal(0, 2, 2), int(rng.integers(3, 12)))
        mode = ["replace", "add", "subtract"][trial % 3]
        explorer.controls.mode.value = mode
        count = explorer._on_lasso(polygon[:, 0], polygon[:, 1])
        inside = np.array([k for k in range(N) if crossing_number_inside(xy[k], polygon)],
                          dtype=np.int64)
        assert count == inside.size
        if mode == "replace":
            expected = inside
        elif mode == "add":
            expected = np.union1d(expected, inside)
        else:
            expected = np.setdiff1d(expected, inside)
        np.testing.assert_array_equal(explorer.selection, expected)
        assert explorer.controls.count.value == f"<b>{expected.size}</b> selected"
        assert explorer.gallery.shown.size == min(expected.size, 64)


def test_box_selection_and_lasso_around_nothing(explorer):
    assert explorer._on_box(-0.5, 2.5, -0.5, 0.5) == 3  # points (0,0), (1,0), (2,0)
    np.testing.assert_array_equal(explorer.selection, [0, 1, 2])
    explorer.controls.mode.value = "replace"
    assert explorer._on_lasso([100, 101, 100], [100, 100, 101]) == 0
    assert explorer.controls.count.value == "<b>0</b> selected"
    assert not errors(explorer)
    explorer.controls.undo.click()  # undo brings the box selection back
    np.testing.assert_array_equal(explorer.selection, [0, 1, 2])


def test_selection_is_observable_settable_and_highlighted(explorer):
    seen = []
    unsubscribe = explorer.observe_selection(lambda indices: seen.append(indices.tolist()))
    explorer.selection = [5, 3, 3]
    assert seen == [[3, 5]] and explorer.canvas.selected.tolist() == [3, 5]
    assert explorer.select([4], mode="add") is explorer
    unsubscribe()
    explorer.select([])
    assert seen == [[3, 5], [3, 4, 5]] and explorer.canvas.selected is None


def test_selection_and_colour_traits_link_both_ways_to_ipywidgets(explorer):
    import ipywidgets as widgets

    picker = widgets.SelectMultiple(options=list(range(N)))
    widgets.link((explorer, "selection"), (picker, "index"),
                 transform=(lambda selection: tuple(selection.tolist()), list))
    picker.index = (7, 2)  # the widget drives the explorer, its model and its view
    assert explorer.selection.tolist() == explorer.model.selection.tolist() == [2, 7]
    assert explorer.canvas.selected.tolist() == [2, 7]
    assert explorer.controls.count.value == "<b>2</b> selected"
    assert explorer._on_box(-0.5, 2.5, -0.5, 0.5) == 3  # a box on the map drives the widget
    assert picker.index == (0, 1, 2)
    explorer.controls.undo.click()
    assert picker.index == (2, 7)

    dropdown = widgets.Dropdown(options=explorer.color_options)
    widgets.link((explorer, "color_column"), (dropdown, "value"))
    assert dropdown.value == "label"
    dropdown.value = "site"
    assert explorer.color_column == explorer.controls.color.value == "site"
    assert sorted(explorer.canvas.rasterizer.colors) == ["x", "y"]
    assert explorer.color_by("weight") is explorer and dropdown.value == "weight"
    with pytest.raises(ValueError, match="choose one of"):
        explorer.color_column = "height"
    assert explorer.color_column == dropdown.value == explorer.model.color_column == "weight"

    def colour(column):
        explorer.color_by(column)

    chooser = widgets.interactive(colour, column=list(explorer.color_options))
    chooser.children[0].value = "none"
    assert dropdown.value == explorer.color_column == "none"
    assert explorer.canvas.rasterizer.colors == {}


def test_observers_fire_once_per_real_change(explorer):
    changes, model_changes, colours = [], [], []
    explorer.observe(lambda change: changes.append((change.old.tolist(), change.new.tolist())),
                     "selection")
    explorer.model.observe(lambda change: model_changes.append(change.new.tolist()), "selection")
    explorer.observe(lambda change: colours.append(change.new), "color_column")
    explorer.selection = [5, 3, 3]
    explorer.selection = np.array([3, 5])  # the same set
    explorer.select([5], mode="add")  # adds nothing
    explorer.select(np.isin(np.arange(N), [3, 5]))  # the same, as a mask
    explorer.selection_model.set([3, 5])
    explorer.controls.mode.value = "subtract"
    assert explorer.model.selection_mode == "subtract"
    assert explorer._on_box(2.5, 3.5, -0.5, 0.5) == 1  # takes point 3 (at x=3, y=0) away
    explorer.controls.undo.click()
    explorer.controls.clear.click()
    assert changes == [([], [3, 5]), ([3, 5], [5]), ([5], [3, 5]), ([3, 5], [])]
    assert model_changes == [new for _, new in changes]
    with pytest.raises(ValueError, match="out of range"):
        explorer.selection = [N]
    assert explorer.selection.tolist() == [] and len(changes) == 4  # nothing changed
    assert not explorer.selection.flags.writeable

    explorer.color_by("site")
    explorer.color_by("site")
    explorer.controls.color.value = "site"
    explorer.model.color_column = "none"
    assert colours == ["site", "none"]


def test_messages_live_in_the_state_and_the_widget_shows_the_last_four(explorer):
    for k in range(6):
        explorer._report(f"<note {k}>", "info")
    explorer._report(KeyError("no such <thing>"))
    assert explorer.messages[-2:] == [("info", "<note 5>"), ("error", "no such <thing>")]
    assert [m.text for m in explorer.model.messages][-7:-5] == ["<note 0>", "<note 1>"]
    shown = explorer.controls.message.value
    assert shown.count("<div") == 4 and "note 2" not in shown
    assert shown.index("no such &lt;thing&gt;") < shown.index("&lt;note 3&gt;")  # newest first


def test_gallery_caps_at_64_and_resamples(explorer):
    explorer.select(np.arange(80))
    gallery = explorer.gallery
    assert gallery.shown.size == 64 and gallery.style.value.count("data:image/png") == 64
    assert "64 of 80" in gallery.caption.value
    first = gallery.shown.copy()
    gallery.resample_button.click()
    assert gallery.shown.size == 64 and not np.array_equal(first, gallery.shown)
    assert set(gallery.shown) <= set(range(80))


def test_gallery_pages_through_the_whole_selection_in_order(explorer):
    explorer.select(np.arange(N))  # 96 images: pages of 64 and 32
    gallery = explorer.gallery
    assert gallery.n_pages == 2
    gallery.show_page(0)
    assert gallery.previous_button.disabled and not gallery.next_button.disabled
    seen = gallery.shown.tolist()
    assert "page 1 of 2" in gallery.caption.value
    gallery.next_button.click()
    seen += gallery.shown.tolist()
    assert "page 2 of 2" in gallery.caption.value and gallery.next_button.disabled
    assert seen == list(range(N))
    gallery.show_page(99)  # clipped, not an error
    assert gallery.page == 1 and gallery.shown.tolist() == list(range(64, N))


def test_select_by_tag_and_tags_saved_beside_the_data_restore(explorer, image_set, tmp_path):
    explorer.select([3, 4, 5]).tag("blurry")
    explorer.select([7]).tag("keep")
    path = explorer.save_tags(tmp_path / "tags.csv")
    fresh = Explorer(image_set, **TINY).set_embedding(grid_map())
    fresh.tag("old", [0])
    fresh.load_tags(path)
    assert sorted(fresh.tag_store.names) == ["blurry", "keep"]
    assert fresh.select_tag("blurry").selection.tolist() == [3, 4, 5]
    assert fresh.select_tag("keep", mode="add").selection.tolist() == [3, 4, 5, 7]
    fresh.tag("old", [0]).load_tags(path, merge=True)
    assert sorted(fresh.tag_store.names) == ["blurry", "keep", "old"]
    with pytest.raises(ValueError, match="no tag named 'nope'"):
        fresh.select_tag("nope")


def test_suggestions_become_the_selection(image_set):
    xy = grid_map()
    xy[10] = (500.0, 500.0)  # far from everything
    ex = Explorer(image_set, **TINY).set_embedding(xy)
    assert 10 in ex.suggest_outliers(top=1) and ex.selection.tolist() == [10]
    groups = ex.suggest_duplicates()
    assert ex.selection.size == sum(len(g) for g in groups)
    with pytest.raises(ValueError, match="no map yet"):
        Explorer(image_set, **TINY).suggest_outliers()


def test_selection_and_tags_work_before_training(image_set, tmp_path):
    ex = Explorer(image_set, **TINY)
    assert ex._on_lasso([0, 1, 1], [0, 0, 1]) == 0
    assert any("no map yet" in w for w in warnings_(ex))
    ex.select([1, 2]).tag("keep")
    table = ex.selected()
    assert table["x"].isna().all() and table["tags"].tolist() == ["keep", "keep"]
    path = ex.export_csv(tmp_path / "early.csv")
    assert pd.read_csv(path)["index"].tolist() == [1, 2]


# ---------------------------------------------------------------------------- hover
def test_hover_returns_the_nearest_card_and_none_in_empty_space(explorer, image_set):
    x, y = grid_map()[14]
    per_x, _ = explorer.canvas.units_per_pixel
    card = explorer._on_hover(float(x) + 2 * per_x, float(y), 50, 60)
    assert card is not None and "#14" in card and "<img" in card
    assert "&lt;b&gt;&amp;bird" in card and "<b>&bird" not in card  # label escaped
    assert "weight: 7.0" in card and "site: x" in card
    assert explorer.canvas.card.visible and explorer.canvas.card.text == card
    assert explorer._on_hover(float(x) + 0.5, float(y) + 0.5) is None  # between points
    assert not explorer.canvas.card.visible
    assert explorer._on_hover(1e6, 1e6) is None
    # Thumbnails are encoded on demand: only the hovered image so far.
    assert explorer.thumbnails.cache_info().currsize <= 1 + explorer.gallery.shown.size


# ---------------------------------------------------------------------------- colours
def test_colour_by_label_metadata_or_nothing(explorer):
    assert explorer.controls.color.options == ("label", "weight", "site", "none")
    assert sorted(explorer.canvas.rasterizer.colors) == sorted({"cat", "dog", "<b>&bird"})
    explorer.controls.color.value = "site"
    assert sorted(explorer.canvas.rasterizer.colors) == ["x", "y"]
    assert explorer.color_by("weight") is explorer
    assert explorer.canvas.color_bar.visible and not explorer.canvas.legend.visible  # a number
    explorer.color_by(None)
    assert explorer.canvas.rasterizer.colors == {} and not explorer.canvas.legend.visible
    with pytest.raises(ValueError, match="choose one of"):
        explorer.color_by("height")


# ---------------------------------------------------------------------------- exports
def test_exports_match_the_selection(trained, tmp_path):
    chosen = np.array([0, 4, 9, 30])
    trained.select(chosen).tag("good")
    trained.tag("odd", [9])
    table = trained.selected()
    assert table["index"].tolist() == chosen.tolist()
    np.testing.assert_allclose(table[["x", "y"]].to_numpy(), trained.embedding[chosen], rtol=1e-6)
    assert table["tags"].tolist() == ["good", "good", "good;odd", "good"]
    assert table["label"].tolist() == [trained.labels[k] for k in chosen]

    csv = pd.read_csv(trained.export_csv(tmp_path / "sel.csv"))
    assert csv["index"].tolist() == chosen.tolist()
    assert csv["weight"].tolist() == (chosen * 0.5).tolist()

    report = trained.export_files(tmp_path / "files")
    manifest = pd.read_csv(tmp_path / "files" / "manifest.csv")
    assert sorted(manifest.loc[manifest["tag"] == "good", "index"]) == chosen.tolist()
    for relative in manifest["exported_path"]:
        assert (tmp_path / "files" / relative).is_file()
    assert report.n_files == len(manifest) == 5

    subset = trained.subset()
    assert list(subset.indices) == chosen.tolist() and len(subset) == 4

    page = trained.to_html(tmp_path / "map.html")
    text = Path(page).read_text()
    assert "Bokeh" in text and "cdn.bokeh.org" not in text
    tags = trained.tags
    assert set(zip(tags["index"], tags["tag"])) == {(0, "good"), (4, "good"), (9, "good"),
                                                    (30, "good"), (9, "odd")}


def test_bad_inputs_give_messages_and_the_widget_keeps_working(explorer, tmp_path):
    c = explorer.controls
    c.csv_path.value = str(tmp_path / "empty.csv")
    c.csv_button.click()  # nothing selected
    assert "nothing selected" in errors(explorer)[-1]
    assert not (tmp_path / "empty.csv").exists()

    explorer.select([1, 2, 3])
    existing = tmp_path / "existing.csv"
    existing.write_text("precious")
    c.csv_path.value = str(existing)
    c.csv_button.click()
    assert "exist" in errors(explorer)[-1] and existing.read_text() == "precious"

    blocker = tmp_path / "a_file"
    blocker.write_text("")
    c.csv_path.value = str(blocker / "out.csv")  # the parent is a file: unwritable
    c.csv_button.click()
    assert str(blocker) in errors(explorer)[-1]
    c.files_path.value = str(tmp_path / "no" / "such" / "folder")
    c.files_button.click()
    assert "not an existing folder" in errors(explorer)[-1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "existing.csv"]

    c.tag_name.value = "../escape"
    c.tag_button.click()
    assert "invalid tag name" in errors(explorer)[-1] and explorer.tag_store.names == ()
    c.csv_path.value = "   "
    c.csv_button.click()
    assert "path box is empty" in errors(explorer)[-1]

    # Still usable: a valid tag and export go through.
    c.tag_name.value = "fine"
    c.tag_button.click()
    c.csv_path.value = str(tmp_path / "ok.csv")
    c.csv_button.click()
    assert pd.read_csv(tmp_path / "ok.csv")["tags"].tolist() == ["fine"] * 3
    assert explorer.messages[-1][0] == "info"


def test_a_failing_observer_shows_in_the_message_area(explorer):
    def broken(indices):
        raise ZeroDivisionError("observer broke")

    explorer.observe_selection(broken)
    from bokeh import events

    geometry = {"type": "rect", "x0": -0.5, "x1": 1.5, "y0": -0.5, "y1": 0.5}
    explorer.canvas.figure._trigger_event(
        events.SelectionGeometry(explorer.canvas.figure, geometry, final=True))
    assert errors(explorer)[-1] == "observer broke"
    np.testing.assert_array_equal(explorer.selection, [0, 1])  # the selection still happened
    assert explorer.canvas.selected.tolist() == [0, 1]


def test_bad_constructor_arguments(image_set):
    with pytest.raises(TypeError, match="unknown TSimCNE parameter"):
        Explorer(image_set, epochs=3)
    with pytest.raises(ValueError, match="rows"):
        Explorer(image_set, metadata=pd.DataFrame({"a": [1, 2]}))
    ex = Explorer(image_set, **TINY)
    with pytest.raises(ValueError, match="shape"):
        ex.set_embedding(np.zeros((3, 2)))


# ---------------------------------------------------------------------------- display
def test_display_bundle_is_the_widget_and_bokehjs_is_inline(explorer, monkeypatch):
    import IPython.display

    published = []
    monkeypatch.setattr(IPython.display, "publish_display_data",
                        lambda data, **kwargs: published.append(data))
    bundle = explorer._repr_mimebundle_()
    view = bundle["application/vnd.jupyter.widget-view+json"]
    assert view["model_id"] == explorer.widget.model_id
    assert len(published) == 1  # the loader goes out just before the widget
    script = published[0]["application/vnd.bokehjs_load.v0+json"]
    assert len(script) > 500_000 and "cdn.bokeh.org" not in script  # BokehJS itself, inline
    assert "t-SimCNE" not in repr(explorer) and "Explorer(n=96" in repr(explorer)


# ---------------------------------------------------------------------------- persistence
def test_save_load_restores_the_session_and_resumes_training(image_set, tmp_path):
    ex = Explorer(image_set, total_epochs=(30, 1, 1), **TINY)
    ex.start()
    wait_for(lambda: ex.training.latest_snapshot is not None
             and ex.training.latest_snapshot.total_epoch >= 2)
    ex.stop()
    assert ex.wait(timeout=120) and ex.state == "stopped"
    ex.select([3, 4, 5]).tag("keep").color_by("site")
    stopped_at = ex.training.latest_snapshot.total_epoch
    folder = ex.save(tmp_path / "session")
    with pytest.raises(FileExistsError):
        ex.save(folder)

    loaded = Explorer.load(folder)
    np.testing.assert_array_equal(loaded.embedding, ex.embedding)
    np.testing.assert_array_equal(loaded.selection, [3, 4, 5])
    assert loaded.tags.equals(ex.tags) and loaded.color_column == "site"
    assert len(loaded.replay) == len(ex.replay) and loaded.state == "stopped"
    np.testing.assert_array_equal(loaded.image_set.images, image_set.images)
    pd.testing.assert_frame_equal(loaded.metadata, ex.metadata)

    button = loaded.controls.unpause_resume
    assert button.description == "Resume" and not button.disabled
    button.click()  # continues the stopped run from its checkpoint
    assert loaded.wait(timeout=300) and loaded.state == "finished", loaded.messages
    assert button.disabled  # the checkpoint is used up
    final = loaded.training.latest_snapshot
    assert final.total_epoch == final.total_epochs == 32 and final.total_epoch > stopped_at
    assert len(loaded.replay) > len(ex.replay)


def test_load_rejects_a_folder_that_is_not_a_session(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a saved Explorer session"):
        Explorer.load(tmp_path)


def test_a_failing_start_reports_and_the_widget_recovers(image_set):
    ex = Explorer(image_set, total_epochs=(1, 1, 1), **dict(TINY, batch_size=1))
    ex.controls.start.click()
    assert ex.wait(timeout=120)
    assert ex.state == "failed"
    assert "training failed" in errors(ex)[-1] and "batch_size" in errors(ex)[-1]
    assert not ex.controls.start.disabled  # Start is offered again
    ex.training.params["batch_size"] = 32
    ex.start()
    assert ex.wait(timeout=300) and ex.state == "finished"


def test_scheduler_applies_only_the_newest_item_rate_limited_on_the_loop():
    from tsimcne_widgets.widget.scheduler import LatestOnlyScheduler

    applied, threads = [], set()

    async def scenario():
        loop = asyncio.get_running_loop()
        scheduler = LatestOnlyScheduler(
            lambda item: (applied.append(item), threads.add(threading.current_thread())),
            loop, min_interval=0.2)

        def producer():
            for k in range(1, 201):
                scheduler.submit(k)
                time.sleep(0.002)

        worker = threading.Thread(target=producer)
        started = time.monotonic()
        worker.start()
        while worker.is_alive():
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)
        return time.monotonic() - started, threading.current_thread()

    seconds, loop_thread = asyncio.run(scenario())
    assert applied[-1] == 200  # the newest item always arrives
    assert applied == sorted(applied) and len(set(applied)) == len(applied)
    assert len(applied) <= seconds / 0.2 + 2  # at most one apply per min_interval
    assert threads == {loop_thread}


def test_tag_counts_is_an_observable_read_only_trait(explorer):
    import ipywidgets as widgets

    seen = []
    explorer.observe(lambda change: seen.append(dict(change.new)), "tag_counts")
    label = widgets.Label()
    widgets.dlink((explorer, "tag_counts"), (label, "value"), transform=lambda c: str(sorted(c.items())))
    before = dict(explorer.tag_counts)
    explorer.tag("odd", [1, 3, 5])
    explorer.tag("odd", [7])
    explorer.tag("first", [0])
    assert explorer.tag_counts == {**before, "odd": 4, "first": 1}
    assert seen[-1] == explorer.tag_counts and len(seen) == 3
    assert label.value == str(sorted(explorer.tag_counts.items()))
    with pytest.raises(traitlets.TraitError):
        explorer.tag_counts = {}


def test_browser_events_are_combined_only_while_the_kernel_answers_hover(explorer):
    # jupyter_bokeh's combine_events paces the mouse moves of the kernel path; while the
    # browser answers (no mouse moves sent) it would only delay a zoom's view.
    from jupyter_bokeh import BokehModel

    def bokeh_model(box):
        for child in getattr(box, "children", ()):
            if isinstance(child, BokehModel):
                return child
            found = bokeh_model(child)
            if found is not None:
                return found
        return None

    model = bokeh_model(explorer.widget)
    assert explorer.canvas.client.active and model.combine_events is False
    explorer.canvas.client.max_points = 10  # the map is now above the browser's limit
    explorer.set_embedding(grid_map())
    assert not explorer.canvas.client.active and model.combine_events is True
    explorer.canvas.client.max_points = 200_000
    explorer.set_embedding(grid_map())
    assert model.combine_events is False
