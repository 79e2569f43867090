"""BVH motion files: one per track of a :class:`~deforhmr_model.files.result.SequenceResult`.

Our own small writer: the BVH packages on the index are unmaintained (bvh 2017,
bvhtoolbox 2020) or pull a math library for a 100-line text format (bvhio needs PyGLM).

Skeleton: the body model's 24 joints (SMPL tree and names), offsets from the track's
rest joints (T-pose, body frame: Y up, facing +Z), in ``unit`` (metres by default;
``scale=100`` gives centimetres). Leaf joints (head, hands, feet) get an ``End Site``
continuing their bone by half its length. Frame: Y up (the exporters' ``C = diag(1, -1,
-1)`` applied to the camera frame, as in the GLB), so the person stands upright with the
camera looking down -Z.

Motion: ``Frame Time`` = 1 / the source's fps; one line per frame from the track's first
to its last frame (frames inside that span where the person was not tracked repeat the
nearest earlier pose). Root: ``Xposition Yposition Zposition`` = pelvis position
(``C (rest_joints[0] + transl)``), then ``Zrotation Xrotation Yrotation`` in degrees of
``C @ global_orient``; other joints: ``Zrotation Xrotation Yrotation`` of ``body_pose``
(the parent-relative rotation), i.e. ``R = Rz @ Rx @ Ry`` (intrinsic Z-X-Y, the most
common BVH order; Blender's importer reads it).
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from deforhmr_model.files.atomic import atomic_write

C = np.diag([1.0, -1.0, -1.0])


class BVHError(ValueError):
    """A track that cannot be written as BVH (no frames, inconsistent skeleton)."""


def bvh_text(seq, track, scale: float = 1.0) -> str:
    """The BVH file text of one track (module docstring). Raises BVHError."""
    import roma
    import torch
    parents = np.asarray(seq.parents, int)
    names = list(seq.joint_names)
    J = len(parents)
    if not len(track.frames):
        raise BVHError(f"track {track.track_id} has no frames")
    if parents[0] != -1 or any(not 0 <= parents[j] < j for j in range(1, J)):
        raise BVHError(f"parents must start with -1 and list each joint after its parent, got {parents.tolist()}")
    rest = np.asarray(track.rest_joints, np.float64) * scale
    children = {j: [c for c in range(J) if parents[c] == j] for j in range(J)}
    out = io.StringIO()
    out.write("HIERARCHY\n")

    def joint(j: int, depth: int) -> None:
        pad = "\t" * depth
        off = rest[j] - rest[parents[j]] if parents[j] >= 0 else np.zeros(3)
        kind = "ROOT" if parents[j] < 0 else "JOINT"
        out.write(f"{pad}{kind} {names[j]}\n{pad}{{\n")
        out.write(f"{pad}\tOFFSET {off[0]:.6f} {off[1]:.6f} {off[2]:.6f}\n")
        if parents[j] < 0:
            out.write(f"{pad}\tCHANNELS 6 Xposition Yposition Zposition Zrotation Xrotation Yrotation\n")
        else:
            out.write(f"{pad}\tCHANNELS 3 Zrotation Xrotation Yrotation\n")
        for c in children[j]:
            joint(c, depth + 1)
        if not children[j]:
            end = 0.5 * off if np.linalg.norm(off) > 1e-6 else np.array([0.0, 0.05 * scale, 0.0])
            out.write(f"{pad}\tEnd Site\n{pad}\t{{\n{pad}\t\tOFFSET {end[0]:.6f} {end[1]:.6f} {end[2]:.6f}\n"
                      f"{pad}\t}}\n")
        out.write(f"{pad}}}\n")

    joint(0, 0)
    frames = np.asarray(track.frames)
    span = np.arange(frames[0], frames[-1] + 1)
    row = np.searchsorted(frames, span, side="right") - 1    # nearest earlier tracked frame
    go = C @ np.asarray(track.global_orient, np.float64)[row]
    bp = np.asarray(track.body_pose, np.float64)[row]
    pos = (np.asarray(track.transl, np.float64)[row] + np.asarray(track.rest_joints, np.float64)[0]) @ C.T * scale
    order = _dfs_order(children)
    R = np.concatenate([go[:, None], bp], 1)[:, order]                   # (F, J, 3, 3) in file order
    eul = roma.rotmat_to_euler("ZXY", torch.from_numpy(np.ascontiguousarray(R.reshape(-1, 3, 3))),  # intrinsic Z, X', Y''
                               degrees=True).numpy().reshape(len(span), -1)
    out.write(f"MOTION\nFrames: {len(span)}\nFrame Time: {1.0 / float(seq.fps):.6f}\n")
    data = np.concatenate([pos, eul], 1)
    np.savetxt(out, data, fmt="%.5f")
    return out.getvalue()


def export_bvh(seq, folder: str | os.PathLike, stem: str, scale: float = 1.0) -> list[Path]:
    """Write ``<folder>/<stem>_track<id>.bvh`` for every track with frames (atomically).

    Returns the paths written. Raises BVHError (bad skeleton), OSError (not writable)."""
    paths = []
    sep = "" if stem.endswith("_") else "_"    # ComfyUI stems end with "_": no double underscore
    for t in seq.tracks:
        if not len(t.frames):
            continue
        text = bvh_text(seq, t, scale)
        paths.append(atomic_write(Path(folder) / f"{stem}{sep}track{t.track_id}.bvh",
                                  lambda f, s=text: f.write(s.encode())))
    return paths


def _dfs_order(children: dict[int, list[int]]) -> list[int]:
    order, stack = [], [0]
    while stack:
        j = stack.pop()
        order.append(j)
        stack.extend(reversed(children[j]))
    return order
