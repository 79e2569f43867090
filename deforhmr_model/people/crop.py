"""Person crops for the network: HMR 2.0's rule (``hmr2_reference.md`` §3.1).

A person box (x1, y1, x2, y2) px is expanded to the 3:4 (W:H) aspect ratio
(only enlarged, never shrunk), squared to ``bbox_size = max(w', h')`` around
its centre and warped to a 256x256 crop (bilinear, black border). The network
sees columns 32:224, i.e. a 256x192 (H x W) image, ImageNet-normalised RGB.
The affine is kept so results map back to the photo.

Training and evaluation warp straight to the 256x192 input with
:func:`crop_matrix` (the same square, optionally scaled, shifted, rotated and
mirrored by an augmentation) and :func:`warp_image`; their keypoints live in the
crop frame around :data:`CROP_CENTER`.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from deforhmr_model.geometry.camera import CROP_SIZE

CROP_WIDTH = 192                    # px; the network sees columns 32:224 of the 256x256 square
CROP_CENTER = np.array([CROP_WIDTH / 2, CROP_SIZE / 2])   # (96, 128) px in the 256x192 crop
IMAGE_MEAN = (0.485, 0.456, 0.406)  # ImageNet RGB mean, 0..1 scale (hmr2_reference.md §3.1)
IMAGE_STD = (0.229, 0.224, 0.225)   # ImageNet RGB std, 0..1 scale


@dataclass
class Crop:
    """One person crop.

    image: (3, 256, 192) float32 tensor, ImageNet-normalised RGB (network input).
    center: (2,) square centre (cx, cy) px in the photo.
    size: square side in px (``bbox_size``).
    affine: (2, 3) float64, photo px -> 256x256 crop px.
    """

    image: torch.Tensor
    center: np.ndarray
    size: float
    affine: np.ndarray


def expand_to_aspect_ratio(wh: np.ndarray, target_wh=(192, 256)) -> np.ndarray:
    """Enlarge (w, h) to the aspect ratio ``target_wh`` (W, H) without shrinking either side."""
    w, h = float(wh[0]), float(wh[1])
    tw, th = target_wh
    if h / max(w, 1e-9) < th / tw:
        return np.array([w, max(w * th / tw, h)])
    return np.array([max(h * tw / th, w), h])


def box_to_center_size(bbox: np.ndarray) -> tuple[np.ndarray, float]:
    """Box (4,) xyxy px -> (centre (2,), square side) by HMR 2.0's rule."""
    x1, y1, x2, y2 = [float(v) for v in bbox]
    center = np.array([(x1 + x2) / 2, (y1 + y2) / 2])
    wh = expand_to_aspect_ratio(np.array([x2 - x1, y2 - y1]))
    return center, float(max(wh))


def crop_affine(center: np.ndarray, size: float) -> np.ndarray:
    """(2, 3) affine mapping photo px to 256x256 crop px (centre -> (128, 128))."""
    scale = CROP_SIZE / size
    return np.array([[scale, 0.0, CROP_SIZE / 2 - scale * center[0]],
                     [0.0, scale, CROP_SIZE / 2 - scale * center[1]]])


def crop_person(image: np.ndarray, bbox: np.ndarray) -> Crop:
    """Crop one person for the network.

    Args:
        image: HxWx3 uint8 RGB.
        bbox: (4,) xyxy px.
    Returns:
        :class:`Crop`.
    """
    center, size = box_to_center_size(bbox)
    A = crop_affine(center, size)
    if size / CROP_SIZE / 2 > 1.1:  # anti-alias large downscales (HMR 2.0 demo blur)
        sigma = (size / CROP_SIZE / 2 - 1) / 2
        x0, y0 = np.floor(center - size / 2 - 4 * sigma).astype(int)
        x1, y1 = np.ceil(center + size / 2 + 4 * sigma).astype(int)
        H, W = image.shape[:2]
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, W), min(y1, H)
        region = image[y0:y1, x0:x1]
        if region.size:
            region = cv2.GaussianBlur(region, (0, 0), sigma)
            A_local = A.copy()
            A_local[:, 2] += A[:, :2] @ np.array([x0, y0])
            patch = cv2.warpAffine(region, A_local, (CROP_SIZE, CROP_SIZE), flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        else:
            patch = np.zeros((CROP_SIZE, CROP_SIZE, 3), np.uint8)
    else:
        patch = cv2.warpAffine(image, A, (CROP_SIZE, CROP_SIZE), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    lo = (CROP_SIZE - CROP_WIDTH) // 2
    x = torch.from_numpy(patch[:, lo:lo + CROP_WIDTH]).permute(2, 0, 1).float() / 255.0
    mean = torch.tensor(IMAGE_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGE_STD).view(3, 1, 1)
    return Crop(image=(x - mean) / std, center=center, size=size, affine=A)


def crop_matrix(center: np.ndarray, size: float, aug=None) -> np.ndarray:
    """(2, 3) affine: photo px -> 256x192 crop px.

    The 256x256 square of :func:`crop_affine` (``center`` (2,) px, side ``size`` px), then
    the optional augmentation ``aug`` (an object with ``scale``, ``shift`` (fractions of
    ``size``), ``rot_deg`` (counter-clockwise on screen) and ``flip``, e.g.
    :class:`deforhmr_model.train.augment.AugParams`) about the crop centre, then the 32-px
    column offset.
    """
    scale, shift = (aug.scale, aug.shift) if aug is not None else (1.0, (0.0, 0.0))
    rot_deg, flip = (aug.rot_deg, aug.flip) if aug is not None else (0.0, False)
    center_aug = np.asarray(center, np.float64) + np.asarray(shift) * size
    square = np.vstack([crop_affine(center_aug, size * scale), [0.0, 0.0, 1.0]])
    c, s = np.cos(np.radians(rot_deg)), np.sin(np.radians(rot_deg))
    # screen counter-clockwise rotation in y-down pixel coordinates
    rot = np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])
    mirror = np.diag([-1.0 if flip else 1.0, 1.0, 1.0])
    to_origin = np.array([[1.0, 0, -CROP_SIZE / 2], [0, 1.0, -CROP_SIZE / 2], [0, 0, 1.0]])
    to_crop = np.array([[1.0, 0, CROP_CENTER[0]], [0, 1.0, CROP_CENTER[1]], [0, 0, 1.0]])
    return (to_crop @ mirror @ rot @ to_origin @ square)[:2]


def warp_image(image: np.ndarray, A: np.ndarray, aug=None) -> np.ndarray:
    """Warp an HxWx3 uint8 RGB photo with ``A`` (from :func:`crop_matrix`) to a (3, 256, 192)
    float32 network input: bilinear, black border, the per-channel colour factors
    ``aug.color`` if given (clipped to 0..255), then ImageNet normalisation."""
    patch = cv2.warpAffine(image, A, (CROP_WIDTH, CROP_SIZE), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    x = patch.astype(np.float32)
    color = tuple(aug.color) if aug is not None else (1.0, 1.0, 1.0)
    if color != (1.0, 1.0, 1.0):
        x = np.clip(x * np.asarray(color, np.float32), 0, 255)
    x = (x / 255.0 - np.asarray(IMAGE_MEAN, np.float32)) / np.asarray(IMAGE_STD, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))
