"""Two CPU processes (gloo) train like one process on the same global batch."""
from __future__ import annotations

import copy
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402

from tsimcne_widgets.engine import distributed  # noqa: E402

GLOBAL_BATCH = 8


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _step_worker(rank: int, world: int, port: int, out: str) -> None:
    from tsimcne_widgets.engine.augment import Augmenter
    from tsimcne_widgets.engine.loss import cauchy_infonce
    from tsimcne_widgets.engine.models import TSimCNENet, build_backbone

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    try:
        torch.manual_seed(0)
        backbone, width = build_backbone("resnet10", 8)
        model = TSimCNENet(backbone, width, hidden_dim=32, out_dim=16)
        reference = copy.deepcopy(model)
        images = torch.randint(0, 256, (GLOBAL_BATCH, 3, 16, 16), dtype=torch.uint8,
                               generator=torch.Generator().manual_seed(1))
        augmenter = Augmenter((16, 16))

        # One process, the whole global batch, BatchNorm over all 2B views.
        views = augmenter(torch.cat([images, images]), torch.Generator().manual_seed(2))
        z = reference.head(reference.features(views))
        ref_loss = cauchy_infonce(z[:GLOBAL_BATCH], z[GLOBAL_BATCH:])
        ref_loss.backward()

        # This rank's share, through the helpers the trainer uses.
        model = distributed.prepare_model(model)
        mine = distributed.shard_batch(torch.arange(GLOBAL_BATCH))
        assert len(mine) == GLOBAL_BATCH // world
        local = distributed.augment_shard(augmenter, images[mine], torch.Generator().manual_seed(2))
        np.testing.assert_array_equal(  # the very views one process made for these images
            local[:len(mine)].numpy(), views[mine].numpy())
        z_local = model.head(model.features(local))
        b = len(mine)
        loss = distributed.global_cauchy_infonce(z_local[:b], z_local[b:])
        local_only = cauchy_infonce(z_local[:b], z_local[b:])
        loss.backward()
        distributed.average_gradients(model.parameters())

        grads = {n: p.grad for n, p in model.named_parameters()}
        ref_grads = {n: p.grad for n, p in reference.named_parameters()}
        # Against the scale of the whole gradient: a few parameters (the head's last bias,
        # as the loss ignores translations of the map) have a true gradient of ~0.
        scale = max(float(g.abs().max()) for g in ref_grads.values())
        worst = max(float((grads[n] - ref_grads[n]).abs().max()) for n in ref_grads) / scale
        stats = max(float((a - b).abs().max()) for a, b in zip(model.buffers(), reference.buffers()))
        torch.save({"loss": loss.item(), "ref_loss": ref_loss.item(), "local_only": local_only.item(),
                    "worst_relative_grad": worst, "buffer_diff": stats}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_first_step_loss_and_gradients_equal_one_process(tmp_path):
    mp.spawn(_step_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        result = torch.load(tmp_path / f"rank{rank}.pt")
        assert result["loss"] == pytest.approx(result["ref_loss"], rel=1e-5)
        # Without the gathered negatives the loss would differ: the test can tell.
        assert abs(result["local_only"] - result["ref_loss"]) > 1e-3
        assert result["worst_relative_grad"] < 1e-4
        assert result["buffer_diff"] < 1e-5  # BatchNorm running statistics as one process


def test_helpers_are_plain_single_process_operations():
    assert distributed.context() is None and distributed.is_main_process()
    indices = torch.arange(6)
    assert distributed.shard_batch(indices) is indices
    z_a, z_b = torch.randn(4, 2), torch.randn(4, 2)
    from tsimcne_widgets.engine.loss import cauchy_infonce

    assert torch.equal(distributed.global_cauchy_infonce(z_a, z_b), cauchy_infonce(z_a, z_b))
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    assert distributed.prepare_model(model) is model
    assert type(model[1]) is torch.nn.BatchNorm2d
    with pytest.raises(ValueError, match="divisible by 3"):
        distributed._check_divisible(8, 3)


def _train(tmp_path: Path, folder: Path, name: str, nproc: int | None) -> pd.DataFrame:
    """``train`` one process (here) or ``nproc`` under torchrun; the map it wrote."""
    out = tmp_path / name
    args = ["train", str(folder), "--out", str(out), "--epochs", "2", "1", "1",
            "--batch-size", "8", "--backbone", "resnet10-w8", "--image-size", "16",
            "--device", "cpu", "--quiet", "--snapshots", str(out / "snapshots")]
    if nproc is None:  # in this process: one interpreter start less on a 2-core CI runner
        from tsimcne_widgets.cli import main

        assert main(args) == 0
    else:
        command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
                   "--master_addr=127.0.0.1", f"--master_port={_free_port()}",
                   "-m", "tsimcne_widgets", *args]
        done = subprocess.run(command, env=dict(os.environ, OMP_NUM_THREADS="1"),
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    assert (out / "model.pt").exists() and (out / "map.png").exists()
    assert len(list((out / "snapshots").glob("*.npy"))) >= 1
    return pd.read_csv(out / "map.csv")


def test_two_process_run_writes_the_map_one_process_would(tmp_path, image_writer):
    folder = tmp_path / "images"
    for i in range(24):
        image_writer(folder / ("a" if i % 2 else "b") / f"{i:02d}.png", size=(16, 16), seed=i)
    alone = _train(tmp_path, folder, "alone", None)
    pair = _train(tmp_path, folder, "pair", 2)
    assert len(pair) == 24 and list(pair["path"]) == list(alone["path"])
    # Same views, global loss, global BatchNorm, averaged gradients: the same training,
    # up to the order of floating-point sums across two processes.
    np.testing.assert_allclose(pair[["x", "y"]].to_numpy(), alone[["x", "y"]].to_numpy(),
                               atol=1e-2 * float(np.abs(alone[["x", "y"]].to_numpy()).max()))
