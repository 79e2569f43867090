"""2D pose-guided fitting and refinement of SMPL-format bodies.

GenHMR's "2D pose-guided refinement" (seed 001, inference stage 2) adapted to
parameter space: the body's pose, shape and translation are optimised so that
its projected COCO-17 keypoints match the detected 2D keypoints. Used

* standalone when no network checkpoint is installed: several initialisations
  per person (standing, seated, kneeling; facing the camera, away from it, or
  turned as BlazePose's 3D world landmarks say; rolled to the 2D torso, so people
  lying in the image plane start lying), all optimised together, the one with the
  lowest objective kept;
* after the network (``refine=True``), initialised from and regularised
  towards the network's estimate.

Objective (per person, batched over people and hypotheses)::

    E = E_2D + w_pose E_pose + w_limits E_limits + w_shape |betas|^2

* ``E_2D``: confidence-weighted Geman-McClure robust reprojection error of the
  17 COCO keypoints plus heels, toes and hands (BlazePose gives them; they orient
  the feet and hands), residuals in units of the person's box size (so the
  weights do not depend on image resolution); sigma is annealed from 0.5 to
  0.1 box so that far-off limbs still get a gradient early on. A heel, toe or
  hand whose ankle or wrist keypoint is seen enters relative to it (its residual
  minus the ankle's or wrist's): it turns the foot or hand but cannot pull the
  limb off its own keypoint when the two detectors disagree; without the ankle
  or wrist it places the limb end itself.
* ``E_pose``: squared axis-angle distance to the prior mean (relaxed A-pose, or
  the network's pose), weighted per joint: joints that the 17 keypoints do not
  observe (spine, feet, hands, collars, head twist) are held strongly.
* ``E_limits``: every joint's axis-angle components stay in anatomical ranges
  (:data:`JOINT_LIMITS`; SMPL convention: knee flexion +X, hip flexion -X, spine
  forward bend +X, left elbow flexion -Y, right elbow +Y).
* ``E_3D`` (when BlazePose's 33 world landmarks are given): the body's limb, heel
  and toe points relative to its hip centre match the world landmarks relative to
  theirs (metres, camera axes after turning the landmarks' view axis onto the ray
  through the person), robust, visibility-weighted. It carries what 2D keypoints
  cannot: which limb is in front (side-on people's arms, kneeling shins, lying
  bodies) and where occluded limbs are. Its image-plane (x, y) part is weighted
  by 1 - the point's 2D keypoint confidence: where a keypoint measures the point
  in the image, the landmarks only say its depth.

Keypoints below ``min_confidence`` (0.1) are ignored, the others weighted by
their confidence (a half-occluded wrist at 0.2 still says roughly where it is);
joints without keypoints are held by the pose prior and, with world landmarks,
by ``E_3D``.
Fitting never changes torch's process-wide thread count.

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
# The COCO keypoint each extremity keypoint hangs from (ankles 15/16, wrists 9/10)
EXTRA_ANCHORS = (15, 16, 15, 16, 9, 10)
KEYPOINT_WEIGHTS = np.array([0.5, 0.3, 0.3, 0.3, 0.3] + [1.0] * 12 + [1.0] * 4 + [0.5] * 2, np.float32)
SMPL_FOOT_VERTEX_IDS = {"left_heel": 3387, "right_heel": 6787, "left_toe": 3216, "right_toe": 6617}
# BlazePose landmark indices: heels 29/30, foot index (toe tip) 31/32, pinky 17/18, index 19/20
_BLAZEPOSE_FEET = (29, 30, 31, 32)
_BLAZEPOSE_HANDS = ((17, 19), (18, 20))
L_KNEE, R_KNEE, L_ELBOW, R_ELBOW = 4, 5, 18, 19
# BlazePose world landmarks matched to body keypoints (index into KeypointBody.keypoints):
# shoulders, elbows, wrists, hips, knees, ankles (COCO 5..16), heels and toes (17..20)
WORLD_FROM_BLAZEPOSE = (11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32)
WORLD_BODY_KEYPOINTS = tuple(range(5, 21))
# Anatomical ranges of each joint's axis-angle components (radians), SMPL joints 1..23, (lo, hi)
# per x, y, z. Generous: they stop impossible poses (knees bending forward, spines folding
# backwards, heads turning around), not unusual ones.
_LIMITS = {
    1: ((-2.6, 0.7), (-0.9, 0.9), (-0.6, 1.3)),    # left hip: flexion -x, abduction +z
    2: ((-2.6, 0.7), (-0.9, 0.9), (-1.3, 0.6)),    # right hip: abduction -z
    3: ((-0.4, 1.0), (-0.5, 0.5), (-0.4, 0.4)),    # spine1: forward bend +x
    4: ((-0.05, 2.7), (-0.3, 0.3), (-0.2, 0.2)),   # left knee: flexion +x only
    5: ((-0.05, 2.7), (-0.3, 0.3), (-0.2, 0.2)),   # right knee
    6: ((-0.3, 0.6), (-0.4, 0.4), (-0.3, 0.3)),    # spine2
    7: ((-0.8, 0.9), (-0.5, 0.5), (-0.4, 0.4)),    # left ankle
    8: ((-0.8, 0.9), (-0.5, 0.5), (-0.4, 0.4)),    # right ankle
    9: ((-0.3, 0.6), (-0.4, 0.4), (-0.3, 0.3)),    # spine3
    10: ((-0.5, 0.5), (-0.3, 0.3), (-0.3, 0.3)),   # left foot (toes)
    11: ((-0.5, 0.5), (-0.3, 0.3), (-0.3, 0.3)),   # right foot
    12: ((-0.6, 0.8), (-0.7, 0.7), (-0.5, 0.5)),   # neck
    13: ((-0.4, 0.4), (-0.5, 0.5), (-0.5, 0.4)),   # left collar
    14: ((-0.4, 0.4), (-0.5, 0.5), (-0.4, 0.5)),   # right collar
    15: ((-0.6, 0.7), (-0.8, 0.8), (-0.5, 0.5)),   # head
    16: ((-1.8, 1.8), (-1.8, 1.6), (-1.8, 1.6)),   # left shoulder
    17: ((-1.8, 1.8), (-1.6, 1.8), (-1.6, 1.8)),   # right shoulder
    18: ((-1.8, 1.8), (-2.7, 0.05), (-0.4, 0.4)),  # left elbow: flexion -y only, forearm twist x
    19: ((-1.8, 1.8), (-0.05, 2.7), (-0.4, 0.4)),  # right elbow: flexion +y only
    20: ((-1.2, 1.2), (-0.6, 0.6), (-1.2, 1.2)),   # left wrist
    21: ((-1.2, 1.2), (-0.6, 0.6), (-1.2, 1.2)),   # right wrist
    22: ((-0.4, 0.4), (-0.4, 0.4), (-0.4, 0.4)),   # left hand
    23: ((-0.4, 0.4), (-0.4, 0.4), (-0.4, 0.4)),   # right hand
}
JOINT_LIMITS = torch.tensor([[list(r) for r in _LIMITS[j]] for j in range(1, 24)])  # (23, 3, 2) lo, hi
INIT_POSES = ("standing", "seated", "kneeling")


@dataclass
class FitConfig:
    """Optimisation settings (defaults tuned on ``shared/photos/dev``)."""

    iters_global: int = 40      # stage 1: global rotation + translation, torso keypoints
    iters_full: int = 120       # stage 2: everything
    lr_global: float = 0.05
    lr_full: float = 0.03
    min_confidence: float = 0.1  # keypoints below this are ignored (above: weighted by confidence)
    w_pose: float = 0.02
    w_limits: float = 1.0
    w_shape: float = 0.005
    w_depth: float = 0.1        # stay near the initial depth (scale/depth ambiguity)
    sigma_start: float = 0.5    # robust-loss scale, fraction of the box size
    sigma_end: float = 0.1
    iters_warm: int = 30        # warm start (video: from the same person's previous frame)
    init_poses: tuple[str, ...] = INIT_POSES  # start poses tried per facing hypothesis (fit from scratch)
    iters_select: int = 40      # stage-2 iterations with every hypothesis before keeping the best
    w_world: float = 0.2        # weight of the 3D world-landmark term (when landmarks are given)
    sigma_world: float = 0.15   # its robust-loss scale, metres


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
    return init_pose("standing")


def init_pose(kind: str) -> torch.Tensor:
    """(23,3) axis-angle start pose and prior mean of an initialisation (:data:`INIT_POSES`):
    ``standing`` (relaxed: arms ~60 deg down, elbows and knees slightly bent), ``seated``
    (hips and knees flexed ~90 deg), ``kneeling`` (thighs upright, knees flexed ~100 deg)."""
    pose = torch.zeros(24, 3)
    pose[16, 2], pose[17, 2] = -1.1, 1.1       # shoulders: lower the arms
    pose[18, 1], pose[19, 1] = -0.3, 0.3       # elbows: slight flexion
    pose[4, 0] = pose[5, 0] = 0.1              # knees: slight flexion
    if kind == "seated":
        pose[1, 0] = pose[2, 0] = -1.5         # hips flexed: thighs forward
        pose[4, 0] = pose[5, 0] = 1.5          # knees flexed: shins down
    elif kind == "kneeling":
        pose[1, 0] = pose[2, 0] = -0.2
        pose[4, 0] = pose[5, 0] = 1.8          # shins back along the floor
        pose[7, 0] = pose[8, 0] = 0.4
    elif kind != "standing":
        raise ValueError(f"unknown initial pose {kind!r}; choose among {INIT_POSES}")
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
                     config: FitConfig | None = None, extra_keypoints=None, world_landmarks=None,
                     warm_start: bool = False) -> FitResult:
    """Fit bodies to 2D keypoints, batched over people.

    Args:
        data: a ``BodyModelData`` (see :mod:`deforhmr_model.body.model`).
        keypoints: (P,17,3) COCO-17 keypoints (x px, y px, confidence in [0,1]).
        bboxes: (P,4) person boxes xyxy px (set the residual scale).
        focal_length: px; principal_point: (cx, cy) px.
        init: optional :class:`FitInit` (network estimate); None fits from scratch with
            several initialisations (module docstring) and keeps the one with the lowest objective.
        config: :class:`FitConfig`.
        extra_keypoints: optional (P,6,3) heels, toes and hands (:data:`EXTRA_NAMES`, x px, y px,
            confidence), e.g. :func:`extremity_keypoints` of BlazePose's 33 landmarks; they
            orient the feet and hands. None: not used.
        world_landmarks: optional (P,33,3) BlazePose world landmarks (metres, origin between
            the hips, x right, y down, z away from the camera, as the landmark model sees the
            person); an all-zero person has none. None: not used.
        warm_start: ``init`` is the same person's fit in the previous video frame: run
            ``config.iters_warm`` iterations, keep ``init.betas`` fixed (one shape per track)
            and hold the pose towards ``init`` (the refinement prior, a temporal term).
    Returns:
        :class:`FitResult` (float32, CPU). Never changes torch's thread count.
    Raises:
        ValueError: on wrong shapes.
    """
    cfg = config or FitConfig()
    kp_np = np.asarray(keypoints, dtype=np.float32)
    box_np = np.asarray(bboxes, dtype=np.float32)
    if kp_np.ndim != 3 or kp_np.shape[1:] != (17, 3):
        raise ValueError(f"keypoints must be (P,17,3) COCO-17 (x, y, conf); got {kp_np.shape}")
    if box_np.shape != (kp_np.shape[0], 4):
        raise ValueError(f"bboxes must be (P,4) xyxy px; got {box_np.shape}")
    P = kp_np.shape[0]
    extra = (np.zeros((P, 6, 3), np.float32) if extra_keypoints is None
             else np.asarray(extra_keypoints, np.float32))
    if extra.shape != (P, 6, 3):
        raise ValueError(f"extra_keypoints must be (P,6,3) {EXTRA_NAMES}; got {extra.shape}")
    world = None
    if world_landmarks is not None:
        world = np.asarray(world_landmarks, np.float32)
        if world.shape != (P, 33, 3):
            raise ValueError(f"world_landmarks must be (P,33,3) BlazePose world landmarks; got {world.shape}")
        world = np.where(np.isfinite(world), world, 0.0).astype(np.float32)
        if not np.abs(world).any():
            world = None
    kp_np = np.concatenate([kp_np, extra], 1)
    if P == 0:
        z = torch.zeros
        return FitResult(z(0, 3, 3), z(0, 23, 3, 3), z(0, 10), z(0, 3), z(0), z(0))
    # autograd must work even when the caller runs under torch.inference_mode (ComfyUI does):
    # every tensor of the problem is made (or cloned) inside this context
    with torch.inference_mode(False), torch.enable_grad():
        if init is not None:
            init = FitInit(*(t.detach().clone().float().cpu() for t in
                             (init.global_orient, init.body_pose, init.betas, init.transl)))
        params, nh = _run(KeypointBody(data), cfg, torch.from_numpy(kp_np.copy()),
                          torch.from_numpy(box_np.copy()), float(focal_length),
                          torch.tensor(principal_point, dtype=torch.float32), init,
                          None if world is None else torch.from_numpy(world), warm_start and init is not None)
    go_f, pose_f, betas_f, transl_f, err, hyp = params
    return FitResult(go_f, axis_angle_to_rotmat(pose_f), betas_f, transl_f, err, hyp)


def _run(body, cfg, kp, box, focal_length, pp, init, world, warm=False):
    P = kp.shape[0]
    conf = kp[..., 2] * (kp[..., 2] >= cfg.min_confidence)
    scale = (box[:, 2:] - box[:, :2]).max(-1).values.clamp(min=8.0)
    world_t, world_w = (None, None) if world is None else _world_targets(world, kp, focal_length, pp)
    if init is None:  # hypotheses per person, interleaved: 2 orientations x the start poses
        go2, transl = _initial_global(body, kp, conf, scale, focal_length, pp, world_t)
        kinds = cfg.init_poses or ("standing",)
        nk = len(kinds)
        nh = 2 * nk
        go = go2.view(P, 2, 1, 3, 3).expand(P, 2, nk, 3, 3).reshape(P * nh, 3, 3)
        transl = transl.view(P, 2, 1, 3).expand(P, 2, nk, 3).reshape(P * nh, 3)
        pose0 = torch.stack([init_pose(k) for k in kinds]).repeat(P * 2, 1, 1)
        betas0 = torch.zeros(P * nh, body.num_betas)
    else:
        nh = 1
        go = init.global_orient.reshape(P, 3, 3)
        transl = init.transl.reshape(P, 3)
        pose0 = rotmat_to_axis_angle(init.body_pose.reshape(P, 23, 3, 3))
        betas0 = init.betas.reshape(P, -1)[:, :body.num_betas]
    rep = (lambda t: t.repeat_interleave(nh, 0)) if nh > 1 else (lambda t: t)  # noqa: E731
    prob = _Problem(body, cfg, rep(kp), rep(conf), rep(scale), focal_length, pp, pose0.clone(),
                    None if world_t is None else rep(world_t), None if world_t is None else rep(world_w),
                    refine=init is not None)
    prob.R0 = go.reshape(-1, 3, 3).clone()  # global rotation = R0 @ exp(delta), delta optimised
    params = [torch.zeros(go.reshape(-1, 3, 3).shape[0], 3), pose0.clone(), betas0.clone(), transl.clone()]
    params = [t.requires_grad_(True) for t in params]
    z0 = transl[:, 2].clone()
    if init is None:  # stage 1: global rotation and translation on the torso
        prob.descend(params, (0, 3), cfg.lr_global, range(cfg.iters_global), z0, full=False)
    n = cfg.iters_warm if warm else cfg.iters_full
    which = (0, 1, 3) if warm else (0, 1, 2, 3)  # warm start: the track's shape stays fixed
    split = min(cfg.iters_select, n) if nh > 1 else 0
    prob.descend(params, which, cfg.lr_full, range(split), z0, full=True)
    hyp = torch.zeros(P, dtype=torch.long)
    if nh > 1:  # keep each person's best hypothesis (objective at the final robust scale)
        with torch.no_grad():
            e, _ = prob.energy(params, z0, cfg.sigma_end, full=True)
        hyp = e.view(P, nh).argmin(1)
        pick = torch.arange(P) * nh + hyp
        params = [t.detach()[pick].clone().requires_grad_(True) for t in params]
        z0 = z0[pick]
        R0 = prob.R0[pick]
        prob = prob.select(pick)
        prob.R0 = R0
    prob.descend(params, which, cfg.lr_full, range(split, n), z0, full=True)
    with torch.no_grad():
        _, proj = prob.energy(params, z0, cfg.sigma_end, full=True)
        used = (prob.conf[:, :17] > 0).float()  # reported error: COCO-17 keypoints
        err_px = ((proj - prob.kp[..., :2])[:, :17].norm(dim=-1) * used).sum(-1) / used.sum(-1).clamp(min=1)
    delta, pose, betas, transl = (t.detach() for t in params)
    return (prob.R0 @ rodrigues(delta), pose, betas, transl, err_px, hyp), nh


def _world_targets(world, kp, focal, pp):
    """BlazePose world landmarks -> targets for the body's keypoints 5..20 relative to the
    hip centre, in camera axes: (P,16,3) metres and (P,16) weights (0 for people without).

    The landmark model sees each person along its crop's axis; the landmarks are turned so
    that their view axis (+z) is the camera ray through the person's hip centre."""
    P = world.shape[0]
    has = world.abs().flatten(1).sum(-1) > 0
    w = world[:, list(WORLD_FROM_BLAZEPOSE)]
    w = w - (world[:, 23] + world[:, 24])[:, None] / 2
    hips = (kp[:, 11, :2] + kp[:, 12, :2]) / 2
    ray = torch.cat([(hips - pp) / focal, torch.ones(P, 1)], -1)
    ray = ray / ray.norm(dim=-1, keepdim=True)
    z = torch.tensor([0.0, 0.0, 1.0]).expand(P, 3)
    axis = torch.cross(z, ray, dim=-1)
    angle = torch.atan2(axis.norm(dim=-1), (z * ray).sum(-1))
    aa = axis / axis.norm(dim=-1, keepdim=True).clamp(min=1e-9) * angle[:, None]
    w = w @ axis_angle_to_rotmat(aa).transpose(-1, -2)
    conf = kp[:, list(WORLD_BODY_KEYPOINTS), 2].clamp(0, 1)
    weight = (0.25 + 0.75 * conf) * has[:, None].float()
    return w, weight


