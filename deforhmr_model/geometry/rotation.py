"""Rotation representations used by the network, body models and exporters.

Conventions (HMR 2.0, ``hmr2_reference.md`` §2.3; Zhou et al. 2019, cited in
DeforHMR §3.2.1):

* 6D rotation: 6 consecutive numbers ``[a1 (3), a2 (3)]`` are the intended
  **first and second columns** of the rotation matrix (not SPIN's row-major
  3x2 layout). Orthonormalised with Gram-Schmidt; ``R = [b1 b2 b3]`` as columns.
* Axis-angle (``*_aa``): rotation vector, radians, right-handed.
* Quaternions (``*_quat``): (w, x, y, z) scalar-first, as Blender and glTF's
  maths uses (glTF files store x, y, z, w; the exporter reorders).

The maths is delegated to ``roma`` (a maintained rotation library); this module
fixes the layouts.
"""
from __future__ import annotations

import roma
import torch

__all__ = [
    "rot6d_to_rotmat",
    "rotmat_to_rot6d",
    "axis_angle_to_rotmat",
    "rotmat_to_axis_angle",
    "rotmat_to_quat_wxyz",
]


def rot6d_to_rotmat(x: torch.Tensor) -> torch.Tensor:
    """6D rotation (HMR 2.0 column-pair layout) to rotation matrix.

    Args:
        x: (..., 6) float tensor; ``x[..., :3]`` is the first column, ``x[..., 3:]``
           the second column (before orthonormalisation).
    Returns:
        (..., 3, 3) rotation matrices, same dtype/device.
    Raises:
        ValueError: if the last dimension is not 6.
    """
    if x.shape[-1] != 6:
        raise ValueError(f"rot6d_to_rotmat expects (..., 6), got {tuple(x.shape)}")
    cols = x.reshape(*x.shape[:-1], 2, 3).transpose(-1, -2)  # (..., 3, 2): columns a1, a2
    return roma.special_gramschmidt(cols)


def rotmat_to_rot6d(rotmat: torch.Tensor) -> torch.Tensor:
    """Rotation matrix (..., 3, 3) to the 6D layout of :func:`rot6d_to_rotmat` (..., 6)."""
    if rotmat.shape[-2:] != (3, 3):
        raise ValueError(f"rotmat_to_rot6d expects (..., 3, 3), got {tuple(rotmat.shape)}")
    return rotmat[..., :, :2].transpose(-1, -2).reshape(*rotmat.shape[:-2], 6)


def axis_angle_to_rotmat(aa: torch.Tensor) -> torch.Tensor:
    """Axis-angle (..., 3), radians, to rotation matrices (..., 3, 3)."""
    if aa.shape[-1] != 3:
        raise ValueError(f"axis_angle_to_rotmat expects (..., 3), got {tuple(aa.shape)}")
    return roma.rotvec_to_rotmat(aa)


def rotmat_to_axis_angle(rotmat: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (..., 3, 3) to axis-angle (..., 3), radians, angle in [0, pi]."""
    if rotmat.shape[-2:] != (3, 3):
        raise ValueError(f"rotmat_to_axis_angle expects (..., 3, 3), got {tuple(rotmat.shape)}")
    return roma.rotmat_to_rotvec(rotmat)


def rotmat_to_quat_wxyz(rotmat: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (..., 3, 3) to unit quaternions (..., 4) in (w, x, y, z) order."""
    xyzw = roma.rotmat_to_unitquat(rotmat)
    return torch.cat([xyzw[..., 3:], xyzw[..., :3]], dim=-1)
