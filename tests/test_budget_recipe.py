"""The short-run recipe of time budgets: split, learning rates, batch and augmenter."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tsimcne_widgets.augment import Augmenter
from tsimcne_widgets.budget import (
    CPU_BATCH_SIZE,
    LONG_RUN_EPOCHS,
    SHORT_RUN_EPOCHS,
    SHORT_RUN_STAGE3_FACTOR,
    budget_recipe,
    plan_for_budget,
)
from tsimcne_widgets.schedule import default_base_lr

TINY = dict(candidates=[("resnet10", 8)], num_threads=1, hidden_dim=16)


@pytest.fixture(autouse=True, scope="module")
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_a_long_budget_gets_exactly_the_paper_schedule():
    for epochs in (LONG_RUN_EPOCHS, 10 * LONG_RUN_EPOCHS):
        recipe = budget_recipe(epochs)
        assert recipe.stage_ratio == (1000.0, 50.0, 450.0)
        assert recipe.lr_factors == (1.0, 1.0, 1.0 / 1000.0)
        assert recipe.lr_scale == 1.0


def test_short_runs_raise_the_stage3_and_stage1_learning_rates():
    short = budget_recipe(SHORT_RUN_EPOCHS / 3)
    assert short.lr_factors[2] == pytest.approx(SHORT_RUN_STAGE3_FACTOR)
    assert short.lr_scale == pytest.approx(2.0)
    shares = np.array(short.stage_ratio) / sum(short.stage_ratio)
    assert shares[0] > 0.6 and 0.2 < shares[2] < 0.35  # stage 1 keeps most of the run
    # In between, both move monotonically towards the paper's values.
    lengths = np.geomspace(SHORT_RUN_EPOCHS, LONG_RUN_EPOCHS, 6)
    stage3 = [budget_recipe(e).lr_factors[2] for e in lengths]
    scale = [budget_recipe(e).lr_scale for e in lengths]
    assert all(a > b for a, b in zip(stage3, stage3[1:]))
    assert all(a > b for a, b in zip(scale, scale[1:]))
    assert stage3[-1] == pytest.approx(1e-3) and scale[-1] == pytest.approx(1.0)


def test_a_short_cpu_budget_plans_the_recipe():
    choice = plan_for_budget(0.5, 600, 8, "cpu", 512, **TINY)
    plan = choice.plan
    assert plan.batch_size == CPU_BATCH_SIZE  # capped on the CPU: more steps per second
    assert plan.base_lr == pytest.approx(2 * default_base_lr(CPU_BATCH_SIZE))
    assert plan.lr_factors[2] == pytest.approx(SHORT_RUN_STAGE3_FACTOR)
    assert plan.n_stages == 3 and min(plan.epochs) >= 1
    budget = choice.time_budget(100.0)
    assert budget.stage_ratio == choice.stage_ratio and budget.max_epochs == (1000, 50, 450)
    augmenter = choice.augmenter()
    assert isinstance(augmenter, Augmenter) and augmenter.out_size == choice.image_size


def test_caller_choices_are_kept():
    fixed_lr = plan_for_budget(0.5, 600, 8, "cpu", 64, learning_rate=0.01, **TINY)
    assert fixed_lr.plan.base_lr == 0.01 and fixed_lr.plan.batch_size == 64
    custom = plan_for_budget(0.5, 600, 8, "cpu", 64, stage_ratio=(10, 1, 10), **TINY)
    assert custom.plan.lr_factors == (1.0, 1.0, 1.0 / 1000.0)
    assert custom.plan.base_lr == pytest.approx(default_base_lr(64))
    assert custom.stage_ratio == (10.0, 1.0, 10.0)
