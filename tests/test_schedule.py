"""Tests for the per-stage learning-rate schedule."""


import numpy as np
import pytest

from tsimcne_widgets.engine.schedule import StagePlan, default_base_lr


@pytest.fixture
def plan():
    return StagePlan((40, 6, 20), batch_size=256, steps_per_epoch=3)


def test_defaults_follow_the_paper(plan):
    assert plan.base_lr == pytest.approx(0.03)
    assert StagePlan((1, 1, 1), batch_size=512, steps_per_epoch=1).base_lr == pytest.approx(0.06)
    assert plan.stage_lr(1) == pytest.approx(0.03)
    assert plan.stage_lr(2) == pytest.approx(0.03)
    assert plan.stage_lr(3) == pytest.approx(0.03 / 1000)
    assert plan.warmup_epochs == (10, 0, 10)
    assert plan.total_epochs == 66
    assert plan.total_steps == 66 * 3


@pytest.mark.parametrize("stage", [1, 3])
def test_warmup_rises_linearly_to_the_stage_lr(plan, stage):
    warmup = plan.warmup_steps(stage)
    assert warmup == 10 * 3
    lrs = [plan.lr_at(stage, step) for step in range(warmup)]
    assert lrs[0] == pytest.approx(plan.stage_lr(stage) / warmup)
    assert lrs[-1] == pytest.approx(plan.stage_lr(stage))
    steps = [b - a for a, b in zip(lrs, lrs[1:])]
    assert all(s == pytest.approx(steps[0]) for s in steps)


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_cosine_midpoint_and_end(plan, stage):
    warmup = plan.warmup_steps(stage)
    n_steps = plan.stage_steps(stage)
    decay = n_steps - warmup
    # The cosine starts at the last warm-up step (or just before step 0) and ends at the
    # last step, so its midpoint lies half the decay steps after that start.
    if decay % 2 == 0:
        midpoint = warmup - 1 + decay // 2
        assert plan.lr_at(stage, midpoint) == pytest.approx(0.5 * plan.stage_lr(stage))
    assert plan.lr_at(stage, n_steps - 1) == pytest.approx(0.0, abs=1e-12)
    lrs = [plan.lr_at(stage, s) for s in range(warmup, n_steps)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_stage_two_has_no_warmup(plan):
    assert plan.warmup_steps(2) == 0
    first = plan.lr_at(2, 0)
    assert plan.stage_lr(2) * 0.99 < first <= plan.stage_lr(2)


def test_stage_three_is_a_thousandth(plan):
    peak = max(plan.lr_at(3, s) for s in range(plan.stage_steps(3)))
    assert peak == pytest.approx(plan.stage_lr(1) / 1000)


def test_int_and_short_epoch_lists():
    single = StagePlan(5, batch_size=64, steps_per_epoch=2)
    assert single.epochs == (5,)
    assert single.n_stages == 1
    assert single.warmup_epochs == (5,)  # clipped to the stage length
    assert single.lr_at(1, 9) == pytest.approx(single.stage_lr(1))
    two = StagePlan([30, 4], batch_size=64, steps_per_epoch=2)
    assert two.epochs == (30, 4)
    assert two.lr_factors == (1.0, 1.0)
    with pytest.raises(ValueError, match="stage must be 1..2"):
        two.lr_at(3, 0)


def test_locate_maps_global_steps(plan):
    assert plan.locate(0) == (1, 0)
    assert plan.locate(plan.stage_start(2)) == (2, 0)
    assert plan.locate(plan.stage_start(2) - 1) == (1, plan.stage_steps(1) - 1)
    assert plan.locate(plan.total_steps - 1) == (3, plan.stage_steps(3) - 1)
    with pytest.raises(ValueError):
        plan.locate(plan.total_steps)


def test_from_total_epochs_counts_steps():
    plan = StagePlan.from_total_epochs((4, 1, 2), n_images=1000, batch_size=256)
    assert plan.steps_per_epoch == 3
    assert plan.base_lr == pytest.approx(default_base_lr(256))
    kept = StagePlan.from_total_epochs(4, n_images=1000, batch_size=256, drop_last=False)
    assert kept.steps_per_epoch == 4
    small = StagePlan.from_total_epochs(4, n_images=100, batch_size=512)
    assert (small.batch_size, small.steps_per_epoch) == (100, 1)
    with pytest.raises(ValueError, match="at least 2 images"):
        StagePlan.from_total_epochs(4, n_images=1, batch_size=512)


@pytest.mark.parametrize(
    "epochs, message",
    [((), "1 to 3 stages"), ((1, 2, 3, 4), "1 to 3 stages"), ((10, 0, 5), "at least 1 epoch")],
)
def test_bad_epochs_raise(epochs, message):
    with pytest.raises(ValueError, match=message):
        StagePlan(epochs, batch_size=8, steps_per_epoch=1)


def test_out_of_range_step_raises(plan):
    with pytest.raises(ValueError, match="step_in_stage"):
        plan.lr_at(1, plan.stage_steps(1))



def test_one_epoch_normaliser_for_plans_estimators_and_the_widget():
    from tsimcne_widgets.engine.schedule import epoch_tuple

    assert epoch_tuple(5) == (5,)
    assert epoch_tuple(np.array([3, 1, 1])) == (3, 1, 1)
    assert epoch_tuple([np.int64(2), 1.0]) == (2, 1)
    for bad, error, pattern in [
        (True, TypeError, "total_epochs must be an int"),
        ("100", TypeError, "total_epochs must be an int"),
        ((1, "a"), TypeError, "total_epochs must be an int"),
        ((), ValueError, "total_epochs needs 1 to 3 stages"),
        (1.5, ValueError, "total_epochs must be whole numbers"),
        ((10, 0, 5), ValueError, "at least 1 epoch: total_epochs"),
    ]:
        with pytest.raises(error, match=pattern):
            epoch_tuple(bad, "total_epochs")


@pytest.mark.parametrize("total", [1, 2, 3, 10, 150, 1499, 1500, 10_000])
def test_scaled_epochs_keep_the_ratio_and_the_total(total):
    from tsimcne_widgets.engine.schedule import scale_epochs

    epochs = scale_epochs((1000, 50, 450), total)
    assert sum(epochs) == max(total, 3) and min(epochs) >= 1
    if total >= 150:
        assert epochs[0] / sum(epochs) == pytest.approx(1000 / 1500, abs=0.01)