class _Problem:
    """One batch of fitting problems (rows: people x hypotheses) and its objective."""

    def __init__(self, body, cfg, kp, conf, scale, focal, pp, prior_mean, world_t, world_w, refine):
        self.body, self.cfg, self.focal, self.pp, self.refine = body, cfg, focal, pp, refine
        self.kp, self.conf, self.scale, self.prior_mean = kp, conf, scale, prior_mean
        self.world_t, self.world_w = world_t, world_w
        # image-plane part of the world term: only where no confident 2D keypoint says where
        # the point is (the keypoint is measured in the image; the landmark model guesses)
        self.world_xy = 1.0 - conf[:, list(WORLD_BODY_KEYPOINTS)].clamp(0, 1)
        self.R0 = None  # (N,3,3) start rotation of each row (set by _run)
        self.wj = joint_prior_weights(conf)
        self.kw = torch.as_tensor(KEYPOINT_WEIGHTS)
        self.anchor_on = (conf[:, list(EXTRA_ANCHORS)] > 0).float()
        torso = torch.zeros(NUM_KEYPOINTS)
        torso[[5, 6, 11, 12]] = 1.0
        self.torso_w = torso + 0.2 * self.kw * (torso == 0)

    def select(self, rows: torch.Tensor) -> "_Problem":
        pick = lambda t: None if t is None else t[rows]  # noqa: E731
        return _Problem(self.body, self.cfg, pick(self.kp), pick(self.conf), pick(self.scale), self.focal,
                        self.pp, pick(self.prior_mean), pick(self.world_t), pick(self.world_w), self.refine)

    def energy(self, params, z0, sigma, full):
        """(N,) objective and (N,23,2) projected keypoints; ``full`` False: global stage
        (torso-weighted keypoints, no pose terms)."""
        cfg = self.cfg
        delta, pose, betas, transl = params
        R = rodrigues(torch.cat([delta[:, None], pose], 1))   # one call: (N,24,3,3)
        R = torch.cat([(self.R0 @ R[:, 0])[:, None], R[:, 1:]], 1)
        k3 = self.body.keypoints(R, betas, transl)
        proj = perspective_projection(k3, self.focal, self.pp)
        res = proj - self.kp[..., :2]
        # an extremity whose ankle/wrist keypoint is seen: residual relative to that keypoint's,
        # so it turns the foot/hand and never pulls the limb end off its own keypoint
        res = torch.cat([res[:, :17], res[:, 17:] - self.anchor_on[..., None] * res[:, list(EXTRA_ANCHORS)]], 1)
        r2 = ((res / self.scale[:, None, None]) ** 2).sum(-1)
        w = self.conf * (self.kw if full else self.torso_w)
        rho = sigma ** 2 * r2 / (sigma ** 2 + r2)
        e = 100.0 * (w * rho).sum(-1) / w.sum(-1).clamp(min=1e-6)  # residuals in units of box/10
        e = e + cfg.w_depth * 0.01 * ((transl[:, 2] - z0) / z0) ** 2
        if self.world_t is not None and cfg.w_world > 0:
            rel = k3[:, list(WORLD_BODY_KEYPOINTS)] - (k3[:, 11:12] + k3[:, 12:13]) / 2
            d2 = (rel - self.world_t) ** 2
            q2 = self.world_xy * d2[..., :2].sum(-1) + d2[..., 2]
            sw2 = cfg.sigma_world ** 2
            ew = (self.world_w * sw2 * q2 / (sw2 + q2)).sum(-1) / self.world_w.sum(-1).clamp(min=1e-6)
            e = e + cfg.w_world * 100.0 * ew
        if full:
            prior = (self.wj[..., None] * (pose - self.prior_mean) ** 2).sum((-1, -2))
            e = e + cfg.w_pose * prior * (0.1 if self.refine else 1.0)
            e = e + cfg.w_limits * _limit_penalty(pose) + cfg.w_shape * (betas ** 2).sum(-1)
        return e, proj

    def descend(self, params, which, lr, iters, z0, full):
        """Adam on ``params[i] for i in which`` over the iterations ``iters`` of the robust-scale
        schedule (``full`` False: the global stage at the starting scale)."""
        iters = list(iters)
        if not iters:
            return
        cfg = self.cfg
        opt = torch.optim.Adam([params[i] for i in which], lr=lr, foreach=True)
        use = [t if k in which else t.detach() for k, t in enumerate(params)]
        n = cfg.iters_full
        for i in iters:
            if not full:
                sigma = cfg.sigma_start
            elif self.refine:
                sigma = cfg.sigma_end
            else:
                sigma = cfg.sigma_start * (cfg.sigma_end / cfg.sigma_start) ** min(1.0, i / (0.6 * n))
            opt.zero_grad()
            e, _ = self.energy(use, z0, sigma, full)
            e.sum().backward()
            opt.step()


