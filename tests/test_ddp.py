"""Distributed data parallel on CPU (gloo): two processes with half the global batch each take
the same optimiser step as one process with the whole batch, and gradient accumulation
matches a single large micro batch (``deforhmr_model.train.loader.BatchPlan``)."""
from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from .test_train import EASY, TINY

GLOBAL_BATCH = 8


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from deforhmr_model.body.model import BodyModel, load_body_data
    from deforhmr_model.body.joints import J24Regressor
    from deforhmr_model.body.smpl_io import write_body_npz
    from deforhmr_model.train.synthetic import SynthConfig, generate
    from .train_helpers import tiny_body_arrays
    root = tmp_path_factory.mktemp("ddp")
    body_file = write_body_npz(root / "body.npz", tiny_body_arrays(), meta={"id": "tiny_body"})
    body = BodyModel(load_body_data(body_file))
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    npz = generate(root / "d", body, J24Regressor(body.face_vertex_ids), SynthConfig(num_samples=24, seed=3, **EASY))
    torch.set_num_threads(n)
    return root, body_file, npz


def _train(out: str, body_file: str, npz: str, world: int = 1, rank: int = 0, accum: int = 1) -> dict:
    """Two optimiser steps (AdamW, augmentation on, image mode); returns the decoder state."""
    from deforhmr_model.body.model import BodyModel, load_body_data
    from deforhmr_model.body.joints import J24Regressor
    from deforhmr_model.network.model import build_model
    from deforhmr_model.train.augment import AugConfig
    from deforhmr_model.datasets.readers import NpzSource
    from deforhmr_model.train.distributed import DistInfo
    from deforhmr_model.train.mixing import MixedSource
    from deforhmr_model.train.trainer import TrainConfig, Trainer
    torch.set_num_threads(1)
    body = BodyModel(load_body_data(body_file))
    torch.manual_seed(0)
    model = build_model("def-m", "vit-tiny", **TINY)
    cfg = TrainConfig(out_dir=out, epochs=5, global_batch=GLOBAL_BATCH, accum=accum, lr=1e-3, seed=4,
                      aug=AugConfig(enabled=True), ckpt_every=0, max_steps=2, progress=False, log_every=1,
                      zero_init_readout=False)
    trainer = Trainer(cfg, model, body, J24Regressor(body.face_vertex_ids), MixedSource([NpzSource(npz)]),
                      dist=DistInfo(rank=rank, world=world))
    trainer.fit()
    return {k: v.detach().clone() for k, v in model.smpl_head.state_dict().items()}


def _worker(rank: int, world: int, port: int, out: str, body_file: str, npz: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    from deforhmr_model.train.distributed import init_distributed, shutdown
    init_distributed("cpu")
    try:
        state = _train(out, body_file, npz, world=world, rank=rank)
        torch.save(state, os.path.join(out, f"state-rank{rank}.pt"))
    finally:
        shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_ddp_matches_one_process(data, tmp_path):
    root, body_file, npz = data
    single = _train(str(tmp_path / "single"), str(body_file), str(npz))
    out = tmp_path / "ddp"
    out.mkdir()
    mp.spawn(_worker, args=(2, _free_port(), str(out), str(body_file), str(npz)), nprocs=2, join=True)
    # Adam moves each weight by ~lr (1e-3) per step whatever the gradient's size, so a DDP bug
    # (unsynchronised or unaveraged gradients) shows as ~1e-3; summation order alone gives ~1e-5
    # on some CPUs (all-reduce adds the two halves' gradients, one process adds all samples).
    states = [torch.load(out / f"state-rank{rank}.pt", weights_only=True) for rank in (0, 1)]
    for k in single:
        assert torch.equal(states[0][k], states[1][k]), k          # the ranks stay identical
    for rank, ddp in enumerate(states):
        for k, v in single.items():
            assert torch.allclose(ddp[k], v, rtol=0, atol=1e-4), (rank, k, (ddp[k] - v).abs().max())
        print("max DDP diff", rank, max(float((ddp[k] - v).abs().max()) for k, v in single.items()))
    init = _initial_head()
    assert any(not torch.equal(single[k], init[k]) for k in single)     # the step did change the weights


def test_gradient_accumulation_matches_one_micro_batch(data, tmp_path):
    root, body_file, npz = data
    one = _train(str(tmp_path / "a1"), str(body_file), str(npz), accum=1)
    two = _train(str(tmp_path / "a2"), str(body_file), str(npz), accum=2)
    for k, v in one.items():
        # same bound as the DDP test: a wrong accumulation (unscaled or dropped micro-batch) is ~lr
        assert torch.allclose(two[k], v, rtol=0, atol=1e-4), (k, (two[k] - v).abs().max())
    print("max accumulation diff", max(float((two[k] - v).abs().max()) for k, v in one.items()))


def _initial_head() -> dict:
    from deforhmr_model.network.model import build_model
    torch.manual_seed(0)
    return build_model("def-m", "vit-tiny", **TINY).smpl_head.state_dict()
