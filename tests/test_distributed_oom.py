"""Out of memory in one of two gloo processes: every process fails, none hangs.

Alone, an out-of-memory step runs trial steps to find a batch size that fits.  Under
torchrun those trials would run collectives that the other processes (waiting in the
step's own collectives) never join: before the fix the failing rank spent its whole
collective timeout there and answered with a per-process batch size.  Now it fails at
once with the global picture, and the others see it leave instead of waiting.
"""
from __future__ import annotations

import datetime
import json
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402

TIMEOUT_S = 60  # the collectives' timeout: a hang would last this long


def _worker(rank: int, world: int, port: int, out: str) -> None:
    from tsimcne_widgets.engine.estimator import TSimCNE

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world, timeout=datetime.timedelta(seconds=TIMEOUT_S))
    images = np.random.default_rng(0).integers(0, 256, (32, 16, 16, 3), dtype=np.uint8)
    estimator = TSimCNE(total_epochs=[2, 1, 1], batch_size=8, backbone="resnet10",
                        backbone_width=8, hidden_dim=32, device="cpu", random_state=0,
                        verbose=False, num_threads=1)
    trainer = estimator.prepare(images)
    outcome = {}
    if rank == 1:  # the third forward pass of this process runs out of memory
        features, calls = trainer.model.features, [0]

        def failing(x):
            calls[0] += 1
            if calls[0] == 3:
                outcome["out_of_memory_at"] = time.time()
                raise torch.OutOfMemoryError("CPU out of memory (forced by the test)")
            return features(x)

        trainer.model.features = failing
    try:
        trainer.run()
        outcome["error"] = None
    except Exception as exc:  # noqa: BLE001 - reported to the test
        outcome["error"] = f"{type(exc).__name__}: {exc}"
    outcome.update(ended_at=time.time(), state=trainer.state)
    with open(f"{out}/rank{rank}.json", "w") as handle:
        json.dump(outcome, handle)


def test_out_of_memory_in_one_process_fails_every_process(tmp_path, free_port):
    mp.spawn(_worker, args=(2, free_port, str(tmp_path)), nprocs=2, join=True)
    failed = json.loads((tmp_path / "rank1.json").read_text())
    other = json.loads((tmp_path / "rank0.json").read_text())
    assert failed["state"] == other["state"] == "failed"
    assert ("TrainingError: out of memory in process 1 of 2 at 4 images per process (global "
            "batch 8); restart every process with a smaller --batch-size") in failed["error"]
    assert other["error"] and "out of memory" not in other["error"]  # it saw rank 1 leave
    # Neither waited for the collectives' timeout: the failing process answered at once
    # (it used to spend the timeout in trial steps), the other once that one had left.
    oom = failed["out_of_memory_at"]
    assert failed["ended_at"] - oom < 10, failed
    assert other["ended_at"] - oom < 0.75 * TIMEOUT_S, (failed, other)
