"""Training losses (DeforHMR §3.3, following CLIFF): all mean squared errors.

======================  ===========================================================  ======
term                    definition (per sample, then summed and divided by B)        weight
======================  ===========================================================  ======
``smpl_pose``           mean over 24 x 9 rotation-matrix entries of (R_pred - R_gt)²  λ_SMPL = 1
                        (global orient + 23 body joints), times ``has_smpl``
``smpl_betas``          mean over 10 betas of (β_pred - β_gt)², times ``has_betas``   λ_SMPL = 1
``joints_3d``           mean over 24 J24 joints x 3 of conf · (J_pred - J_gt)², both   λ_joint = 5
                        pelvis-aligned (mid-hip, SPIN/CLIFF), metres
``joints_2d``           mean over 24 J24 joints x 2 of conf · (x_pred - x_gt)² in      λ_joint = 5
                        normalised crop coordinates (HMR 2.0: pixel / 256)
``mesh``                mean over V x 3 of (v_pred - v_gt)², GT vertices from the GT   λ_mesh = 60
                        SMPL parameters with the same body model, times ``has_smpl``
======================  ===========================================================  ======

Masks: samples without SMPL labels (``has_smpl = 0``) contribute nothing to the
SMPL and mesh terms; joints with confidence 0 (missing 2D/3D labels, or joints
the :class:`~deforhmr_model.body.joints.J24Regressor` cannot produce) nothing to
the joint terms; 3D samples whose hips are unlabelled are dropped (no pelvis).

Reduction: every term is a **sum over samples divided by the batch size B**
(masked samples count as zero), not a mean over valid samples. This keeps the
gradient of a global batch identical however it is split over GPUs (DDP
averages per-rank gradients) and accumulation micro steps.

Projection: the predicted weak-perspective camera ``(s, tx, ty)`` becomes the
crop-camera translation ``(tx, ty, 2 f / (256 s))`` with f = 5000 px for the
256-px square crop (``hmr2_reference.md`` §4, :func:`deforhmr_model.geometry.camera.cam_crop_to_full`),
then :func:`deforhmr_model.geometry.camera.perspective_projection`. A scale s below 0.01
(the body behind the camera or absurdly far) is clamped to 0.01 for the
projection, which keeps the squared 2D error finite.

The body model runs in float32 even under bf16 autocast.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from deforhmr_model.body.joints import J24_HIPS, J24Regressor
from deforhmr_model.geometry.camera import crop_projection
from deforhmr_model.geometry.rotation import axis_angle_to_rotmat




@dataclass(frozen=True)
class LossWeights:
    """Relative weights (paper §3.3): λ_SMPL = 1, λ_joint = 5 (2D and 3D), λ_mesh = 60."""

    smpl: float = 1.0
    joints_3d: float = 5.0
    joints_2d: float = 5.0
    mesh: float = 60.0


@dataclass
class LossOutput:
    """total () weighted sum | terms: unweighted per-term values (0-d tensors) |
    pred_joints (B, 24, 3) predicted J24 joints, metres, body frame (no translation) |
    pred_keypoints_2d (B, 24, 2) their projection, normalised crop coordinates."""

    total: torch.Tensor
    terms: dict[str, torch.Tensor]
    pred_joints: torch.Tensor
    pred_keypoints_2d: torch.Tensor


def mid_hip_align(joints: torch.Tensor) -> torch.Tensor:
    """(B, 24, 3) J24 joints minus the mid-point of the hips (J24 2 and 3)."""
    return joints - joints[:, list(J24_HIPS)].mean(dim=1, keepdim=True)


class HMRLoss(nn.Module):
    """The weighted training loss of the module table.

    Args:
        body: a :class:`deforhmr_model.body.model.BodyModel` (predictions and GT vertices).
        joints: J24 regressor for the body (see :class:`~deforhmr_model.body.joints.J24Regressor`).
        weights: :class:`LossWeights`.
    """

    def __init__(self, body: nn.Module, joints: J24Regressor, weights: LossWeights = LossWeights()):
        super().__init__()
        self.body, self.joints, self.weights = body, joints, weights

    def forward(self, pred, batch: dict[str, torch.Tensor]) -> LossOutput:
        """pred: an ``HMROutput``; batch: a :class:`~deforhmr_model.train.loader.TrainDataset` batch."""
        with torch.autocast(device_type=pred.betas.device.type, enabled=False):
            return self._forward(pred, batch)

    def _forward(self, pred, batch) -> LossOutput:
        go, bp, betas = pred.global_orient.float(), pred.body_pose.float(), pred.betas.float()
        cam = pred.pred_cam.float()
        B = betas.shape[0]
        out = self.body(go, bp, betas, None)
        j24 = self.joints(out.vertices, out.joints)                        # (B, 24, 3)
        kp2d = crop_projection(j24, cam)                                   # (B, 24, 2)
        has_smpl, has_betas = batch["has_smpl"].float(), batch["has_betas"].float()
        with torch.no_grad():
            gt_go = axis_angle_to_rotmat(batch["global_orient"].float())
            gt_bp = axis_angle_to_rotmat(batch["body_pose"].float())
            gt_out = self.body(gt_go, gt_bp, batch["betas"].float(), None)
        jmask = self.joints.mask.to(j24.dtype)                             # (24,)

        pose_err = torch.cat([(go - gt_go).reshape(B, -1), (bp - gt_bp).reshape(B, -1)], 1)
        terms = {
            "smpl_pose": _masked(has_smpl, pose_err.square().mean(1)).sum() / B,
            "smpl_betas": _masked(has_betas, (betas - batch["betas"].float()).square().mean(1)).sum() / B,
        }
        gt3 = batch["keypoints_3d"].float()
        conf3 = gt3[..., 3] * jmask * (gt3[:, list(J24_HIPS), 3].prod(dim=1, keepdim=True) > 0)
        d3 = (mid_hip_align(j24) - mid_hip_align(gt3[..., :3])).square().mean(-1)
        terms["joints_3d"] = _masked(conf3, d3).mean(1).sum() / B
        gt2 = batch["keypoints_2d"].float()
        d2 = (kp2d - gt2[..., :2]).square().mean(-1)
        terms["joints_2d"] = _masked(gt2[..., 2] * jmask, d2).mean(1).sum() / B
        dv = (out.vertices - gt_out.vertices).square().mean((1, 2))
        terms["mesh"] = _masked(has_smpl, dv).sum() / B

        w = self.weights
        total = (w.smpl * (terms["smpl_pose"] + terms["smpl_betas"]) + w.joints_3d * terms["joints_3d"]
                 + w.joints_2d * terms["joints_2d"] + w.mesh * terms["mesh"])
        return LossOutput(total=total, terms=terms, pred_joints=j24, pred_keypoints_2d=kp2d)


def _masked(weight: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """weight * value, with exact zeros where weight == 0 (no NaN from unlabelled samples)."""
    return torch.where(weight > 0, weight * value, torch.zeros_like(value))
