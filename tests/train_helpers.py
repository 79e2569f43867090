"""Helpers for the training/evaluation tests and benchmark: a small SMPL-format body file.

The shipped open body (13k vertices) and SMPL (6890) are too slow to render hundreds of
times in a CPU test, so the tests write a ~900-vertex body in the same ``.npz`` format
(``deforhmr_model.body.smpl_io.write_body_npz``) and load it with ``load_body_data``: one tube
per bone of SMPL's 24-joint tree, skinned to the bone's parent joint, with a joint
regressor that reproduces the joints exactly and ten linear shape directions.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from deforhmr_model.body.model import SMPL_JOINT_NAMES, SMPL_PARENTS, BodyModel, load_body_data
from deforhmr_model.body.smpl_io import write_body_npz

from .body_fixtures import REST_JOINTS as SHARED_REST_JOINTS

# Rough SMPL T-pose joints (m, body frame: Y up, facing +Z, +X the body's left).
REST_JOINTS = SHARED_REST_JOINTS  # tests/body_fixtures.py: SMPL-like T-pose joints (m)
_THICK = {0: 0.09, 3: 0.09, 6: 0.09, 9: 0.08, 1: 0.06, 2: 0.06, 4: 0.05, 5: 0.05, 15: 0.09}


def tiny_body_arrays(seed: int = 0) -> dict:
    """Arrays of a small SMPL-format body (see module docstring)."""
    verts, weights, faces, start_ring = [], [], [], {}
    n_ring = 8
    ring = np.stack([np.cos(np.linspace(0, 2 * np.pi, n_ring + 1)[:n_ring]),
                     np.sin(np.linspace(0, 2 * np.pi, n_ring + 1)[:n_ring])], 1)
    bones = [(SMPL_PARENTS[j], j) for j in range(1, 24)] + [(j, j) for j in (10, 11, 15, 22, 23)]
    for a, b in bones:
        start = REST_JOINTS[a]
        end = REST_JOINTS[b] if a != b else REST_JOINTS[a] + ([0, 0.16, 0] if a == 15 else [0, 0, 0.06]
                                                              if a in (10, 11) else [0.05 * np.sign(start[0]), 0, 0])
        axis = (end - start) / np.linalg.norm(end - start)
        u = np.cross(axis, [0, 0, 1.0] if abs(axis[2]) < 0.9 else [1.0, 0, 0])
        u /= np.linalg.norm(u)
        v = np.cross(axis, u)
        r = _THICK.get(a, 0.035)
        base = len(verts)
        start_ring.setdefault(a, list(range(base, base + n_ring)))
        for i, t in enumerate(np.linspace(0, 1, 4)):
            for c, s in ring:
                verts.append(start + t * (end - start) + r * (c * u + s * v))
                w = np.zeros(24)
                w[a] = 1.0
                weights.append(w)
            if i:
                for k in range(n_ring):
                    p, q = base + (i - 1) * n_ring + k, base + (i - 1) * n_ring + (k + 1) % n_ring
                    faces += [[p, q, q + n_ring], [p, q + n_ring, p + n_ring]]
    V = np.asarray(verts)
    J = np.zeros((24, len(V)))
    for j, ids in start_ring.items():
        J[j, ids] = 1.0 / len(ids)
    rng = np.random.default_rng(seed)
    shapedirs = np.zeros((len(V), 3, 10))
    shapedirs[:, :, 0] = V * 0.06                                   # overall size
    shapedirs[:, 0, 1] = V[:, 0] * 0.12                              # width
    for k in range(2, 10):
        shapedirs[:, :, k] = V @ rng.normal(0, 0.02, (3, 3))
    head = [i for i in range(len(V)) if weights[i][15] == 1.0]
    hv = V[head]
    pick = lambda score: head[int(np.argmax(score))]                # noqa: E731
    face_ids = {"nose": pick(hv[:, 2]), "left_eye": pick(hv[:, 2] + hv[:, 0] + hv[:, 1]),
                "right_eye": pick(hv[:, 2] - hv[:, 0] + hv[:, 1]), "left_ear": pick(hv[:, 0]),
                "right_ear": pick(-hv[:, 0])}
    return dict(v_template=V, faces=np.asarray(faces), J_regressor=J, lbs_weights=np.asarray(weights),
                parents=np.asarray(SMPL_PARENTS), shapedirs=shapedirs, posedirs=None,
                joint_names=list(SMPL_JOINT_NAMES), face_vertex_ids=face_ids, extra_regressors={})


def tiny_body(folder: Path) -> BodyModel:
    """Write ``folder/tiny_body.npz`` and load it as a :class:`BodyModel`."""
    path = write_body_npz(Path(folder) / "tiny_body.npz", tiny_body_arrays(),
                          meta={"id": "tiny_body", "name": "test body", "license": "CC0"})
    return BodyModel(load_body_data(path))
