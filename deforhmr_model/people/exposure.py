"""Exposure correction of dark photos before person detection (detector input only).

Night and indoor shots without flash can be so underexposed that the detectors see no one:
the ExLPose dev frames (``../shared/photos/dev/exlpose``) have a brightest pixel value of
15-18 out of 255. The detectors were trained on normally exposed photos, so a photo whose
bright end is dark is brightened first, the way a camera's auto exposure would:

1. **Test.** The luminance (Rec. 601) of a subsampled copy; the photo is *dark* when its
   99th percentile is below :data:`DARK_P99` (normal photos, even night scenes with lamps,
   have bright pixels well above it). Other photos are returned unchanged (same array).
2. **Denoise.** Amplifying a dark photo amplifies its sensor noise by the same gain; a
   Gaussian blur whose width grows with the gain (:func:`noise_sigma`) keeps the noise at
   about what the detectors see in normal photos (they work on 256 px inputs, so a blur of
   a pixel or two at full resolution costs them no detail).
3. **Tone curve.** A lookup table maps the 99th percentile to :data:`TARGET_WHITE` with a
   gamma of :data:`GAMMA` (lifts the shadows where people stand more than the highlights),
   then CLAHE (contrast-limited adaptive histogram equalisation, OpenCV) on the L channel of
   CIELAB brings out people in the darker parts of a frame whose bright parts are a lamp or
   the sky.

Only the detectors' copy is changed: results, overlays and textures use the user's image.
Measured on the dev sets (``bench/bench_quality.py``): ExLPose people found 0/6 -> 1/6 (the
other frame is dominated by sensor noise where the people stand); no other dev photo is dark.
"""
from __future__ import annotations

import cv2
import numpy as np

DARK_P99 = 48.0          # a photo whose 99th-percentile luminance (0-255) is below this is dark
TARGET_WHITE = 235.0     # the 99th percentile maps to this value
GAMMA = 0.6              # tone curve exponent (< 1 lifts shadows)
CLAHE_CLIP = 2.0         # CLAHE clip limit (OpenCV units) ...
CLAHE_TILES = 8          # ... on a grid of this many tiles per axis
STAT_SAMPLES = 256 * 256  # about this many pixels are sampled for the statistics


def luminance_p99(image: np.ndarray) -> float:
    """99th percentile of the Rec. 601 luminance (0-255) of an (H, W, 3) uint8 RGB image,
    from a regular subsample of about :data:`STAT_SAMPLES` pixels."""
    h, w = image.shape[:2]
    step = max(1, int(np.sqrt(h * w / STAT_SAMPLES)))
    s = image[::step, ::step].astype(np.float32)
    y = 0.299 * s[..., 0] + 0.587 * s[..., 1] + 0.114 * s[..., 2]
    return float(np.percentile(y, 99))


def is_dark(image: np.ndarray) -> bool:
    """Whether the (H, W, 3) uint8 RGB image is underexposed (:func:`luminance_p99` < :data:`DARK_P99`)."""
    return luminance_p99(image) < DARK_P99


def noise_sigma(gain: float) -> float:
    """Gaussian blur sigma (px) before a brightness ``gain``: 0 up to a gain of 2, then
    growing with the gain's logarithm to 2 px at a gain of about 30 (the ExLPose frames)."""
    return float(np.clip(0.6 * np.log2(max(gain, 1.0)) - 0.6, 0.0, 2.5))


def correct_exposure(image: np.ndarray) -> np.ndarray:
    """The detector input for an (H, W, 3) uint8 RGB image: ``image`` itself (same object)
    when it is normally exposed, else a brightened, denoised copy (module docstring)
    of the same shape and dtype. The image must already be checked (shape, dtype)."""
    p99 = luminance_p99(image)
    if p99 >= DARK_P99:
        return image
    hi = max(p99, 1.0)
    gain = TARGET_WHITE / hi
    sigma = noise_sigma(gain)
    work = cv2.GaussianBlur(image, (0, 0), sigma) if sigma > 0 else image
    levels = np.arange(256, dtype=np.float64)
    lut = (TARGET_WHITE * np.clip(levels / hi, 0.0, 255.0 / TARGET_WHITE) ** GAMMA).clip(0, 255)
    out = cv2.LUT(work, lut.astype(np.uint8))
    lab = cv2.cvtColor(out, cv2.COLOR_RGB2LAB)
    lab[..., 0] = cv2.createCLAHE(clipLimit=CLAHE_CLIP, tileGridSize=(CLAHE_TILES, CLAHE_TILES)).apply(lab[..., 0])
    return np.ascontiguousarray(cv2.cvtColor(lab, cv2.COLOR_LAB2RGB))


__all__ = ["correct_exposure", "is_dark", "luminance_p99", "noise_sigma", "DARK_P99"]
