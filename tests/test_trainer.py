"""Tests for the training loop: stages, schedule, snapshots, threads, failures, resuming."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from tsimcne_widgets.engine.checkpoint import load_checkpoint
from tsimcne_widgets.engine.models import TSimCNENet, build_backbone
from tsimcne_widgets.engine.schedule import StagePlan
from tsimcne_widgets.engine.trainer import Snapshot, Trainer, TrainingError

N_IMAGES, BATCH = 64, 32
# One thread: the test machine is shared, and spinning OpenMP threads of competing
# processes slow each other down many times over.
TINY = dict(
    backbone="resnet10", backbone_width=8, hidden_dim=32, projection_dim=16, device="cpu", num_threads=1
)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def images():
    """64 random-ish 12x12 RGB images: blobs of a few colours, so views differ."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (N_IMAGES, 3, 3, 3), dtype=np.uint8)
    return np.ascontiguousarray(np.repeat(np.repeat(base, 4, axis=1), 4, axis=2))


def make_plan(epochs, **kwargs):
    return StagePlan.from_total_epochs(epochs, N_IMAGES, BATCH, **kwargs)


def make_trainer(images, epochs=(1, 1, 1), plan=None, **kwargs):
    options = dict(TINY, random_state=0, map_time_fraction=float("inf"))
    options.update(kwargs)
    return Trainer(images, plan or make_plan(epochs), **options)


def test_stage_two_trains_only_the_new_output_layer(images):
    states = {}

    def capture(snapshot):
        key = (snapshot.stage, snapshot.epoch)
        states[key] = {k: v.clone() for k, v in trainer.model.state_dict().items()}

    trainer = make_trainer(images, epochs=(1, 2), callbacks=[capture])
    trainer.run()
    after_stage1, stage2_epoch1 = states[(1, 1)], states[(2, 1)]
    final = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    assert after_stage1["head.2.weight"].shape == (16, 32)
    assert final["head.2.weight"].shape == (2, 32)
    frozen = [k for k in final if not k.startswith("head.2.")]
    assert any("running_mean" in k for k in frozen) and any("num_batches_tracked" in k for k in frozen)
    for key in frozen:  # parameters and BatchNorm buffers alike
        assert torch.equal(final[key], after_stage1[key]), key
    assert not torch.equal(final["head.2.weight"], stage2_epoch1["head.2.weight"])
    optimised = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert optimised == {id(p) for p in trainer.model.output_layer.parameters()}


class RecordingTrainer(Trainer):
    """Records the learning rate each optimiser step actually used."""

    def train_step(self, batch):
        group = self.optimizer.param_groups[0]
        self.used.append((self.stage, group["lr"], group["momentum"], group["weight_decay"]))
        return super().train_step(batch)


def test_optimiser_uses_the_planned_learning_rate_at_every_step(images):
    plan = StagePlan(epochs=(4, 2, 4), batch_size=BATCH, steps_per_epoch=2, warmup_epochs=(1, 0, 2))
    trainer = RecordingTrainer(images, plan, **TINY, random_state=0)
    trainer.used = []
    trainer.run()
    expected = [
        (stage, plan.lr_at(stage, step))
        for stage in (1, 2, 3)
        for step in range(plan.stage_steps(stage))
    ]
    assert [s for s, _, _, _ in trainer.used] == [s for s, _ in expected]
    assert [lr for _, lr, _, _ in trainer.used] == pytest.approx([lr for _, lr in expected])
    assert {(m, wd) for _, _, m, wd in trainer.used} == {(0.9, 5e-4)}
    stage3 = [lr for s, lr, _, _ in trainer.used if s == 3]
    assert max(stage3) == pytest.approx(plan.base_lr / 1000)
    assert stage3[0] < stage3[3]  # warming up
    assert trainer.step == plan.total_steps


