"""A notebook watches a run elsewhere: train --snapshots DIR and Explorer.watch(DIR, images)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from tsimcne_widgets.widget.watch import SnapshotWriter, read_frames

N_IMAGES = 24


def _snapshot(k: int, n: int = 5, state: str = "running") -> SimpleNamespace:
    xy = np.full((n, 2), k, np.float32) + np.arange(n, dtype=np.float32)[:, None] / 8
    return SimpleNamespace(stage=1, epoch=k, epochs_in_stage=10, total_epoch=k, total_epochs=12,
                           step=3 * k, loss=float("nan") if k == 0 else 1.0 / (k + 1),
                           learning_rate=0.1, images_per_second=50.0, elapsed=float(k),
                           eta=None, embedding=xy, provisional=k < 3, state=state,
                           losses=tuple(1.0 / (j + 1) for j in range(1, k + 1)))


def test_writer_keeps_a_bounded_evenly_thinned_folder(tmp_path):
    folder = tmp_path / "snaps"
    folder.mkdir()
    (folder / "frame-00000099.json").write_text("{}")  # an earlier run's frame goes
    writer = SnapshotWriter(folder, max_frames=4)
    for k in range(10):
        writer(_snapshot(k))
    frames = read_frames(folder)
    sequences = [f.sequence for f in frames]
    assert len(frames) <= 4 and sequences[0] == 0 and sequences[-1] == 9
    assert sequences == sorted(sequences)
    assert not [p for p in folder.iterdir() if p.suffix == ".tmp" or p.name.startswith(".")]
    newest = frames[-1]
    np.testing.assert_allclose(newest.embedding, _snapshot(9).embedding, rtol=1e-3)
    assert not newest.embedding.flags.writeable and newest.embedding.dtype == np.float32
    assert np.isnan(frames[0].loss) and newest.eta is None and newest.total_epochs == 12
    assert read_frames(folder, after=9) == [] and read_frames(tmp_path / "missing") == []


@pytest.fixture
def folder(tmp_path, image_writer) -> Path:
    root = tmp_path / "images"
    for i in range(N_IMAGES):
        image_writer(root / ("a" if i % 2 else "b") / f"{i:02d}.png", size=(16, 16), seed=i)
    return root


def test_watching_a_folder_of_the_wrong_images_fails_clearly(tmp_path, folder):
    from tsimcne_widgets.widget.explorer import Explorer

    writer = SnapshotWriter(tmp_path / "snaps")
    writer(_snapshot(0, n=5))
    explorer = Explorer.watch(tmp_path / "snaps", folder, interval=0.05)
    assert explorer.training.wait(10)
    assert explorer.state == "failed"
    assert "maps 5 images but this explorer has 24" in str(explorer.training.error)
    with pytest.raises(RuntimeError, match="start, pause and resume it where it runs"):
        explorer.training.start()


def test_explorer_follows_a_train_process_and_curates_after_it(tmp_path, folder):
    from tsimcne_widgets.widget.explorer import Explorer

    out, snaps = tmp_path / "out", tmp_path / "snaps"
    command = [sys.executable, "-m", "tsimcne_widgets", "train", str(folder), "--out", str(out),
               "--epochs", "2", "1", "30", "--batch-size", "8", "--backbone", "resnet10-w8",
               "--device", "cpu", "--quiet", "--snapshots", str(snaps)]
    process = subprocess.Popen(command, env=dict(os.environ, OMP_NUM_THREADS="1"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        explorer = Explorer.watch(snaps, folder, interval=0.05)
        assert explorer.state == "starting"  # nothing written yet: the run is importing torch
        # The run is controlled where it runs: no Start/Pause/budget here, Stop stops watching.
        c = explorer.controls
        assert {w.layout.display for w in (c.start, c.pause, c.unpause_resume, c.budget_kind,
                                           c.budget_minutes, c.budget_epochs)} == {"none"}
        assert c.stop.description == "Stop watching" and c.stop.layout.display != "none"
        seen = []
        deadline = time.monotonic() + 300
        while process.poll() is None and time.monotonic() < deadline:
            explorer._scheduler.flush()  # headless: no kernel loop runs the scheduler
            seen.append((explorer.state, explorer.controls.progress_bar.value, len(explorer.replay)))
            time.sleep(0.05)
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == 0, stderr[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
    assert explorer.wait(30)
    # During the run (stage 3 lasts 30 epochs) the widget showed it running, short of the end.
    assert any(state == "running" and 0 < progress < 1 and frames for state, progress, frames in seen)
    assert explorer.state == "finished" and not explorer.training.active
    assert explorer.controls.progress_bar.value == 1
    assert ("info", "training finished") in explorer.messages

    final = pd.read_csv(out / "map.csv")[["x", "y"]].to_numpy()
    scale = float(np.abs(final).max())
    np.testing.assert_allclose(explorer.embedding, final, atol=2e-3 * scale)  # float16 frames
    assert len(explorer.replay) >= 3  # a frame at each stage end, at least
    explorer.show_frame(0)
    explorer.show_live()

    # Curation on the watched map, as on a local one.
    lo, hi = final.min(0) - 1, final.max(0) + 1
    count = explorer._on_lasso([lo[0], hi[0], hi[0], lo[0]], [lo[1], lo[1], hi[1], hi[1]])
    assert count == N_IMAGES and len(explorer.selection) == N_IMAGES
    explorer.select([0, 3, 5]).tag("odd ones")
    assert list(explorer.tag_store.indices("odd ones")) == [0, 3, 5]
    assert "data:image/png;base64," in explorer.hover_card(3)
    exported = pd.read_csv(explorer.export_csv(tmp_path / "selected.csv"))
    assert len(exported) == 3
