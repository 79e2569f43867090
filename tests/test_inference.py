"""Batched network inference (network/inference.py) and the GPU benchmark script's CPU smoke run."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import roma
import torch

from deforhmr_model.network.inference import CPU_BATCH, auto_batch_size, autocast_dtype, predict
from deforhmr_model.network.model import build_model

TINY = dict(depth=2, dim=32, mlp_dim=32, self_heads=2, self_dim_head=8, cross_dim_head=4)
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("def-m", "vit-tiny", **TINY).eval()


def test_predict_matches_forward_and_chunking_does_not_change_results(model):
    crops = torch.randn(5, 3, 256, 192)
    with torch.inference_mode():
        ref = model(crops)
    one = predict(model, crops, precision="fp32", batch_size=1)
    all5 = predict(model, crops, precision="fp32", batch_size=5)
    for a, b in ((one, all5), (all5, ref)):
        for k in ("global_orient", "body_pose", "betas", "pred_cam"):
            assert torch.allclose(getattr(a, k), getattr(b, k).float(), atol=1e-5), k
    assert all5.global_orient.dtype == torch.float32 and all5.global_orient.device.type == "cpu"
    assert all(torch.isfinite(getattr(all5, k)).all() for k in ("global_orient", "body_pose", "betas", "pred_cam"))


def test_bf16_autocast_stays_close_to_fp32(model):
    """bf16 autocast (the CUDA default) on the CPU: the 24 rotations stay within a few degrees of
    fp32 for a random network (the sampling grid and the RPE lookup are fp32)."""
    crops = torch.randn(4, 3, 256, 192)
    ref = predict(model, crops, precision="fp32")
    half = predict(model, crops, precision="bf16")
    rot = lambda p: torch.cat([p.global_orient[:, None], p.body_pose], dim=1)  # noqa: E731
    deg = torch.rad2deg(roma.rotmat_geodesic_distance(rot(half), rot(ref)))
    assert deg.max() < 5.0, deg.max()
    assert torch.allclose(half.pred_cam, ref.pred_cam, atol=0.05)


def test_pure_bf16_weights_keep_fp32_sampling(model):
    """A model cast to bf16 runs (grid_sample gets an fp32 grid and map) and stays near fp32."""
    bf = build_model("def-m", "vit-tiny", **TINY).eval()
    bf.load_state_dict(model.state_dict())
    bf = bf.to(torch.bfloat16)
    crops = torch.randn(2, 3, 256, 192)
    with torch.inference_mode():
        out = bf(crops)
    ref = predict(model, crops, precision="fp32")
    deg = torch.rad2deg(roma.rotmat_geodesic_distance(out.body_pose.float(), ref.body_pose))
    assert deg.max() < 8.0, deg.max()


def test_precision_and_batch_size_errors(model):
    with pytest.raises(ValueError, match="fp16 needs a GPU"):
        autocast_dtype(torch.device("cpu"), "fp16")
    with pytest.raises(ValueError, match="unknown precision"):
        autocast_dtype(torch.device("cpu"), "int8")
    with pytest.raises(ValueError, match="positive integer"):
        predict(model, torch.randn(1, 3, 256, 192), batch_size=0)
    assert auto_batch_size(model) == CPU_BATCH           # memory does not bound batches on the CPU
    empty = predict(model, torch.zeros(0, 3, 256, 192))
    assert empty.body_pose.shape == (0, 23, 3, 3)


def test_gpu_benchmark_script_runs_on_cpu():
    """bench/bench_gpu.py is run on a GPU machine only when one is lent; its CPU smoke mode keeps
    it from rotting in between (no timing is asserted)."""
    out = subprocess.run([sys.executable, str(REPO / "bench" / "bench_gpu.py"), "--smoke",
                          "--sections", "throughput,sdpa,memory"], capture_output=True, text=True, timeout=300,
                         cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "def-m" in out.stdout and "crops/s" in out.stdout
    assert "_scaled_dot_product" in out.stdout          # fused SDPA ran, not the unfused math path
    assert "unfused math path used: no" in out.stdout
