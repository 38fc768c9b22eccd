"""Out-of-memory search through a step callable (engine/memory.py), without a trainer.

A real out-of-memory error needs a GPU; the steps here raise torch's own error above a
batch size, as the device would.  The end-to-end case (a trainer on a network that runs
out of memory) is in test_reliability.py.
"""

from __future__ import annotations

import pytest
import torch

from tsimcne_widgets.engine.memory import (
    SMALLEST_BATCH,
    explain_out_of_memory,
    largest_fitting_batch,
    preserved_state,
)

CPU = torch.device("cpu")


def fits_up_to(limit: int, calls: list[int]):
    def step(batch_size: int) -> None:
        calls.append(batch_size)
        if batch_size > limit:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory at {batch_size} (simulated)")
    return step


def test_the_search_halves_until_a_step_fits_and_releases_after_each_failure():
    calls, released = [], []
    found, tried = largest_fitting_batch(fits_up_to(40, calls), 256, CPU,
                                         release=lambda: released.append(True))
    assert (found, tried) == (32, [128, 64, 32]) and calls == tried
    assert len(released) == 2  # after the two failed trials

    found, tried = largest_fitting_batch(fits_up_to(1, []), 64, CPU)
    assert found is None and tried[-1] == SMALLEST_BATCH
    found, tried = largest_fitting_batch(fits_up_to(1, []), 4096, CPU, max_trials=3)
    assert found is None and tried == [2048, 1024, 512]


def test_other_errors_of_a_step_are_not_taken_for_lack_of_memory():
    def broken(batch_size):
        raise ValueError("a bug, not memory")

    with pytest.raises(ValueError, match="a bug"):
        largest_fitting_batch(broken, 64, CPU)
    assert explain_out_of_memory(ValueError("x"), 64, CPU, broken) is None


def test_the_message_names_the_batch_that_fits_or_says_none_did():
    error = torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
    message = explain_out_of_memory(error, 256, CPU, fits_up_to(100, []))
    assert "at batch size 256" in message and message.endswith("batch_size=64")
    message = explain_out_of_memory(error, 256, CPU, fits_up_to(1, []))
    assert f"not even a batch of {SMALLEST_BATCH} fitted" in message
    assert "retry with batch_size=" not in message


def test_trial_passes_leave_the_network_as_it_was():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4)).eval()
    before = {name: value.clone() for name, value in model.state_dict().items()}
    with preserved_state(model):
        model.train()
        model(torch.randn(8, 4) * 5 + 3).sum().backward()  # moves BatchNorm's statistics
        assert model[1].num_batches_tracked == 1 and model[0].weight.grad is not None
    assert not model.training and model[0].weight.grad is None
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name
