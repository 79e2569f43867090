"""Foot contacts and foot locking of a track: planted feet stay where they were planted.

Per-frame fits are independent up to the smoothing, so a foot that stands on the floor
still slides by the frame-to-frame noise of the body's depth and position (foot skating,
the artefact animators notice first). After smoothing, each track is corrected:

1. **Up and floor.** The body's up axis in the camera frame is the mean of the root
   rotation's +y axis over the track (SMPL's body frame is y-up); a foot joint's height is
   its position along it. The floor is the :data:`FLOOR_PERCENTILE` th percentile of the
   foot heights (the feet touch the floor in most walking, standing and dancing frames).
2. **Contacts.** A foot (SMPL ``left_foot``/``right_foot``, the ball of the foot) is in
   contact in a frame when it is within :data:`CONTACT_HEIGHT` of the floor and moves
   slower than :data:`CONTACT_SPEED` along the floor (central differences, frame times in
   seconds). A contact is a run of consecutive contact frames of one foot (a gap in the
   track ends it); runs shorter than :data:`MIN_CONTACT_FRAMES` are dropped.
3. **Anchors.** Each contact's anchor is the foot's mean position along the floor over
   the run; the wanted root shift in a contact frame is anchor - foot (the mean of the
   feet in contact), along the floor only (heights are left to the fit).
4. **Root shift.** One shift ``c_t`` (3,) per frame, the minimiser of
   ``sum_contact |c_t - wanted_t|^2 + SMOOTH * sum |c_{t+1} - c_t|^2 + PULL * sum |c_t|^2``:
   a banded linear system solved exactly per axis (scipy). Smoothness avoids pops when a
   contact starts or ends; the pull keeps the body near its fitted position (the overlay
   stays on the person) where no foot is planted. ``transl`` and the joints move by ``c_t``
   (skinning is linear in the root translation), the pose is unchanged.

Units: metres, seconds; camera frame (x right, y down, z forward).
"""
from __future__ import annotations

import numpy as np
from scipy.linalg import solveh_banded

FOOT_JOINTS = (10, 11)     # SMPL left_foot, right_foot
FLOOR_PERCENTILE = 5.0
CONTACT_HEIGHT = 0.05      # m above the floor
CONTACT_SPEED = 1.0        # m/s along the floor (walking feet swing at 2-5 m/s; fitted planted feet drift ~0.5)
MIN_CONTACT_FRAMES = 2
SMOOTH = 1.0               # weight of the shift's frame-to-frame change (per frame^2)
PULL = 0.01                # weight pulling the shift back to zero


def body_up(global_orient: np.ndarray) -> np.ndarray:
    """Unit up axis (3,) in the camera frame: the mean over frames of the root rotation's
    +y column (global_orient (T, 3, 3)). Raises ValueError for an empty track."""
    go = np.asarray(global_orient, np.float64)
    if go.ndim != 3 or go.shape[1:] != (3, 3) or not len(go):
        raise ValueError(f"global_orient must be (T, 3, 3) with T >= 1, got {go.shape}")
    up = go[:, :, 1].mean(0)
    n = float(np.linalg.norm(up))
    return up / n if n > 1e-9 else np.array([0.0, -1.0, 0.0])


def foot_contacts(joints: np.ndarray, times: np.ndarray, frames: np.ndarray, up: np.ndarray) -> np.ndarray:
    """(T, 2) bool: left / right foot in contact per frame (module docstring, steps 1-2).

    joints (T, 24, 3) m camera frame; times (T,) s; frames (T,) int frame indices (a gap in
    them ends a contact); up (3,) unit.
    """
    J = np.asarray(joints, np.float64)
    T = len(J)
    h, flat = _feet_on_floor(J, up)
    floor = np.percentile(h, FLOOR_PERCENTILE) if T else 0.0
    speed = np.full((T, 2), np.inf)
    t = np.asarray(times, np.float64)
    f = np.asarray(frames)
    for i in range(T):
        lo = i - 1 if i > 0 and f[i] - f[i - 1] == 1 else i
        hi = i + 1 if i + 1 < T and f[i + 1] - f[i] == 1 else i
        if hi > lo and t[hi] > t[lo]:
            speed[i] = np.linalg.norm(flat[hi] - flat[lo], axis=-1) / (t[hi] - t[lo])
    contact = (h < floor + CONTACT_HEIGHT) & (speed < CONTACT_SPEED)
    for k in range(2):                                               # drop runs too short to be a step
        for s, e in _runs(contact[:, k], f):
            if e - s < MIN_CONTACT_FRAMES:
                contact[s:e, k] = False
    return contact


def lock_feet(transl: np.ndarray, joints: np.ndarray, global_orient: np.ndarray, times: np.ndarray,
              frames: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Foot-locked root translation and joints of one track (module docstring).

    transl (T, 3) m, joints (T, 24, 3) m (camera frame), global_orient (T, 3, 3), times (T,)
    s, frames (T,) int. Returns (transl (T, 3) f32, joints (T, 24, 3) f32, contacts (T, 2)
    bool). A track with no contact is returned unchanged.
    """
    tr = np.asarray(transl, np.float64)
    J = np.asarray(joints, np.float64)
    T = len(tr)
    if T < 2:
        return tr.astype(np.float32), J.astype(np.float32), np.zeros((T, 2), bool)
    up = body_up(global_orient)
    contact = foot_contacts(J, times, frames, up)
    _, flat = _feet_on_floor(J, up)
    want = np.zeros((T, 3))
    count = np.zeros(T)
    for k in range(2):
        for s, e in _runs(contact[:, k], frames):
            anchor = flat[s:e, k].mean(0)
            want[s:e] += anchor - flat[s:e, k]
            count[s:e] += 1
    if not count.any():
        return tr.astype(np.float32), J.astype(np.float32), contact
    w = (count > 0).astype(np.float64)
    want[count > 0] /= count[count > 0, None]
    shift = _smooth_solve(want, w, np.asarray(frames))
    shift -= (shift @ up)[:, None] * up                              # along the floor only
    return (tr + shift).astype(np.float32), (J + shift[:, None]).astype(np.float32), contact


def _feet_on_floor(J: np.ndarray, up: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Foot heights (T, 2) m along ``up`` and foot positions (T, 2, 3) m along the floor
    (the height removed) of joints J (T, 24, 3)."""
    feet = J[:, list(FOOT_JOINTS)]
    h = feet @ up
    return h, feet - h[..., None] * up


def _smooth_solve(want: np.ndarray, w: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """argmin_c sum w_t |c_t - want_t|^2 + SMOOTH sum_{consecutive} |c_{t+1} - c_t|^2 + PULL sum |c_t|^2."""
    T = len(want)
    link = np.where(np.diff(frames) == 1, SMOOTH, 0.0)               # no coupling across a gap
    diag = w + PULL
    diag[:-1] += link
    diag[1:] += link
    ab = np.zeros((2, T))                                            # upper banded form
    ab[0, 1:] = -link
    ab[1] = diag
    return solveh_banded(ab, w[:, None] * want)


def _runs(mask: np.ndarray, frames: np.ndarray):
    """(start, end) index ranges of True runs in ``mask`` (T,) over consecutive frames."""
    out, s = [], None
    f = np.asarray(frames)
    for i, m in enumerate(mask):
        if m and s is not None and f[i] - f[i - 1] != 1:
            out.append((s, i))
            s = i
        elif m and s is None:
            s = i
        elif not m and s is not None:
            out.append((s, i))
            s = None
    if s is not None:
        out.append((s, len(mask)))
    return out


__all__ = ["body_up", "foot_contacts", "lock_feet", "FOOT_JOINTS"]
