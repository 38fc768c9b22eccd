"""Tests for ``python -m tsimcne_widgets demo|train``."""

from __future__ import annotations

import csv
import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tsimcne_widgets.engine.checkpoint import load_checkpoint
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


def child_env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))


def read_map(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


def test_demo_writes_map_pictures_and_scores(tmp_path):
    out = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "tsimcne_widgets", "demo", "--out", str(out), "--dataset", "shapes",
         "--n-samples", "120", "--epochs", "1", "1", "1", "--backbone", "resnet10-w8", "--quiet"],
        capture_output=True, text=True, cwd=tmp_path, env=child_env(), timeout=300,
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


def test_map_csv_neutralises_formulas_in_labels(image_writer, tmp_path):
    # Labels come from folder names, which anyone who hands over a folder chooses; the
    # CLI's own CSV writer used to copy them verbatim, so a spreadsheet ran "=1+2".
    data = tmp_path / "images"
    for k, label in enumerate(("=1+2", "@SUM(A1)")):
        for i in range(3):
            image_writer(data / label / f"{i}.png", seed=10 * k + i)
    out = tmp_path / "out"
    assert main(["train", str(data), "--out", str(out), *TINY_TRAIN]) == 0
    rows = read_map(out / "map.csv")
    assert {r["label"] for r in rows} == {"'=1+2", "'@SUM(A1)"}
    assert all(not r["x"].startswith("'") and np.isfinite(float(r["x"])) for r in rows)
    assert all(Path(r["path"]).is_file() for r in rows)
    # Written to a temporary name and renamed: nothing but the three outputs is left.
    assert sorted(p.name for p in out.iterdir()) == ["map.csv", "map.png", "model.pt"]


# 6 images in batches of 2 for 30 epochs: 90 steps, enough that a line per step or per
# epoch would break the bound below.
PROGRESS_TRAIN = ["--epochs", "20", "2", "8", "--batch-size", "2", "--backbone", "resnet10-w8"]


def test_progress_in_a_log_is_a_few_whole_lines(image_folder, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "tsimcne_widgets", "train", str(image_folder),
         "--out", str(tmp_path / "out"), *PROGRESS_TRAIN],
        capture_output=True, text=True, cwd=tmp_path, env=child_env(), timeout=300,
    )
    assert result.returncode == 0, result.stderr
    for stream in (result.stdout, result.stderr):
        assert "\r" not in stream, stream  # tqdm redraws with "\r" about ten times a second
        assert stream.endswith("\n"), stream  # the last line is complete too
    progress = [line for line in result.stderr.splitlines() if line.startswith("t-SimCNE:")]
    # One line per tenth of the steps, per new stage and at the end: at most 10 + 2 + 1.
    assert 3 <= len(progress) <= 13, result.stderr
    assert progress[-1].startswith("t-SimCNE: 90/90 steps (100 %)"), progress
    assert "stage 3" in progress[-1] and "loss" in progress[-1]


def run_with_terminal_stderr(args: list[str], cwd: Path) -> tuple[int, str]:
    """Run ``args`` with stderr on a pseudo-terminal; the return code and what it showed."""
    master, slave = pty.openpty()
    # A new pseudo-terminal is 0 columns wide, and tqdm would fit its bar into that.
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=slave, cwd=cwd,
                               env=child_env())
    os.close(slave)
    chunks: list[bytes] = []

    def drain():  # a full terminal buffer would block the child: read while it runs
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO once the child has closed the terminal
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        process.wait(timeout=300)
    finally:
        process.kill()
        reader.join(timeout=30)
        os.close(master)
    return process.returncode, b"".join(chunks).decode("utf-8", errors="replace")


def test_progress_on_a_terminal_keeps_the_live_bar(image_folder, tmp_path):
    code, shown = run_with_terminal_stderr(
        [sys.executable, "-m", "tsimcne_widgets", "train", str(image_folder),
         "--out", str(tmp_path / "out"), *TINY_TRAIN[:-1]],
        cwd=tmp_path,
    )
    assert code == 0, shown
    # The terminal turns every "\n" into "\r\n"; a bare "\r" is the bar redrawing itself.
    assert re.search(r"\r(?!\n)t-SimCNE", shown), shown
    assert not re.search(r"t-SimCNE: \d+/\d+ steps", shown)  # not the log's lines
