"""The short-run recipe of time budgets: split, learning rates, CPU batch, threads."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tsimcne_widgets.engine.planner import CPU_BATCH_SIZE, plan_for_budget
from tsimcne_widgets.engine.recipe import (
    LONG_RUN_EPOCHS,
    SHORT_RUN_EPOCHS,
    SHORT_RUN_LR_SCALE,
    SHORT_RUN_STAGE3_FACTOR,
    STAGE2_COST,
    TimeBudget,
    budget_epochs,
    budget_recipe,
    equivalent_epochs,
    warmup_epochs_for,
)
from tsimcne_widgets.engine.schedule import StagePlan, default_base_lr

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


def test_the_base_learning_rate_scale_falls_from_short_to_long_runs():
    assert budget_recipe(SHORT_RUN_EPOCHS / 2).lr_scale == pytest.approx(SHORT_RUN_LR_SCALE)
    lengths = np.geomspace(SHORT_RUN_EPOCHS, LONG_RUN_EPOCHS, 6)
    scales = [budget_recipe(e).lr_scale for e in lengths]
    assert all(a > b for a, b in zip(scales, scales[1:])) and scales[-1] == pytest.approx(1.0)


def test_short_runs_raise_the_stage3_learning_rate():
    short = budget_recipe(SHORT_RUN_EPOCHS / 3)
    assert short.lr_factors == (1.0, 1.0, pytest.approx(SHORT_RUN_STAGE3_FACTOR))
    shares = np.array(short.stage_ratio) / sum(short.stage_ratio)
    assert shares[0] > 0.6 and 0.2 < shares[2] < 0.35  # stage 1 keeps most of the run
    # In between, the factor falls monotonically to the paper's 1/1000.
    lengths = np.geomspace(SHORT_RUN_EPOCHS, LONG_RUN_EPOCHS, 6)
    stage3 = [budget_recipe(e).lr_factors[2] for e in lengths]
    assert all(a > b for a, b in zip(stage3, stage3[1:]))
    assert stage3[0] == pytest.approx(SHORT_RUN_STAGE3_FACTOR)
    assert stage3[-1] == pytest.approx(1e-3)


def test_the_recipe_split_works_as_epoch_caps_when_refitting():
    # A TimeBudget takes its caps from the ratio, so the recipe's ratio must be in
    # epochs (rounding shares such as 0.27 would cap stages at 0 epochs).
    ratio = budget_recipe(50).stage_ratio
    plan = StagePlan((20, 2, 8), batch_size=32, steps_per_epoch=2)
    refitted = TimeBudget(100.0, stage_ratio=ratio, overhead_fraction=0.1).refit(
        plan, epochs_done=2, seconds_used=2.0, seconds_per_epoch=1.0
    )
    assert refitted is not None and refitted.epochs[0] > 3 * refitted.epochs[2] / 2
    assert refitted.epochs[2] > 10 and refitted.lr_factors == plan.lr_factors


def test_a_short_cpu_budget_plans_the_recipe():
    choice = plan_for_budget(0.5, 600, 8, "cpu", 512, **TINY)
    plan = choice.plan
    assert plan.batch_size == CPU_BATCH_SIZE  # capped on the CPU: more steps per second
    assert plan.base_lr == pytest.approx(default_base_lr(CPU_BATCH_SIZE) * SHORT_RUN_LR_SCALE)
    assert plan.lr_factors[2] == pytest.approx(SHORT_RUN_STAGE3_FACTOR)
    assert plan.n_stages == 3 and min(plan.epochs) >= 1
    budget = choice.time_budget(100.0)
    assert budget.seconds == 100.0 and budget.stage_ratio == choice.stage_ratio


def test_caller_choices_are_kept():
    fixed_lr = plan_for_budget(0.5, 600, 8, "cpu", 64, learning_rate=0.01, **TINY)
    assert fixed_lr.plan.base_lr == 0.01 and fixed_lr.plan.batch_size == 64
    custom = plan_for_budget(0.5, 600, 8, "cpu", 64, stage_ratio=(10, 1, 10), **TINY)
    assert custom.plan.lr_factors == (1.0, 1.0, 1.0 / 1000.0)
    assert custom.stage_ratio == (10.0, 1.0, 10.0)


def test_one_thread_is_chosen_when_it_trains_faster(monkeypatch):
    # A neighbour holding a core makes torch's threads wait for each other; the planner
    # measures both counts and keeps the faster one.
    import tsimcne_widgets.engine.planner as budget

    timings = []

    def fake_time(backbone, width, resolution, batch, device, hidden_dim, num_threads):
        timings.append(num_threads)
        return 0.01 if num_threads == 1 else 0.05

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(budget, "_time_candidate", fake_time)
    monkeypatch.setattr(budget.torch, "get_num_threads", lambda: 2)
    monkeypatch.setattr(budget, "set_cpu_threads", lambda n: None)
    choice = plan_for_budget(5.0, 600, 8, "cpu", 64, candidates=[("resnet10", 8)], hidden_dim=16)
    assert 1 in timings and choice.num_threads == 1
    # and when all cores are faster, they stay
    monkeypatch.setattr(budget, "_time_candidate",
                        lambda *a: 0.05 if a[-1] == 1 else 0.01)
    assert plan_for_budget(5.0, 600, 8, "cpu", 64, candidates=[("resnet10", 8)],
                           hidden_dim=16).num_threads == 2
    # a caller's thread count is not second-guessed, nor is OMP_NUM_THREADS
    assert plan_for_budget(5.0, 600, 8, "cpu", 64, num_threads=2, **{
        k: v for k, v in TINY.items() if k != "num_threads"}).num_threads == 2
    monkeypatch.setattr(budget, "_time_candidate", fake_time)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert plan_for_budget(5.0, 600, 8, "cpu", 64, candidates=[("resnet10", 8)],
                           hidden_dim=16).num_threads is None


def test_stage_one_is_long_enough_to_refit_on_a_tiny_budget():
    # A stage 1 of one epoch ends before the trainer has measured its speed, and the
    # budget can then never be re-fitted (the flaw behind a 77 s run of a 180 s budget).
    choice = plan_for_budget(1e-3, 600, 8, "cpu", 64, **TINY)
    assert choice.plan.epochs[0] >= 3
    assert choice.plan.epochs[0] >= max(choice.plan.epochs[1:])


def test_the_chosen_network_gets_all_cores_back_when_they_are_faster(monkeypatch):
    # One thread can win on the cheapest network (tiny layers do not parallelise) while
    # the larger network that is finally chosen trains faster on all cores.
    import tsimcne_widgets.engine.planner as budget

    def fake_time(backbone, width, resolution, batch, device, hidden_dim, num_threads):
        single = {8: 0.001, 16: 0.002}[width]
        return single if num_threads == 1 else (0.0015 if width == 8 else 0.0012)

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(budget, "_time_candidate", fake_time)
    monkeypatch.setattr(budget.torch, "get_num_threads", lambda: 2)
    monkeypatch.setattr(budget, "set_cpu_threads", lambda n: None)
    monkeypatch.setattr(budget, "available_cores", lambda: 2)
    choice = plan_for_budget(60.0, 600, 8, "cpu", 64, hidden_dim=16,
                             candidates=[("resnet10", 8), ("resnet10", 16)])
    assert (choice.backbone, choice.width, choice.num_threads) == ("resnet10", 16, 2)


def test_budget_epochs_fill_the_seconds_in_the_ratio_within_the_bounds():
    # 1000 : 50 : 450 at 1 s per full-cost epoch: 1467.5 s hold exactly the paper's run.
    assert equivalent_epochs((1000, 50, 450)) == pytest.approx(LONG_RUN_EPOCHS)
    assert budget_epochs(LONG_RUN_EPOCHS, 1.0, (1000, 50, 450), (1000, 50, 450), (3, 1, 1)) \
        == (1000, 50, 450)
    half = budget_epochs(LONG_RUN_EPOCHS / 2, 1.0, (1000, 50, 450), (1000, 50, 450), (3, 1, 1))
    assert half == (500, 25, 225)
    # caps, then floors: a generous budget stops at the caps, a tiny one keeps the floors
    assert budget_epochs(1e9, 1.0, (10, 1, 5), (10, 1, 5), (3, 1, 1)) == (10, 1, 5)
    assert budget_epochs(0.0, 1.0, (10, 1, 5), (10, 1, 5), (3, 1, 1)) == (3, 1, 1)
    # stage 2 costs STAGE2_COST of a full epoch
    assert equivalent_epochs((0, 100)) == pytest.approx(100 * STAGE2_COST)


def test_warmup_is_a_tenth_of_a_short_stage_and_none_in_stage_two():
    assert warmup_epochs_for((1000, 50, 450)) == (10, 0, 10)
    assert warmup_epochs_for((25, 3, 4)) == (3, 0, 1)
    assert warmup_epochs_for((5,)) == (1, 0, 0)  # three entries, as StagePlan wants
