"""Where an imported body goes: as the photo's camera saw it, or at the world origin with its
feet on the ground (numpy only; positions through :mod:`.convert`).

"At origin, feet on ground" (what animation users exporting FBX to Unity/Unreal/Mixamo want,
no camera distance baked in) is one rigid transform per person, ``world' = R @ world - shift``:

* with the result's ``ground_plane`` (camera frame: unit ``normal`` pointing up, ``offset`` d,
  floor points X satisfy ``normal . X + d = 0``): ``R`` turns the floor's normal onto the
  world's up axis, and the pelvis goes to ``up * height`` where ``height`` is the pelvis'
  height above that floor, so the floor is the plane up = 0;
* without it: ``R`` is the identity and the lowest point of the feet (the posed foot and ankle
  vertices, each moved rigidly with its dominant joint) goes to up = 0, the pelvis above the
  origin.

A sequence uses its first frame's transform for every frame, so the motion is kept.
"""
from __future__ import annotations

import numpy as np

from . import convert

PLACEMENTS = ("CAMERA", "GROUND")
FOOT_JOINTS = ("left_ankle", "right_ankle", "left_foot", "right_foot")


def _up_vector(up: str) -> np.ndarray:
    return convert.body_to_world(np.array([0.0, 1.0, 0.0]), up, 1.0)


def _rotation_onto(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The smallest rotation (3, 3) turning unit vector ``a`` onto unit vector ``b``."""
    v, c = np.cross(a, b), float(np.dot(a, b))
    if c < -1.0 + 1e-9:  # opposite: half turn about any axis perpendicular to a
        axis = np.cross(a, [1.0, 0.0, 0.0] if abs(a[0]) < 0.9 else [0.0, 1.0, 0.0])
        axis /= np.linalg.norm(axis)
        return 2.0 * np.outer(axis, axis) - np.eye(3)
    vx = np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])
    return np.eye(3) + vx + vx @ vx / (1.0 + c)


def foot_points(person, body) -> np.ndarray:
    """Posed foot and ankle vertices (N, 3), camera frame, metres: each vertex whose strongest
    skin weight is a foot/ankle joint, moved rigidly with that joint (LBS with one joint)."""
    names = list(body.joint_names)
    rots = [person.global_orient]
    for j in range(1, len(names)):
        rots.append(rots[body.parents[j]] @ person.body_pose[j - 1])
    dominant = np.argmax(body.lbs_weights, axis=1)
    out = []
    for name in FOOT_JOINTS:
        j = names.index(name)
        rest = person.rest_vertices[dominant == j]
        out.append((rest - person.rest_joints[j]) @ rots[j].T + person.joints[j])
    return np.concatenate(out)


def ground_transform(person, body, ground_plane, up: str, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """``(R, shift)``: world' = R @ world - shift puts this person at the origin, feet on the ground.

    Args:
        person, body: :class:`.reader.PersonData` / :class:`.reader.BodyData` (first appearance).
        ground_plane: ``(normal (3,), offset)`` in the camera frame, or None.
        up, scale: the import's up axis and Blender units per metre.
    """
    u = _up_vector(up)
    pelvis_cv = person.joints[0]
    pelvis = convert.cv_to_world(pelvis_cv, up, scale)
    if ground_plane is not None:
        normal, offset = np.asarray(ground_plane[0], np.float64), float(ground_plane[1])
        R = _rotation_onto(convert.cv_to_world(normal, up, 1.0), u)
        height = (float(normal @ pelvis_cv) + offset) * scale
        return R, R @ pelvis - u * height
    lowest = float((convert.cv_to_world(foot_points(person, body), up, scale) @ u).min())
    return np.eye(3), pelvis - u * float(pelvis @ u) + u * lowest
