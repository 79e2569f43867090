"""Training crops and augmentation (HMR 2.0's recipe, ``hmr2_reference.md`` §3.2).

Every training sample is cropped around its person box with HMR 2.0's rule
(:mod:`deforhmr_model.people.crop`: 3:4 aspect expansion, square side ``bbox_size``)
and warped straight to the network's 256x192 (H x W) input
(:func:`~deforhmr_model.people.crop.crop_matrix`, :func:`~deforhmr_model.people.crop.warp_image`). The augmentation
parameters are drawn per sample from a seeded ``numpy.random.Generator``
(the trainer derives the seed from ``(run seed, epoch, sample)``, which makes
epochs reproducible and resumable independently of data-loader workers):

===============  ==============================================================
scale            box size x (1 + clip(N(0,1), -1, 1) * 0.3)
rotation         clip(N(0,1), -2, 2) * 30 degrees with probability 0.6, else 0
translation      box centre + clip(N(0,1), -1, 1) * 0.02 * box size, per axis
flip             horizontal, probability 0.5: image, keypoints mirrored and
                 left/right swapped (:data:`~deforhmr_model.body.joints.J24_FLIP`),
                 SMPL pose left/right joints swapped and axis-angle (x, -y, -z)
colour           each RGB channel x U(0.8, 1.2), clipped to [0, 255]
===============  ==============================================================

HMR 2.0's "extreme crop" augmentation (truncating boxes to the upper body etc.)
is not implemented. The rotation turns the crop about its centre; 3D joints and
the global orientation are rotated about the camera's optical axis by the same
angle (the usual approximation: the crop centre is treated as the principal point).

Keypoint frame after cropping (the loss frame, as HMR 2.0): normalised crop
coordinates ``(p - (96, 128)) / 256`` where ``p`` is the pixel position in the
256x192 crop, i.e. HMR 2.0's ``x / 256 - 0.5`` on its 256x256 square.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from deforhmr_model.body.joints import J24_FLIP, SMPL24_FLIP
from deforhmr_model.datasets.readers import SmplTargets
from deforhmr_model.geometry.rotation import axis_angle_to_rotmat, rotmat_to_axis_angle
from deforhmr_model.people.crop import CROP_CENTER, CROP_SIZE, crop_matrix, warp_image


@dataclass(frozen=True)
class AugConfig:
    """Augmentation strengths (HMR 2.0 defaults). ``enabled=False`` gives plain crops."""

    enabled: bool = True
    scale_factor: float = 0.3
    rot_factor_deg: float = 30.0
    rot_prob: float = 0.6
    trans_factor: float = 0.02
    flip_prob: float = 0.5
    color_factor: float = 0.2


@dataclass(frozen=True)
class AugParams:
    """One sample's augmentation: box scale factor, in-plane rotation (degrees,
    counter-clockwise on screen), centre shift (fractions of the box size), flip,
    per-channel colour factors."""

    scale: float = 1.0
    rot_deg: float = 0.0
    shift: tuple[float, float] = (0.0, 0.0)
    flip: bool = False
    color: tuple[float, float, float] = (1.0, 1.0, 1.0)


def sample_aug(cfg: AugConfig, rng: np.random.Generator) -> AugParams:
    """Draw :class:`AugParams` (always the same number of draws, so seeds stay aligned)."""
    n = rng.standard_normal(4)
    u = rng.random(2)
    col = rng.uniform(1 - cfg.color_factor, 1 + cfg.color_factor, 3)
    if not cfg.enabled:
        return AugParams()
    rot = float(np.clip(n[1], -2, 2) * cfg.rot_factor_deg) if u[0] < cfg.rot_prob else 0.0
    return AugParams(scale=float(1 + np.clip(n[0], -1, 1) * cfg.scale_factor), rot_deg=rot,
                     shift=(float(np.clip(n[2], -1, 1) * cfg.trans_factor),
                            float(np.clip(n[3], -1, 1) * cfg.trans_factor)),
                     flip=bool(u[1] < cfg.flip_prob), color=tuple(float(c) for c in col))


def camera_rotation(aug: AugParams) -> np.ndarray:
    """(3, 3) rotation of camera-frame points matching the crop's in-plane rotation."""
    c, s = np.cos(np.radians(aug.rot_deg)), np.sin(np.radians(aug.rot_deg))
    return np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])


def transform_keypoints_2d(kp: np.ndarray, A: np.ndarray, flip: bool) -> np.ndarray:
    """(K, 3) photo keypoints (x px, y px, conf) -> (K, 3) normalised crop coordinates + conf.

    With ``flip`` the joints are also re-ordered left <-> right (J24 layout, K = 24).
    """
    xy = kp[:, :2] @ A[:, :2].T + A[:, 2]
    out = np.concatenate([(xy - CROP_CENTER) / CROP_SIZE, kp[:, 2:3]], axis=1).astype(np.float32)
    return out[list(J24_FLIP)] if flip else out


def transform_keypoints_3d(kp: np.ndarray, aug: AugParams) -> np.ndarray:
    """(K, 4) camera-frame joints (metres, conf) -> rotated/mirrored (K, 4) (J24 layout when flipped)."""
    out = kp.astype(np.float32).copy()
    out[:, :3] = kp[:, :3] @ camera_rotation(aug).T
    if aug.flip:
        out[:, 0] *= -1
        out = out[list(J24_FLIP)]
    return out


def transform_pose(pose: np.ndarray, aug: AugParams) -> np.ndarray:
    """(72,) SMPL axis-angle pose (global orient first, radians) under the crop's rotation/flip."""
    p = pose.reshape(24, 3).astype(np.float64).copy()
    if aug.rot_deg:
        R = torch.from_numpy(camera_rotation(aug)) @ axis_angle_to_rotmat(torch.from_numpy(p[0]))
        p[0] = rotmat_to_axis_angle(R).numpy()
    if aug.flip:
        p = p[list(SMPL24_FLIP)]
        p[:, 1:] *= -1
    return p.reshape(72).astype(np.float32)


@dataclass
class CropSample(SmplTargets):
    """One network-ready training sample (numpy): :class:`SmplTargets` after the crop
    (keypoints_2d in normalised crop coordinates, 3D joints and pose rotated/mirrored with it), plus

    img (3, 256, 192) f32 normalised RGB (None: labels only) | box_center (2,) px | box_size () px.
    """

    img: np.ndarray | None
    box_center: np.ndarray
    box_size: float
    extra: dict = field(default_factory=dict)


def make_crop_sample(image: np.ndarray | None, center: np.ndarray, size: float,
                     keypoints_2d: np.ndarray, keypoints_3d: np.ndarray, pose: np.ndarray,
                     betas: np.ndarray, has_smpl: float, has_betas: float,
                     aug: AugParams = AugParams()) -> CropSample:
    """Crop and augment one person. ``image=None`` skips the pixels (labels only, for cached features)."""
    A = crop_matrix(center, size, aug)
    return CropSample(
        img=None if image is None else warp_image(image, A, aug),
        keypoints_2d=transform_keypoints_2d(keypoints_2d, A, aug.flip),
        keypoints_3d=transform_keypoints_3d(keypoints_3d, aug),
        pose=transform_pose(pose, aug), betas=betas.astype(np.float32),
        has_smpl=float(has_smpl), has_betas=float(has_betas),
        box_center=np.asarray(center, np.float32), box_size=float(size))
