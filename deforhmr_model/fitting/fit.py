"""2D pose-guided fitting and refinement of SMPL-format bodies.

GenHMR's "2D pose-guided refinement" (seed 001, inference stage 2) adapted to
parameter space: the body's pose, shape and translation are optimised so that
its projected COCO-17 keypoints match the detected 2D keypoints. Used

* standalone when no network checkpoint is installed (initialised from a
  relaxed mean pose, two facing hypotheses per person, the better one kept);
* after the network (``refine=True``), initialised from and regularised
  towards the network's estimate.

Objective (per person, batched over people and hypotheses)::

    E = E_2D + w_pose E_pose + w_limits E_limits + w_shape |betas|^2

* ``E_2D``: confidence-weighted Geman-McClure robust reprojection error of the
  17 COCO keypoints plus heels, toes and hands (BlazePose gives them; they orient
  the feet and hands), residuals in units of the person's box size (so the
  weights do not depend on image resolution); sigma is annealed from 0.5 to
  0.1 box so that far-off limbs still get a gradient early on.
* ``E_pose``: squared axis-angle distance to the prior mean (relaxed A-pose, or
  the network's pose), weighted per joint: joints that the 17 keypoints do not
  observe (spine, feet, hands, collars, head twist) are held strongly.
* ``E_limits``: knees and elbows are hinges that only flex one way (SMPL
  convention: knee flexion is +X, left elbow flexion -Y, right elbow +Y);
  penalises hyper-extension and off-axis rotation.

Only the 24 joints and 9 vertices (face points, heels, toes) enter the objective,
so each iteration is a 24-joint forward-kinematics chain (no full-mesh skinning):
pose-corrective blend shapes are ignored for those vertices (< 1 cm).

Camera: pinhole, OpenCV frame, focal length and principal point in px; the
body's global rotation and translation are expressed in that frame.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from smplx.lbs import batch_rigid_transform

from deforhmr_model.body.layouts import COCO_FACE_NAMES
from deforhmr_model.body.model import coco17_keypoints
from deforhmr_model.geometry.camera import perspective_projection
from deforhmr_model.geometry.rotation import axis_angle_to_rotmat, rot6d_to_rotmat, rotmat_to_axis_angle, rotmat_to_rot6d

# Extremity keypoints after the COCO-17 (indices 17..22): they orient the feet and hands.
EXTRA_NAMES = ("left_heel", "right_heel", "left_toe", "right_toe", "left_hand", "right_hand")
NUM_KEYPOINTS = 17 + len(EXTRA_NAMES)
KEYPOINT_WEIGHTS = np.array([0.5, 0.3, 0.3, 0.3, 0.3] + [1.0] * 12 + [1.0] * 4 + [0.5] * 2, np.float32)
SMPL_FOOT_VERTEX_IDS = {"left_heel": 3387, "right_heel": 6787, "left_toe": 3216, "right_toe": 6617}
# BlazePose landmark indices: heels 29/30, foot index (toe tip) 31/32, pinky 17/18, index 19/20
_BLAZEPOSE_FEET = (29, 30, 31, 32)
_BLAZEPOSE_HANDS = ((17, 19), (18, 20))
L_KNEE, R_KNEE, L_ELBOW, R_ELBOW = 4, 5, 18, 19


@dataclass
class FitConfig:
    """Optimisation settings (defaults tuned on ``shared/photos/dev``)."""

    iters_global: int = 40      # stage 1: global rotation + translation, torso keypoints
    iters_full: int = 120       # stage 2: everything
    lr_global: float = 0.05
    lr_full: float = 0.03
    min_confidence: float = 0.3  # keypoints below this are ignored
    w_pose: float = 0.02
    w_limits: float = 1.0
    w_shape: float = 0.005
    w_depth: float = 0.1        # stay near the initial depth (scale/depth ambiguity)
    sigma_start: float = 0.5    # robust-loss scale, fraction of the box size
    sigma_end: float = 0.1
    iters_warm: int = 30        # warm start (video: from the same person's previous frame)


@dataclass
class FitInit:
    """Initial parameters (e.g. the network's): (P,3,3), (P,23,3,3), (P,10), (P,3)."""

    global_orient: torch.Tensor
    body_pose: torch.Tensor
    betas: torch.Tensor
    transl: torch.Tensor


@dataclass
class FitResult:
    """Fitted parameters: global_orient (P,3,3), body_pose (P,23,3,3), betas (P,10),
    transl (P,3) metres (OpenCV camera frame); reprojection_error (P,) mean px over
    the COCO-17 keypoints used; hypothesis (P,) 0 = facing the camera, 1 = facing away."""

    global_orient: torch.Tensor
    body_pose: torch.Tensor
    betas: torch.Tensor
    transl: torch.Tensor
    reprojection_error: torch.Tensor
    hypothesis: torch.Tensor = field(default_factory=lambda: torch.zeros(0))


class KeypointBody:
    """Minimal differentiable body for fitting: 24 joints + 9 vertices (5 face points, heels,
    toes) from betas and pose.

    Built from a ``BodyModelData``'s arrays: v_template (V,3), shapedirs (V,3,S),
    J_regressor (24,V), lbs_weights (V,24), parents (24,), face_vertex_ids.
    """

    def __init__(self, data, num_betas: int = 10):
        J_reg = torch.as_tensor(np.asarray(data.J_regressor, np.float32))
        v_t = torch.as_tensor(np.asarray(data.v_template, np.float32))
        sd = torch.as_tensor(np.asarray(data.shapedirs, np.float32))[..., :num_betas]
        self.J_template = J_reg @ v_t                                    # (24,3)
        self.J_shapedirs = torch.einsum("jv,vcs->jcs", J_reg, sd)         # (24,3,S)
        feet = foot_vertex_ids(data)
        ids = [int(data.face_vertex_ids[k]) for k in COCO_FACE_NAMES] + [feet[k] for k in EXTRA_NAMES[:4]]
        self.F_template = v_t[ids]                                        # (9,3)
        self.F_shapedirs = sd[ids]                                        # (9,3,S)
        self.F_weights = torch.as_tensor(np.asarray(data.lbs_weights, np.float32))[ids]  # (9,24)
        self.parents = torch.as_tensor(np.asarray(data.parents, np.int64))
        self.num_betas = num_betas

    def rest_joints(self, betas: torch.Tensor) -> torch.Tensor:
        """(B,S) betas -> (B,24,3) rest joints, body frame, metres."""
        return self.J_template + torch.einsum("bs,jcs->bjc", betas, self.J_shapedirs)

    def keypoints(self, rotmats: torch.Tensor, betas: torch.Tensor, transl: torch.Tensor) -> torch.Tensor:
        """rotmats (B,24,3,3), betas (B,S), transl (B,3) -> (B,23,3) camera-frame keypoints:
        COCO-17, then :data:`EXTRA_NAMES` (heels and toes from vertices, hands = SMPL joints 22/23)."""
        J = self.rest_joints(betas)
        posed_J, A = batch_rigid_transform(rotmats, J, self.parents, dtype=rotmats.dtype)
        Fv = self.F_template + torch.einsum("bs,fcs->bfc", betas, self.F_shapedirs)
        T = torch.einsum("fj,bjmn->bfmn", self.F_weights, A)
        verts = (T[..., :3, :3] @ Fv[..., None])[..., 0] + T[..., :3, 3]
        coco = coco17_keypoints(verts[:, :5], posed_J)
        return torch.cat([coco, verts[:, 5:], posed_J[:, [22, 23]]], 1) + transl[:, None]

    def coco17(self, rotmats: torch.Tensor, betas: torch.Tensor, transl: torch.Tensor) -> torch.Tensor:
        """The first 17 of :meth:`keypoints` (COCO-17), (B,17,3)."""
        return self.keypoints(rotmats, betas, transl)[:, :17]


def foot_vertex_ids(data) -> dict[str, int]:
    """Heel and toe-tip vertex of each foot: SMPL's known ids on a 6890-vertex SMPL mesh,
    otherwise found on the rest mesh: among the vertices skinned mostly to an ankle/foot
    joint, the rearmost (heel) and foremost (toe) in the bottom 3 cm (body frame, +Z forward)."""
    v = np.asarray(data.v_template, np.float32)
    if v.shape[0] == 6890 and str(getattr(data, "id", "")).startswith("smpl"):
        return dict(SMPL_FOOT_VERTEX_IDS)
    owner = np.asarray(data.lbs_weights).argmax(1)
    out = {}
    for side, joints in (("left", (7, 10)), ("right", (8, 11))):
        idx = np.flatnonzero(np.isin(owner, joints))
        low = idx[v[idx, 1] < v[idx, 1].min() + 0.03]
        out[f"{side}_heel"] = int(low[v[low, 2].argmin()])
        out[f"{side}_toe"] = int(low[v[low, 2].argmax()])
    return out


def extremity_keypoints(blazepose: np.ndarray) -> np.ndarray:
    """(..., 33, 3) BlazePose landmarks (x px, y px, visibility) -> (..., 6, 3) keypoints in
    :data:`EXTRA_NAMES` order; a hand is the midpoint of the index and pinky knuckles
    (confidence: the smaller of the two)."""
    b = np.asarray(blazepose, np.float32)
    feet = b[..., list(_BLAZEPOSE_FEET), :]
    hands = [np.concatenate([(b[..., i, :2] + b[..., j, :2]) / 2,
                             np.minimum(b[..., i, 2:], b[..., j, 2:])], -1) for i, j in _BLAZEPOSE_HANDS]
    return np.concatenate([feet, np.stack(hands, -2)], -2)


def relaxed_pose() -> torch.Tensor:
    """(23,3) axis-angle prior mean: arms ~60 deg down from the T-pose, elbows slightly bent."""
    pose = torch.zeros(24, 3)
    pose[16, 2], pose[17, 2] = -1.1, 1.1       # shoulders: lower the arms
    pose[18, 1], pose[19, 1] = -0.3, 0.3       # elbows: slight flexion
    pose[4, 0] = pose[5, 0] = 0.1              # knees: slight flexion
    return pose[1:]


def joint_prior_weights(conf: torch.Tensor | None = None) -> torch.Tensor:
    """Per-joint weights of the pose prior (unobserved joints held strongly): (23,), or
    (N,23) given keypoint confidences (N,23), where an ankle whose heel and toe are both
    seen, or a wrist whose hand is seen, is held less."""
    w = torch.ones(24)
    w[[3, 6, 9]] = 6.0        # spine
    w[[12, 15]] = 4.0         # neck, head
    w[[13, 14]] = 8.0         # collars
    w[[10, 11, 22, 23]] = 20.0  # feet, hands
    w[[7, 8, 20, 21]] = 8.0   # ankles, wrists: orientation not observed ...
    w = w[1:]
    if conf is None:
        return w
    w = w.expand(conf.shape[0], 23).clone()
    for joint, kps in ((7, (17, 19)), (8, (18, 20)), (20, (21,)), (21, (22,))):
        seen = (conf[:, list(kps)] > 0).all(-1)
        w[:, joint - 1] = torch.where(seen, torch.full_like(w[:, 0], 0.5), w[:, joint - 1])  # ... unless seen
    return w


def fit_to_keypoints(data, keypoints: torch.Tensor, bboxes: torch.Tensor, focal_length: float,
                     principal_point: tuple[float, float], init: FitInit | None = None,
                     config: FitConfig | None = None, extra_keypoints=None,
                     warm_start: bool = False) -> FitResult:
    """Fit bodies to 2D keypoints, batched over people.

    Args:
        data: a ``BodyModelData`` (see :mod:`deforhmr_model.body.model`).
        keypoints: (P,17,3) COCO-17 keypoints (x px, y px, confidence in [0,1]).
        bboxes: (P,4) person boxes xyxy px (set the residual scale).
        focal_length: px; principal_point: (cx, cy) px.
        init: optional :class:`FitInit` (network estimate); None fits from a mean pose
            with two facing hypotheses and keeps the better.
        config: :class:`FitConfig`.
        extra_keypoints: optional (P,6,3) heels, toes and hands (:data:`EXTRA_NAMES`, x px, y px,
            confidence), e.g. :func:`extremity_keypoints` of BlazePose's 33 landmarks; they
            orient the feet and hands. None: not used.
        warm_start: ``init`` is the same person's fit in the previous video frame: run
            ``config.iters_warm`` iterations, keep ``init.betas`` fixed (one shape per track)
            and hold the pose towards ``init`` (the refinement prior, a temporal term).
    Returns:
        :class:`FitResult` (float32, CPU).
    Raises:
        ValueError: on wrong shapes.
    """
    cfg = config or FitConfig()
    kp_np = np.asarray(keypoints, dtype=np.float32)
    box_np = np.asarray(bboxes, dtype=np.float32)
    if kp_np.ndim != 3 or kp_np.shape[1:] != (17, 3):
        raise ValueError(f"keypoints must be (P,17,3) COCO-17 (x, y, conf); got {kp_np.shape}")
    if warm_start and init is None:
        raise ValueError("warm_start needs init (the previous frame's parameters)")
    if box_np.shape != (kp_np.shape[0], 4):
        raise ValueError(f"bboxes must be (P,4) xyxy px; got {box_np.shape}")
    P = kp_np.shape[0]
    extra = (np.zeros((P, 6, 3), np.float32) if extra_keypoints is None
             else np.asarray(extra_keypoints, np.float32))
    if extra.shape != (P, 6, 3):
        raise ValueError(f"extra_keypoints must be (P,6,3) {EXTRA_NAMES}; got {extra.shape}")
    kp_np = np.concatenate([kp_np, extra], 1)
    if P == 0:
        z = torch.zeros
        return FitResult(z(0, 3, 3), z(0, 23, 3, 3), z(0, 10), z(0, 3), z(0), z(0))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is several times faster than two
    try:
        # autograd must work even when the caller runs under torch.inference_mode (ComfyUI does):
        # every tensor of the problem is made (or cloned) inside this context
        with torch.inference_mode(False), torch.enable_grad():
            if init is not None:
                init = FitInit(*(t.detach().clone().float().cpu() for t in
                                 (init.global_orient, init.body_pose, init.betas, init.transl)))
            params, nh = _run(KeypointBody(data), cfg, torch.from_numpy(kp_np.copy()),
                              torch.from_numpy(box_np.copy()), focal_length,
                              torch.tensor(principal_point, dtype=torch.float32), init, warm_start)
    finally:
        torch.set_num_threads(threads)
    go_f, pose_f, betas_f, transl_f, err, energy = params
    hyp = torch.zeros(P, dtype=torch.long)
    if nh > 1:
        hyp = energy.view(P, nh).argmin(1)
        pick = torch.arange(P) * nh + hyp
        go_f, pose_f, betas_f, transl_f, err = (t[pick] for t in (go_f, pose_f, betas_f, transl_f, err))
    return FitResult(go_f, axis_angle_to_rotmat(pose_f), betas_f, transl_f, err, hyp)


def _run(body, cfg, kp, box, focal_length, pp, init, warm_start=False):
    P = kp.shape[0]
    conf = kp[..., 2] * (kp[..., 2] >= cfg.min_confidence)
    scale = (box[:, 2:] - box[:, :2]).max(-1).values.clamp(min=8.0)
    if init is None:  # two facing hypotheses per person, interleaved
        nh = 2
        go, transl = _initial_global(body, kp, conf, scale, focal_length, pp)
        pose0 = relaxed_pose().expand(P * nh, 23, 3).clone()
        betas0 = torch.zeros(P * nh, body.num_betas)
        kp, conf, scale = (t.repeat_interleave(nh, 0) for t in (kp, conf, scale))
    else:
        nh = 1
        go = init.global_orient.reshape(P, 3, 3)
        transl = init.transl.reshape(P, 3)
        pose0 = rotmat_to_axis_angle(init.body_pose.reshape(P, 23, 3, 3))
        betas0 = init.betas.reshape(P, -1)[:, :body.num_betas]
    params = _optimise(body, cfg, go, pose0, betas0, transl, kp, conf, scale,
                       focal_length, pp, refine=init is not None, warm=warm_start)
    return params, nh


def _optimise(body, cfg, go, pose0, betas0, transl0, kp, conf, scale, focal, pp, refine, warm=False):
    rot6d = rotmat_to_rot6d(go).clone().requires_grad_(True)
    pose = pose0.clone().requires_grad_(True)
    betas = betas0.clone().requires_grad_(not warm)  # warm start: the track's shape stays fixed
    transl = transl0.clone().requires_grad_(True)
    prior_mean = pose0.detach()
    z0 = transl0[:, 2].detach()
    wj = joint_prior_weights(conf)
    torso = torch.zeros(NUM_KEYPOINTS)
    torso[[5, 6, 11, 12]] = 1.0
    kw = torch.as_tensor(KEYPOINT_WEIGHTS)

    def energy(sigma, kp_weights, full):
        R = torch.cat([rot6d_to_rotmat(rot6d)[:, None], axis_angle_to_rotmat(pose)], 1)
        proj = perspective_projection(body.keypoints(R, betas, transl), focal, pp)
        r2 = (((proj - kp[..., :2]) / scale[:, None, None]) ** 2).sum(-1)
        w = conf * kp_weights
        rho = sigma ** 2 * r2 / (sigma ** 2 + r2)
        e2d = 100.0 * (w * rho).sum(-1) / w.sum(-1).clamp(min=1e-6)  # residuals in units of box/10
        e = e2d + cfg.w_depth * 0.01 * ((transl[:, 2] - z0) / z0) ** 2
        if full:
            e = e + cfg.w_pose * (wj[..., None] * (pose - prior_mean) ** 2).sum((-1, -2)) * (0.1 if refine else 1.0)
            e = e + cfg.w_limits * _limit_penalty(pose) + cfg.w_shape * (betas ** 2).sum(-1)
        return e, proj

    if not refine:
        opt = torch.optim.Adam([rot6d, transl], lr=cfg.lr_global)
        for _ in range(cfg.iters_global):
            opt.zero_grad()
            e, _ = energy(cfg.sigma_start, torso + 0.2 * kw * (torso == 0), False)
            e.sum().backward()
            opt.step()
    opt = torch.optim.Adam([rot6d, pose, transl] + ([] if warm else [betas]), lr=cfg.lr_full)
    n = cfg.iters_warm if warm else cfg.iters_full
    for i in range(n):
        sigma = cfg.sigma_start * (cfg.sigma_end / cfg.sigma_start) ** min(1.0, i / (0.6 * n))
        opt.zero_grad()
        e, _ = energy(sigma if not refine else cfg.sigma_end, kw, True)
        e.sum().backward()
        opt.step()
    with torch.no_grad():
        e, proj = energy(cfg.sigma_end, kw, True)
        used = (conf[:, :17] > 0).float()  # reported error: COCO-17 keypoints
        err_px = ((proj - kp[..., :2])[:, :17].norm(dim=-1) * used).sum(-1) / used.sum(-1).clamp(min=1)
    return (rot6d_to_rotmat(rot6d.detach()), pose.detach(), betas.detach(), transl.detach(), err_px, e)


def _limit_penalty(pose: torch.Tensor) -> torch.Tensor:
    """(N,23,3) axis-angle -> (N,) hinge-joint penalty (knees, elbows; SMPL axes)."""
    aa = torch.cat([torch.zeros_like(pose[:, :1]), pose], 1)  # index by SMPL joint id
    relu = torch.nn.functional.relu
    knees = aa[:, [L_KNEE, R_KNEE]]
    e = (relu(-knees[..., 0]) ** 2).sum(-1) + 0.5 * (knees[..., 1:] ** 2).sum((-1, -2))
    le, re = aa[:, L_ELBOW], aa[:, R_ELBOW]
    e = e + relu(le[:, 1]) ** 2 + relu(-re[:, 1]) ** 2
    e = e + 0.3 * (le[:, 2] ** 2 + re[:, 2] ** 2) + 0.1 * (le[:, 0] ** 2 + re[:, 0] ** 2)
    return e


def _initial_global(body: KeypointBody, kp, conf, scale, focal, pp):
    """Two global-rotation hypotheses per person (facing the camera / away), rolled to the
    2D torso direction, and a translation from limb lengths (depth) and the mid-hip.

    Returns go (2P,3,3), transl (2P,3) interleaved per person.
    """
    P = kp.shape[0]
    rest = body.rest_joints(torch.zeros(1, body.num_betas))[0]          # (24,3)
    xy, c = kp[..., :2], conf
    # depth: foreshortening only shortens 2D segments, so the smallest estimate is the best
    segs = [(5, 11, 16, 1), (6, 12, 17, 2), (11, 13, 1, 4), (12, 14, 2, 5), (13, 15, 4, 7), (14, 16, 5, 8)]
    z = torch.full((P,), float("inf"))
    for a, b, ja, jb in segs:
        ok = (c[:, a] > 0.4) & (c[:, b] > 0.4)
        l2 = (xy[:, a] - xy[:, b]).norm(dim=-1).clamp(min=1.0)
        l3 = (rest[ja] - rest[jb]).norm()
        z = torch.where(ok, torch.minimum(z, focal * l3 / l2), z)
    height3d = float(rest[:, 1].max() - rest[:, 1].min()) + 0.25
    z = torch.where(torch.isfinite(z), z, focal * height3d / scale).clamp(0.5, 200.0)
    # 2D centre: mid-hip, else mean of confident keypoints
    w = (c > 0).float()
    centroid = (xy * w[..., None]).sum(1) / w.sum(1, keepdim=True).clamp(min=1)
    hips_ok = (c[:, 11] > 0) & (c[:, 12] > 0)
    mid_hip = (xy[:, 11] + xy[:, 12]) / 2
    centre = torch.where(hips_ok[:, None], mid_hip, centroid)
    X = (centre - pp) * z[:, None] / focal
    transl = torch.cat([X, z[:, None]], -1) - rest[0]
    # roll: image direction from mid-hip to mid-shoulder should be "up"
    sh_ok = (c[:, 5] > 0) & (c[:, 6] > 0) & hips_ok
    up = (xy[:, 5] + xy[:, 6]) / 2 - mid_hip
    roll = torch.where(sh_ok, torch.atan2(up[:, 0], -up[:, 1]), torch.zeros(P))
    Rz = axis_angle_to_rotmat(torch.stack([torch.zeros(P), torch.zeros(P), roll], -1))
    facing = torch.diag(torch.tensor([1.0, -1.0, -1.0]))     # upright, facing the camera
    away = torch.diag(torch.tensor([-1.0, -1.0, 1.0]))       # upright, back to the camera
    go = torch.stack([Rz @ facing, Rz @ away], 1).reshape(2 * P, 3, 3)
    return go, transl.repeat_interleave(2, 0)
