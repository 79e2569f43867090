"""The one place where DeforHMR frames and metres become Blender axes and units.

No bpy here (numpy only), so the maths is testable outside Blender.

Frames (``deforhmr_model/result.py`` module docstring)
-----------------------------------------------------
* OpenCV camera frame: x right, y down, z forward (metres).
* SMPL body frame: Y up, the body facing +Z, +X the body's left (metres).

Blender world (``up="Z"``, the default)
---------------------------------------
The photo's camera sits at the world origin looking along +Y with Z up::

    (x, y, z)_opencv  ->  (x, z, -y)_blender          cv_to_world
    (x, y, z)_body    ->  (x, -z, y)_blender          body_to_world

so an upright person facing the camera stands on +Z and faces -Y, towards the
camera (Blender's front view). With ``up="Y"`` (for Y-up pipelines) the world
is OpenGL's camera frame instead: ``(x, -y, -z)_opencv`` and the body frame
unchanged. Both are ``world = U @ GL @ x_opencv`` and ``world = U @ x_body``
with ``GL = diag(1, -1, -1)`` (OpenCV -> OpenGL camera axes) and ``U`` the
up-axis matrix of :func:`up_matrix`; lengths are multiplied by ``scale``
(Blender units per metre, see :func:`blender_units_per_metre`).

Rig convention
--------------
Every bone's rest frame is the body frame (``bone.matrix_local`` rotation
= ``U``: bones point along the body's +Y, roll 0), so a pose bone's
quaternion *is* the SMPL parent-relative rotation for joints 1..23. The root
bone carries ``GL @ global_orient`` (the body -> camera rotation re-expressed
in the upright world) and the armature object's location puts the pelvis
where the camera saw it (:func:`root_location`).
"""
from __future__ import annotations

import numpy as np

UP_AXES = ("Z", "Y")

# OpenCV camera axes (x right, y down, z forward) -> OpenGL/Blender camera axes
# (x right, y up, z backward).
_GL = np.diag([1.0, -1.0, -1.0])
# Columns: where the body's X, Y (up) and Z (front) axes go in the world.
_UP = {
    "Z": np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]]),
    "Y": np.eye(3),
}


def up_matrix(up: str) -> np.ndarray:
    """Rotation (3, 3) f64 from the SMPL body frame (Y up) to the Blender world for ``up``.

    It is also the rest rotation of every bone and the rotation of the photo's camera
    object (Blender cameras look along their local -Z with +Y up, i.e. OpenGL axes).

    Raises:
        ValueError: ``up`` is not one of :data:`UP_AXES`.
    """
    if up not in _UP:
        raise ValueError(f"up axis must be one of {UP_AXES}, got {up!r}")
    return _UP[up]


def blender_units_per_metre(scale: float, scene_scale_length: float) -> float:
    """Blender units per metre: the user's ``scale`` over the scene's unit scale.

    ``scene_scale_length`` is ``scene.unit_settings.scale_length`` (metres shown per
    Blender unit), so a 1.7 m person still reads 1.7 m in Blender's UI at scale 1.
    """
    if not (scale > 0 and scene_scale_length > 0):
        raise ValueError(f"scale ({scale}) and the scene unit scale "
                         f"({scene_scale_length}) must be > 0")
    return float(scale) / float(scene_scale_length)


def cv_to_world(points: np.ndarray, up: str, scale: float) -> np.ndarray:
    """OpenCV camera-frame points (..., 3) metres -> Blender world (..., 3) Blender units."""
    return np.asarray(points, np.float64) @ (up_matrix(up) @ _GL).T * scale


def body_to_world(points: np.ndarray, up: str, scale: float) -> np.ndarray:
    """SMPL body-frame points (..., 3) metres -> Blender armature space (..., 3) Blender units."""
    return np.asarray(points, np.float64) @ up_matrix(up).T * scale


def root_rotation(global_orient: np.ndarray) -> np.ndarray:
    """Root bone rotation (3, 3) from SMPL's ``global_orient`` (3, 3) (body -> OpenCV camera).

    Expressed in the bone's rest frame (= the body frame); identical for both up axes.
    """
    return _GL @ np.asarray(global_orient, np.float64)


def root_location(transl: np.ndarray, rest_pelvis: np.ndarray, up: str, scale: float) -> np.ndarray:
    """Armature object location (3,) Blender units.

    SMPL rotates about the rest pelvis ``J0`` (body frame) and then adds ``transl``,
    so the posed pelvis is ``J0 + transl`` in the camera frame. The armature's rest
    pelvis sits at ``body_to_world(J0)``, hence the object offset below.
    """
    pelvis_cv = np.asarray(rest_pelvis, np.float64) + np.asarray(transl, np.float64)
    return cv_to_world(pelvis_cv, up, scale) - body_to_world(rest_pelvis, up, scale)


def camera_intrinsics(focal_length: float, principal_point: tuple[float, float],
                      width: int, height: int, sensor_width_mm: float = 36.0) -> dict[str, float]:
    """Blender camera settings for a pinhole camera in pixels (sensor fit HORIZONTAL).

    Returns ``{"lens": mm, "sensor_width": mm, "shift_x", "shift_y"}``; Blender's shifts
    are fractions of the image width when the sensor fit is horizontal, +y up.
    """
    cx, cy = principal_point
    return {
        "lens": float(focal_length) * sensor_width_mm / float(width),
        "sensor_width": float(sensor_width_mm),
        "shift_x": (width / 2.0 - float(cx)) / float(width),
        "shift_y": (float(cy) - height / 2.0) / float(width),
    }