def test_snapshots_sequence_flags_and_read_only_maps(images):
    snapshots: list[Snapshot] = []
    trainer = make_trainer(images, epochs=(2, 1, 2), callbacks=[snapshots.append])
    assert trainer.run() == "finished"
    assert [(s.stage, s.epoch) for s in snapshots] == [(1, 1), (1, 2), (2, 1), (3, 1), (3, 2)]
    assert [s.total_epoch for s in snapshots] == [1, 2, 3, 4, 5]
    assert [s.provisional for s in snapshots] == [True, True, False, False, False]
    assert [s.state for s in snapshots] == ["running"] * 4 + ["finished"]
    assert [len(s.losses) for s in snapshots] == [1, 2, 3, 4, 5]
    last = snapshots[-1]
    assert last.step == 10 and last.total_epochs == 5 and last.eta == pytest.approx(0.0)
    assert np.isfinite(last.loss) and last.images_per_second > 0
    for snapshot in snapshots:
        assert snapshot.embedding.shape == (N_IMAGES, 2)
        assert snapshot.embedding.dtype == np.float32
        with pytest.raises(ValueError):
            snapshot.embedding[0, 0] = 1.0
    with pytest.raises(AttributeError):
        last.stage = 2  # frozen
    # The final map is the 2-D head output itself.
    np.testing.assert_allclose(last.embedding, trainer.embed(), rtol=1e-5, atol=1e-5)


def test_provisional_pca_keeps_axis_signs_between_frames(images):
    snapshots = []
    make_trainer(images, epochs=(3,), callbacks=[snapshots.append]).run()
    for before, after in zip(snapshots, snapshots[1:]):
        # Small training steps move the map a little; a flipped axis would anti-correlate.
        for axis in range(2):
            assert np.corrcoef(before.embedding[:, axis], after.embedding[:, axis])[0, 1] > 0


def test_expensive_maps_are_skipped_except_at_stage_ends(images):
    snapshots = []
    trainer = make_trainer(images, epochs=(3, 1, 3), callbacks=[snapshots.append], map_time_fraction=0.0)
    trainer.run()
    # Every epoch-end map "costs too much": only stage ends and the end remain.
    # The first map is always made, so a display has something to show early.
    assert [(s.stage, s.epoch) for s in snapshots] == [(1, 1), (1, 3), (2, 1), (3, 3)]


def test_no_maps_without_callbacks(images):
    trainer = make_trainer(images, epochs=(1, 1))
    trainer.run()
    assert trainer.latest_snapshot is None and trainer.last_map is None


def test_callback_returning_true_stops(images):
    seen = []
    trainer = make_trainer(images, epochs=(5, 1, 1), callbacks=[lambda s: seen.append(s) or s.total_epoch == 2])
    assert trainer.run() == "stopped"
    assert trainer.step == 2 * make_plan((5, 1, 1)).steps_per_epoch
    assert seen[-1].state == "stopped" and seen[-1].step == trainer.step


def test_stop_at_the_end_of_a_stage_keeps_its_trained_output(images, tmp_path):
    # Stop pressed while the last stage-1 epoch reports (a callback runs on the training
    # thread; from another thread Stop can land at the same moment).
    def press_stop(snapshot):
        if snapshot.stage == 1 and snapshot.epoch == snapshot.epochs_in_stage:
            trainer.stop()

    trainer = make_trainer(images, epochs=(2, 1, 1), callbacks=[press_stop])
    assert trainer.run() == "stopped"
    assert trainer.stage == 1 and trainer.epoch == 2 and not trainer.output_layer_replaced
    stage1_map = trainer.latest_snapshot.embedding
    assert trainer.embed().shape[1] == TINY["projection_dim"]  # the trained 128-D-style output
    np.testing.assert_allclose(trainer.compute_map()[0], stage1_map, atol=1e-5)
    resumed = Trainer.resume_from(trainer.save_checkpoint(tmp_path / "stopped.pt"), images)
    assert resumed.run() == "finished"  # and it goes on into stage 2 from there
    assert resumed.stage == 3 and resumed.embed().shape[1] == 2


def test_callback_exception_fails_the_run(images):
    def broken(snapshot):
        raise KeyError("broken callback")

    trainer = make_trainer(images, epochs=(3,), callbacks=[broken])
    with pytest.raises(KeyError, match="broken callback"):
        trainer.run()
    assert trainer.state == "failed" and isinstance(trainer.error, KeyError)
    assert trainer.total_epoch == 1


