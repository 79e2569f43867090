"""2D pose-guided fitting: recovers known bodies from their own projected keypoints."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from deforhmr_model.body.model import BodyModel, load_body_data
from deforhmr_model.geometry.camera import perspective_projection
from deforhmr_model.fitting.fit import FitConfig, FitInit, fit_to_keypoints
from deforhmr_model.geometry.rotation import axis_angle_to_rotmat, rotmat_to_axis_angle

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


def _posed_scene(body_data, kinds_and_yaw):
    """People in given poses (SMPL axis-angle edits) seen at given yaw angles, 5 m away:
    their 23 projected keypoints and BlazePose-style world landmarks (33,3) made from the truth."""
    from deforhmr_model.fitting.fit import WORLD_BODY_KEYPOINTS, WORLD_FROM_BLAZEPOSE, KeypointBody
    P = len(kinds_and_yaw)
    aa = torch.zeros(P, 24, 3)
    for i, (edits, yaw) in enumerate(kinds_and_yaw):
        Ry = axis_angle_to_rotmat(torch.tensor([0.0, yaw, 0.0]))
        aa[i, 0] = rotmat_to_axis_angle(axis_angle_to_rotmat(torch.tensor([np.pi, 0.0, 0.0])) @ Ry)
        aa[i, 16, 2], aa[i, 17, 2] = -1.2, 1.2
        for (j, c), v in edits.items():
            aa[i, j, c] = v
    R = axis_angle_to_rotmat(aa)
    betas = torch.zeros(P, 10)
    transl = torch.tensor([[-1.2 + 1.2 * i, 0.2, 5.0] for i in range(P)])
    kb = KeypointBody(body_data)
    k3 = kb.keypoints(R, betas, transl)
    uv = perspective_projection(k3, F, torch.tensor(PP))
    kp = torch.cat([uv, torch.ones(P, 23, 1)], -1)
    boxes = torch.cat([uv.min(1).values - 10, uv.max(1).values + 10], -1)
    world = torch.zeros(P, 33, 3)
    hips = (k3[:, 11] + k3[:, 12]) / 2
    world[:, list(WORLD_FROM_BLAZEPOSE)] = k3[:, list(WORLD_BODY_KEYPOINTS)] - hips[:, None]
    return R, betas, transl, kp, boxes, world


def _knee_bend_deg(body_data, R_or_fit):
    """Angle between each left thigh and shin (deg, 0 = straight) of the posed bodies."""
    body = BodyModel(body_data)
    if isinstance(R_or_fit, torch.Tensor):
        out = body(R_or_fit[:, 0], R_or_fit[:, 1:], torch.zeros(len(R_or_fit), 10), torch.zeros(len(R_or_fit), 3))
    else:
        out = body(R_or_fit.global_orient, R_or_fit.body_pose, R_or_fit.betas, R_or_fit.transl)
    j = out.joints
    thigh, shin = j[:, 4] - j[:, 1], j[:, 7] - j[:, 4]
    cos = (thigh * shin).sum(-1) / (thigh.norm(dim=-1) * shin.norm(dim=-1))
    return torch.rad2deg(torch.arccos(cos.clamp(-1, 1)))


SEATED = {(1, 0): -1.5, (2, 0): -1.5, (4, 0): 1.5, (5, 0): 1.5}
KNEELING = {(1, 0): -0.1, (2, 0): -0.1, (4, 0): 1.9, (5, 0): 1.9, (7, 0): 0.4, (8, 0): 0.4}


def test_fit_recovers_kneeling_and_seated_knee_bend(body_data):
    """Kneeling and seated people (keypoints projected from known poses, seen from the side and
    three-quarter) come out with bent knees, not straight legs; with world landmarks also seen
    from the front, where the 2D keypoints alone hide where the shins go."""
    scene = [(KNEELING, np.pi / 2), (SEATED, np.pi / 4), (KNEELING, 0.0)]
    R, betas, transl, kp, boxes, world = _posed_scene(body_data, scene)
    truth = _knee_bend_deg(body_data, R)
    fit = fit_to_keypoints(body_data, kp[:, :17], boxes, F, PP, extra_keypoints=kp[:, 17:],
                           world_landmarks=world)
    got = _knee_bend_deg(body_data, fit)
    print("\nknee bend deg truth", truth.round().tolist(), "fit", got.round().tolist(),
          "reprojection px", fit.reprojection_error.round().tolist())
    assert ((got - truth).abs() < 25).all() and (got > 60).all()
    assert (fit.reprojection_error < 8).all()
    # without the world landmarks the side and three-quarter views still show the bend
    fit2 = fit_to_keypoints(body_data, kp[:2, :17], boxes[:2], F, PP, extra_keypoints=kp[:2, 17:])
    got2 = _knee_bend_deg(body_data, fit2)
    print("2D only:", got2.round().tolist())
    assert ((got2 - truth[:2]).abs() < 30).all()


def test_fitting_leaves_the_torch_thread_count_alone(body_data):
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        R, betas, transl, kp, boxes, _ = _scene(body_data)
        seen = []
        orig = torch.set_num_threads
        torch.set_num_threads = lambda n: seen.append(n)  # any call during the fit is recorded
        try:
            fit_to_keypoints(body_data, kp, boxes, F, PP, config=FitConfig(iters_global=5, iters_full=10))
        finally:
            torch.set_num_threads = orig
        assert seen == [] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_rodrigues_matches_the_rotation_library():
    from deforhmr_model.fitting.fit import rodrigues
    v = torch.randn(500, 3, generator=torch.Generator().manual_seed(0)) * 1.5
    torch.testing.assert_close(rodrigues(v), axis_angle_to_rotmat(v), atol=1e-5, rtol=0)
    torch.testing.assert_close(rodrigues(torch.zeros(1, 3)), torch.eye(3)[None])


def _open_body_scene():
    """Two standing people (arms down, one elbow bent) on the shipped open body, which has
    real feet: truth rotations, keypoints (2,23,3), boxes and world landmarks (2,33,3)."""
    from deforhmr_model.body.model import default_body_data
    data = default_body_data()
    R, betas, transl, kp, boxes, world = _posed_scene(data, [({(18, 1): -1.0}, 0.0), ({(19, 1): 1.0}, 0.5)])
    return data, R, betas, transl, kp, boxes, world


def test_heels_and_toes_do_not_pull_the_ankles_off_their_keypoints():
    """Heel and toe keypoints from another detector, off by a fifth of the body (BlazePose's feet
    vs MoveNet's ankles), turn the feet but leave the ankles on the ankle keypoints."""
    data, R, betas, transl, kp, boxes, world = _open_body_scene()
    off = kp.clone()
    off[:, [17, 19], 0] += 0.2 * (boxes[:, 3] - boxes[:, 1])[:, None]    # left heel and toe shifted
    fit = fit_to_keypoints(data, off[:, :17], boxes, F, PP, extra_keypoints=off[:, 17:])
    body = BodyModel(data)
    out = body(fit.global_orient, fit.body_pose, fit.betas, fit.transl)
    uv = perspective_projection(body.coco17(out), F, torch.tensor(PP))
    ankle_px = (uv[:, 15] - kp[:, 15, :2]).norm(dim=-1)
    print("\nleft ankle px off its keypoint:", ankle_px.round().tolist())
    assert (ankle_px < 6).all()


def test_confident_keypoints_win_the_image_plane_over_world_landmarks():
    """World landmarks with the elbows, wrists, knees and ankles 10 cm too far out sideways (a
    landmark-model error) and confident 2D keypoints: the body follows the keypoints in the
    image (before, the landmarks pulled the limbs ~3x further off: 5.4 px vs 2 px)."""
    data, R, betas, transl, kp, boxes, world = _open_body_scene()
    wrong = world.clone()
    wrong[:, [13, 15, 25, 27], 0] += 0.1      # BlazePose left elbow, wrist, knee, ankle
    wrong[:, [14, 16, 26, 28], 0] -= 0.1      # and the right ones
    fit = fit_to_keypoints(data, kp[:, :17], boxes, F, PP, extra_keypoints=kp[:, 17:], world_landmarks=wrong)
    body = BodyModel(data)
    out = body(fit.global_orient, fit.body_pose, fit.betas, fit.transl)
    uv = perspective_projection(body.coco17(out), F, torch.tensor(PP))
    limb_px = (uv[:, 5:] - kp[:, 5:17, :2]).norm(dim=-1).mean()
    print(f"\nmean limb keypoint px: {limb_px:.1f}")
    assert limb_px < 3.0


def test_a_low_confidence_keypoint_still_places_its_joint(body_data):
    """A half-occluded wrist (confidence 0.2) is used, weighted by its confidence."""
    R, betas, transl, kp, boxes, _ = _scene(body_data)
    weak = kp.clone()
    weak[:, 9:11, 2] = 0.2
    gone = kp.clone()
    gone[:, 9:11, 2] = 0.0
    body = BodyModel(body_data)

    def wrist_px(k):
        fit = fit_to_keypoints(body_data, k, boxes, F, PP)
        out = body(fit.global_orient, fit.body_pose, fit.betas, fit.transl)
        uv = perspective_projection(body.coco17(out), F, torch.tensor(PP))
        return (uv[:, 9:11] - kp[:, 9:11, :2]).norm(dim=-1).max()

    used, unused = wrist_px(weak), wrist_px(gone)
    print(f"\nworst wrist px: confidence 0.2 {used:.1f}, no keypoint {unused:.1f}")
    assert used < 0.4 * unused
