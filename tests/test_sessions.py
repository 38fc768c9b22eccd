"""Saved Explorer sessions (``Explorer.save`` / ``Explorer.load`` / ``Explorer.resume``).

"Resume" continues a saved session from its checkpoint; "unpause" goes on with a paused run.

Real folders in tmp_path and real training of a tiny t-SimCNE (ResNet-10 of width 8 on
8×8 images); nothing is mocked.
"""
from __future__ import annotations

import json
import os
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tsimcne_widgets.engine.checkpoint import load_checkpoint
from tsimcne_widgets.data.load import ImageSet, load_images
from tsimcne_widgets.data.datasets import DIGITS_AUGMENTATION, load_digits
from tsimcne_widgets.widget import persistence
from tsimcne_widgets.widget.explorer import Explorer

N = 96
TINY = dict(batch_size=32, backbone="resnet10", backbone_width=8, device="cpu", random_state=0)


pytestmark = pytest.mark.usefixtures("one_core")


@pytest.fixture(scope="module")
def image_set() -> ImageSet:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (N, 8, 8, 3), dtype=np.uint8)
    labels = np.array(["cat", "dog", "bird"] * (N // 3), dtype=object)
    return ImageSet(images, labels=labels)


def grid_map(n: int = N) -> np.ndarray:
    side = int(np.ceil(np.sqrt(n)))
    k = np.arange(n)
    return np.column_stack([k % side, k // side]).astype(np.float32)


def wait_for(condition, timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


@pytest.fixture(scope="module")
def stopped_session(image_set, tmp_path_factory) -> Path:
    """A session saved after a real run was stopped part-way: it holds a checkpoint."""
    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_setaffinity") else None
    if affinity is not None:
        os.sched_setaffinity(0, {min(affinity)})
    try:
        ex = Explorer(image_set, total_epochs=(30, 1, 1), **TINY)
        ex.start()
        wait_for(lambda: ex.training.latest_snapshot is not None
                 and ex.training.latest_snapshot.total_epoch >= 2)
        ex.stop()
        assert ex.wait(timeout=120) and ex.state == "stopped"
        return ex.save(tmp_path_factory.mktemp("sessions") / "stopped")
    finally:
        if affinity is not None:
            os.sched_setaffinity(0, affinity)


# ---------------------------------------------------------------------------- save/load
def test_save_with_overwrite_replaces_an_existing_session(image_set, tmp_path):
    ex = Explorer(image_set, **TINY).set_embedding(grid_map())
    ex.select([1, 2])
    folder = ex.save(tmp_path / "session")

    ex.set_embedding(grid_map()[::-1].copy())
    ex.select([7])
    assert ex.save(folder, overwrite=True) == folder  # was a NameError (`parent`)

    loaded = Explorer.load(folder)
    np.testing.assert_array_equal(loaded.embedding, grid_map()[::-1])
    np.testing.assert_array_equal(loaded.selection, [7])
    # Neither the written-aside copy nor the old session is left beside it.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["session"]


def test_save_load_round_trips_the_explorer_state(image_set, tmp_path):
    ex = Explorer(image_set, **TINY).set_embedding(grid_map() * 2, provisional=True)
    ex.select([4, 8, 15]).tag("keep")
    ex.tag("later", [])
    ex.color_by(None)
    ex.model.selection_mode = "intersect"
    loaded = Explorer.load(ex.save(tmp_path / "session"))

    state, back = ex.model, loaded.model
    np.testing.assert_array_equal(back.map, state.map)
    assert back.provisional and back.color_column == "none" == loaded.color_column
    assert back.selection_mode == "intersect" and back.selection == state.selection
    assert back.tag_store.names == ("keep", "later") and loaded.tags.equals(ex.tags)
    # The view is built from the restored state.
    np.testing.assert_array_equal(loaded.canvas.xy, state.map)
    assert loaded.canvas.status_label.visible and loaded.canvas.selected.tolist() == [4, 8, 15]
    assert loaded.controls.mode.value == "intersect" and loaded.controls.color.value == "none"
    assert "keep (3)" in loaded.controls.tags_summary.value


def test_a_session_whose_map_does_not_fit_its_images_is_refused(image_set, tmp_path):
    folder = Explorer(image_set, **TINY).set_embedding(grid_map()).save(tmp_path / "session")
    np.save(folder / "map.npy", np.zeros((N - 1, 2), dtype=np.float32))
    with pytest.raises(ValueError, match=rf"must have shape \({N}, 2\), got \({N - 1}, 2\)"):
        Explorer.load(folder)
    assert (folder / "map.npy").is_file()  # the folder is left as it was


def test_load_keyword_arguments_override_the_saved_parameters(image_set, tmp_path):
    folder = Explorer(image_set, **TINY).set_embedding(grid_map()).save(tmp_path / "session")
    assert json.loads((folder / "explorer.json").read_text())["params"]["device"] == "cpu"

    # Was a TypeError: "got multiple values for keyword argument 'device'".
    loaded = Explorer.load(folder, device="cpu", batch_size=16, canvas_width=300)
    assert loaded.training.params["batch_size"] == 16  # the caller's value wins
    assert loaded.training.params["backbone"] == "resnet10"  # the rest is kept
    np.testing.assert_array_equal(loaded.embedding, grid_map())


def test_a_reloaded_digits_session_keeps_its_augmentation(tmp_path):
    digits = load_digits()
    subset = ImageSet(digits.images[:64], labels=digits.labels[:64],
                      augmentation=digits.augmentation)
    assert digits.augmentation == DIGITS_AUGMENTATION and DIGITS_AUGMENTATION["flip_p"] == 0.0
    folder = Explorer(subset, **TINY).set_embedding(grid_map(64)).save(tmp_path / "digits")

    loaded = Explorer.load(folder)
    assert loaded.image_set.augmentation == DIGITS_AUGMENTATION  # tuples again, not lists
    # A new run on the reloaded images trains without flips, as the original would.
    loaded.training.params["total_epochs"] = (1, 1, 1)
    loaded.start()
    assert loaded.wait(timeout=300) and loaded.state == "finished", loaded.messages
    augmenter = loaded.training.trainer.augmenter
    assert augmenter.flip_p == 0.0 and augmenter.crop_scale == (0.56, 1.0)


def test_a_reloaded_session_keeps_the_skipped_files(tmp_path, image_writer):
    files = [image_writer(tmp_path / "images" / f"{k:02d}.png", (8, 8), seed=k)
             for k in range(12)]
    broken = tmp_path / "images" / "broken.png"
    broken.write_bytes(b"not an image")
    with pytest.warns(UserWarning, match="could not be read"):
        images = load_images([str(p) for p in files] + [str(broken)])
    assert [path for path, _ in images.skipped] == [str(broken)]
    images = ImageSet(images.images, paths=images.paths, skipped=images.skipped,
                      augmentation={"crop_scale": (0.5, 1.0), "flip_p": 0.0})

    folder = Explorer(images, **TINY).save(tmp_path / "session")
    assert not (folder / "images.npy").exists()  # re-read from the source files
    loaded = Explorer.load(folder)
    assert loaded.image_set.skipped == images.skipped
    assert loaded.image_set.augmentation == {"crop_scale": (0.5, 1.0), "flip_p": 0.0}

    # The same with the pixels stored in the session.
    folder = persistence.save_explorer(Explorer(images, **TINY), tmp_path / "stored",
                                       include_images=True)
    assert (folder / "images.npy").exists()
    loaded = Explorer.load(folder)
    assert loaded.image_set.skipped == images.skipped
    assert loaded.image_set.augmentation == {"crop_scale": (0.5, 1.0), "flip_p": 0.0}


# ---------------------------------------------------------------------------- resuming
def test_resuming_a_session_leaves_the_global_random_streams_alone(stopped_session):
    loaded = Explorer.load(stopped_session)
    assert loaded.training.can_continue
    np.random.seed(1234)
    torch.manual_seed(1234)

    loaded.resume()  # the trainer is built, and its checkpoint restored, in the background
    wait_for(lambda: loaded.training.trainer is not None
             and loaded.training.latest_snapshot is not None)
    loaded.stop()
    assert loaded.wait(timeout=120), loaded.messages
    assert loaded.training.error is None, loaded.training.error

    # The user's streams go on where their seeds put them.
    np.testing.assert_array_equal(np.random.random(4), np.random.RandomState(1234).random(4))
    assert torch.equal(torch.rand(4), torch.rand(4, generator=torch.Generator().manual_seed(1234)))


def test_one_button_resumes_a_loaded_session_and_unpauses_a_paused_one(stopped_session):
    loaded = Explorer.load(stopped_session)
    button = loaded.controls.unpause_resume
    saved_epoch = loaded.replay.infos[-1]["total_epoch"]
    assert loaded.state == "stopped" and button.description == "Resume" and not button.disabled
    loaded.unpause()  # nothing is paused: a warning, nothing starts
    assert loaded.state == "stopped" and "nothing to unpause" in loaded.messages[-1][1]

    button.click()  # Resume: from the checkpoint
    assert loaded.state in ("starting", "running")
    wait_for(lambda: loaded.training.latest_snapshot is not None)
    assert loaded.training.latest_snapshot.total_epoch > saved_epoch
    loaded.pause()
    wait_for(lambda: loaded.state == "paused")
    loaded.refresh()
    assert button.description == "Unpause" and not button.disabled
    button.click()  # Unpause: the same run goes on
    assert loaded.state == "running"
    loaded.stop()
    assert loaded.wait(timeout=120) and loaded.training.error is None, loaded.messages


def test_resume_passes_num_threads_and_checkpoint_path(stopped_session, tmp_path):
    checkpoint = tmp_path / "continued.pt"
    loaded = Explorer.load(stopped_session, num_threads=3, checkpoint_path=str(checkpoint))
    # torch's thread count belongs to the thread that sets it: read it on the training
    # thread, which calls on_update with every snapshot.
    training_threads, notify = [], loaded.training.on_update

    def on_update(item):
        if threading.current_thread() is not threading.main_thread():
            training_threads.append(torch.get_num_threads())
        return notify(item)

    loaded.training.on_update = on_update
    loaded.resume()
    # The run was stopped after epoch 2 or so; checkpoints come every 10 epochs.
    wait_for(lambda: checkpoint.is_file() or (
        loaded.training.latest_snapshot is not None
        and loaded.training.latest_snapshot.total_epoch >= 12))
    loaded.stop()
    assert loaded.wait(timeout=120) and loaded.training.error is None, loaded.messages
    assert loaded.training.trainer.checkpoint_path == checkpoint
    assert checkpoint.is_file() and load_checkpoint(checkpoint)["kind"] == "training"
    assert training_threads and set(training_threads) == {3}


def test_resume_passes_compile(stopped_session):
    loaded = Explorer.load(stopped_session, compile=True)
    loaded.resume()
    loaded.stop()  # before the first step: compiling would take a minute
    assert loaded.wait(timeout=300), loaded.messages
    trainer = loaded.training.trainer
    assert trainer is not None, loaded.messages
    assert trainer.compile is True


# ---------------------------------------------------------------------------- the layout
def test_the_documented_layout_names_every_file_a_session_holds(stopped_session):
    doc = persistence.__doc__
    documented = set(re.findall(r"\b\w+\.(?:npy|npz|json|csv|pt)\b", doc))
    written = {p.name for p in stopped_session.iterdir()}
    assert {"replay_infos.json", "map.npy", "checkpoint.pt"} <= written
    assert any(name.startswith("replay.") for name in written)
    assert written <= documented, sorted(written - documented)
