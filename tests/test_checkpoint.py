"""Tests for atomic, weights-only checkpoints."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from tsimcne_widgets.engine.augment import Augmenter
from tsimcne_widgets.engine.checkpoint import (
    augmenter_config,
    augmenter_from_config,
    load_checkpoint,
    plan_config,
    plan_from_config,
    save_checkpoint,
    to_plain,
)
from tsimcne_widgets.engine.schedule import StagePlan


def test_round_trip_of_plain_values_arrays_and_tensors(tmp_path):
    state = {
        "config": {"name": "resnet18", "width": None, "ratio": 0.5, "flag": True, "epochs": (3, 1)},
        "weights": torch.arange(6.0).reshape(2, 3),
        "embedding": np.ones((4, 2), np.float32),
        "optimizer": {"state": {0: {"momentum_buffer": torch.zeros(2)}}},
    }
    path = save_checkpoint(tmp_path / "a" / "state.pt", state)
    loaded = load_checkpoint(path)
    plain = torch.load(path, weights_only=True)  # no pickle-code needed
    assert plain["config"] == loaded["config"] == {
        "name": "resnet18", "width": None, "ratio": 0.5, "flag": True, "epochs": [3, 1]
    }
    assert torch.equal(loaded["weights"], state["weights"])
    assert isinstance(loaded["embedding"], torch.Tensor) and loaded["embedding"].shape == (4, 2)
    assert torch.equal(loaded["optimizer"]["state"][0]["momentum_buffer"], torch.zeros(2))
    assert loaded["format"] == 1


def test_objects_are_refused():
    with pytest.raises(TypeError, match="cannot store a Augmenter"):
        to_plain({"augmenter": Augmenter(8)})


def test_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "state.pt"
    save_checkpoint(path, {"value": 1})

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"value": 2})
    assert load_checkpoint(path)["value"] == 1  # the old checkpoint is intact
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]  # no temp file left


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable"):
        load_checkpoint(junk)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(1)}, foreign)
    with pytest.raises(ValueError, match="no 'format'"):
        load_checkpoint(foreign)


def test_refuses_pickled_objects(tmp_path):
    # A file that would need arbitrary unpickling (here a numpy array) is rejected
    # rather than executed.
    path = tmp_path / "pickled.pt"
    torch.save({"format": 1, "object": np.dtype("float32"), "x": np.zeros(2)}, path)
    with pytest.raises(ValueError, match="not a readable"):
        load_checkpoint(path)


def test_plan_and_augmenter_configs_round_trip(tmp_path):
    plan = StagePlan((5, 1, 2), batch_size=32, steps_per_epoch=3, base_lr=0.01, warmup_epochs=(1, 0, 1))
    augmenter = Augmenter((8, 12), crop_scale=(0.5, 1.0), jitter_p=0.3)
    save_checkpoint(tmp_path / "c.pt", {"plan": plan_config(plan), "aug": augmenter_config(augmenter)})
    loaded = load_checkpoint(tmp_path / "c.pt")
    assert plan_from_config(loaded["plan"]) == plan
    rebuilt = augmenter_from_config(loaded["aug"])
    assert repr(rebuilt) == repr(augmenter)
