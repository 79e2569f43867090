"""Camera maths: weak-perspective crop camera -> full-image perspective camera.

Conventions (``hmr2_reference.md`` §4): the network predicts a weak-perspective
camera ``(s, tx, ty)`` for the 256x256 square crop; HMR 2.0 interprets it with
a focal length of 5000 px for the 256-px crop. Like CLIFF, the crop camera is
converted to the full image with the photo's own focal length
(:func:`cam_crop_to_full`), chosen by :func:`choose_camera`:

1. the user's focal length (px) or field of view (degrees, across the longer side);
2. the photo's EXIF (``FocalLengthIn35mmFilm``, or ``FocalLength`` with the
   sensor's pixel pitch; :func:`deforhmr_model.files.image_io.read_exif_focal`);
3. a standard lens: :data:`STANDARD_FOCAL_35MM` (30 mm) full-frame equivalent,
   ``f = 30 / 43.27 * sqrt(W^2 + H^2)`` px (~62 deg horizontal field of view on
   a 3:2 frame). Between a phone's main camera (24-28 mm, most photos) and
   CLIFF's ``sqrt(W^2 + H^2)`` (43 mm): a person 3 m from a 26 mm phone camera
   comes out ~3.5 m away (CLIFF's: ~5 m), one 3 m from a 43 mm lens ~2.1 m.

HMR 2.0's demo focal ``5000 / 256 * max(W, H)`` (:func:`hmr2_focal_length`, a
~3 deg telephoto) is kept for training data made with it only.

The principal point is the image centre. Camera frame: OpenCV (x right, y down,
z forward), metres. Pixels: origin at the top-left corner of the image.

Tensor functions: device and dtype follow the inputs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

CROP_FOCAL_LENGTH = 5000.0  # px, for a 256 px crop (hmr2_reference.md §4)
CROP_SIZE = 256             # px, side of the square person crop (the network sees 256x192 of it)
MIN_CAM_SCALE = 1e-2        # weak-perspective s below this (body > 100 crops away or behind the camera) is clamped
FULL_FRAME_DIAGONAL_MM = math.hypot(36.0, 24.0)  # 43.27 mm: 35 mm equivalence is defined on it
STANDARD_FOCAL_35MM = 30.0  # mm, full-frame equivalent lens used when the photo does not say
# Focal lengths outside this 35 mm-equivalent range (mm) are not believed (broken EXIF, typos).
PLAUSIBLE_FOCAL_35MM = (6.0, 2400.0)


def hmr2_focal_length(width: float, height: float) -> float:
    """HMR 2.0's demo full-image focal length in px: ``5000 / 256 * max(W, H)`` (a telephoto;
    training data only, see the module docstring)."""
    return CROP_FOCAL_LENGTH / CROP_SIZE * max(float(width), float(height))


def focal_from_35mm(focal_35mm: float, width: float, height: float) -> float:
    """Focal length in px from a 35 mm-equivalent focal length in mm:
    ``f35 / 43.27 * sqrt(W^2 + H^2)`` (equivalence is defined on the diagonal)."""
    return float(focal_35mm) / FULL_FRAME_DIAGONAL_MM * math.hypot(float(width), float(height))


def focal_to_35mm(focal_px: float, width: float, height: float) -> float:
    """Inverse of :func:`focal_from_35mm`: the 35 mm-equivalent focal length in mm."""
    return float(focal_px) * FULL_FRAME_DIAGONAL_MM / math.hypot(float(width), float(height))


def standard_focal_length(width: float, height: float) -> float:
    """The default focal length in px when the photo gives none: a
    :data:`STANDARD_FOCAL_35MM` mm full-frame-equivalent lens."""
    return focal_from_35mm(STANDARD_FOCAL_35MM, width, height)


def focal_from_fov(fov_degrees: float, width: float, height: float) -> float:
    """Focal length in px for a field of view (degrees) across the image's longer side
    (Blender's ``sensor_fit='AUTO'``): ``max(W, H) / 2 / tan(fov / 2)``.

    Raises:
        ValueError: unless 0 < fov < 180.
    """
    fov = float(fov_degrees)
    if not 0.0 < fov < 180.0:
        raise ValueError(f"field of view {fov_degrees!r} degrees: must be between 0 and 180 (e.g. 60)")
    return max(float(width), float(height)) / 2.0 / math.tan(math.radians(fov) / 2.0)


@dataclass(frozen=True)
class Camera:
    """The full-image pinhole camera of one photo.

    focal_length: px (both axes); principal_point: (cx, cy) px; size: (W, H) px;
    source: where the focal length came from: ``"user:focal"``, ``"user:fov"``,
    ``"exif:FocalLengthIn35mmFilm"``, ``"exif:FocalLength+FocalPlaneXResolution"``,
    ``"standard:30mm"`` (see :func:`choose_camera`), or ``"result"`` for one read back.
    """

    focal_length: float
    principal_point: tuple[float, float]
    size: tuple[int, int]
    source: str

    @property
    def focal_35mm(self) -> float:
        """35 mm-equivalent focal length in mm (Blender's lens on a 36 mm-wide sensor for a 3:2 frame)."""
        return focal_to_35mm(self.focal_length, *self.size)

    @property
    def fov_degrees(self) -> float:
        """Field of view across the longer side, degrees."""
        return math.degrees(2.0 * math.atan(max(self.size) / 2.0 / self.focal_length))


def choose_camera(width: int, height: int, focal_length: float | None = None, fov: float | None = None,
                  exif=None) -> Camera:
    """The camera of a ``width`` x ``height`` photo (see the module docstring for the order).

    Args:
        focal_length: user focal length in px (wins over everything).
        fov: user field of view in degrees across the longer side.
        exif: an object with ``focal_px(width, height) -> (px, source) | None``
            (:class:`deforhmr_model.files.image_io.ExifFocal`), or None.
    Raises:
        ValueError: a user focal length <= 0 or a field of view outside (0, 180).
    """
    W, H = int(width), int(height)
    pp = (W / 2.0, H / 2.0)
    if focal_length is not None:
        f = float(focal_length)
        if not (f > 0 and math.isfinite(f)):
            raise ValueError(f"focal length {focal_length!r} px: must be a positive number of pixels")
        return Camera(f, pp, (W, H), "user:focal")
    if fov is not None:
        return Camera(focal_from_fov(fov, W, H), pp, (W, H), "user:fov")
    found = exif.focal_px(W, H) if exif is not None else None
    if found is not None:
        f, source = found
        lo, hi = PLAUSIBLE_FOCAL_35MM
        if lo <= focal_to_35mm(f, W, H) <= hi:
            return Camera(float(f), pp, (W, H), source)
    return Camera(standard_focal_length(W, H), pp, (W, H), f"standard:{STANDARD_FOCAL_35MM:g}mm")


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


def crop_projection(points: torch.Tensor, pred_cam: torch.Tensor) -> torch.Tensor:
    """(B, N, 3) body-frame points (metres) + (B, 3) crop camera ``(s, tx, ty)`` -> (B, N, 2)
    normalised crop coordinates ``(p - 128) / 256`` (HMR 2.0's keypoint frame on its 256x256
    square); ``s`` is clamped to :data:`MIN_CAM_SCALE`."""
    B = points.shape[0]
    half = torch.full((B, 2), CROP_SIZE / 2, dtype=points.dtype, device=points.device)
    size = torch.full((B,), float(CROP_SIZE), dtype=points.dtype, device=points.device)
    cam = pred_cam.to(points.dtype)
    cam = torch.cat([cam[:, :1].clamp(min=MIN_CAM_SCALE), cam[:, 1:]], dim=1)
    t = cam_crop_to_full(cam, half, size, 2 * half, CROP_FOCAL_LENGTH)
    uv = perspective_projection(points, CROP_FOCAL_LENGTH, half, transl=t)
    return (uv - CROP_SIZE / 2) / CROP_SIZE
