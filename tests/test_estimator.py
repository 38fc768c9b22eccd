"""Tests for the scikit-learn-style estimator: round trips, budgets, resuming, bad input."""

from __future__ import annotations

import time
import warnings

import numpy as np
import pytest
import torch
from sklearn.exceptions import NotFittedError

from tsimcne_widgets import ImageSet, TSimCNE
from tsimcne_widgets.engine.planner import plan_for_budget
from tsimcne_widgets.engine.checkpoint import load_checkpoint
from tsimcne_widgets.data.datasets import load_digits

# One thread: the test machine is shared (see test_trainer.py).
TINY = dict(
    batch_size=32, backbone="resnet10", backbone_width=8, hidden_dim=32, projection_dim=16,
    device="cpu", random_state=0, num_threads=1,
)


@pytest.fixture(autouse=True, scope="module")
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits64() -> ImageSet:
    return load_digits().subset(np.arange(64))


@pytest.fixture(scope="module")
def fitted(digits64) -> TSimCNE:
    return TSimCNE(total_epochs=(1, 1, 1), **TINY).fit(digits64)


def test_fit_transform_round_trip(fitted, digits64):
    assert fitted.embedding_.shape == (64, 2) and fitted.embedding_.dtype == np.float32
    np.testing.assert_allclose(fitted.transform(digits64), fitted.embedding_, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(fitted.labels_, digits64.labels)
    assert fitted.trainer_.state == "finished"
    # New images of another size are brought to the training resolution.
    bigger = np.repeat(np.repeat(digits64.images[:5], 2, axis=1), 2, axis=2)
    assert fitted.transform(bigger).shape == (5, 2)


def test_fit_transform_equals_fit_then_embedding(digits64):
    xy = TSimCNE(total_epochs=(1, 1), **TINY).fit_transform(digits64)
    again = TSimCNE(total_epochs=(1, 1), **TINY).fit(digits64).embedding_
    np.testing.assert_array_equal(xy, again)  # same seed on the CPU: same map


def test_save_and_load(fitted, digits64, tmp_path):
    path = fitted.save(tmp_path / "model.pt")
    assert torch.load(path, weights_only=True)["kind"] == "model"
    loaded = TSimCNE.load(path, device="cpu")
    np.testing.assert_allclose(loaded.transform(digits64), fitted.transform(digits64), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(loaded.embedding_, fitted.embedding_)
    np.testing.assert_array_equal(loaded.labels_, fitted.labels_)
    assert loaded.get_params()["backbone"] == "resnet10"


def test_single_stage_run_outputs_the_projection(digits64):
    estimator = TSimCNE(total_epochs=1, **TINY).fit(digits64, callbacks=[lambda s: None])
    assert estimator.embedding_.shape == (64, 16)
    assert estimator.transform(digits64.images[:3]).shape == (3, 16)
    assert estimator.trainer_.latest_snapshot.provisional


def test_callbacks_and_stopping(digits64):
    seen = []
    estimator = TSimCNE(total_epochs=(3, 1, 1), **TINY)
    estimator.fit(digits64, callbacks=[lambda s: seen.append(s) or s.total_epoch == 1])
    assert estimator.trainer_.state == "stopped"
    assert [s.state for s in seen] == ["running", "stopped"]
    assert estimator.embedding_.shape == (64, 16)  # stopped in stage 1


def test_callback_error_is_raised_by_fit(digits64):
    def broken(snapshot):
        raise RuntimeError("display went away")

    estimator = TSimCNE(total_epochs=(2,), **TINY)
    with pytest.raises(RuntimeError, match="display went away"):
        estimator.fit(digits64, callbacks=[broken])
    assert estimator.trainer_.state == "failed"


def test_resume_from_checkpoint(digits64, tmp_path):
    path = tmp_path / "fit.ckpt"
    reference = TSimCNE(total_epochs=(2, 1, 1), **TINY).fit(digits64)
    interrupted = TSimCNE(total_epochs=(2, 1, 1), checkpoint_path=path, **TINY)
    # Checkpoints come every 10 epochs and at stage ends: stop at the end of stage 1.
    interrupted.fit(digits64, callbacks=[lambda s: s.total_epoch == 2])
    assert (load_checkpoint(path)["stage"], load_checkpoint(path)["epoch"]) == (1, 2)
    resumed = TSimCNE(**TINY).resume(digits64, path)
    assert resumed.trainer_.state == "finished"
    np.testing.assert_allclose(resumed.embedding_, reference.embedding_, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="not a training checkpoint"):
        reference.save(tmp_path / "model.pt")
        TSimCNE(**TINY).resume(digits64, tmp_path / "model.pt")


def test_time_budget_plans_and_roughly_keeps_time(digits64):
    started = time.perf_counter()
    estimator = TSimCNE(time_budget=6, **{**TINY, "backbone": "resnet10", "backbone_width": None})
    estimator.fit(digits64)
    elapsed = time.perf_counter() - started
    plan = estimator.trainer_.plan
    # The epochs depend on this machine's speed; the floors do not.
    assert plan.n_stages == 3 and plan.epochs[0] >= 3 and min(plan.epochs) >= 1
    assert elapsed < 60  # generous: the machine is shared
    assert estimator.embedding_.shape == (64, 2)


def test_plan_for_budget_scales_epochs_with_the_budget():
    small = plan_for_budget(2, 64, 8, "cpu", 32, candidates=[("resnet10", 8)], num_threads=1)
    large = plan_for_budget(20, 64, 8, "cpu", 32, candidates=[("resnet10", 8)], num_threads=1)
    assert (small.backbone, small.width, small.image_size) == ("resnet10", 8, (8, 8))
    assert sum(large.plan.epochs) > 3 * sum(small.plan.epochs)
    ratio = large.plan.epochs[0] / large.plan.epochs[2]
    assert 1000 / 450 * 0.8 < ratio < 1000 / 450 * 1.25
    capped = plan_for_budget(1e6, 64, 8, "cpu", 32, candidates=[("resnet10", 8)], num_threads=1)
    assert capped.plan.epochs == (1000, 50, 450)  # never longer than the paper
    big = plan_for_budget(1e-3, 64, 64, "cpu", 32, candidates=[("resnet10", 8)], num_threads=1)
    assert big.image_size == (16, 16)  # too slow at full size: train smaller (CPU_MAX_SIDE)


# ---------------------------------------------------------------------- bad input
def test_transform_before_fit():
    with pytest.raises(NotFittedError, match="call fit"):
        TSimCNE().transform(np.zeros((2, 8, 8, 3), np.uint8))


@pytest.mark.parametrize(
    "data, message",
    [
        (np.zeros((0, 8, 8, 3), np.uint8), r"at least 2 images.*got 0"),
        (np.zeros((1, 8, 8, 3), np.uint8), "at least 2 images"),
        (np.zeros((4, 4, 4, 3), np.uint8), "8-pixel minimum"),
        (np.full((4, 8, 8, 3), np.nan, np.float32), "NaN"),
    ],
    ids=["empty", "one-image", "tiny-images", "nan"],
)
def test_bad_images(data, message):
    with pytest.raises(ValueError, match=message):
        TSimCNE(**TINY).fit(data)


def test_labels_of_wrong_length(digits64):
    with pytest.raises(ValueError, match="label"):
        TSimCNE(**TINY).fit(digits64.images, y=["a"] * 3)


def test_batch_larger_than_data_warns_and_uses_all(digits64):
    with pytest.warns(UserWarning, match="batch_size=512 is larger than the 64 images"):
        estimator = TSimCNE(total_epochs=(1,), **{**TINY, "batch_size": 512}).fit(digits64)
    assert estimator.trainer_.plan.batch_size == 64


def test_unknown_backbone(digits64):
    with pytest.raises(ValueError, match="unknown backbone 'vgg16'.*resnet18"):
        TSimCNE(**{**TINY, "backbone": "vgg16"}).fit(digits64)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda(digits64):
    with pytest.raises(ValueError, match="CUDA is not available.*device='cpu'"):
        TSimCNE(**{**TINY, "device": "cuda"}).fit(digits64)


@pytest.mark.parametrize("epochs", [0, (1, 2, 3, 4), (1, -1), 1.5])
def test_bad_epochs(digits64, epochs):
    with pytest.raises((ValueError, TypeError), match="total_epochs"):
        TSimCNE(total_epochs=epochs, **TINY).fit(digits64)


def test_no_warning_on_a_clean_fit(digits64):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TSimCNE(total_epochs=(1,), **TINY).fit(digits64)


def test_time_budget_refit_matches_the_measured_speed():
    from tsimcne_widgets.engine.recipe import TimeBudget
    from tsimcne_widgets.engine.schedule import StagePlan

    plan = StagePlan((20, 1, 9), batch_size=32, steps_per_epoch=2)
    budget = TimeBudget(100.0, stage_ratio=(1000, 50, 450), overhead_fraction=0.1)
    # 90 s usable at 1 s per epoch, 2 used: 90 epoch-equivalents in the 1000:50:450 ratio.
    refitted = budget.refit(plan, epochs_done=2, seconds_used=2.0, seconds_per_epoch=1.0)
    assert refitted.epochs == (61, 3, 27)
    assert (refitted.batch_size, refitted.steps_per_epoch, refitted.base_lr) == (32, 2, plan.base_lr)
    assert budget.refit(refitted, 2, 2.0, 1.0) is None  # already on time
    slow = budget.refit(plan, epochs_done=2, seconds_used=80.0, seconds_per_epoch=40.0)
    assert slow.epochs == (3, 1, 1)  # at least one more epoch, the floors after


def test_trainer_refits_its_plan_to_the_time_budget(digits64):
    from tsimcne_widgets.engine.recipe import TimeBudget
    from tsimcne_widgets.engine.schedule import StagePlan
    from tsimcne_widgets.engine.trainer import Trainer

    plan = StagePlan.from_total_epochs((40, 2, 18), 64, 32)
    options = {k: v for k, v in TINY.items() if k != "batch_size"}
    trainer = Trainer(digits64, plan, **options, time_budget=TimeBudget(0.01))
    trainer.run()
    assert trainer.plan.epochs == (3, 1, 1)  # far over budget: cut to the floors
    assert trainer.total_epoch == 5 and trainer.step == trainer.plan.total_steps


def test_augmentation_reaches_the_trainer(digits64):
    estimator = TSimCNE(total_epochs=(1,), augmentation={"crop_scale": (0.5, 1.0), "flip_p": 0.0},
                        **TINY).fit(digits64)
    augmenter = estimator.trainer_.augmenter
    assert augmenter.crop_scale == (0.5, 1.0) and augmenter.flip_p == 0.0
    assert augmenter.grayscale_p == 0.2  # the rest stays the paper's


def test_augmentation_also_applies_under_a_time_budget(digits64):
    options = {k: v for k, v in TINY.items() if k not in ("total_epochs",)}
    estimator = TSimCNE(time_budget=3, augmentation={"crop_scale": (0.6, 1.0)},
                        **options).fit(digits64)
    assert estimator.trainer_.augmenter.crop_scale == (0.6, 1.0)


@pytest.mark.parametrize("augmentation, error, pattern", [
    ({"crop": (0.5, 1)}, ValueError, "unknown augmentation setting.*crop_scale"),
    ({"crop_scale": (0.0, 1.0)}, ValueError, "crop_scale"),
    ((0.5, 1.0), TypeError, "dict of Augmenter"),
])
def test_bad_augmentation_is_refused_before_training(digits64, augmentation, error, pattern):
    with pytest.raises(error, match=pattern):
        TSimCNE(total_epochs=(1,), augmentation=augmentation, **TINY).fit(digits64)


def test_the_datas_own_augmentation_is_used_unless_the_user_gives_one(digits64):
    from tsimcne_widgets.data.datasets import DIGITS_AUGMENTATION, make_shapes

    assert digits64.augmentation == DIGITS_AUGMENTATION  # kept through subset()
    trained = TSimCNE(total_epochs=(1,), **TINY).fit(digits64).trainer_.augmenter
    assert trained.flip_p == 0.0 and trained.crop_scale == DIGITS_AUGMENTATION["crop_scale"]
    mine = TSimCNE(total_epochs=(1,), augmentation={"flip_p": 0.5}, **TINY).fit(digits64)
    assert mine.trainer_.augmenter.flip_p == 0.5
    assert mine.trainer_.augmenter.crop_scale == (0.2, 1.0)  # the user's dict replaces the data's
    assert make_shapes(12).augmentation["crop_scale"] == (0.5, 1.0)


def test_prepare_then_adopt_is_fit(fitted, digits64):
    from tsimcne_widgets.engine.trainer import Trainer

    estimator = TSimCNE(total_epochs=(1, 1, 1), **TINY)
    trainer = estimator.prepare(digits64)
    assert isinstance(trainer, Trainer) and trainer.state == "idle"
    assert estimator.trainer_ is trainer and not hasattr(estimator, "embedding_")
    np.testing.assert_array_equal(estimator.labels_, digits64.labels)
    with pytest.raises(RuntimeError, match="has not run yet"):
        estimator.adopt(trainer)
    trainer.start()  # e.g. in the background, as the widget does
    assert trainer.wait(timeout=120) and trainer.state == "finished"
    assert estimator.adopt(trainer) is estimator
    np.testing.assert_array_equal(estimator.embedding_, fitted.embedding_)  # same seed
    assert estimator.n_features_out_ == 2 and estimator.training_size_ == (8, 8)
    # One inference path: the estimator's transform is the trainer's own map.
    np.testing.assert_array_equal(estimator.transform(digits64), trainer.embed())
