"""A checkpoint resumes with a different number of processes (gloo on the CPU).

One process trains epochs [2, 1, 2] from scratch and keeps a copy of its checkpoint at
the end of stage 1: that run's map is the reference.  Then, in two gloo processes, the
1-process checkpoint is resumed to the end, and a fresh 2-process run stops at the end
of stage 1; its checkpoint (written by rank 0 only) is resumed here in one process.
Both continue from the saved epoch with the same global batch and end on the map of
the uninterrupted run.
"""
from __future__ import annotations

import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402

EPOCHS = [2, 1, 2]
BATCH = 8
N = 24


def _images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (N, 16, 16, 3), dtype=np.uint8)


def _estimator(checkpoint=None):
    from tsimcne_widgets.engine.estimator import TSimCNE

    return TSimCNE(total_epochs=EPOCHS, batch_size=BATCH, backbone="resnet10", backbone_width=8,
                   hidden_dim=32, device="cpu", random_state=0, verbose=False, num_threads=1,
                   checkpoint_path=checkpoint)


def _end_of_stage_1(snapshot) -> bool:
    return snapshot.stage == 1 and snapshot.epoch == snapshot.epochs_in_stage


def _pair_worker(rank: int, world: int, port: int, folder: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    try:
        # 1 -> 2: continue the one-process checkpoint in two processes.  Both ranks are
        # told to keep updating a checkpoint (as the CLI's resume does); only rank 0 may.
        estimator = _estimator(f"{folder}/resumed-rank{rank}.ckpt")
        estimator.resume(_images(), f"{folder}/one.ckpt")
        trainer = estimator.trainer_
        if rank == 0:
            np.save(f"{folder}/one_then_two.npy", estimator.embedding_)
            torch.save({"step": trainer.step, "batch_size": trainer.plan.batch_size,
                        "losses": trainer.losses, "state": trainer.state},
                       f"{folder}/one_then_two.pt")
        # 2 -> 1: a fresh two-process run stopped at the end of stage 1.
        _estimator(f"{folder}/two-rank{rank}.ckpt").fit(_images(), callbacks=[_end_of_stage_1])
    finally:
        dist.destroy_process_group()


def test_resume_with_a_different_number_of_processes(tmp_path, free_port):
    from tsimcne_widgets.engine.checkpoint import load_checkpoint

    def keep_stage_1(snapshot):
        if _end_of_stage_1(snapshot):  # the checkpoint is written just before this call
            shutil.copy(tmp_path / "ref.ckpt", tmp_path / "one.ckpt")

    torch.set_num_threads(1)
    reference = _estimator(tmp_path / "ref.ckpt").fit(_images(), callbacks=[keep_stage_1])
    ref_map, ref_trainer = reference.embedding_, reference.trainer_
    saved = load_checkpoint(tmp_path / "one.ckpt")
    assert (saved["stage"], saved["epoch"]) == (1, EPOCHS[0])

    mp.spawn(_pair_worker, args=(2, free_port, str(tmp_path)), nprocs=2, join=True)
    scale = float(np.abs(ref_map).max())

    # 1 -> 2: continued from epoch 2, in global batches of 8, to the reference's end.
    pair = torch.load(tmp_path / "one_then_two.pt")
    assert pair["state"] == "finished" and pair["batch_size"] == BATCH
    assert pair["step"] == ref_trainer.step == sum(EPOCHS) * (N // BATCH)
    assert pair["losses"][:EPOCHS[0]] == ref_trainer.losses[:EPOCHS[0]]  # from the file
    np.testing.assert_allclose(pair["losses"], ref_trainer.losses, rtol=1e-3)
    np.testing.assert_allclose(np.load(tmp_path / "one_then_two.npy"), ref_map, atol=1e-2 * scale)
    assert (tmp_path / "resumed-rank0.ckpt").exists()
    assert not (tmp_path / "resumed-rank1.ckpt").exists(), "only rank 0 writes checkpoints"

    # 2 -> 1: the two-process checkpoint, saved at the end of stage 1, resumed alone.
    assert not (tmp_path / "two-rank1.ckpt").exists()
    saved = load_checkpoint(tmp_path / "two-rank0.ckpt")
    assert (saved["stage"], saved["epoch"], saved["step"]) == (1, EPOCHS[0], EPOCHS[0] * N // BATCH)
    alone = _estimator().resume(_images(), tmp_path / "two-rank0.ckpt")
    assert alone.trainer_.step == ref_trainer.step and alone.trainer_.plan.batch_size == BATCH
    np.testing.assert_allclose(alone.trainer_.losses, ref_trainer.losses, rtol=1e-3)
    np.testing.assert_allclose(alone.embedding_, ref_map, atol=1e-2 * scale)