def wait_for(condition, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_pause_unpause_stop_from_another_thread(images):
    snapshots = []
    trainer = make_trainer(images, epochs=(1000,), callbacks=[snapshots.append])
    assert trainer.state == "idle"
    trainer.start()
    wait_for(lambda: trainer.step >= 2)
    trainer.pause()
    assert trainer.state == "paused"
    time.sleep(0.5)  # the step in flight finishes
    paused_step = trainer.step
    time.sleep(0.5)
    assert trainer.step == paused_step and trainer.state == "paused"
    assert not trainer.wait(0.01)
    trainer.unpause()
    assert trainer.state == "running"
    wait_for(lambda: trainer.step > paused_step + 1)
    stopper = threading.Thread(target=trainer.stop)
    stopper.start()
    stopper.join()
    assert trainer.wait(60)
    assert trainer.state == "stopped" and trainer.error is None
    assert snapshots[-1].state == "stopped"
    with pytest.raises(RuntimeError, match="runs once"):
        trainer.run()


def test_stop_while_paused_ends_the_run(images):
    trainer = make_trainer(images, epochs=(1000,))
    trainer.start()
    wait_for(lambda: trainer.step >= 1)
    trainer.pause()
    trainer.stop()
    assert trainer.wait(60) and trainer.state == "stopped"


class PoisonedNet(TSimCNENet):
    """Outputs NaN once ``poisoned`` is set."""

    poisoned = False

    def features(self, x):
        features = super().features(x)
        return features * float("nan") if self.poisoned else features


def test_non_finite_loss_fails_and_keeps_the_last_good_checkpoint(images, tmp_path):
    backbone, feature_dim = build_backbone("resnet10", width=8)
    model = PoisonedNet(backbone, feature_dim, hidden_dim=32, out_dim=16)

    def poison(snapshot):
        model.poisoned = snapshot.total_epoch == 2

    path = tmp_path / "run.ckpt"
    trainer = make_trainer(
        images, epochs=(5,), model=model, callbacks=[poison], checkpoint_path=path, checkpoint_every=1
    )
    with pytest.raises(TrainingError, match="non-finite.*lower the learning rate"):
        trainer.run()
    assert trainer.state == "failed"
    state = load_checkpoint(path)
    assert state["epoch"] == 2 and all(np.isfinite(state["losses"]))
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_checkpoint_is_plain_and_loads_with_weights_only(images, tmp_path):
    path = tmp_path / "ckpt" / "run.pt"
    trainer = make_trainer(images, epochs=(1, 1), checkpoint_path=path, callbacks=[lambda s: None])
    trainer.run()
    state = torch.load(path, weights_only=True)
    assert state["kind"] == "training" and state["stage"] == 2 and state["epoch"] == 1
    assert state["plan"]["epochs"] == [1, 1] and state["model_config"]["backbone"] == "resnet10"
    assert set(state["rng"]) >= {"torch_cpu", "cpu_generator", "device_generator", "numpy"}
    assert state["embedding"].shape == (N_IMAGES, 2)
    assert [p.name for p in path.parent.iterdir()] == ["run.pt"]  # no temp files left


def assert_continues_exactly(resumed, reference):
    """Run ``resumed`` to the end: the same steps, losses and weights as ``reference``."""
    assert resumed.run() == "finished"
    assert resumed.step == reference.step
    assert resumed.losses == pytest.approx(reference.losses, rel=1e-5)
    expected = reference.model.state_dict()
    for key, value in resumed.model.state_dict().items():
        torch.testing.assert_close(value, expected[key], rtol=1e-5, atol=1e-6, msg=key)


@pytest.mark.parametrize("stop_at", [(1, 1), (1, 2), (3, 1)], ids=["mid-stage-1", "stage-1-end", "mid-stage-3"])
def test_resumed_run_reproduces_the_uninterrupted_one(images, tmp_path, stop_at):
    epochs = (2, 1, 2)
    reference = make_trainer(images, epochs=epochs, random_state=7)
    reference.run()

    path = tmp_path / "run.ckpt"
    interrupted = make_trainer(
        images,
        epochs=epochs,
        random_state=7,
        checkpoint_path=path,
        checkpoint_every=1,
        callbacks=[lambda s: (s.stage, s.epoch) == stop_at],
    )
    assert interrupted.run() == "stopped"
    resumed = Trainer.resume_from(path, images, device="cpu", num_threads=1)
    assert (resumed.stage, resumed.epoch) == stop_at
    assert_continues_exactly(resumed, reference)


def test_resume_refuses_other_data(images, tmp_path):
    path = tmp_path / "run.ckpt"
    make_trainer(images, epochs=(1,), checkpoint_path=path).run()
    with pytest.raises(ValueError, match="pass the same images"):
        Trainer.resume_from(path, images[:40], device="cpu", num_threads=1)


def test_plan_must_fit_the_data(images):
    with pytest.raises(ValueError, match="steps per epoch"):
        Trainer(images, StagePlan.from_total_epochs(1, 200, BATCH), **TINY)
    with pytest.raises(ValueError, match="at least 2 images"):
        Trainer(images[:1], StagePlan((1,), 1, 1), **TINY)


class StopAfterSteps(Trainer):
    """Stops itself after ``stop_after`` optimiser steps: in the middle of an epoch."""

    stop_after = 0

    def train_step(self, batch):
        loss = super().train_step(batch)
        if self.step + 1 == self.stop_after:  # the counter moves on right after this
            self.stop()
        return loss


def test_state_dict_moves_a_run_mid_epoch_into_a_fresh_trainer(images):
    epochs = (3, 1, 1)
    reference = make_trainer(images, epochs=epochs, random_state=3)
    reference.run()

    interrupted = StopAfterSteps(images, make_plan(epochs),
                                 **dict(TINY, random_state=3, map_time_fraction=float("inf")))
    interrupted.stop_after = 3  # epoch 2 of stage 1, one of its two steps done
    assert interrupted.run() == "stopped"
    state = interrupted.state_dict()
    assert (state["stage"], state["epoch"], state["step"]) == (1, 1, 3)
    assert state["epoch_in_progress"]["steps_done"] == 1
    momentum = next(iter(state["optimizer"]["state"].values()))["momentum_buffer"].clone()

    # A copy: training on (here: one more step) leaves the state as it was taken.
    interrupted.train_step(interrupted.images[:BATCH])
    assert torch.equal(next(iter(state["optimizer"]["state"].values()))["momentum_buffer"],
                       momentum)

    fresh = make_trainer(images, epochs=(1,), random_state=99)  # plan and seed: from the state
    fresh.load_state_dict(state)
    assert fresh.plan == reference.plan and (fresh.stage, fresh.step) == (1, 3)
    assert_continues_exactly(fresh, reference)

    with pytest.raises(RuntimeError, match="has not started"):
        fresh.load_state_dict(state)
    with pytest.raises(ValueError, match="same images"):
        make_trainer(images[:32], epochs=(1,), plan=StagePlan.from_total_epochs(
            (1,), 32, BATCH)).load_state_dict(state)


def test_checkpoints_without_the_newer_entries_still_resume(images, tmp_path):
    # Files written before the output-layer flag and the epoch in progress existed.
    path = tmp_path / "old.ckpt"
    epochs = (2, 1, 2)
    reference = make_trainer(images, epochs=epochs, random_state=5)
    reference.run()
    old = make_trainer(images, epochs=epochs, random_state=5, checkpoint_path=path,
                       checkpoint_every=1, callbacks=[lambda s: (s.stage, s.epoch) == (3, 1)])
    assert old.run() == "stopped"
    state = load_checkpoint(path)
    del state["output_layer_replaced"], state["epoch_in_progress"]
    torch.save(state, path)
    resumed = Trainer.resume_from(path, images, device="cpu", num_threads=1)
    assert resumed.output_layer_replaced and resumed.model.out_dim == 2
    assert_continues_exactly(resumed, reference)


def test_public_step_api_trains_and_times_steps(images):
    from tsimcne_widgets.engine.planner import time_training_steps

    trainer = make_trainer(images, epochs=(1,))
    trainer.enter_stage()
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    loss = trainer.train_step(trainer.images[:BATCH])
    assert loss.shape == () and torch.isfinite(loss)
    changed = [k for k, v in trainer.model.state_dict().items() if not torch.equal(v, before[k])]
    assert "head.2.weight" in changed and any(k.startswith("backbone.") for k in changed)
    seconds = time_training_steps(trainer, n_steps=2, warmup=1)
    assert 0 < seconds < 60
    trainer.run()
    with pytest.raises(RuntimeError, match="has not started"):
        time_training_steps(trainer)
