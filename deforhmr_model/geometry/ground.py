"""Ground plane of a photo from the fitted people's feet.

Everyone in a photo shares one camera; people standing, walking or sitting on the
floor touch one plane. The plane is estimated in the camera frame (OpenCV, metres):

1. the up direction: each person's body up axis (body frame +Y rotated by
   ``global_orient``) of the people whose feet are visible, a robust mean (people
   tilted more than :data:`MAX_TILT_DEG` from it, e.g. lying or jumping, are left out);
2. each remaining person's contact point: their lowest vertex along that up direction;
3. the plane through those points: with three or more people the normal is refined
   by a least-squares fit to the contact points, held towards the mean up direction
   (a few people in a row do not determine a tilt about the row's axis); with one or
   two people it is the mean up direction through their contact points.

The plane is ``normal . X + offset = 0`` with ``normal`` the unit up vector, so
``normal . X + offset`` is a point's height above the floor in metres.
"""
from __future__ import annotations

import numpy as np

MAX_TILT_DEG = 35.0     # people whose up axis is further from the common one do not stand on the floor
MIN_FOOT_CONFIDENCE = 0.3
PRIOR_WEIGHT = 4.0      # how strongly the feet fit is held to the people's mean up direction


def estimate_ground_plane(global_orient: np.ndarray, vertices: np.ndarray, foot_confidence: np.ndarray
                          ) -> dict | None:
    """The floor under the people whose feet are visible.

    Args:
        global_orient: (P, 3, 3) body frame -> camera frame rotations.
        vertices: (P, V, 3) posed vertices, camera frame, metres.
        foot_confidence: (P,) confidence in [0, 1] that the person's feet are visible
            (e.g. the larger ankle/heel/toe keypoint confidence of the weaker foot).
    Returns:
        ``{"normal": [3 floats], "offset": float, "num_people": int, "source": "feet"}`` or
        None when no person's feet are visible.
    """
    R = np.asarray(global_orient, np.float64).reshape(-1, 3, 3)
    V = np.asarray(vertices, np.float64)
    conf = np.asarray(foot_confidence, np.float64).reshape(-1)
    seen = np.flatnonzero(conf >= MIN_FOOT_CONFIDENCE)
    if seen.size == 0:
        return None
    ups = R[seen, :, 1]                                   # body +Y in the camera frame
    up = _robust_mean_direction(ups, conf[seen])
    upright = np.degrees(np.arccos(np.clip(ups @ up, -1.0, 1.0))) <= MAX_TILT_DEG
    if not upright.any():
        return None
    seen, ups = seen[upright], ups[upright]
    up = _robust_mean_direction(ups, conf[seen])
    contacts = np.stack([V[i][np.argmin(V[i] @ up)] for i in seen])   # lowest point of each person
    normal = up
    if len(seen) >= 3:
        normal = _fit_normal(contacts, up, conf[seen])
    offset = -float(np.average(contacts @ normal, weights=conf[seen]))
    return {"normal": [float(v) for v in normal], "offset": offset, "num_people": int(len(seen)),
            "source": "feet"}


def _robust_mean_direction(dirs: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted mean unit vector, recomputed once without directions > MAX_TILT_DEG from it."""
    m = _unit((dirs * w[:, None]).sum(0))
    keep = dirs @ m >= np.cos(np.radians(MAX_TILT_DEG))
    if keep.any():
        m = _unit((dirs[keep] * w[keep, None]).sum(0))
    return m


def _fit_normal(points: np.ndarray, prior: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Unit normal minimising sum w (n.(p - c))^2 + PRIOR_WEIGHT |n x prior|^2 (smallest
    eigenvector), kept on the prior's side."""
    c = np.average(points, axis=0, weights=w)
    q = (points - c) * np.sqrt(w / w.sum())[:, None]
    M = q.T @ q + PRIOR_WEIGHT * 0.01 * (np.eye(3) - np.outer(prior, prior))  # 0.01 m^2: a 10 cm spread
    vals, vecs = np.linalg.eigh(M)
    n = vecs[:, 0]
    n = n if n @ prior >= 0 else -n
    if np.degrees(np.arccos(np.clip(n @ prior, -1.0, 1.0))) > MAX_TILT_DEG:  # degenerate layout
        return prior
    return _unit(n)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-12)
