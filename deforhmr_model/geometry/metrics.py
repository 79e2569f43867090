"""Error metrics of the 3D human mesh recovery benchmarks (DeforHMR Table 1).

Pure tensor functions: inputs in metres (3D) or any 2D unit, outputs per
sample so that callers can aggregate per sequence and overall. Definitions
follow ``hmr2_reference.md`` §7.3-7.4:

* MPJPE: mean Euclidean distance over joints after aligning the pelvis of the
  prediction and of the ground truth separately (``pelvis_align``).
* PA-MPJPE: MPJPE after a similarity Procrustes alignment (rotation,
  translation and scale) of each predicted joint set onto its ground truth.
  The alignment is Umeyama's least-squares solution, computed by
  ``roma.rigid_points_registration`` in float64.
* PVE: mean Euclidean distance over mesh vertices after pelvis alignment
  (no Procrustes).
* PCK: fraction of visible 2D keypoints whose distance to the ground truth,
  in units of a per-sample normaliser (the person box size), is below a
  threshold.

``scale`` multiplies the distances (default 1000: metres in, millimetres out).
"""
from __future__ import annotations

from typing import Sequence

import roma
import torch

__all__ = ["pelvis_align", "similarity_align", "mpjpe", "pa_mpjpe", "pve", "pck"]

MM_PER_M = 1000.0


def _check_pair(pred: torch.Tensor, gt: torch.Tensor, what: str) -> None:
    if pred.shape != gt.shape or pred.ndim != 3 or pred.shape[-1] != 3:
        raise ValueError(f"{what}: expected pred and gt of the same shape (B, N, 3), "
                         f"got {tuple(pred.shape)} and {tuple(gt.shape)}")


def pelvis_align(points: torch.Tensor, pelvis: Sequence[int]) -> torch.Tensor:
    """Subtract the pelvis (the mean of the joints ``pelvis``) from every point.

    Args:
        points: (B, N, 3) joints (or vertices, with ``pelvis`` indexing a separate
            joint set — use ``points - pelvis_point`` yourself in that case).
        pelvis: indices into N averaged to the pelvis (e.g. ``(0,)`` for H36M,
            ``(14,)`` for the J19 pelvis, ``(1, 2)`` for SMPL's hips).
    Returns:
        (B, N, 3) pelvis-relative points, same dtype/device.
    """
    return points - points[:, list(pelvis)].mean(dim=1, keepdim=True)


def similarity_align(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Procrustes-align ``pred`` onto ``gt`` with rotation, translation and scale.

    Minimises ``sum_i |s R p_i + t - g_i|^2`` per sample (Umeyama 1991; proper
    rotation, det R = +1), in float64.

    Args:
        pred, gt: (B, N, 3) point sets (N >= 3, not all collinear).
    Returns:
        (B, N, 3) aligned prediction, dtype of ``pred``.
    Raises:
        ValueError: on mismatched shapes.
    """
    _check_pair(pred, gt, "similarity_align")
    p, g = pred.double(), gt.double()
    R, t, s = roma.rigid_points_registration(p, g, compute_scaling=True)
    aligned = s[:, None, None] * torch.einsum("bij,bnj->bni", R, p) + t[:, None, :]
    return aligned.to(pred.dtype)


def mpjpe(pred: torch.Tensor, gt: torch.Tensor, scale: float = MM_PER_M) -> torch.Tensor:
    """Mean per-joint position error of already pelvis-aligned joints.

    Args:
        pred, gt: (B, J, 3) joints, metres, same frame and same pelvis alignment.
        scale: unit factor applied to the distances (1000: metres -> mm).
    Returns:
        (B,) per-sample MPJPE (mm by default), float of ``pred``'s dtype.
    """
    _check_pair(pred, gt, "mpjpe")
    return (pred - gt).norm(dim=-1).mean(dim=-1) * scale


def pa_mpjpe(pred: torch.Tensor, gt: torch.Tensor, scale: float = MM_PER_M) -> torch.Tensor:
    """Procrustes-aligned MPJPE: :func:`mpjpe` after :func:`similarity_align`.

    Args:
        pred, gt: (B, J, 3) joints, metres (any common frame; alignment removes it).
    Returns:
        (B,) per-sample PA-MPJPE (mm by default).
    """
    return mpjpe(similarity_align(pred, gt), gt, scale)


def pve(pred_vertices: torch.Tensor, gt_vertices: torch.Tensor,
        scale: float = MM_PER_M) -> torch.Tensor:
    """Per-vertex error of pelvis-aligned meshes with the same topology.

    Args:
        pred_vertices, gt_vertices: (B, V, 3) vertices, metres, each minus its
            own pelvis (see :mod:`deforhmr_model.eval.protocol`).
    Returns:
        (B,) mean vertex distance per sample (mm by default).
    Raises:
        ValueError: when the meshes have different vertex counts (different
            body models: PVE is undefined across topologies).
    """
    if pred_vertices.shape != gt_vertices.shape:
        raise ValueError(f"pve: prediction and ground truth meshes differ: {tuple(pred_vertices.shape)} "
                         f"vs {tuple(gt_vertices.shape)}; PVE needs the same body model topology")
    return mpjpe(pred_vertices, gt_vertices, scale)


def pck(pred: torch.Tensor, gt: torch.Tensor, visible: torch.Tensor, normaliser: torch.Tensor,
        thresholds: Sequence[float] = (0.05, 0.1)) -> dict[float, torch.Tensor]:
    """Percentage of correct 2D keypoints, per sample and joint.

    A keypoint counts when ``visible`` is true; it is correct when
    ``|pred - gt| / normaliser < thr`` (``hmr2_reference.md`` §7.3: distances in
    units of the original person box's longer side).

    Args:
        pred, gt: (B, K, 2) keypoints, any common unit (px).
        visible: (B, K) bool, ground-truth keypoint is annotated/visible.
        normaliser: (B,) per-sample length in the same unit (box size, px).
        thresholds: distance thresholds (fractions of ``normaliser``).
    Returns:
        {thr: (B, K) float tensor}: 1.0 correct, 0.0 wrong, NaN not visible.
    """
    if pred.shape != gt.shape or pred.shape[-1] != 2:
        raise ValueError(f"pck: expected (B, K, 2) pairs, got {tuple(pred.shape)} and {tuple(gt.shape)}")
    d = (pred - gt).norm(dim=-1) / normaliser.clamp_min(1e-9)[:, None]
    nan = torch.full_like(d, float("nan"))
    return {float(t): torch.where(visible, (d < t).to(d.dtype), nan) for t in thresholds}
