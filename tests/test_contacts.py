"""Foot contacts and foot locking (video/contacts.py) on a synthetic walk with known planted
feet: sliding from per-frame noise is removed where a foot stands, nothing else moves."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter1d

from deforhmr_model.video import contacts

FPS = 30.0


def _walk(T: int = 60, noise: float = 0.02, seed: int = 0):
    """An upright walker (camera frame: y down, floor at y = 1.6 m, walking along x at 1 m/s,
    5 m from the camera), feet alternating 0.5 s stance / 0.5 s swing, plus root noise as
    smoothed per-frame fits have (correlated over a few frames). Returns transl, joints, global_orient, times, frames and the
    true stance masks (T, 2)."""
    rng = np.random.default_rng(seed)
    t = np.arange(T) / FPS
    go = np.tile(np.diag([1.0, -1.0, -1.0]), (T, 1, 1))           # Rx(pi): body +y -> camera -y (up)
    root = np.stack([t * 1.0, np.full(T, 0.7), np.full(T, 5.0)], 1)
    J = np.repeat(root[:, None], 24, 1).copy()
    J[:, 1:] += rng.normal(0, 0.2, (1, 23, 3))                       # a fixed body shape around the root
    J[:, :, 1] = np.minimum(J[:, :, 1], 1.3)
    stance = np.zeros((T, 2), bool)
    for k, joint in enumerate(contacts.FOOT_JOINTS):
        phase = (t + 0.5 * k) % 1.0
        stance[:, k] = phase < 0.5
        pos = np.empty(T)
        for i in range(T):                                           # planted foot stays, swing catches up
            start = t[i] - phase[i]
            pos[i] = start * 1.0 + 0.5 if stance[i, k] else start * 1.0 + 0.5 + 2.0 * (phase[i] - 0.5)
        lift = np.where(stance[:, k], 0.0, 0.1 * np.sin(np.pi * (phase - 0.5) / 0.5))
        J[:, joint] = np.stack([pos, 1.6 - lift, np.full(T, 5.1)], 1)
    n = gaussian_filter1d(rng.normal(0, noise, (T, 3)), 2.0, axis=0)  # root noise left after smoothing
    n *= noise / max(float(n.std()), 1e-12)
    return root + n, J + n[:, None], go, t, np.arange(T), stance


def _planted_speed(J, stance):
    """Mean speed (m/frame) of the feet between consecutive stance frames."""
    v = []
    for k, joint in enumerate(contacts.FOOT_JOINTS):
        both = stance[1:, k] & stance[:-1, k]
        v.append(np.linalg.norm(np.diff(J[:, joint], axis=0)[both], axis=-1))
    return float(np.concatenate(v).mean())


def test_contacts_found_where_feet_stand():
    tr, J, go, t, f, stance = _walk(noise=0.0)
    up = contacts.body_up(go)
    np.testing.assert_allclose(up, [0, -1, 0], atol=1e-9)
    c = contacts.foot_contacts(J, t, f, up)
    assert (c & stance).sum() >= 0.8 * stance.sum()                 # most stance frames found
    assert (c & ~stance).sum() <= 0.1 * (~stance).sum()             # swing frames are not contacts


def test_lock_removes_sliding_of_planted_feet_and_moves_only_along_the_floor():
    tr, J, go, t, f, stance = _walk(noise=0.01)
    tr2, J2, c = contacts.lock_feet(tr, J, go, t, f)
    before, after = _planted_speed(J, stance), _planted_speed(J2, stance)
    print(f"\nplanted-foot speed {1000 * before:.1f} -> {1000 * after:.1f} mm/frame")
    assert after < 0.75 * before
    shift = tr2 - tr
    np.testing.assert_allclose(shift[:, 1], 0.0, atol=1e-6)         # heights untouched (up = -y)
    np.testing.assert_allclose(J2 - J, np.repeat(shift[:, None], 24, 1), atol=1e-5)  # rigid root shift
    assert np.abs(shift).max() < 0.1                                  # stays on the person


def test_no_contact_no_change_and_gaps_split_contacts():
    tr, J, go, t, f, _ = _walk(noise=0.0)
    fast = J.copy()
    for joint in contacts.FOOT_JOINTS:                                # feet never stand still
        fast[:, joint, 0] += 3.0 * t * (1 + joint % 2)
    tr2, J2, c = contacts.lock_feet(tr, fast, go, t, f)
    assert not c.any()
    np.testing.assert_allclose(tr2, tr, atol=1e-6)
    np.testing.assert_allclose(J2, fast, atol=1e-6)
    runs = contacts._runs(np.array([1, 1, 1, 0, 1, 1], bool), np.array([0, 1, 5, 6, 7, 8]))
    assert runs == [(0, 2), (2, 3), (4, 6)]                           # the frame gap 1 -> 5 ends a run


def test_bad_input():
    with pytest.raises(ValueError, match="global_orient"):
        contacts.body_up(np.zeros((0, 3, 3)))
    tr, J, go, t, f, _ = _walk(T=1)
    out = contacts.lock_feet(tr, J, go, t, f)
    assert out[2].shape == (1, 2) and not out[2].any()
