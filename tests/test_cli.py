"""Tests for ``python -m tsimcne_widgets demo|train``."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tsimcne_widgets.checkpoint import load_checkpoint
from tsimcne_widgets.cli import main

REPO = Path(__file__).resolve().parents[1]
TINY_TRAIN = ["--epochs", "1", "1", "1", "--batch-size", "4", "--backbone", "resnet10-w8", "--quiet"]


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    # The test machine is shared: competing OpenMP threads slow training down many times.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def read_map(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


def test_demo_writes_map_pictures_and_scores(tmp_path):
    out = tmp_path / "demo"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    result = subprocess.run(
        [sys.executable, "-m", "tsimcne_widgets", "demo", "--out", str(out), "--dataset", "shapes",
         "--n-samples", "120", "--epochs", "1", "1", "1", "--backbone", "resnet10-w8", "--quiet"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    rows = read_map(out / "map.csv")
    assert len(rows) == 120 and list(rows[0]) == ["index", "x", "y", "label"]
    assert [int(r["index"]) for r in rows] == list(range(120))
    assert np.isfinite([[float(r["x"]), float(r["y"])] for r in rows]).all()
    assert {r["label"] for r in rows} >= {"circle", "square"}
    for name in ("map.png", "pixel_tsne.png"):
        with Image.open(out / name) as picture:
            assert picture.format == "PNG" and picture.width > 100
    assert "15-NN accuracy" in result.stdout and "pixel t-SNE" in result.stdout


def test_train_writes_outputs_and_resumes_from_its_checkpoint(image_folder, tmp_path, capsys):
    out, checkpoint = tmp_path / "out", tmp_path / "run.ckpt"
    args = ["train", str(image_folder), "--out", str(out), "--checkpoint", str(checkpoint), *TINY_TRAIN]
    assert main(args) == 0
    rows = read_map(out / "map.csv")
    assert len(rows) == 6 and {r["label"] for r in rows} == {"cat", "dog"}
    assert all(Path(r["path"]).is_file() for r in rows)
    assert (out / "map.png").is_file() and torch.load(out / "model.pt", weights_only=True)["kind"] == "model"
    assert load_checkpoint(checkpoint)["stage"] == 3
    first = [(r["x"], r["y"]) for r in rows]
    capsys.readouterr()
    assert main(args) == 0  # the finished checkpoint resumes straight to the end
    assert "resuming from" in capsys.readouterr().out
    assert [(r["x"], r["y"]) for r in read_map(out / "map.csv")] == first


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "no/such/folder", "--out", "x"], "does not exist"),
        (["train", "{folder}", "--out", "{out}", "--backbone", "vgg", *TINY_TRAIN[:4]], "unknown backbone"),
        (["train", "{folder}", "--out", "{out}", "--epochs", "1", "2", "3", "4"], "total_epochs"),
        (["train", "{folder}", "--out", "{out}", "--device", "tpu"], "device"),
    ],
    ids=["missing-data", "backbone", "epochs", "device"],
)
def test_user_errors_exit_2_without_traceback(args, message, image_folder, tmp_path, capsys):
    args = [a.format(folder=image_folder, out=tmp_path / "out") for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["demo"])  # --out missing
    assert exit_info.value.code == 2
    assert "--out" in capsys.readouterr().err
