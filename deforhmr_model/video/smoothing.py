"""Temporal smoothing of a track's body parameters: rotations on SO(3), translation, depth.

Zero-phase Gaussian smoothing over time (a centred window, so the motion is not delayed:
a causal filter such as One-Euro lags by design, and the whole track is known after the
recovery pass). For each frame ``t`` with neighbours ``s`` (same track, ``|t_s - t| <= 3
sigma``), weights ``w_s = exp(-(t_s - t)^2 / (2 sigma^2))`` (frame times in seconds, so the
same setting means the same thing at 12 and 60 fps, and a gap in the track weakens the
coupling across it).

* **Rotations** (root and every joint) are averaged on SO(3): unit quaternions
  (roma, xyzw) are sign-aligned with the centre frame's (q and -q are the same rotation) and
  their weighted sum is renormalised. This is the weighted chordal L2 mean of the
  rotations (the same as ``scipy.spatial.transform.Rotation.mean`` up to O(spread^2),
  exact for the small spread inside a window); axis-angle or Euler angles are never
  averaged, so there are no wrap-around flips.
* **Translation** is split into depth ``z`` and the image-plane direction ``(x/z, y/z)``,
  each smoothed, then recombined: depth (the noisiest, least observed quantity) is
  smoothed without moving the body off the person in the image.

Levels (:data:`LEVELS`, sigma in seconds): ``off`` (0), ``light`` (0.07 s, the default:
about 1 frame at 12 fps, 2 at 30 fps) and ``strong`` (0.15 s).
"""
from __future__ import annotations

import math

import numpy as np

LEVELS = {"off": 0.0, "light": 0.07, "strong": 0.15}
DEFAULT_LEVEL = "light"


def sigma_for(level: str | float) -> float:
    """Gaussian sigma in seconds for a level name (:data:`LEVELS`) or a number of seconds.

    Raises ValueError for an unknown name or a negative number."""
    if isinstance(level, str):
        if level not in LEVELS:
            raise ValueError(f"smoothing {level!r}: choose one of {', '.join(LEVELS)}")
        return LEVELS[level]
    if not (math.isfinite(level) and level >= 0):
        raise ValueError(f"smoothing sigma {level}: must be a non-negative number of seconds")
    return float(level)


def _windows(times: np.ndarray, sigma: float):
    """Yield (offset, weights (T,), valid (T,)) for index offsets covering +-3 sigma."""
    T = len(times)
    if T < 2:
        return
    dt = np.diff(times)
    step = float(np.median(dt[dt > 0])) if (dt > 0).any() else 1.0
    K = min(T - 1, int(math.ceil(3 * sigma / step)) + 1)
    idx = np.arange(T)
    for k in range(-K, K + 1):
        j = idx + k
        valid = (j >= 0) & (j < T)
        jc = np.clip(j, 0, T - 1)
        d = times[jc] - times
        w = np.exp(-0.5 * (d / sigma) ** 2) * valid * (np.abs(d) <= 3 * sigma + 1e-9)
        yield jc, w


def smooth_vectors(x: np.ndarray, times: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian-smooth (T, ...) values over the (T,) frame times (seconds); sigma 0: a copy."""
    x = np.asarray(x, np.float64)
    times = np.asarray(times, np.float64)
    if sigma <= 0 or len(x) < 2:
        return x.copy()
    acc, wsum = np.zeros_like(x), np.zeros(len(x))
    for jc, w in _windows(times, sigma):
        acc += w.reshape(-1, *[1] * (x.ndim - 1)) * x[jc]
        wsum += w
    return acc / wsum.reshape(-1, *[1] * (x.ndim - 1))


def smooth_rotations(R: np.ndarray, times: np.ndarray, sigma: float) -> np.ndarray:
    """Smooth (T, ..., 3, 3) rotation matrices over time on SO(3) (module docstring).

    Returns (T, ..., 3, 3) float64 rotation matrices; sigma 0 returns a copy."""
    import roma
    import torch
    R = np.asarray(R, np.float64)
    if sigma <= 0 or len(R) < 2:
        return R.copy()
    shape = R.shape
    q = roma.rotmat_to_unitquat(torch.from_numpy(R.reshape(-1, 3, 3))).numpy().reshape(*shape[:-2], 4)  # (T,...,4) xyzw
    acc = np.zeros_like(q)
    for jc, w in _windows(np.asarray(times, np.float64), sigma):
        qn = q[jc]
        sign = np.sign((qn * q).sum(-1, keepdims=True))
        sign[sign == 0] = 1.0
        acc += w.reshape(-1, *[1] * (q.ndim - 1)) * sign * qn
    acc /= np.linalg.norm(acc, axis=-1, keepdims=True)
    return roma.unitquat_to_rotmat(torch.from_numpy(acc.reshape(-1, 4))).numpy().reshape(shape)


def smooth_translation(transl: np.ndarray, times: np.ndarray, sigma: float) -> np.ndarray:
    """Smooth (T, 3) camera-frame translations: depth and image-plane direction separately."""
    t = np.asarray(transl, np.float64)
    if sigma <= 0 or len(t) < 2:
        return t.copy()
    z = np.where(np.abs(t[:, 2]) > 1e-6, t[:, 2], 1e-6)
    direction = smooth_vectors(t[:, :2] / z[:, None], times, sigma)
    zs = smooth_vectors(z, times, sigma)
    return np.concatenate([direction * zs[:, None], zs[:, None]], 1)


def smooth_track(global_orient: np.ndarray, body_pose: np.ndarray, transl: np.ndarray,
                 times: np.ndarray, level: str | float = DEFAULT_LEVEL):
    """Smooth one track: global_orient (T, 3, 3), body_pose (T, 23, 3, 3), transl (T, 3) metres
    (OpenCV camera frame) at frame times (T,) seconds. Returns the three arrays (float32)."""
    sigma = sigma_for(level)
    go = smooth_rotations(global_orient, times, sigma)
    bp = smooth_rotations(body_pose, times, sigma)
    tr = smooth_translation(transl, times, sigma)
    return go.astype(np.float32), bp.astype(np.float32), tr.astype(np.float32)
