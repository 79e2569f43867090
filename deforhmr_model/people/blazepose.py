"""BlazePose (MediaPipe "pose", GHUM 3D full model) run with LiteRT, without mediapipe.

Two TFLite models (Apache-2.0, copied unmodified from the mediapipe 0.10.21 wheel,
see ``deforhmr_model/weights/LICENSE-mediapipe.txt``):

* ``pose_detection.tflite``: SSD-style detector. Input ``(1, 224, 224, 3)`` f32 RGB in
  [-1, 1], the image letterboxed (aspect kept, black borders). Outputs raw boxes
  ``(1, 2254, 12)`` (box centre x, y, width, height, then four keypoints x, y, all in
  input pixels relative to the anchor centre) and raw scores ``(1, 2254, 1)`` (logits).
  Keypoint 0 is the mid-hip centre, keypoint 1 a point whose distance from it is half the
  full-body extent (it also gives the body's rotation); 2 and 3 are the upper-body pair.
* ``pose_landmark_full.tflite``: landmark model on a rotated square crop around the
  person. Input ``(N, 256, 256, 3)`` f32 RGB in [0, 1]. Outputs ``(N, 195)`` = 39 x
  (x, y, z, visibility logit, presence logit) with x, y in crop pixels; ``(N, 1)`` pose
  presence probability (the graph applies no activation to it); ``(N, 256, 256, 1)`` segmentation; ``(N, 64, 64, 39)`` heatmaps;
  ``(N, 117)`` world landmarks. Landmarks 0..32 are the BlazePose body points,
  33 (mid-hip) and 34 (full-body scale point) the auxiliary alignment points.

This module re-implements the post-processing that MediaPipe's graphs do, from the
parameters documented in the graphs ``pose_detection_cpu``, ``pose_detection_to_roi``,
``pose_landmark_by_roi_cpu`` and ``tensors_to_pose_landmarks_and_segmentation`` and in
the BlazePose paper (Bazarevsky et al. 2020, arXiv:2006.10204):

* SSD anchors: 5 layers, strides 8, 16, 32, 32, 32, two fixed-size (1x1) anchors per
  layer and cell, anchor offset 0.5; consecutive layers of equal stride share one grid
  (28x28x2 + 14x14x2 + 7x7x6 = 2254).
* Decoding: values / 224 + anchor centre; scores = sigmoid(clip(logit, -100, 100)).
* Weighted NMS: detections of one person are averaged with score weights.
* ROI: centre = keypoint 0, side = 2 * |kp1 - kp0| * 1.25 (square, in pixels),
  rotation = 90 deg - atan2(-(y1 - y0), x1 - x0) (keypoint 1 straight above the hips
  means an upright body, rotation 0).
* Landmarks: sigmoid visibility/presence, heatmap refinement (7x7 window, refine
  when the window's max sigmoid >= 0.5), un-projection through the ROI's rotation.

Deviations from MediaPipe, and why:

* Images are read from a pyramid (halving with area averaging), so no bilinear
  resampling ever shrinks by more than 2x: MediaPipe samples video frames directly,
  which aliases badly on 24-megapixel photos.
* Weighted NMS groups detections whose mid-hip points and body extents agree, not
  boxes with IoU > 0.3: in crowds the detector's boxes of neighbouring people overlap
  and MediaPipe's rule averages two people into one ROI between them.
* Frames are independent photos, so there is no tracking or smoothing; the
  landmark ROI can optionally be re-derived from the auxiliary points and the model
  run a second time (what MediaPipe's tracker does on the next frame).
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
from dataclasses import dataclass

import cv2
import numpy as np

DET_SIZE = 224
LM_SIZE = 256
NUM_BODY = 33
NUM_RAW = 39
ROI_SCALE = 1.25
BOX_ROI_SCALE = 1.5
AUX_HIP_CENTER, AUX_SCALE_POINT = 33, 34   # landmark model's alignment points
MERGE_CENTER_TOL = 0.2
MERGE_SIZE_RATIO = 1.5
HEATMAP_KERNEL = 7
HEATMAP_MIN_CONF = 0.5
_ANCHOR_STRIDES = (8, 16, 32, 32, 32)


# ----------------------------------------------------------------------------- ROI geometry
@dataclass(frozen=True)
class Roi:
    """A rotated square in image pixels (continuous coordinates, pixel i spans [i, i+1)).

    center: (2,) x, y px. size: side length px. rotation: radians, the angle by which
    the crop's "up" is turned clockwise on screen (x right, y down); 0 = upright.
    """

    center: np.ndarray
    size: float
    rotation: float

    def crop_to_image(self, out_size: int) -> np.ndarray:
        """(2, 3) affine from crop coordinates (0..out_size, continuous) to image pixels."""
        c, s = math.cos(self.rotation), math.sin(self.rotation)
        k = self.size / out_size
        lin = np.array([[c, -s], [s, c]]) * k
        t = np.asarray(self.center, np.float64) - lin @ np.array([out_size / 2.0, out_size / 2.0])
        return np.concatenate([lin, t[:, None]], axis=1)


def roi_from_alignment(start: np.ndarray, end: np.ndarray, scale: float = ROI_SCALE) -> Roi:
    """ROI from two alignment points (px): centre ``start``, side ``2 |end-start| * scale``."""
    dx, dy = float(end[0] - start[0]), float(end[1] - start[1])
    rotation = _normalize_radians(math.pi / 2 - math.atan2(-dy, dx))
    size = 2.0 * math.hypot(dx, dy) * scale
    return Roi(np.asarray(start, np.float64).copy(), size, rotation)


def roi_from_box(box: np.ndarray, scale: float = BOX_ROI_SCALE) -> Roi:
    """Upright ROI for a person box (x0, y0, x1, y1) px: box centre, side ``scale * max(w, h)``.

    The landmark model was trained on crops centred on the hips; a box centre is not, so
    the crop is larger than the detector's 1.25 (1.5: COCO PCK@0.2 0.978 from the
    annotated boxes, against 0.945 at 1.25 and 0.956 at 1.75).
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    center = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
    return Roi(center, scale * max(x1 - x0, y1 - y0, 1.0), 0.0)