_SIN_C = [(-1) ** k / math.factorial(2 * k + 1) for k in range(13)]      # sin(t)/t in t^2
_COS_C = [(-1) ** k / math.factorial(2 * k + 2) for k in range(13)]      # (1-cos(t))/t^2 in t^2
_SIN_COS_C = torch.tensor(list(zip(_SIN_C, _COS_C)), dtype=torch.float64)  # (13, 2): both series at once


def rodrigues(aa: torch.Tensor) -> torch.Tensor:
    """Axis-angle (..., 3) radians -> rotation matrices (..., 3, 3), for the fitting loop.

    ``R = I + a K + b K^2`` with ``K = [aa]_x``, ``a = sin t / t`` and ``b = (1 - cos t) / t^2``
    as power series in ``t^2 = |aa|^2`` (Horner, 13 terms: < 1e-7 for t <= 1.3 pi). Only
    multiplications and additions: no square root, no branch at t = 0 (smooth gradients), and
    none of the transcendental kernels that hand tiny tensors to a thread pool.
    """
    t2 = (aa * aa).sum(-1, keepdim=True)[..., None]                    # (..., 1, 1)
    coef = _SIN_COS_C.to(dtype=aa.dtype, device=aa.device)           # built once, not per call
    ab = coef[-1].expand(*t2.shape[:-1], 2)
    for k in range(len(_SIN_C) - 2, -1, -1):
        ab = ab * t2 + coef[k]
    a, b = ab[..., :1], ab[..., 1:]
    x, y, z = aa.unbind(-1)
    zero = torch.zeros_like(x)
    K = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(*aa.shape[:-1], 3, 3)
    K2 = K @ K
    return torch.eye(3, dtype=aa.dtype) + a * K + b * K2


