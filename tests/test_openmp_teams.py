"""Training on a background thread keeps its OpenMP workers spinning, not sleeping.

GNU OpenMP keeps one worker team per thread that ran parallel code.  When the teams
together outnumber the cores, it cuts the workers' spin-wait to 100 spins, so they
sleep and wake around every parallel region.  A kernel thread that ran torch once and
then started training in the background hit exactly that; the trainer and the widget
release the starting thread's idle team first (``release_idle_openmp_threads``).

The signal is the process's voluntary context switches while a background thread runs
many short parallel regions: a count, not a timing.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

SCRIPT = r"""
import json, os, resource, threading
import sklearn.neighbors  # loads scikit-learn's own copy of libgomp beside torch's
import torch
from tsimcne_widgets.engine.device import available_cores, release_idle_openmp_threads

# Both teams as wide as the machine: together they outnumber its cores on any machine.
threads = max(2, available_cores())
torch.set_num_threads(threads)
x = torch.randn(2_000_000)

def background_work():
    torch.set_num_threads(threads)
    for _ in range(300):
        x.mul(1.0001)  # one parallel region per call

def switches(mode):
    x.mul(2.0)  # the calling thread now has a team of its own
    if mode == "release" and not release_idle_openmp_threads():
        return None
    before = resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw
    worker = threading.Thread(target=background_work)
    worker.start()
    worker.join()
    return resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw - before

switches("keep"), switches("release")  # warm-up: first allocations, thread creation
print(json.dumps({mode: switches(mode) for mode in ("keep", "release")}))
"""


def test_a_released_team_lets_a_background_thread_spin():
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    counts = json.loads(result.stdout.strip().splitlines()[-1])
    if counts["release"] is None:
        pytest.skip("torch here does not use GNU OpenMP (nothing to release)")
    assert counts["keep"] >= 200, counts  # the workers slept around most of 300 regions
    assert counts["release"] < counts["keep"] / 10, counts


def test_trainer_and_widget_release_the_starting_threads_team(monkeypatch):
    import threading

    import numpy as np

    import tsimcne_widgets.engine.device as runtime
    from tsimcne_widgets.engine.schedule import StagePlan
    from tsimcne_widgets.engine.trainer import Trainer
    from tsimcne_widgets.widget.explorer import Explorer

    # Both start their thread through training_threads.start_training_thread, which
    # must release the team of the thread that calls it (not of the new thread).
    released_on = []
    monkeypatch.setattr(runtime, "release_idle_openmp_threads",
                        lambda: released_on.append(threading.current_thread().name))
    images = np.zeros((8, 8, 8, 3), dtype=np.uint8)
    trainer = Trainer(images, StagePlan.from_total_epochs((1,), 8, 8), backbone="resnet10",
                      backbone_width=8, hidden_dim=16, projection_dim=8, device="cpu")
    assert trainer.start().wait(timeout=120) and trainer.state == "finished"
    assert released_on == [threading.current_thread().name]

    explorer = Explorer(images, total_epochs=(1,), batch_size=8, backbone="resnet10",
                        backbone_width=8, hidden_dim=16, projection_dim=8, device="cpu")
    explorer.start()
    assert explorer.wait(timeout=120) and explorer.state == "finished"
    assert released_on == [threading.current_thread().name] * 2