def _normalize_radians(a: float) -> float:
    return a - 2 * math.pi * math.floor((a + math.pi) / (2 * math.pi))


# ----------------------------------------------------------------------------- image access
class ImagePyramid:
    """An RGB uint8 image and lazily built half-size levels (area averaging)."""

    def __init__(self, image: np.ndarray):
        self.levels = [image]
        self.size = (image.shape[1], image.shape[0])          # W, H of level 0

    def _level(self, shrink: float) -> tuple[np.ndarray, float, float]:
        """Smallest level that still has >= 1/shrink of level 0's resolution; with its scales."""
        lvl = max(0, int(math.floor(math.log2(max(shrink, 1.0)))))
        while len(self.levels) <= lvl:
            prev = self.levels[-1]
            if min(prev.shape[:2]) < 64:
                break
            half = (max(1, prev.shape[1] // 2), max(1, prev.shape[0] // 2))
            self.levels.append(cv2.resize(prev, half, interpolation=cv2.INTER_AREA))
        img = self.levels[min(lvl, len(self.levels) - 1)]
        return img, img.shape[1] / self.size[0], img.shape[0] / self.size[1]

    def letterbox(self, region: tuple[float, float, float, float], out: int) -> tuple[np.ndarray, np.ndarray]:
        """Region (x0, y0, x1, y1) px (may extend past the image) fitted into ``out`` x ``out``,
        aspect kept, centred, black outside the image.

        Returns the uint8 ``(out, out, 3)`` tile and the (2, 3) affine from tile coordinates
        to image pixels (continuous).
        """
        x0, y0, x1, y1 = region
        k = max(x1 - x0, y1 - y0) / out                          # image px per tile px
        ox = (x0 + x1) / 2 - k * out / 2
        oy = (y0 + y1) / 2 - k * out / 2
        affine = np.array([[k, 0.0, ox], [0.0, k, oy]])
        return self.warp(affine, out, border=cv2.BORDER_CONSTANT), affine

    def warp(self, crop_to_image: np.ndarray, out: int, border: int = cv2.BORDER_REPLICATE) -> np.ndarray:
        """Sample an ``out`` x ``out`` crop through a (2, 3) crop->image affine (continuous
        coordinates), bilinear from the pyramid level that keeps shrinking below 2x."""
        lin = crop_to_image[:, :2]
        shrink = math.sqrt(abs(np.linalg.det(lin)))              # image px per crop px
        img, sx, sy = self._level(shrink)
        scale = np.diag([sx, sy])
        lin_l = scale @ lin
        t_l = scale @ crop_to_image[:, 2]
        # index coordinates: src_idx = lin_l (dst_idx + 0.5) + t_l - 0.5
        m = np.concatenate([lin_l, (t_l + lin_l @ np.array([0.5, 0.5]) - 0.5)[:, None]], axis=1)
        return cv2.warpAffine(img, m, (out, out), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=border, borderValue=(0, 0, 0))


# ----------------------------------------------------------------------------- detector decoding
def ssd_anchors(size: int = DET_SIZE, strides: tuple[int, ...] = _ANCHOR_STRIDES,
                anchors_per_layer: int = 2) -> np.ndarray:
    """Anchor centres ``(N, 2)`` f32 in [0, 1] (x, y), in the detector's output order."""
    return np.concatenate([np.repeat(grid, reps, axis=0)
                           for grid, reps in _anchor_groups(size, strides, anchors_per_layer)]).astype(np.float32)


def anchor_group_sizes(size: int = DET_SIZE, strides: tuple[int, ...] = _ANCHOR_STRIDES,
                       anchors_per_layer: int = 2) -> list[int]:
    """Anchors per output head (layers of equal stride form one head): [1568, 392, 294]."""
    return [len(grid) * reps for grid, reps in _anchor_groups(size, strides, anchors_per_layer)]


def _anchor_groups(size, strides, anchors_per_layer):
    """(cell centres (n*n, 2) row-major, anchors per cell) for each run of equal strides."""
    i = 0
    while i < len(strides):
        j = i
        while j < len(strides) and strides[j] == strides[i]:
            j += 1
        n = math.ceil(size / strides[i])
        ys, xs = np.meshgrid((np.arange(n) + 0.5) / n, (np.arange(n) + 0.5) / n, indexing="ij")
        yield np.stack([xs.ravel(), ys.ravel()], axis=1), anchors_per_layer * (j - i)
        i = j


def split_detector_outputs(outs: list[np.ndarray], batch: int, num_anchors: int
                           ) -> tuple[np.ndarray, np.ndarray]:
    """Detector outputs of a batch to per-image raw boxes (B, N, 12) and score logits (B, N).

    The graph flattens each head to (1, -1, C) before concatenating the heads, so a batch
    of B comes out as [head 0 of images 0..B-1, head 1 of images 0..B-1, ...].
    """
    boxes = next(o for o in outs if o.shape[-1] == 12).reshape(-1, 12)
    scores = next(o for o in outs if o.shape[-1] == 1).reshape(-1)
    if batch == 1:
        return boxes[None], scores[None]
    sizes = anchor_group_sizes()
    assert sum(sizes) == num_anchors and boxes.shape[0] == batch * num_anchors
    starts = np.cumsum([0] + [batch * n for n in sizes])
    def per_image(a):
        heads = [a[s:s + batch * n].reshape(batch, n, *a.shape[1:]) for s, n in zip(starts, sizes)]
        return np.concatenate(heads, axis=1)
    return per_image(boxes), per_image(scores)


def decode_detections(raw_boxes: np.ndarray, raw_scores: np.ndarray, anchors: np.ndarray,
                      threshold: float, size: int = DET_SIZE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode one image's detector outputs.

    raw_boxes (N, 12), raw_scores (N,) or (N, 1) logits, anchors (N, 2).
    Returns boxes (M, 4) xyxy, keypoints (M, 4, 2), scores (M,), all in input-tile pixels
    (0..size), for the M anchors with sigmoid score >= threshold.
    """
    scores = _sigmoid(np.clip(raw_scores.reshape(-1).astype(np.float64), -100.0, 100.0))
    keep = np.nonzero(scores >= threshold)[0]
    raw = raw_boxes[keep].astype(np.float64)
    ctr = anchors[keep].astype(np.float64) * size
    cx, cy = raw[:, 0] + ctr[:, 0], raw[:, 1] + ctr[:, 1]
    w, h = raw[:, 2], raw[:, 3]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    kps = raw[:, 4:12].reshape(-1, 4, 2) + ctr[:, None, :]
    return boxes, kps, scores[keep]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix between boxes a (N, 4) and b (M, 4), xyxy."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def weighted_merge(boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray,
                   center_tol: float = MERGE_CENTER_TOL, size_ratio: float = MERGE_SIZE_RATIO
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted non-maximum suppression of detector outputs, grouped by body ROI.

    Greedy from the best score: the group of the best remaining detection is every
    remaining detection whose mid-hip keypoint lies within ``center_tol`` x its ROI
    extent (2 |kp1 - kp0|) and whose extent differs by less than ``size_ratio``; the
    group becomes one detection, the score-weighted mean of its boxes and keypoints,
    with the best score. boxes (N, 4), keypoints (N, 4, 2), scores (N,), any pixel frame.
    Returns (boxes, keypoints, scores) sorted by score, highest first.
    """
    order = np.argsort(-scores, kind="stable")
    extent = 2.0 * np.linalg.norm(keypoints[:, 1] - keypoints[:, 0], axis=1) + 1e-6
    remaining = order
    out_b, out_k, out_s = [], [], []
    while remaining.size:
        top = remaining[0]
        dist = np.linalg.norm(keypoints[remaining, 0] - keypoints[top, 0], axis=1)
        ratio = np.maximum(extent[remaining] / extent[top], extent[top] / extent[remaining])
        in_group = (dist < center_tol * extent[top]) & (ratio < size_ratio)
        in_group[0] = True
        group = remaining[in_group]
        w = scores[group]
        out_b.append(np.einsum("n,nc->c", w, boxes[group]) / w.sum())
        out_k.append(np.einsum("n,nkc->kc", w, keypoints[group]) / w.sum())
        out_s.append(scores[top])
        remaining = remaining[~in_group]
    if not out_s:
        return np.zeros((0, 4)), np.zeros((0, 4, 2)), np.zeros((0,))
    return np.stack(out_b), np.stack(out_k), np.asarray(out_s)


# ----------------------------------------------------------------------------- landmark decoding
def decode_landmarks(raw: np.ndarray, heatmaps: np.ndarray) -> np.ndarray:
    """Landmark-model outputs to ``(N, 39, 5)``: u, v in [0, 1] crop units, visibility,
    presence, heatmap confidence (max sigmoid in the 7x7 heatmap window at the point).

    raw (N, 195) (x, y in crop pixels 0..256, z, visibility logit, presence logit per point);
    heatmaps (N, 64, 64, 39) logits.
    """
    lm = raw.reshape(-1, NUM_RAW, 5).astype(np.float64)
    uv, conf = refine_from_heatmaps(lm[..., :2] / LM_SIZE, heatmaps)
    vis = _sigmoid(lm[..., 3])
    pres = _sigmoid(lm[..., 4])
    return np.concatenate([uv, vis[..., None], pres[..., None], conf[..., None]], axis=-1)


def refine_from_heatmaps(uv: np.ndarray, heatmaps: np.ndarray, kernel: int = HEATMAP_KERNEL,
                         min_conf: float = HEATMAP_MIN_CONF) -> tuple[np.ndarray, np.ndarray]:
    """Replace each point by the sigmoid-weighted mean cell position in a ``kernel`` window
    of its heatmap around it, when the window's max sigmoid >= ``min_conf``.

    uv (N, K, 2) in [0, 1]; heatmaps (N, h, w, K) logits. Returns the refined uv (N, K, 2)
    and each point's window max sigmoid (N, K) (0 for points outside the heatmap).
    Positions are cell index / size, as MediaPipe (cell centres measured worse).
    """
    n, h, w, k = heatmaps.shape
    r = (kernel - 1) // 2
    cols = np.floor(uv[..., 0] * w).astype(int)                   # (N, K)
    rows = np.floor(uv[..., 1] * h).astype(int)
    inside = (cols >= 0) & (cols < w) & (rows >= 0) & (rows < h)
    cols, rows = np.where(inside, cols, 0), np.where(inside, rows, 0)
    # windows outside the heatmap read a -inf border: zero weight, as MediaPipe's clipped window
    padded = np.pad(heatmaps.astype(np.float64), ((0, 0), (r, r), (r, r), (0, 0)), constant_values=-np.inf)
    offs = np.arange(-r, r + 1)
    rr = rows[..., None, None] + offs[:, None] + r                # (N, K, kern, 1)
    cc = cols[..., None, None] + offs[None, :] + r                # (N, K, 1, kern)
    conf = _sigmoid(padded[np.arange(n)[:, None, None, None], rr, cc, np.arange(k)[None, :, None, None]])
    total = conf.sum(axis=(2, 3))
    peak = np.where(inside, conf.max(axis=(2, 3)), 0.0)
    refined = np.stack([(conf * (cc - r)).sum(axis=(2, 3)) / np.maximum(total, 1e-12) / w,
                        (conf * (rr - r)).sum(axis=(2, 3)) / np.maximum(total, 1e-12) / h], axis=-1)
    use = inside & (peak >= min_conf) & (total > 0)
    return np.where(use[..., None], refined, uv), peak


def landmarks_to_image(uv: np.ndarray, crop_to_image: np.ndarray) -> np.ndarray:
    """Crop units (K, 2) in [0, 1] to image pixels (K, 2) through a (2, 3) affine for a 1x1 crop."""
    return uv @ crop_to_image[:, :2].T + crop_to_image[:, 2]


def mask_points(seg_logits: np.ndarray, crop_to_image: np.ndarray, step: int = 2) -> np.ndarray:
    """Image pixels (M, 2) of the person mask: centres of the crop cells (every ``step``-th
    row and column) whose segmentation logit is > 0 (probability > 0.5).

    seg_logits (S, S) for a crop of side S; crop_to_image (2, 3) affine for that crop.
    """
    ys, xs = np.nonzero(seg_logits[::step, ::step] > 0)
    cells = np.stack([xs, ys], axis=1) * step + 0.5 * step
    return cells @ crop_to_image[:, :2].T + crop_to_image[:, 2]


def split_landmark_outputs(outs: list[np.ndarray]) -> tuple[np.ndarray, ...]:
    """Landmark-model outputs by shape: raw landmarks (N, 195), pose flag (N, 1),
    heatmaps (N, 64, 64, 39), segmentation logits (N, 256, 256), world landmarks (N, 117)
    (39 x (x, y, z) metres, hip-centred, in the crop's frame: :func:`world_landmarks`)."""
    raw = next(o for o in outs if o.ndim == 2 and o.shape[-1] == NUM_RAW * 5)
    flag = next(o for o in outs if o.ndim == 2 and o.shape[-1] == 1)
    heat = next(o for o in outs if o.ndim == 4 and o.shape[-1] == NUM_RAW)
    seg = next(o for o in outs if o.ndim == 4 and o.shape[-1] == 1)
    world = next(o for o in outs if o.ndim == 2 and o.shape[-1] == NUM_RAW * 3)
    return raw, flag, heat, seg[..., 0], world


def world_landmarks(raw_world: np.ndarray, rotation: float) -> np.ndarray:
    """The 33 body world landmarks ``(33, 3)`` f32 metres of one crop, in the image's axes.

    raw_world (117,) = 39 x (x, y, z) from the landmark model: metres, origin between the
    hips, x right, y down, z away from the camera, in the frame of the (rotated) crop.
    As MediaPipe's ``WorldLandmarkProjectionCalculator`` the x, y axes are turned by the
    ROI's ``rotation`` (radians, clockwise on screen) so that they follow the image's
    x right, y down; z is unchanged. Scale is the model's (an average-sized adult).
    """
    w = raw_world.reshape(NUM_RAW, 3)[:NUM_BODY].astype(np.float64)
    c, s = math.cos(rotation), math.sin(rotation)
    out = w.copy()
    out[:, 0] = c * w[:, 0] - s * w[:, 1]
    out[:, 1] = s * w[:, 0] + c * w[:, 1]
    return out.astype(np.float32)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.clip(x, -80.0, 80.0)))   # clip: no overflow, -inf -> 0


# ----------------------------------------------------------------------------- interpreters
NATIVE_LOG = logging.getLogger("deforhmr.native")  # set to INFO (``deforhmr -v``) to see LiteRT's own lines


@contextlib.contextmanager
def _native_stderr_quiet():
    """Silence what native code writes to file descriptor 2 (LiteRT's "INFO: Created TensorFlow Lite
    XNNPACK delegate for CPU." on every interpreter) unless ``NATIVE_LOG`` is set to INFO or lower.
    Python's own ``sys.stderr`` output is flushed first; descriptors work the same on Windows."""
    level = NATIVE_LOG.level
    if level != logging.NOTSET and level <= logging.INFO:
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no descriptor 2 (embedded hosts): nothing to silence
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class TfliteModel:
    """A LiteRT interpreter created on first use; runs batches (resizing the input when its
    shape changes: keep one shape per instance, resizing re-allocates)."""

    def __init__(self, path, num_threads: int):
        self.path = path
        self.num_threads = num_threads
        self._interp = None
        self._shape: tuple[int, ...] | None = None

    def _get(self):
        if self._interp is None:
            from ai_edge_litert.interpreter import Interpreter  # heavy import, done once
            self._interp = Interpreter(model_path=str(self.path), num_threads=self.num_threads)
            with _native_stderr_quiet():
                self._interp.allocate_tensors()
            self._shape = tuple(int(v) for v in self._interp.get_input_details()[0]["shape"])
        return self._interp

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        """Run on ``(B, H, W, 3)`` (cast to the model's input dtype: f32 or uint8); returns
        the output tensors (copies) in the model's order."""
        it = self._get()
        detail = it.get_input_details()[0]
        if tuple(batch.shape) != self._shape:
            it.resize_tensor_input(detail["index"], list(batch.shape))
            with _native_stderr_quiet():
                it.allocate_tensors()
            self._shape = tuple(batch.shape)
        it.set_tensor(detail["index"], np.ascontiguousarray(batch, detail["dtype"]))
        it.invoke()
        return [it.get_tensor(d["index"]).copy() for d in it.get_output_details()]
