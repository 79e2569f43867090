"""Small synthetic SMPL-format bodies for tests (no SMPL data involved).

:func:`make_test_smpl_arrays` builds a stick-figure body in SMPL's layout: the 24-joint
SMPL tree with plausible T-pose joint positions (metres, Y up, facing +Z, +X the body's
left), an octahedron around every joint and a six-sided tube along every bone (a few
hundred vertices), rigid skinning weights, a J_regressor that averages each joint's
octahedron (so ``J_regressor @ v_template`` is exactly the joint positions), smooth
random shape directions (beta0 scales height), small random pose blend shapes and one
extra regressor. :func:`make_test_smpl_npz` writes it with the official SMPL array names.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from deforhmr_model.body.layouts import SMPL_PARENTS
# plausible SMPL-like T-pose joint positions (metres)
REST_JOINTS = np.array([
    [0.00, -0.22, 0.03],                         # 0 pelvis
    [0.07, -0.31, 0.02], [-0.07, -0.31, 0.02],   # 1, 2 hips
    [0.00, -0.11, 0.00],                         # 3 spine1
    [0.11, -0.69, 0.01], [-0.11, -0.69, 0.01],   # 4, 5 knees
    [0.00, 0.03, 0.01],                          # 6 spine2
    [0.09, -1.09, -0.03], [-0.09, -1.09, -0.03],  # 7, 8 ankles
    [0.00, 0.08, 0.03],                          # 9 spine3
    [0.12, -1.15, 0.09], [-0.12, -1.15, 0.09],   # 10, 11 feet
    [0.00, 0.29, -0.01],                         # 12 neck
    [0.08, 0.20, 0.00], [-0.08, 0.20, 0.00],     # 13, 14 collars
    [0.00, 0.38, 0.04],                          # 15 head
    [0.19, 0.23, -0.01], [-0.19, 0.23, -0.01],   # 16, 17 shoulders
    [0.45, 0.22, -0.03], [-0.45, 0.22, -0.03],   # 18, 19 elbows
    [0.71, 0.23, -0.03], [-0.71, 0.23, -0.03],   # 20, 21 wrists
    [0.79, 0.22, -0.04], [-0.79, 0.22, -0.04],   # 22, 23 hands
])
_OCTA = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], float)
_OCTA_FACES = np.array([[0, 2, 4], [2, 1, 4], [1, 3, 4], [3, 0, 4], [2, 0, 5], [1, 2, 5], [3, 1, 5], [0, 3, 5]])


def make_test_smpl_arrays(seed: int = 0, num_shape: int = 10, pad_to: int | None = None) -> dict:
    """Arrays of a synthetic body under the official SMPL names.

    Keys: v_template (V,3) f64, f (F,3) uint32, J_regressor (24,V) f64 (dense), weights (V,24),
    kintree_table (2,24) int64 (root parent 2**32-1 as in the official files), shapedirs
    (V,3,num_shape), posedirs (V,3,207), face_vertex_names/face_vertex_ids, extra_regressor__j5
    (5,V). ``pad_to`` appends unused vertices (weight on the pelvis) up to that count.
    """
    rng = np.random.default_rng(seed)
    verts, faces, owner = [], [], []
    octa_start = []
    for j, p in enumerate(REST_JOINTS):                 # octahedron around each joint
        r = 0.06 if j == 15 else 0.03
        octa_start.append(len(verts))
        faces += (_OCTA_FACES + len(verts)).tolist()
        verts += (p + r * _OCTA).tolist()
        owner += [j] * 6
    for c in range(1, 24):                              # tube along each bone, owned by the parent
        p = SMPL_PARENTS[c]
        a, b = REST_JOINTS[p], REST_JOINTS[c]
        axis = (b - a) / np.linalg.norm(b - a)
        u = np.cross(axis, [0, 0, 1] if abs(axis[2]) < 0.9 else [1, 0, 0])
        u /= np.linalg.norm(u)
        w = np.cross(axis, u)
        rings = []
        for t in (0.25, 0.75):
            centre = a + t * (b - a)
            rings.append(len(verts))
            for k in range(6):
                ang = 2 * np.pi * k / 6
                verts.append((centre + 0.025 * (np.cos(ang) * u + np.sin(ang) * w)).tolist())
                owner.append(p)
        r0, r1 = rings
        for k in range(6):
            k1 = (k + 1) % 6
            faces += [[r0 + k, r0 + k1, r1 + k], [r0 + k1, r1 + k1, r1 + k]]
    head = octa_start[15]  # head octahedron: +X left ear, -X right ear, +Z nose
    eyes = len(verts)      # two eye vertices in front of the head, a triangle with the nose
    verts += [(REST_JOINTS[15] + [0.03, 0.02, 0.05]).tolist(), (REST_JOINTS[15] + [-0.03, 0.02, 0.05]).tolist()]
    owner += [15, 15]
    faces.append([eyes + 1, head + 4, eyes])
    V = len(verts)
    if pad_to is not None:
        verts += [REST_JOINTS[0].tolist()] * (pad_to - V)
        owner += [0] * (pad_to - V)
        V = pad_to
    v = np.asarray(verts)
    weights = np.zeros((V, 24))
    weights[np.arange(V), owner] = 1.0
    J_reg = np.zeros((24, V))
    for j, s in enumerate(octa_start):
        J_reg[j, s:s + 6] = 1.0 / 6
    face_ids = {"nose": head + 4, "left_eye": eyes, "right_eye": eyes + 1, "left_ear": head + 0,
                "right_ear": head + 1}
    # shape directions: beta0 scales the body (height), the others are smooth random linear maps
    dirs = [v * np.array([0.02, 0.05, 0.02])]
    for _ in range(num_shape - 1):
        M = rng.normal(scale=0.02, size=(3, 3))
        dirs.append(v @ M.T)
    shapedirs = np.stack(dirs, axis=2)
    posedirs = rng.normal(scale=1e-3, size=(V, 3, 207))
    extra = rng.random((5, V)) * (rng.random((5, V)) < 0.05)
    extra[:, 0] += 1e-3
    extra /= extra.sum(1, keepdims=True)
    kintree = np.stack([np.array(SMPL_PARENTS, np.int64), np.arange(24)])
    kintree[0, 0] = 2 ** 32 - 1
    return {
        "v_template": v, "f": np.asarray(faces, np.uint32), "J_regressor": J_reg, "weights": weights,
        "kintree_table": kintree, "shapedirs": shapedirs, "posedirs": posedirs,
        "face_vertex_names": np.array(list(face_ids)), "face_vertex_ids": np.array(list(face_ids.values())),
        "extra_regressor__j5": extra,
    }


def make_test_smpl_npz(path: str | Path, seed: int = 0, **kwargs) -> Path:
    """Write :func:`make_test_smpl_arrays` as an ``.npz`` with the official SMPL names (+ an ``id``)."""
    path = Path(path)
    arrays = make_test_smpl_arrays(seed, **kwargs)
    np.savez(path, id=np.array("test_smpl"), name=np.array("synthetic test body"),
             license=np.array("CC0 test data"), **arrays)
    return path
