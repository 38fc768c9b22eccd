"""Reliability and security: faults survived, bad input refused, nothing lost.

One test per row of ``docs/RELIABILITY.md``; each test is named after its row.
Training uses a real, tiny t-SimCNE (ResNet-10 of width 8 on 16x16 images, a few
dozen of them); faults are injected with small custom backbones, monkeypatched
writes and simulated interrupts, never by mocking the code under test.
"""
from __future__ import annotations

import _thread
import errno
import gc
import json
import os
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from tsimcne_widgets.curation import export as export_module
from tsimcne_widgets.engine.checkpoint import load_checkpoint, save_checkpoint
from tsimcne_widgets.engine.estimator import TSimCNE
from tsimcne_widgets.engine.models import build_backbone
from tsimcne_widgets.engine.events import Snapshot
from tsimcne_widgets.engine.trainer import Trainer, TrainingError
from tsimcne_widgets.widget.explorer import Explorer

REPO = Path(__file__).resolve().parents[1]
N, SIDE, BATCH = 48, 16, 16
TINY = dict(batch_size=BATCH, backbone="resnet10", backbone_width=8, hidden_dim=32,
            projection_dim=16, device="cpu", random_state=0, num_threads=1)
SCRIPT = "<script>alert(1)</script>"
ATTRIBUTE_BREAKER = '"><img src=x onerror=alert(1)>'
TRAINING_THREADS = ("tsimcne-explorer-training", "tsimcne-trainer")


@pytest.fixture(autouse=True)
def one_core_and_threads(one_core):
    """One core (conftest's ``one_core``); training here may also change torch's thread
    count, which the next test must not inherit."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    """48 images of 16x16: blocks of a few colours, so that augmented views differ."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (N, 4, 4, 3), dtype=np.uint8)
    return np.ascontiguousarray(np.repeat(np.repeat(base, 4, axis=1), 4, axis=2))


def live_training_threads() -> list[threading.Thread]:
    """The package's training threads still running in this process."""
    return [t for t in threading.enumerate() if t.name in TRAINING_THREADS and t.is_alive()]


