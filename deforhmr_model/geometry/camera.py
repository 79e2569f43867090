"""Camera maths: weak-perspective crop camera -> full-image perspective camera.

Conventions (``hmr2_reference.md`` §4): the network predicts a weak-perspective
camera ``(s, tx, ty)`` for the 256x256 square crop; HMR 2.0 interprets it with
a focal length of 5000 px for the 256-px crop. In the full image the focal
length is ``5000 / 256 * max(W, H)`` px and the principal point the image
centre. Camera frame: OpenCV (x right, y down, z forward), metres. Pixels:
origin at the top-left corner of the image.

Pure tensor functions; device and dtype follow the inputs.
"""
from __future__ import annotations

import torch

CROP_FOCAL_LENGTH = 5000.0  # px, for a 256 px crop (hmr2_reference.md §4)
CROP_SIZE = 256


def default_focal_length(width: float, height: float) -> float:
    """HMR 2.0's full-image focal length in px: ``5000 / 256 * max(W, H)``."""
    return CROP_FOCAL_LENGTH / CROP_SIZE * max(float(width), float(height))


def cam_crop_to_full(pred_cam: torch.Tensor, box_center: torch.Tensor, box_size: torch.Tensor,
                     image_size: torch.Tensor, focal_length: torch.Tensor | float) -> torch.Tensor:
    """Weak-perspective crop camera to a translation in the full-image camera.

    ``t = (tx + 2 (cx - W/2) / bs, ty + 2 (cy - H/2) / bs, 2 F / bs)`` with
    ``bs = b * s + 1e-9`` (``hmr2_reference.md`` §4, ``cam_crop_to_full``).

    Args:
        pred_cam: (B, 3) ``(s, tx, ty)``, normalised crop units.
        box_center: (B, 2) crop square centre ``(cx, cy)`` in px.
        box_size: (B,) crop square side in px.
        image_size: (B, 2) ``(W, H)`` in px.
        focal_length: (B,) or scalar full-image focal length in px.
    Returns:
        (B, 3) camera translation in metres, OpenCV camera frame.
    """
    s, tx, ty = pred_cam.unbind(-1)
    bs = box_size * s + 1e-9
    w, h = image_size.unbind(-1)
    cx, cy = box_center.unbind(-1)
    f = torch.as_tensor(focal_length, dtype=pred_cam.dtype, device=pred_cam.device)
    return torch.stack([tx + 2 * (cx - w / 2) / bs, ty + 2 * (cy - h / 2) / bs, 2 * f / bs], -1)


def cam_full_to_crop(transl: torch.Tensor, box_center: torch.Tensor, box_size: torch.Tensor,
                     image_size: torch.Tensor, focal_length: torch.Tensor | float) -> torch.Tensor:
    """Inverse of :func:`cam_crop_to_full`: (B, 3) translation (m) -> (B, 3) ``(s, tx, ty)``."""
    f = torch.as_tensor(focal_length, dtype=transl.dtype, device=transl.device)
    bs = 2 * f / transl[..., 2]
    s = bs / box_size
    w, h = image_size.unbind(-1)
    cx, cy = box_center.unbind(-1)
    return torch.stack([s, transl[..., 0] - 2 * (cx - w / 2) / bs,
                        transl[..., 1] - 2 * (cy - h / 2) / bs], -1)


def perspective_projection(points: torch.Tensor, focal_length: torch.Tensor | float,
                           principal_point: torch.Tensor, transl: torch.Tensor | None = None,
                           ) -> torch.Tensor:
    """Pinhole projection with no rotation: ``u = f (X + tx) / (Z + tz) + cx``.

    Args:
        points: (B, N, 3) metres, OpenCV camera frame (before ``transl``).
        focal_length: scalar or (B,) px.
        principal_point: (B, 2) or (2,) px.
        transl: optional (B, 3) metres added to the points first.
    Returns:
        (B, N, 2) pixel coordinates. Points at Z <= 0 are clamped to Z = 1e-6.
    """
    if transl is not None:
        points = points + transl[:, None, :]
    f = torch.as_tensor(focal_length, dtype=points.dtype, device=points.device)
    f = f.reshape(-1, 1, 1) if f.ndim else f
    z = points[..., 2:3].clamp(min=1e-6)
    pp = principal_point.reshape(-1, 1, 2) if principal_point.ndim == 2 else principal_point
    return f * points[..., :2] / z + pp


def intrinsics(focal_length: float, principal_point: tuple[float, float]) -> torch.Tensor:
    """3x3 pinhole matrix K (px) for the OpenCV camera frame."""
    cx, cy = principal_point
    return torch.tensor([[focal_length, 0.0, cx], [0.0, focal_length, cy], [0.0, 0.0, 1.0]])
