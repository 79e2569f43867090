"""2D pose-guided fitting: recovers known bodies from their own projected keypoints."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from deforhmr_model.body.model import BodyModel, load_body_data
from deforhmr_model.geometry.camera import perspective_projection
from deforhmr_model.fitting.fit import FitConfig, FitInit, fit_to_keypoints
from deforhmr_model.geometry.rotation import axis_angle_to_rotmat

from .body_fixtures import make_test_smpl_npz

F, PP = 1500.0, (320.0, 240.0)


@pytest.fixture(scope="module")
def body_data(tmp_path_factory):
    return load_body_data(make_test_smpl_npz(tmp_path_factory.mktemp("smpl") / "SMPL_TEST.npz"))


def _scene(data, seed=0):
    """Two people in known poses: (global_orient, body_pose, betas, transl, keypoints, boxes)."""
    g = torch.Generator().manual_seed(seed)
    P = 2
    aa = torch.zeros(P, 24, 3)
    aa[:, 0] = torch.tensor([np.pi, 0.0, 0.0])          # upright, facing the camera
    aa[1, 0] = torch.tensor([np.pi, 0.0, 0.0]) + torch.tensor([0.0, 0.0, 0.0])
    aa[:, 16, 2], aa[:, 17, 2] = -1.2, 1.2               # arms down
    aa[0, 18, 1] = -1.4                                  # left elbow flexed
    aa[1, 4, 0], aa[1, 1, 0] = 1.2, -0.8                 # left knee bent, hip flexed
    aa[:, 1:] += 0.05 * torch.randn(P, 23, 3, generator=g)
    R = axis_angle_to_rotmat(aa)
    transl = torch.tensor([[-0.6, 0.1, 5.0], [0.7, 0.0, 6.0]])
    betas = torch.zeros(P, 10)
    body = BodyModel(data)
    out = body(R[:, 0], R[:, 1:], betas, transl)
    kp3 = body.coco17(out)
    uv = perspective_projection(kp3, F, torch.tensor(PP))
    kp = torch.cat([uv, torch.ones(P, 17, 1)], -1)
    boxes = torch.cat([uv.min(1).values - 10, uv.max(1).values + 10], -1)
    return R, betas, transl, kp, boxes, out


def test_fit_from_scratch_recovers_projection_and_depth(body_data):
    R, betas, transl, kp, boxes, gt = _scene(body_data)
    fit = fit_to_keypoints(body_data, kp, boxes, F, PP)
    assert fit.global_orient.shape == (2, 3, 3) and fit.body_pose.shape == (2, 23, 3, 3)
    print("\nreprojection error px:", fit.reprojection_error.tolist())
    assert (fit.reprojection_error < 6.0).all()
    assert (fit.hypothesis == 0).all()  # facing the camera chosen
    # depth within 15 % (scale/depth ambiguity is held by the shape prior)
    assert torch.allclose(fit.transl[:, 2], transl[:, 2], rtol=0.15)
    body = BodyModel(body_data)
    out = body(fit.global_orient, fit.body_pose, fit.betas, fit.transl)
    # 3D joints (pelvis aligned): monocular depth ambiguity (a raised leg forward or back) allows
    # some error, but not a wrong body
    err = ((out.joints - out.joints[:, :1]) - (gt.joints - gt.joints[:, :1])).norm(dim=-1).mean(-1)
    print("pelvis-aligned MPJPE m:", err.tolist())
    assert err[0] < 0.06 and err[1] < 0.15


def test_refinement_improves_a_perturbed_estimate(body_data):
    R, betas, transl, kp, boxes, _ = _scene(body_data, seed=1)
    noisy = R.clone()
    noisy[:, 1:] = axis_angle_to_rotmat(torch.randn(2, 23, 3) * 0.15) @ R[:, 1:]
    init = FitInit(noisy[:, 0], noisy[:, 1:], betas, transl * torch.tensor([1.0, 1.0, 1.1]))
    body = BodyModel(body_data)
    before = perspective_projection(body.coco17(body(init.global_orient, init.body_pose, betas, init.transl)),
                                    F, torch.tensor(PP))
    err0 = (before - kp[..., :2]).norm(dim=-1).mean(-1)
    fit = fit_to_keypoints(body_data, kp, boxes, F, PP, init=init, config=FitConfig(iters_full=80))
    print("\nbefore/after px:", err0.tolist(), fit.reprojection_error.tolist())
    assert (fit.reprojection_error < 0.5 * err0).all()


def test_low_confidence_keypoints_are_ignored_and_shapes_checked(body_data):
    R, betas, transl, kp, boxes, _ = _scene(body_data)
    bad = kp.clone()
    bad[:, 9, :2] += 300.0   # a wild left wrist ...
    bad[:, 9, 2] = 0.05      # ... with low confidence
    fit = fit_to_keypoints(body_data, bad, boxes, F, PP)
    assert (fit.reprojection_error < 6.0).all()
    with pytest.raises(ValueError, match="COCO-17"):
        fit_to_keypoints(body_data, kp[:, :10], boxes, F, PP)
    empty = fit_to_keypoints(body_data, torch.zeros(0, 17, 3), torch.zeros(0, 4), F, PP)
    assert empty.body_pose.shape == (0, 23, 3, 3)


def test_fitting_works_inside_inference_mode(body_data):
    """ComfyUI runs nodes under torch.inference_mode; fitting must still optimise."""
    R, betas, transl, kp, boxes, _ = _scene(body_data)
    with torch.inference_mode():
        fit = fit_to_keypoints(body_data, kp, boxes, F, PP, config=FitConfig(iters_global=10, iters_full=20))
    assert torch.isfinite(fit.transl).all() and (fit.reprojection_error < 40).all()


def test_heels_and_toes_orient_the_feet():
    """With heel and toe keypoints the ankle rotation is recovered; without them it stays held.
    (On the shipped open body: the stick-figure test body has no real feet.)"""
    from deforhmr_model.body.model import default_body_data
    from deforhmr_model.fitting.fit import KeypointBody
    body_data = default_body_data()
    R, betas, transl, kp, boxes, gt = _scene(body_data)
    R = R.clone()
    R[:, 7] = axis_angle_to_rotmat(torch.tensor([0.6, 0.0, 0.0])).expand(2, 3, 3)  # left foot pointed
    kb = KeypointBody(body_data)
    uv = perspective_projection(kb.keypoints(R, betas, transl), F, torch.tensor(PP))
    kp23 = torch.cat([uv, torch.ones(2, 23, 1)], -1)
    with_feet = fit_to_keypoints(body_data, kp23[:, :17], boxes, F, PP, extra_keypoints=kp23[:, 17:])
    without = fit_to_keypoints(body_data, kp23[:, :17], boxes, F, PP)
    from deforhmr_model.geometry.rotation import rotmat_to_axis_angle
    ankle = lambda fit: rotmat_to_axis_angle(fit.body_pose[:, 6])[:, 0]  # noqa: E731  (left ankle, x)
    print("\nleft ankle flexion (rad): truth 0.6, with heel/toe", ankle(with_feet).tolist(),
          "without", ankle(without).tolist())
    assert (ankle(with_feet) > 0.3).all() and (ankle(without).abs() < 0.2).all()
    with pytest.raises(ValueError, match="extra_keypoints"):
        fit_to_keypoints(body_data, kp23[:, :17], boxes, F, PP, extra_keypoints=kp23[:, 17:20])