def wait_for(condition, timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def epochs_done(explorer: Explorer) -> int:
    """Completed epochs of the explorer's current run (-1 before its first snapshot)."""
    snapshot = explorer.training.latest_snapshot
    return -1 if snapshot is None else snapshot.total_epoch


class SlowHandOver:
    """Holds every Trainer between being built and starting to run, so that a test can
    press buttons in that window (normally microseconds long)."""

    def __init__(self, monkeypatch):
        self.reached, self.release = threading.Event(), threading.Event()
        run = Trainer.run

        def held_run(trainer):
            self.reached.set()
            self.release.wait(timeout=60)
            return run(trainer)

        monkeypatch.setattr(Trainer, "run", held_run)


def grid_map(n: int) -> np.ndarray:
    """A fixed map: ``n`` points on a unit grid."""
    side = int(np.ceil(np.sqrt(n)))
    k = np.arange(n)
    return np.column_stack([k % side, k // side]).astype(np.float32)


class PoisonedAfter(torch.nn.Module):
    """A ResNet-10 whose features turn NaN from its ``k``-th training forward pass on."""

    def __init__(self, k: int, views_per_step: int):
        super().__init__()
        self.inner, self.feature_dim = build_backbone("resnet10", width=8)
        self.k, self.views_per_step, self.calls = k, views_per_step, 0

    def forward(self, x):
        features = self.inner(x)
        if torch.is_grad_enabled() and x.shape[0] == self.views_per_step:
            self.calls += 1
            if self.calls > self.k:
                return features * float("nan")
        return features


class OutOfMemoryAbove(torch.nn.Module):
    """A ResNet-10 that raises CUDA's out-of-memory error, on any device, for a training
    pass over more than ``max_views`` views (inference without gradients always fits)."""

    def __init__(self, max_views: int):
        super().__init__()
        self.inner, self.feature_dim = build_backbone("resnet10", width=8)
        self.max_views = max_views

    def forward(self, x):
        if torch.is_grad_enabled() and x.shape[0] > self.max_views:
            raise torch.cuda.OutOfMemoryError(
                "CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
        return self.inner(x)


# ============================================================================= faults
@pytest.mark.parametrize("injection", ["nan_backbone", "learning_rate_1e6"])
def test_non_finite_loss_stops_training_with_a_message_and_keeps_the_last_good_checkpoint(
        images, tmp_path, injection):
    path = tmp_path / "run.ckpt"
    if injection == "nan_backbone":
        # NaN from the first step of stage 3: stages 1 and 2 end with good checkpoints.
        steps_before = (2 + 1) * (N // BATCH)
        poisoned = PoisonedAfter(steps_before, views_per_step=2 * BATCH)
        options = dict(TINY, backbone=(poisoned, poisoned.feature_dim))
        estimator = TSimCNE(total_epochs=(2, 1, 2), checkpoint_path=path, **options)
    else:
        estimator = TSimCNE(total_epochs=(30, 1, 1), learning_rate=1e6, checkpoint_path=path,
                            **TINY)
    with pytest.raises(TrainingError, match="non-finite.*lower the learning rate.*checkpoint"):
        estimator.fit(images)
    trainer = estimator.trainer_
    assert trainer.state == "failed" and isinstance(trainer.error, TrainingError)
    assert not hasattr(estimator, "embedding_")  # no NaN map handed out as a result
    assert not live_training_threads()
    if injection == "nan_backbone":
        state = load_checkpoint(path)  # the last good checkpoint, untouched by the NaN
        assert (state["stage"], state["epoch"]) == (2, 1)
        assert len(state["losses"]) == 3 and np.isfinite(state["losses"]).all()
        assert all(torch.isfinite(v).all() for v in state["model"].values()
                   if v.is_floating_point())
    elif path.exists():  # diverged before the first checkpoint or after: either way finite
        state = load_checkpoint(path)
        assert all(torch.isfinite(v).all() for v in state["model"].values()
                   if v.is_floating_point())
    assert [p.name for p in tmp_path.iterdir()] in ([], ["run.ckpt"])  # no temp files


def test_kernel_interrupt_mid_training_stops_the_thread_cleanly(images):
    # 1. fit() blocks the cell; Ctrl-C (KeyboardInterrupt in the main thread) arrives.
    first_epoch = threading.Event()
    estimator = TSimCNE(total_epochs=(200, 1, 1), **TINY)

    def press_ctrl_c():
        if first_epoch.wait(timeout=120):
            time.sleep(0.05)  # somewhere inside the next epoch
            _thread.interrupt_main()

    presser = threading.Thread(target=press_ctrl_c, daemon=True)
    presser.start()
    with pytest.raises(KeyboardInterrupt):
        estimator.fit(images, callbacks=[lambda snapshot: first_epoch.set()])
    presser.join(5)
    trainer = estimator.trainer_
    assert trainer.state == "stopped" and trainer.error is None
    assert trainer.wait(0) and not live_training_threads()
    assert 1 <= trainer.total_epoch < 200
    # The interrupted fit left a usable model and the map so far.
    assert estimator.embedding_.shape == (N, 16) and np.isfinite(estimator.embedding_).all()
    assert estimator.transform(images[:4]).shape == (4, 16)

    # 2. The widget trains in its own thread: an interrupt of another cell leaves it running,
    #    and Stop afterwards ends the thread.
    explorer = Explorer(images, total_epochs=(200, 1, 1), **TINY)
    explorer.start()
    wait_for(lambda: epochs_done(explorer) >= 1)
    threading.Timer(0.1, _thread.interrupt_main).start()
    with pytest.raises(KeyboardInterrupt):
        while True:  # "another cell", busy until interrupted
            time.sleep(0.01)
    at_interrupt = epochs_done(explorer)
    assert explorer.state == "running"
    wait_for(lambda: epochs_done(explorer) > at_interrupt)  # training goes on
    explorer.stop()
    assert explorer.wait(timeout=60)
    assert explorer.state == "stopped" and not live_training_threads()
    assert explorer.embedding.shape == (N, 2) and np.isfinite(explorer.embedding).all()


def test_kernel_restart_explorer_load_resumes_from_the_checkpoint(images, tmp_path,
                                                                  monkeypatch):
    labels = np.array(["a", "b", "c"] * (N // 3), dtype=object)
    reference = Explorer(images, labels=labels, total_epochs=(6, 1, 1), **TINY)
    reference.start()  # the same run, uninterrupted
    assert reference.wait(timeout=240) and reference.state == "finished"

    # Saved while training runs, in the middle of an epoch: the training thread is held
    # after its 7th step (epoch 3 of stage 1, 1 of its 3 steps done) while save() runs.
    held_at, held = 7, threading.Event()
    train_step = Trainer.train_step

    def hold_after_step(trainer, batch):
        loss = train_step(trainer, batch)
        if trainer.step + 1 == held_at:  # the counter moves on right after this returns
            trainer.pause()
            held.set()
        return loss

    monkeypatch.setattr(Trainer, "train_step", hold_after_step)
    explorer = Explorer(images, labels=labels, total_epochs=(6, 1, 1), **TINY)
    explorer.start()
    assert held.wait(timeout=120)
    explorer.select([1, 2, 3]).tag("keep")
    folder = explorer.save(tmp_path / "session")
    saved = load_checkpoint(folder / "checkpoint.pt")
    saved_frames = len(np.load(folder / "replay.npy"))
    explorer.stop()
    assert explorer.wait(timeout=60)
    monkeypatch.undo()
    steps_per_epoch = N // BATCH
    # The checkpoint says where training really was: 2 epochs and 1 step of the third.
    assert (saved["stage"], saved["epoch"], saved["step"]) == (1, 2, held_at)
    assert saved["epoch_in_progress"]["steps_done"] == held_at - 2 * steps_per_epoch

    # A fresh interpreter, as after a kernel restart, loads the session and trains on.
    script = (
        "import json, sys\n"
        "import numpy as np\n"
        "from tsimcne_widgets.widget.explorer import Explorer\n"
        "ex = Explorer.load(sys.argv[1])\n"
        "before = ex.state\n"
        "ex.resume()\n"
        "finished = ex.wait(timeout=240)\n"
        "s = ex.training.latest_snapshot\n"
        "print(json.dumps({'before': before, 'finished': finished, 'state': ex.state,\n"
        "    'total_epoch': s.total_epoch, 'total_epochs': s.total_epochs, 'step': s.step,\n"
        "    'losses': list(s.losses), 'map': ex.embedding.tolist(),\n"
        "    'finite': bool(np.isfinite(ex.embedding).all()), 'n': len(ex.embedding),\n"
        "    'frames': len(ex.replay), 'selection': ex.selection.tolist(),\n"
        "    'tags': list(ex.tag_store.names), 'messages': ex.messages}))\n"
    )
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, "-c", script, str(folder)], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["before"] == "stopped" and report["finished"], report
    assert report["state"] == "finished", report["messages"]
    assert report["total_epoch"] == report["total_epochs"] == 8
    # Every planned optimiser step ran once: none repeated, none skipped.  The resumed
    # run even ends where the uninterrupted one did.
    finished = reference.training.latest_snapshot
    assert report["step"] == finished.step == 8 * steps_per_epoch
    assert report["losses"] == pytest.approx(list(finished.losses), rel=1e-5)
    np.testing.assert_allclose(report["map"], reference.embedding, rtol=1e-4, atol=1e-5)
    assert report["finite"] and report["n"] == N
    assert report["frames"] > saved_frames  # the replay continued the saved one
    assert report["selection"] == [1, 2, 3] and report["tags"] == ["keep"]


def test_stop_during_a_stage_change(images, tmp_path, monkeypatch):
    entered, release = threading.Event(), threading.Event()
    enter_stage = Trainer.enter_stage

    def slow_stage_change(trainer):
        if trainer.stage == 2 and not release.is_set():
            entered.set()  # stage 1 is complete; the 2-D layer is about to replace the 128-D
            release.wait(timeout=60)
        return enter_stage(trainer)

    monkeypatch.setattr(Trainer, "enter_stage", slow_stage_change)
    explorer = Explorer(images, total_epochs=(2, 1, 1), **TINY)
    explorer.start()
    assert entered.wait(timeout=120)
    stage1_map = explorer.training.latest_snapshot.embedding
    explorer.stop()  # Stop pressed exactly while the stage changes
    release.set()
    assert explorer.wait(timeout=60)
    assert explorer.state == "stopped" and not live_training_threads()
    assert explorer.training.error is None and explorer.training.trainer.error is None
    final = explorer.training.latest_snapshot
    assert final.total_epoch == 2 and final.state == "stopped"
    np.testing.assert_array_equal(explorer.embedding, stage1_map)  # the map so far stays
    assert any("stopped" in text for _, text in explorer.messages)

    # The stopped run is a consistent, resumable state: save, load, finish.
    monkeypatch.setattr(Trainer, "enter_stage", enter_stage)
    loaded = Explorer.load(explorer.save(tmp_path / "session"))
    loaded.resume()
    assert loaded.wait(timeout=120) and loaded.state == "finished", loaded.messages
    final = loaded.training.latest_snapshot
    assert final.total_epoch == final.total_epochs == 4 and final.stage == 3
    assert not final.provisional and np.isfinite(loaded.embedding).all()


def test_start_twice(images, monkeypatch):
    hand_over = SlowHandOver(monkeypatch)
    explorer = Explorer(images, total_epochs=(200, 1, 1), **TINY)
    explorer.start()
    first_run = explorer.training._thread
    refusal = "training is already running; press Stop before starting again"
    # Second Starts while the network is built, as the trainer is handed over, and while
    # it runs: all refused with a message; the first run goes on alone.
    explorer.start()
    assert hand_over.reached.wait(timeout=60)
    trainer = explorer.training.trainer
    explorer.controls.start.click()
    hand_over.release.set()
    wait_for(lambda: epochs_done(explorer) >= 1)
    explorer.start()
    assert [text for kind, text in explorer.messages if kind == "warning"] == [refusal] * 3
    assert explorer.training._thread is first_run and explorer.training.trainer is trainer
    assert len(live_training_threads()) == 1 and explorer.state == "running"
    explorer.stop()
    assert explorer.wait(timeout=60) and explorer.state == "stopped"

    # A Trainer runs once, even when started twice from two threads at the same time.
    plan_trainer = TSimCNE(total_epochs=(200, 1, 1), **TINY).prepare(images)
    errors = []

    def start():
        try:
            plan_trainer.start()
        except RuntimeError as error:
            errors.append(str(error))

    starters = [threading.Thread(target=start) for _ in range(2)]
    for starter in starters:
        starter.start()
    for starter in starters:
        starter.join()
    assert len(errors) == 1 and "a Trainer runs once" in errors[0]
    plan_trainer.stop()
    assert plan_trainer.wait(timeout=60) and plan_trainer.state == "stopped"
    assert not live_training_threads()


def test_start_after_stop(images, monkeypatch):
    hand_over = SlowHandOver(monkeypatch)
    explorer = Explorer(images, total_epochs=(60, 1, 1), **TINY)
    # Stop pressed right after Start, before the first step: a clean stop, not a failure.
    explorer.start()
    assert hand_over.reached.wait(timeout=60)
    explorer.stop()
    hand_over.release.set()
    assert explorer.wait(timeout=60) and explorer.state == "stopped", explorer.messages
    assert not [text for kind, text in explorer.messages if kind == "error"]

    explorer.start()  # Start after that Stop, then Stop during training
    wait_for(lambda: epochs_done(explorer) >= 1)
    explorer.stop()
    assert explorer.wait(timeout=60) and explorer.state == "stopped"
    first = explorer.training.trainer
    explorer.controls.budget_epochs.value = 3  # a short second run
    explorer.controls.start.click()
    assert explorer.wait(timeout=120)
    assert explorer.state == "finished", explorer.messages
    assert explorer.training.trainer is not first and first.state == "stopped"
    final = explorer.training.latest_snapshot
    assert final.total_epoch == final.total_epochs == 3
    # The replay restarted with the new run: its frames count the new run's epochs.
    epochs = [info["total_epoch"] for info in explorer.replay.infos]
    assert epochs == sorted(epochs) and epochs[-1] == 3 and len(epochs) <= 3
    assert not live_training_threads()
    assert not [text for kind, text in explorer.messages if kind == "error"]


def test_gpu_out_of_memory_gives_a_message_with_a_batch_size_that_fits(images):
    # A training pass over more than 20 views runs out of memory: batch 32 (64 views)
    # fails, and so would its half, 16 (32 views); 8 (16 views) is the largest
    # power-of-two batch that fits.  The message must name 8, found by trial steps.
    oom = OutOfMemoryAbove(max_views=20)
    options = dict(TINY, batch_size=32, backbone=(oom, oom.feature_dim))
    estimator = TSimCNE(total_epochs=(1, 1, 1), **options)
    before = {name: value.clone() for name, value in oom.named_buffers()}
    with pytest.raises(TrainingError, match="out of GPU memory at batch size 32") as caught:
        estimator.fit(images)
    assert isinstance(caught.value.__cause__, torch.cuda.OutOfMemoryError)
    suggested = int(str(caught.value).rsplit("batch_size=", 1)[1].split()[0].strip(".;,"))
    assert suggested == 8, str(caught.value)
    # The trial steps left the network as it was: no gradients, and the BatchNorm
    # statistics the trial forward passes changed are put back.
    assert all(p.grad is None for p in estimator.trainer_.model.parameters())
    assert before["inner.stem.1.num_batches_tracked"] == 0
    for name, value in oom.named_buffers():
        torch.testing.assert_close(value, before[name], msg=name)
    options["batch_size"] = suggested  # the suggestion fits
    xy = TSimCNE(total_epochs=(1, 1, 1), **options).fit_transform(images)
    assert xy.shape == (N, 2) and np.isfinite(xy).all()

    # When not even the smallest batch (2 images, 4 views) fits, the message says so.
    tiny_memory = OutOfMemoryAbove(max_views=3)
    starved = dict(options, backbone=(tiny_memory, tiny_memory.feature_dim))
    with pytest.raises(TrainingError, match="not even a batch of 2 fitted") as caught:
        TSimCNE(total_epochs=(1, 1, 1), **starved).fit(images)
    assert "retry with batch_size=" not in str(caught.value)

    # In the widget the same error is a message naming the fix.
    explorer = Explorer(images, total_epochs=(1, 1, 1), **dict(options, batch_size=32))
    explorer.start()
    assert explorer.wait(timeout=60)
    explorer._apply_pending()
    assert explorer.state == "failed"
    last_error = [text for kind, text in explorer.messages if kind == "error"][-1]
    assert "out of GPU memory" in last_error and f"batch_size={suggested}" in last_error


def test_interpreter_exit_while_training_stops_the_threads_first(images, tmp_path):
    # Python ends daemon threads wherever they are at exit; inside torch's C++ code that
    # aborted the process ("terminate called without an active exception", status 134).
    # Training is stopped and its threads joined before that point.
    np.save(tmp_path / "images.npy", images)
    script = (
        "import sys, time\n"
        "import numpy as np\n"
        "from tsimcne_widgets.engine.estimator import TSimCNE\n"
        "from tsimcne_widgets.widget.explorer import Explorer\n"
        f"options = {TINY!r}\n"
        "images = np.load(sys.argv[1])\n"
        "trainer = TSimCNE(total_epochs=(500, 1, 1), **options).prepare(images)\n"
        "trainer.start()\n"
        "explorer = Explorer(images, total_epochs=(500, 1, 1), **options)\n"
        "explorer.start()\n"
        "end = time.monotonic() + 120\n"
        "while time.monotonic() < end and not (trainer.step >= 2 and explorer.training.trainer\n"
        "        is not None and explorer.training.trainer.step >= 2):\n"
        "    time.sleep(0.01)\n"
        "print('training', trainer.step, explorer.state, flush=True)\n"
    )  # ... and the interpreter exits with both runs in the middle of an epoch
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    # Without the fix this exit aborted 6 times out of 6 (two training threads at once).
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path / "images.npy")],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert "training" in result.stdout and "running" in result.stdout, result.stdout
    assert "terminate called" not in result.stderr, result.stderr[-2000:]
    assert "exception not rethrown" not in result.stderr, result.stderr[-2000:]
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])


def _contents(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else b"")
            for p in sorted(folder.rglob("*"))}


def test_export_to_an_unwritable_or_full_location_fails_clearly_and_leaves_no_partial_file(
        images, tmp_path, monkeypatch):
    labels = np.array(["a", "b"] * (N // 2), dtype=object)
    explorer = Explorer(images, labels=labels, **TINY).set_embedding(grid_map(N))
    explorer.select(range(10)).tag("keep")
    work = tmp_path / "work"
    work.mkdir()
    blocker = work / "notes.txt"
    blocker.write_text("a regular file")
    (work / "old.csv").write_text("precious\n")
    before = _contents(work)

    # 1. A destination under a regular file (directly or further up): every writer
    #    refuses, naming the file in the way -- not "does not exist; create it first",
    #    which cannot be done.
    attempts = {}
    for under in (blocker, blocker / "deeper"):
        attempts.update({
            ("csv", under): lambda u=under: explorer.export_csv(u / "selection.csv"),
            ("files", under): lambda u=under: explorer.export_files(u / "export"),
            ("html", under): lambda u=under: explorer.to_html(u / "map.html"),
            ("session", under): lambda u=under: explorer.save(u / "session"),
            ("checkpoint", under): lambda u=under: save_checkpoint(u / "run.ckpt", {"a": 1}),
        })
    for name, attempt in attempts.items():
        with pytest.raises(NotADirectoryError) as caught:
            attempt()
        message = str(caught.value)
        assert f"{str(blocker)!r} is a file, not a folder" in message, (name, message)
        assert "inside a folder" in message, (name, message)
        assert "does not exist" not in message and "create it" not in message, (name, message)
    # A session saved over a regular file is refused too, even with overwrite=True.
    with pytest.raises(FileExistsError, match="it is a file, not a session folder"):
        explorer.save(blocker, overwrite=True)
    assert blocker.read_text() == "a regular file"
    explorer.controls.csv_path.value = str(blocker / "selection.csv")
    explorer.controls.csv_button.click()  # from the UI: a message, not a traceback
    assert "notes.txt" in explorer.messages[-1][1] and explorer.messages[-1][0] == "error"
    assert _contents(work) == before

    # 2. The disk fills up half-way through each kind of write.
    def full_disk_after_half(write):
        def writer(*args, **kwargs):
            write(*args, **kwargs)  # write into the temporary file ...
            target = next(a for a in args if isinstance(a, (str, Path)))
            data = Path(target).read_bytes()
            Path(target).write_bytes(data[: len(data) // 2])  # ... keep half, then fail
            raise OSError(errno.ENOSPC, "No space left on device")
        return writer

    monkeypatch.setattr(pd.DataFrame, "to_csv", full_disk_after_half(pd.DataFrame.to_csv))
    for overwrite in (False, True):
        target = work / ("old.csv" if overwrite else "selection.csv")
        with pytest.raises(OSError, match="disk is full"):
            explorer.export_csv(target, overwrite=overwrite)
    monkeypatch.undo()

    original_write_bytes = Path.write_bytes
    monkeypatch.setattr(Path, "write_bytes", lambda self, data: (
        original_write_bytes(self, data[: len(data) // 2]),
        (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device"))))
    with pytest.raises(OSError, match="disk is full"):
        explorer.to_html(work / "map.html")
    monkeypatch.undo()

    written = []
    original_png = export_module._write_png

    def png_until_full(image, destination):
        if len(written) == 4:
            raise OSError(errno.ENOSPC, "No space left on device")
        original_png(image, destination)
        written.append(destination)

    monkeypatch.setattr(export_module, "_write_png", png_until_full)
    with pytest.raises(OSError, match="disk is full"):
        explorer.export_files(work / "export")
    assert len(written) == 4  # it failed midway, after real files were written
    monkeypatch.undo()

    monkeypatch.setattr(np, "save", full_disk_after_half(np.save))
    with pytest.raises(OSError, match="No space left"):
        explorer.save(work / "session")
    monkeypatch.undo()

    assert _contents(work) == before  # no partial file, no temp file, old file intact
    explorer.export_csv(work / "selection.csv")  # and the next write works
    assert len(pd.read_csv(work / "selection.csv")) == 10


# ============================================================================= bad files
def test_bad_image_files_in_a_folder_are_skipped_or_converted(tmp_path, image_writer):
    root = tmp_path / "photos"
    for k in range(3):
        image_writer(root / "good" / f"rgb_{k}.png", (SIDE, SIDE), seed=k)
    bad = root / "bad"
    bad.mkdir()
    # A JPEG cut short: its header reads, its pixels don't.
    full = tmp_path / "whole.jpg"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(full, quality=95)
    data = full.read_bytes()
    (bad / "truncated.jpg").write_bytes(data[: int(len(data) * 0.6)])
    (bad / "empty.png").write_bytes(b"")
    (bad / "notes.png").write_text("these are my notes, not a picture\n")
    Image.new("1", (8200, 8200)).save(bad / "bomb.png")  # 67 M pixels in a few kB
    assert (bad / "bomb.png").stat().st_size < 100_000

    odd = root / "odd"
    odd.mkdir()
    deep = np.full((SIDE, SIDE), 65535, np.uint16)
    deep[:, : SIDE // 2] = 128 * 257
    Image.fromarray(deep).save(odd / "deep16.png")
    assert Image.open(odd / "deep16.png").mode.startswith("I")
    palette = Image.new("P", (SIDE, SIDE))
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette.paste(1, (0, 0, SIDE, SIDE // 2))  # top half blue, bottom half red
    palette.save(odd / "palette.png")
    rgba = np.zeros((SIDE, SIDE, 4), np.uint8)
    rgba[..., 1] = 200
    rgba[:, SIDE // 2:, 3] = 255  # left half fully transparent, right half opaque green
    Image.fromarray(rgba, "RGBA").save(odd / "rgba.png")

    with pytest.warns(UserWarning, match=r"skipped 4 of 10 image files") as caught:
        explorer = Explorer(root, **TINY)
    assert len([w for w in caught if "skipped" in str(w.message)]) == 1  # one warning
    image_set = explorer.image_set
    reasons = {Path(p).name: r for p, r in image_set.skipped}
    assert set(reasons) == {"truncated.jpg", "empty.png", "notes.png", "bomb.png"}
    assert "truncated" in reasons["truncated.jpg"]
    assert "too many pixels" in reasons["bomb.png"] and "max_pixels" in reasons["bomb.png"]
    assert "UnidentifiedImageError" in reasons["notes.png"]
    assert "UnidentifiedImageError" in reasons["empty.png"]

    assert len(explorer.image_set) == 6 and image_set.images.shape == (6, SIDE, SIDE, 3)
    assert sorted(set(image_set.labels)) == ["good", "odd"]
    by_name = {Path(p).name: image_set.images[i] for i, p in enumerate(image_set.paths)}
    np.testing.assert_array_equal(by_name["deep16.png"][:, : SIDE // 2], 128)  # 16 -> 8 bit
    np.testing.assert_array_equal(by_name["deep16.png"][:, SIDE // 2:], 255)
    np.testing.assert_array_equal(by_name["palette.png"][: SIDE // 2], [[(0, 0, 255)] * SIDE]
                                  * (SIDE // 2))
    np.testing.assert_array_equal(by_name["palette.png"][SIDE // 2:], [[(255, 0, 0)] * SIDE]
                                  * (SIDE // 2))
    np.testing.assert_array_equal(by_name["rgba.png"][:, : SIDE // 2], 255)  # on white
    np.testing.assert_array_equal(by_name["rgba.png"][:, SIDE // 2:], [[(0, 200, 0)] * (SIDE // 2)]
                                  * SIDE)
    # The survivors work in the widget: hover cards for every one of them.
    explorer.set_embedding(grid_map(6))
    for i in range(6):
        assert "data:image/png;base64," in explorer.hover_card(i)


# ============================================================================= security
class _Tags(HTMLParser):
    """Collects every element and attribute a browser would create from an HTML string."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def assert_inert(html: str) -> str:
    """Fail if ``html`` would run script or load an attacker's URL; return its text."""
    parsed = _Tags(html)
    for tag, attrs in parsed.elements:
        assert tag != "script", html
        assert not any(name.startswith("on") for name in attrs), (tag, attrs)
        assert attrs.get("src", "data:").startswith("data:"), (tag, attrs)
    return "".join(parsed.text)


def test_labels_file_names_and_metadata_are_escaped_in_cards_galleries_and_html_exports(
        tmp_path, image_writer):
    folder = tmp_path / "upload"
    names = [f"{ATTRIBUTE_BREAKER}.png", "<b>bold</b> & co.png", "plain.png", "x'y.png"]
    paths = [image_writer(folder / name, (SIDE, SIDE), seed=k) for k, name in enumerate(names)]
    n = len(paths)
    frame = pd.DataFrame({
        "path": [str(p) for p in paths],
        "label": [SCRIPT, ATTRIBUTE_BREAKER, "cat", "dog"],
        ATTRIBUTE_BREAKER: [SCRIPT, "ok", ATTRIBUTE_BREAKER, "fine"],  # a hostile column name
        "source": [p.name for p in paths],
    })
    explorer = Explorer(frame, **TINY).set_embedding(grid_map(n))
    assert list(explorer.labels[:2]) == [SCRIPT, ATTRIBUTE_BREAKER]

    for i in range(n):  # hover cards (shown in a Bokeh Div as HTML)
        text = assert_inert(explorer.hover_card(i))
        assert str(explorer.labels[i]) in text  # shown literally, as text
        assert f"{ATTRIBUTE_BREAKER}: " in text
    explorer.select(range(n))  # the gallery's tooltips
    assert_inert(explorer.gallery.style.value)  # the thumbnails' CSS
    titles = [cell.tooltip for cell in explorer.gallery.cells[:n]]  # DOM text, not HTML
    assert f"#0 · {SCRIPT}" in titles and f"#1 · {ATTRIBUTE_BREAKER}" in titles
    # Messages echo user input (a bad tag name, a bad path): shown as text.
    explorer.controls.tag_name.value = SCRIPT
    explorer.controls.tag_button.click()
    explorer.controls.csv_path.value = str(tmp_path / ATTRIBUTE_BREAKER / "x.csv")
    explorer.controls.csv_button.click()
    text = assert_inert(explorer.controls.message.value)
    assert SCRIPT in text and ATTRIBUTE_BREAKER in text
    explorer.color_by(ATTRIBUTE_BREAKER)  # legend entries are Bokeh text, not HTML
    assert assert_inert(explorer.controls.progress.value)

    page = explorer.to_html(tmp_path / "map.html", title=SCRIPT).read_text(encoding="utf-8")
    for payload in (SCRIPT, ATTRIBUTE_BREAKER, "<img src=x", "<b>bold</b>"):
        assert payload not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "{safe}" not in page
    # The CSV export keeps the values exactly (escaping is for HTML only).
    table = pd.read_csv(explorer.export_csv(tmp_path / "sel.csv"))
    assert table["label"].tolist()[:2] == [SCRIPT, ATTRIBUTE_BREAKER]
    assert Path(table["path"][0]).name == f"{ATTRIBUTE_BREAKER}.png"


def test_formulas_in_csv_exports_are_neutralised(images, tmp_path):
    hyperlink = '=HYPERLINK("http://x","y")'
    labels = np.array([hyperlink, "-2+3", "@SUM(A1)", "cat"] * (N // 4), dtype=object)
    metadata = pd.DataFrame({"note": ["+1", "\tx", "\rcr", "plain"] * (N // 4),
                             "score": np.tile([-1.5, 2.0, -3.25, 0.0], N // 4),
                             "=cmd()": ["a"] * N})
    explorer = Explorer(images, labels=labels, metadata=metadata, **TINY)
    explorer.set_embedding(grid_map(N) - 3.5)  # negative coordinates
    explorer.select(range(4)).tag("=tag")  # "=" is a valid tag character
    path = explorer.export_csv(tmp_path / "selection.csv")
    text = path.read_bytes().decode("utf-8")
    import csv
    import io

    rows = list(csv.reader(io.StringIO(text, newline="")))
    header, cells = rows[0], rows[1:]
    assert header == ["index", "x", "y", "label", "path", "note", "score", "'=cmd()", "tags"]
    column = {name: [row[k] for row in cells] for k, name in enumerate(header)}
    assert column["label"] == ["'" + hyperlink, "'-2+3", "'@SUM(A1)", "cat"]
    assert column["note"] == ["'+1", "'\tx", "'\rcr", "plain"]
    assert column["tags"] == ["'=tag"] * 4
    # Numbers stay numbers, negative ones included.
    assert column["score"] == ["-1.5", "2.0", "-3.25", "0.0"]
    assert column["x"] == ["-3.5", "-2.5", "-1.5", "-0.5"] and column["y"] == ["-3.5"] * 4
    table = pd.read_csv(path)
    assert table["x"].dtype == table["score"].dtype == np.float64
    # Files that programs read back keep their text exact: the session's tag file.
    restored = Explorer.load(explorer.save(tmp_path / "session"))
    assert restored.tag_store.names == ("=tag",)
    np.testing.assert_array_equal(restored.tag_store.indices("=tag"), np.arange(4))


def test_tag_names_cannot_write_outside_the_export_folder(images, tmp_path):
    hostile_labels = np.array(["../../escaped", "/etc/cron.d", "..", "C:\\win"] * (N // 4),
                              dtype=object)
    explorer = Explorer(images, labels=hostile_labels, **TINY).set_embedding(grid_map(N))
    explorer.select(range(8))
    work = tmp_path / "deep" / "work"
    work.mkdir(parents=True)
    for name in ("../escaped", "..", "/tmp/evil", "a/b", "a\\b", ".hidden", "CON",
                 "x" * 65, "", "C:evil", "tag\x00", "ok;no"):
        with pytest.raises((ValueError, TypeError)):
            explorer.tag(name)
    explorer.controls.tag_name.value = "../escaped"
    explorer.controls.tag_button.click()
    assert explorer.messages[-1][0] == "error" and "invalid tag name" in explorer.messages[-1][1]
    assert explorer.tag_store.names == ()

    # Without tags, hostile labels name the folders: they are cleaned, and stay inside.
    report = explorer.export_files(work / "by-label")
    inside = (work / "by-label").resolve()
    for written in (work / "by-label").rglob("*"):
        assert written.resolve().is_relative_to(inside)
    assert report.n_files == 8 and len(list((work / "by-label").rglob("*.png"))) == 8
    # A tag smuggled past validation (e.g. a tampered session) is still refused at export.
    explorer.tag("fine")
    explorer.tag_store._tags["../../escaped"] = np.arange(3, dtype=np.int64)
    with pytest.raises(ValueError, match="invalid tag name"):
        explorer.export_files(work / "by-tag")
    assert [p.name for p in tmp_path.iterdir()] == ["deep"]
    assert [p.name for p in work.parent.iterdir()] == ["work"]
    assert [p.name for p in work.iterdir()] == ["by-label"]


def _plant(marker: str) -> str:
    Path(marker).write_text("code from a checkpoint ran")
    return "pwned"


class Exploit:
    """Unpickling this runs ``_plant``: what a malicious checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (_plant, (self.marker,))


def test_checkpoints_load_with_weights_only_and_refuse_pickled_objects(images, tmp_path):
    marker = tmp_path / "PWNED"
    trained = TSimCNE(total_epochs=(1, 1, 1), checkpoint_path=tmp_path / "run.ckpt", **TINY)
    trained.fit(images)
    trained.save(tmp_path / "model.pt")

    def poison(source: Path, target: Path) -> Path:
        state = torch.load(source, weights_only=True)
        state["notes"] = Exploit(marker)  # otherwise a perfectly valid file
        torch.save(state, target)
        return target

    bad_model = poison(tmp_path / "model.pt", tmp_path / "bad_model.pt")
    bad_run = poison(tmp_path / "run.ckpt", tmp_path / "bad_run.ckpt")
    with pytest.raises(ValueError, match="not a readable"):
        TSimCNE.load(bad_model)
    with pytest.raises(ValueError, match="not a readable"):
        TSimCNE(**TINY).resume(images, bad_run)
    with pytest.raises(ValueError, match="not a readable"):
        Trainer.resume_from(bad_run, images)
    assert TSimCNE.load(tmp_path / "model.pt").transform(images[:2]).shape == (2, 2)

    # A saved Explorer session with a poisoned checkpoint, and a pickled array in place of
    # its map: loading and resuming refuse both without running them.
    explorer = Explorer(images, total_epochs=(1, 1, 1), **TINY)
    explorer.start()
    assert explorer.wait(timeout=120) and explorer.state == "finished"
    session = explorer.save(tmp_path / "session")
    poison(session / "checkpoint.pt", session / "checkpoint.pt")
    restored = Explorer.load(session)
    restored.resume()
    assert restored.wait(timeout=60)
    restored._apply_pending()
    assert restored.state == "failed"
    assert "not a readable" in [text for kind, text in restored.messages if kind == "error"][-1]
    np.save(session / "map.npy", np.array([Exploit(marker)], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="allow_pickle"):
        Explorer.load(session)
    assert not marker.exists()


def test_nothing_reaches_the_network_unless_asked(images, tmp_path, monkeypatch):
    attempts = []

    def refuse(kind):
        def blocked(*args, **kwargs):
            attempts.append((kind, args[1:] if kind == "connect" else args))
            raise OSError(errno.ENETUNREACH, f"network access blocked by the test ({kind})")
        return blocked

    monkeypatch.setattr(socket.socket, "connect", refuse("connect"))
    monkeypatch.setattr(socket.socket, "connect_ex", refuse("connect_ex"))
    monkeypatch.setattr(socket, "create_connection", refuse("create_connection"))
    monkeypatch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
    with pytest.raises(OSError):  # the guard is armed
        socket.create_connection(("example.org", 80), timeout=1)
    attempts.clear()

    import IPython.display

    published = []
    monkeypatch.setattr(IPython.display, "publish_display_data",
                        lambda data, **kwargs: published.append(data))
    labels = np.array(["a", "b", "c"] * (N // 3), dtype=object)
    xy = TSimCNE(total_epochs=(1, 1, 1), **TINY).fit_transform(images)
    explorer = Explorer(images, labels=labels, total_epochs=(1, 1, 1), **TINY)
    bundle = explorer._repr_mimebundle_()  # the widget with BokehJS, as a notebook shows it
    explorer.start()
    assert explorer.wait(timeout=120) and explorer.state == "finished"
    explorer.select(range(5)).tag("keep")
    explorer.export_csv(tmp_path / "selection.csv")
    explorer.export_files(tmp_path / "export")
    explorer.save(tmp_path / "session")
    Explorer.load(tmp_path / "session")
    page = explorer.to_html(tmp_path / "map.html").read_text(encoding="utf-8")
    explorer.set_embedding(xy)
    assert attempts == []
    # Nor does the page or the notebook output load anything from the network: every
    # script, style sheet and image is inline (BokehJS itself included).
    loader = published[0]["application/vnd.bokehjs_load.v0+json"]
    assert len(loader) > 500_000 and "application/vnd.jupyter.widget-view+json" in bundle
    assert "js_urls = []" in loader and "css_urls = []" in loader
    for tag, attrs in _Tags(page).elements:
        for name in ("src", "href"):
            assert not attrs.get(name, "").startswith(("http:", "https:", "//")), (tag, attrs)


# ============================================================================= endurance
def test_replay_buffer_stays_within_its_byte_bound_over_many_frames(images):
    bound = 16 * 1024
    explorer = Explorer(images, max_replay_bytes=bound, **TINY)
    session, replay = explorer.training, explorer.replay
    frame_bytes = N * 2 * 2  # float16
    rng = np.random.default_rng(0)
    total = 5000
    for k in range(1, total + 1):  # the trainer callback's own path, 5,000 epochs long
        embedding = rng.normal(size=(N, 2)).astype(np.float32)
        embedding.flags.writeable = False
        snapshot = Snapshot(stage=1, epoch=k, epochs_in_stage=total, total_epoch=k,
                            total_epochs=total, step=k, loss=1.0, learning_rate=0.1,
                            images_per_second=1.0, elapsed=float(k), eta=None,
                            embedding=embedding, provisional=False, state="running",
                            losses=())
        assert session._receive(session._generation, snapshot) is False
        assert replay.nbytes <= bound
        assert len(replay) <= bound // frame_bytes
    epochs = [info["total_epoch"] for info in replay.infos]
    assert epochs[0] == 1 and epochs[-1] == total  # the whole run stays covered ...
    assert len(epochs) >= bound // frame_bytes // 2  # ... evenly, at a coarser step
    steps = np.diff(epochs[:-1])
    assert steps.min() == steps.max() == replay.stride
    explorer._apply_pending()
    assert explorer.controls.replay.max == len(replay) - 1


def _bokeh_event(figure, name: str, values: dict) -> dict:
    """A ``bokeh_event`` message as jupyter_bokeh's front end sends it to the kernel."""
    return {"event": "jsevent", "kind": "MessageSent", "msg_type": "bokeh_event",
            "msg_data": {"type": "event", "name": name,
                         "values": {"model": {"id": figure.id}, **values}}}


def test_hover_and_lasso_storm_keeps_memory_flat():
    n, warm = 1200, 300
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (n, SIDE, SIDE, 3), dtype=np.uint8)
    labels = np.array([f"class {k % 7}" for k in range(n)], dtype=object)
    explorer = Explorer(pixels, labels=labels, canvas_width=160, canvas_height=120, thumb_size=48,
                        **TINY)
    explorer.set_embedding(rng.normal(size=(n, 2)).astype(np.float32))
    explorer.canvas.min_hover_interval = 0.0  # every event counts
    # Fewer thumbnails kept than the storm visits: the LRU bound, not luck, keeps memory flat.
    explorer.thumbnails.max_items = 256
    explorer.widget  # attach the Bokeh document, as when displayed
    model, figure = explorer._bokeh_model, explorer.canvas.figure
    modifiers = {"shift": False, "ctrl": False, "alt": False}
    xy = explorer.embedding

    def hover(index: int) -> None:
        x, y = xy[index]
        message = _bokeh_event(figure, "mousemove", {"x": float(x), "y": float(y), "sx": 50,
                                                     "sy": 40, "modifiers": modifiers})
        model._sync_model(model, message, [])

    def lasso() -> None:
        centre = rng.normal(size=2)
        angles = np.sort(rng.uniform(0, 2 * np.pi, 12))
        radius = rng.uniform(0.1, 0.5)
        xs, ys = centre[0] + radius * np.cos(angles), centre[1] + radius * np.sin(angles)
        geometry = {"type": "map", "entries": [["type", "poly"], ["x", xs.tolist()],
                                               ["y", ys.tolist()], ["sx", [0] * 12],
                                               ["sy", [0] * 12]]}
        message = _bokeh_event(figure, "selectiongeometry", {"geometry": geometry,
                                                             "final": True})
        model._sync_model(model, message, [])

    def storm(indices: np.ndarray, lassos: int) -> None:
        for k, index in enumerate(indices):
            hover(int(index))
            if k % (len(indices) // lassos) == 0:
                lasso()

    # Warm-up on the first images: the thumbnail cache and the undo history fill to their
    # bounds.  The storm then explores the rest of the map, as a user would.
    storm(np.arange(600) * 7 % warm, 60)
    assert explorer.canvas.card.visible and explorer.thumbnails.cache_info().currsize == 256
    assert len(explorer.selection_model._undo) == explorer.selection_model.history
    misses = explorer.thumbnails.cache_info().misses
    gc.collect()
    tracemalloc.start()
    try:
        storm(warm + np.arange(2000) * 7 % (n - warm), 200)
        gc.collect()
        retained, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert explorer.thumbnails.cache_info().misses - misses > 2000  # the storm kept encoding
    assert explorer.thumbnails.cache_info().currsize == 256
    assert len(explorer.selection_model._undo) == explorer.selection_model.history
    assert not [text for kind, text in explorer.messages if kind == "error"]
    assert retained < 1_000_000, f"{retained:,} bytes retained after 2,000 hovers, 200 lassos"
