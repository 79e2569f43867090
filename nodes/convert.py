"""The one place where ComfyUI tensors become library arrays and back.

ComfyUI layouts (not written down by ComfyUI itself, hence here):

* ``IMAGE``: torch float32 ``(B, H, W, C)``, values 0..1, C = 3 (RGB; a 4th alpha
  channel is dropped, 1 channel is repeated).
* ``MASK``: torch float32 ``(B, H, W)``, values 0..1 (1 = selected).

Library layout: one ``(H, W, 3)`` uint8 RGB numpy array per frame
(:func:`deforhmr_model.files.image_io.load_image`'s output).
"""
from __future__ import annotations

import numpy as np
import torch

from . import host


class NodeInputError(ValueError):
    """A node input has the wrong type, shape or value; the message names the input and the fix."""


def image_to_frames(image, name: str = "image") -> list[np.ndarray]:
    """ComfyUI ``IMAGE`` (B,H,W,C) float 0..1 -> list of B arrays (H,W,3) uint8 RGB.

    Raises:
        NodeInputError: not a 4-D tensor with 1, 3 or 4 channels, or an empty batch.
    """
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[-1] not in (1, 3, 4):
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise NodeInputError(f"{name}: expected a ComfyUI IMAGE (batch, height, width, 3), got {shape}; "
                             "connect the IMAGE output of Load Image or another image node")
    if image.shape[0] == 0 or image.shape[1] == 0 or image.shape[2] == 0:
        raise NodeInputError(f"{name}: the image batch is empty {tuple(image.shape)}")
    x = image.detach().to("cpu", torch.float32)
    if x.shape[-1] == 1:
        x = x.expand(-1, -1, -1, 3)
    x = (x[..., :3].clamp(0, 1) * 255.0).round().to(torch.uint8).numpy()
    return [np.ascontiguousarray(f) for f in x]


def frames_to_image(frames: list[np.ndarray]) -> torch.Tensor:
    """List of (H,W,3) uint8 (all the same size) -> ComfyUI ``IMAGE`` (B,H,W,3) float32 0..1."""
    x = torch.from_numpy(np.stack(frames)).to(torch.float32) / 255.0
    return x.to(host.intermediate_device())


def masks_to_mask(masks: list[np.ndarray]) -> torch.Tensor:
    """List of (H,W) bool/float masks -> ComfyUI ``MASK`` (B,H,W) float32 in {0, 1}."""
    x = torch.from_numpy(np.stack([np.asarray(m, np.float32) for m in masks]))
    return x.to(host.intermediate_device())


def depth_to_image(depth: np.ndarray, near_value: float = 1.0, far_value: float = 0.25) -> np.ndarray:
    """Metric depth (H,W) f32, inf where empty -> (H,W,3) uint8 "near is bright" depth picture.

    Covered pixels map linearly from ``near_value`` (nearest surface) to ``far_value``
    (farthest surface) of this frame; empty pixels are 0 (black), as depth ControlNets expect.
    """
    d = np.asarray(depth, np.float32)
    cov = np.isfinite(d)
    out = np.zeros(d.shape, np.float32)
    if cov.any():
        lo, hi = float(d[cov].min()), float(d[cov].max())
        t = (d[cov] - lo) / (hi - lo) if hi > lo else np.zeros(int(cov.sum()), np.float32)
        out[cov] = near_value + (far_value - near_value) * t
    g = np.round(out * 255.0).astype(np.uint8)
    return np.repeat(g[..., None], 3, axis=2)