def _limit_penalty(pose: torch.Tensor) -> torch.Tensor:
    """(N,23,3) axis-angle -> (N,) squared excess over :data:`JOINT_LIMITS`, summed."""
    relu = torch.nn.functional.relu
    lo, hi = JOINT_LIMITS[..., 0], JOINT_LIMITS[..., 1]
    return (relu(lo - pose) ** 2 + relu(pose - hi) ** 2).sum((-1, -2)) * 10.0


def _initial_global(body: KeypointBody, kp, conf, scale, focal, pp, world=None):
    """Two global-rotation hypotheses per person and a translation from limb lengths (depth)
    and the mid-hip. Without world landmarks: upright facing the camera / facing away, rolled
    to the 2D torso direction; with them: the torso orientation they show, and the same
    turned 180 deg about the torso axis (front/back is their most common error).

    Returns go (P,2,3,3), transl (P,2,3).
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
    go = torch.stack([Rz @ facing, Rz @ away], 1)
    if world is not None:
        ok, Rw = _world_orientation(world)
        flip = torch.diag(torch.tensor([-1.0, 1.0, -1.0]))  # 180 deg about the body's up axis
        go = torch.where(ok[:, None, None, None], torch.stack([Rw, Rw @ flip], 1), go)
    return go, transl[:, None].expand(P, 2, 3).clone()


def _world_orientation(world_rel):
    """Body-to-camera rotation (P,3,3) of the torso in hip-centred world targets (P,16,3)
    (:func:`_world_targets` order: shoulders 0/1, hips 6/7) and whether it is defined (P,)."""
    left = (world_rel[:, 6] - world_rel[:, 7]) + (world_rel[:, 0] - world_rel[:, 1])   # body +X
    up = (world_rel[:, 0] + world_rel[:, 1]) / 2 - (world_rel[:, 6] + world_rel[:, 7]) / 2  # body +Y
    ok = (up.norm(dim=-1) > 0.1) & (left.norm(dim=-1) > 0.1)
    y = up / up.norm(dim=-1, keepdim=True).clamp(min=1e-9)
    x = left - (left * y).sum(-1, keepdim=True) * y
    x = x / x.norm(dim=-1, keepdim=True).clamp(min=1e-9)
    zb = torch.cross(x, y, dim=-1)
    return ok, torch.stack([x, y, zb], -1)
