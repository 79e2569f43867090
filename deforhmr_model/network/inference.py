"""Batched network inference: precision, batch size from free memory, chunked forward.

The main job hands the network every person crop of every image at once; this module turns that
into device-sized chunks:

* :func:`autocast_dtype` picks the compute precision: ``"auto"`` is bf16 autocast on CUDA (fp32
  weights, matrix products in bf16; the deformable sampling grid and the RPE lookup stay fp32,
  see :mod:`deforhmr_model.network.deformable_attention`), fp32 on the CPU and on MPS.
* :func:`auto_batch_size` measures the activation memory of one crop once per (model, device,
  precision) with a small probe forward and fills a fraction of the memory the device reports as
  free (``torch.cuda.mem_get_info``). On the CPU it returns :data:`CPU_BATCH` (larger batches do
  not run faster there and only raise peak memory).
* :func:`predict` runs the chunks under ``torch.inference_mode`` and returns float32 CPU tensors.

Small cards: ComfyUI's model management keeps the weights on its offload device (CPU) and loads
them when a node needs them (``nodes/host.make_patcher``); outside ComfyUI a model that does not
fit stays on the CPU (``--device cpu``).
"""
from __future__ import annotations

import contextlib
import weakref
from dataclasses import dataclass

import torch

from deforhmr_model.network.model import DeforHMR, HMROutput

CPU_BATCH = 8             # crops per forward on the CPU
MAX_BATCH = 512           # upper bound of an automatic GPU batch
MEMORY_FRACTION = 0.6     # share of the free device memory an automatic batch may fill
_PROBE_BATCH = 4
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

# activation bytes per crop, per model and (device, dtype): weak keys, so an entry goes with its
# model (an id() key could be reused by a later model and give it a stale size)
_per_crop_bytes: "weakref.WeakKeyDictionary[torch.nn.Module, dict]" = weakref.WeakKeyDictionary()


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device`` (None = plain fp32).

    Args:
        device: the torch device the model runs on.
        precision: "auto" (bf16 on CUDA, else fp32), "fp32", "bf16" or "fp16".
    Raises:
        ValueError: an unknown precision, or fp16 on the CPU (no CPU half kernels for every op).
    """
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose auto, fp32, bf16 or fp16")
    if precision == "fp16" and device.type == "cpu":
        raise ValueError("precision fp16 needs a GPU; use fp32 or bf16 on the CPU")
    return None if precision == "fp32" else PRECISIONS[precision]


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def auto_batch_size(model: DeforHMR, precision: str = "auto", fraction: float = MEMORY_FRACTION) -> int:
    """Crops per forward that fit ``fraction`` of the device's free memory.

    Args:
        model: a :class:`DeforHMR` on its device, in eval mode.
        precision: as :func:`autocast_dtype`.
        fraction: share of the free memory (bytes reported by ``torch.cuda.mem_get_info``) to fill.
    Returns:
        int in [1, MAX_BATCH] on CUDA; :data:`CPU_BATCH` elsewhere.
    """
    device = _model_device(model)
    if device.type != "cuda":
        return CPU_BATCH
    dtype = autocast_dtype(device, precision)
    sizes = _per_crop_bytes.setdefault(model, {})
    key = (str(device), dtype)
    if key not in sizes:
        h, w = model.backbone.img_size
        x = torch.zeros(_PROBE_BATCH, 3, h, w, device=device)
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        with torch.inference_mode(), _autocast(device, dtype):
            model(x)
        torch.cuda.synchronize(device)
        sizes[key] = max(1, (torch.cuda.max_memory_allocated(device) - base) // _PROBE_BATCH)
    free, _total = torch.cuda.mem_get_info(device)
    return int(max(1, min(MAX_BATCH, free * fraction // sizes[key])))


@dataclass
class Prediction:
    """Float32 CPU tensors for N crops (see :class:`~deforhmr_model.network.model.HMROutput`):
    global_orient (N,3,3), body_pose (N,23,3,3), betas (N,10), pred_cam (N,3) weak-perspective
    (s, tx, ty) in normalised crop units."""

    global_orient: torch.Tensor
    body_pose: torch.Tensor
    betas: torch.Tensor
    pred_cam: torch.Tensor


def predict(model: DeforHMR, crops: torch.Tensor, precision: str = "auto",
            batch_size: int | str = "auto") -> Prediction:
    """Run the network over crops in chunks.

    Args:
        model: a :class:`DeforHMR` in eval mode (its device is used).
        crops: (N, 3, 256, 192) float32 ImageNet-normalised RGB crops, any device.
        precision: as :func:`autocast_dtype`.
        batch_size: crops per forward, or "auto" (:func:`auto_batch_size`).
    Returns:
        :class:`Prediction` with N rows (float32, CPU).
    Raises:
        ValueError: bad precision or batch size.
    """
    device = _model_device(model)
    dtype = autocast_dtype(device, precision)
    if batch_size == "auto":
        batch_size = auto_batch_size(model, precision)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer or 'auto', got {batch_size!r}")
    outs: list[HMROutput] = []
    with torch.inference_mode(), _autocast(device, dtype):
        for start in range(0, crops.shape[0], batch_size):
            x = crops[start:start + batch_size].to(device, non_blocking=True)
            outs.append(model(x))
    if not outs:
        return Prediction(torch.zeros(0, 3, 3), torch.zeros(0, 23, 3, 3), torch.zeros(0, 10), torch.zeros(0, 3))
    cat = lambda name: torch.cat([getattr(o, name) for o in outs]).float().cpu()  # noqa: E731
    return Prediction(cat("global_orient"), cat("body_pose"), cat("betas"), cat("pred_cam"))
