"""Validation during training: MPJPE / PA-MPJPE (mm) of the J24 joints on a held-out source."""
from __future__ import annotations

import torch
from torch import nn

from deforhmr_model.geometry.metrics import mpjpe, pa_mpjpe
from deforhmr_model.train.augment import AugConfig
from deforhmr_model.train.loader import TrainDataset
from deforhmr_model.train.losses import HMRLoss, mid_hip_align
from deforhmr_model.train.mixing import MixedSource


@torch.no_grad()
def validate(model: nn.Module, loss: HMRLoss, source: MixedSource, seed: int, device: torch.device,
             batch_size: int = 64) -> dict[str, float]:
    """MPJPE / PA-MPJPE (mm) of the J24 joints ``loss.joints`` defines, mid-hip aligned, over
    the samples whose ground truth has all of them (plain crops, no augmentation).

    Returns ``{"mpjpe_mm", "pa_mpjpe_mm", "samples"}`` (NaN errors when no sample qualifies).
    The model is left in train mode.
    """
    model.eval()
    ds = TrainDataset(source, AugConfig(enabled=False), seed)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False)
    sel = torch.nonzero(loss.joints.mask.cpu() > 0).flatten()
    errs, pa = [], []
    for batch in loader:
        pred = model(batch["img"].to(device))
        out = loss.body(pred.global_orient.float(), pred.body_pose.float(), pred.betas.float(), None)
        j = mid_hip_align(loss.joints(out.vertices, out.joints)).cpu()[:, sel]
        gt = batch["keypoints_3d"]
        ok = (gt[:, sel, 3] > 0).all(1) & (gt[:, [2, 3], 3] > 0).all(1)
        g = mid_hip_align(gt[..., :3])[:, sel]
        errs.append(mpjpe(j[ok], g[ok]))
        pa.append(pa_mpjpe(j[ok], g[ok]))
    model.train()
    e, p = torch.cat(errs), torch.cat(pa)
    return {"mpjpe_mm": float(e.mean()) if len(e) else float("nan"),
            "pa_mpjpe_mm": float(p.mean()) if len(p) else float("nan"), "samples": len(e)}
