"""BlazePose (MediaPipe "pose", GHUM 3D full model) run with LiteRT, without mediapipe.

Two TFLite models (Apache-2.0, copied unmodified from the mediapipe 0.10.21 wheel,
see ``weights/LICENSE-mediapipe.txt``):

* ``pose_detection.tflite``: SSD-style detector. Input ``(1, 224, 224, 3)`` f32 RGB in
  [-1, 1], the image letterboxed (aspect kept, black borders). Outputs raw boxes
  ``(1, 2254, 12)`` (box centre x, y, width, height, then four keypoints x, y, all in
  input pixels relative to the anchor centre) and raw scores ``(1, 2254, 1)`` (logits).
  Keypoint 0 is the mid-hip centre, keypoint 1 a point whose distance from it is half the
  full-body extent (it also gives the body's rotation); 2 and 3 are the upper-body pair.
* ``pose_landmark_full.tflite``: landmark model on a rotated square crop around the
  person. Input ``(N, 256, 256, 3)`` f32 RGB in [0, 1]. Outputs ``(N, 195)`` = 39 x
  (x, y, z, visibility logit, presence logit) with x, y in crop pixels; ``(N, 1)`` pose
  presence logit; ``(N, 256, 256, 1)`` segmentation; ``(N, 64, 64, 39)`` heatmaps;
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
* Weighted NMS (IoU 0.3): overlapping boxes are averaged with score weights.
* ROI: centre = keypoint 0, side = 2 * |kp1 - kp0| * 1.25 (square, in pixels),
  rotation = 90 deg - atan2(-(y1 - y0), x1 - x0) (keypoint 1 straight above the hips
  means an upright body, rotation 0).
* Landmarks: sigmoid visibility/presence, heatmap refinement (7x7 window, refine
  when the window's max sigmoid >= 0.5), un-projection through the ROI's rotation.

Deviations from MediaPipe, and why:

* Images are read from a pyramid (halving with area averaging), so no bilinear
  resampling ever shrinks by more than 2x: MediaPipe samples video frames directly,
  which aliases badly on 24-megapixel photos.
* Heatmap refinement uses cell centres ((col + 0.5) / 64) where MediaPipe uses the
  cell corner (col / 64), a 2-pixel bias in crop space.
* Frames are independent photos, so there is no tracking or smoothing; the
  landmark ROI can optionally be re-derived from the auxiliary points and the model
  run a second time (what MediaPipe's tracker does on the next frame).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

DET_SIZE = 224
LM_SIZE = 256
NUM_BODY = 33
NUM_RAW = 39
ROI_SCALE = 1.25
DET_NMS_IOU = 0.3
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


def roi_from_box(box: np.ndarray, scale: float = ROI_SCALE) -> Roi:
    """Upright ROI for a person box (x0, y0, x1, y1) px: box centre, side ``scale * max(w, h)``."""
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
        """Region (x0, y0, x1, y1) px resized to fit ``out`` x ``out`` (aspect kept, black pad).

        Returns the uint8 ``(out, out, 3)`` tile and a (2, 3) affine from tile coordinates to
        image pixels (continuous).
        """
        x0, y0, x1, y1 = region
        img, sx, sy = self._level(max(x1 - x0, y1 - y0) / out)
        i0, i1 = int(round(x0 * sx)), max(int(round(x1 * sx)), int(round(x0 * sx)) + 1)
        j0, j1 = int(round(y0 * sy)), max(int(round(y1 * sy)), int(round(y0 * sy)) + 1)
        crop = img[j0:j1, i0:i1]
        k = out / max(crop.shape[0], crop.shape[1])
        cw, ch = max(1, round(crop.shape[1] * k)), max(1, round(crop.shape[0] * k))
        interp = cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR
        small = cv2.resize(crop, (cw, ch), interpolation=interp)
        px, py = (out - cw) // 2, (out - ch) // 2
        tile = np.zeros((out, out, 3), np.uint8)
        tile[py:py + ch, px:px + cw] = small
        ax, ay = crop.shape[1] / (cw * sx), crop.shape[0] / (ch * sy)   # level-0 px per tile px
        affine = np.array([[ax, 0.0, i0 / sx - px * ax], [0.0, ay, j0 / sy - py * ay]])
        return tile, affine

    def warp(self, crop_to_image: np.ndarray, out: int) -> np.ndarray:
        """Sample an ``out`` x ``out`` crop through a (2, 3) crop->image affine (bilinear, replicated border)."""
        lin = crop_to_image[:, :2]
        shrink = math.sqrt(abs(np.linalg.det(lin)))              # image px per crop px
        img, sx, sy = self._level(shrink)
        scale = np.diag([sx, sy])
        lin_l = scale @ lin
        t_l = scale @ crop_to_image[:, 2]
        # index coordinates: src_idx = lin_l (dst_idx + 0.5) + t_l - 0.5
        m = np.concatenate([lin_l, (t_l + lin_l @ np.array([0.5, 0.5]) - 0.5)[:, None]], axis=1)
        return cv2.warpAffine(img, m, (out, out), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_REPLICATE)


# ----------------------------------------------------------------------------- detector decoding
def ssd_anchors(size: int = DET_SIZE, strides: tuple[int, ...] = _ANCHOR_STRIDES,
                anchors_per_layer: int = 2) -> np.ndarray:
    """Anchor centres ``(N, 2)`` f32 in [0, 1] (x, y), in the detector's output order."""
    out, i = [], 0
    while i < len(strides):
        j = i
        while j < len(strides) and strides[j] == strides[i]:
            j += 1
        n = math.ceil(size / strides[i])
        ys, xs = np.meshgrid((np.arange(n) + 0.5) / n, (np.arange(n) + 0.5) / n, indexing="ij")
        grid = np.stack([xs.ravel(), ys.ravel()], axis=1)            # (n*n, 2), row-major
        out.append(np.repeat(grid, anchors_per_layer * (j - i), axis=0))
        i = j
    return np.concatenate(out).astype(np.float32)


def decode_detections(raw_boxes: np.ndarray, raw_scores: np.ndarray, anchors: np.ndarray,
                      threshold: float, size: int = DET_SIZE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode one image's detector outputs.

    raw_boxes (N, 12), raw_scores (N,) or (N, 1) logits, anchors (N, 2).
    Returns boxes (M, 4) xyxy, keypoints (M, 4, 2), scores (M,), all in input-tile pixels
    (0..size), for the M anchors with sigmoid score >= threshold.
    """
    scores = 1.0 / (1.0 + np.exp(-np.clip(raw_scores.reshape(-1), -100.0, 100.0)))
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


def weighted_nms(boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray,
                 iou_threshold: float = DET_NMS_IOU) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MediaPipe's weighted NMS: each kept detection is the score-weighted mean of the
    boxes/keypoints overlapping the best remaining one by more than ``iou_threshold``;
    its score is the best one's. Returns (boxes, keypoints, scores) sorted by score desc.
    """
    order = np.argsort(-scores, kind="stable")
    iou = box_iou(boxes, boxes)
    out_b, out_k, out_s = [], [], []
    remaining = list(order)
    while remaining:
        top = remaining[0]
        group = [i for i in remaining if iou[top, i] > iou_threshold or i == top]
        w = scores[group][:, None]
        out_b.append((boxes[group] * w).sum(0) / w.sum())
        out_k.append((keypoints[group] * w[:, :, None]).sum(0) / w.sum())
        out_s.append(scores[top])
        remaining = [i for i in remaining if i not in set(group)]
    if not out_s:
        return np.zeros((0, 4)), np.zeros((0, 4, 2)), np.zeros((0,))
    return np.stack(out_b), np.stack(out_k), np.asarray(out_s)


# ----------------------------------------------------------------------------- landmark decoding
def decode_landmarks(raw: np.ndarray, heatmaps: np.ndarray | None) -> np.ndarray:
    """Landmark-model outputs to ``(N, 39, 4)``: u, v in [0, 1] crop units, visibility, presence.

    raw (N, 195) (x, y in crop pixels 0..256, z, visibility logit, presence logit per point);
    heatmaps (N, 64, 64, 39) logits or None (no refinement).
    """
    lm = raw.reshape(-1, NUM_RAW, 5).astype(np.float64)
    uv = lm[..., :2] / LM_SIZE
    if heatmaps is not None:
        uv = refine_from_heatmaps(uv, heatmaps)
    vis = _sigmoid(lm[..., 3])
    pres = _sigmoid(lm[..., 4])
    return np.concatenate([uv, vis[..., None], pres[..., None]], axis=-1)


def refine_from_heatmaps(uv: np.ndarray, heatmaps: np.ndarray, kernel: int = HEATMAP_KERNEL,
                         min_conf: float = HEATMAP_MIN_CONF) -> np.ndarray:
    """Replace each point by the sigmoid-weighted mean cell centre in a ``kernel`` window
    of its heatmap around it, when the window's max sigmoid >= ``min_conf``.

    uv (N, K, 2) in [0, 1]; heatmaps (N, h, w, K) logits. Returns the refined (N, K, 2).
    """
    n, h, w, k = heatmaps.shape
    r = (kernel - 1) // 2
    out = uv.copy()
    cols = np.floor(uv[..., 0] * w).astype(int)
    rows = np.floor(uv[..., 1] * h).astype(int)
    for b in range(n):
        for j in range(k):
            c, rr = cols[b, j], rows[b, j]
            if not (0 <= c < w and 0 <= rr < h):
                continue
            r0, r1, c0, c1 = max(0, rr - r), min(h, rr + r + 1), max(0, c - r), min(w, c + r + 1)
            conf = _sigmoid(heatmaps[b, r0:r1, c0:c1, j].astype(np.float64))
            total = conf.sum()
            if conf.max() >= min_conf and total > 0:
                yy, xx = np.mgrid[r0:r1, c0:c1]
                out[b, j, 0] = ((xx + 0.5) * conf).sum() / total / w
                out[b, j, 1] = ((yy + 0.5) * conf).sum() / total / h
    return out


def landmarks_to_image(uv: np.ndarray, crop_to_image: np.ndarray) -> np.ndarray:
    """Crop units (K, 2) in [0, 1] to image pixels (K, 2) through a (2, 3) affine for a 1x1 crop."""
    return uv @ crop_to_image[:, :2].T + crop_to_image[:, 2]


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.clip(x, -80.0, 80.0)))


# ----------------------------------------------------------------------------- interpreters
class TfliteModel:
    """A LiteRT interpreter created on first use; runs batches (resizing the input when needed)."""

    def __init__(self, path, num_threads: int):
        self.path = path
        self.num_threads = num_threads
        self._interp = None
        self._batch = 1

    def _get(self):
        if self._interp is None:
            from ai_edge_litert.interpreter import Interpreter  # heavy import, done once
            self._interp = Interpreter(model_path=str(self.path), num_threads=self.num_threads)
            self._interp.allocate_tensors()
        return self._interp

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        """Run on ``(B, H, W, 3)`` f32; returns the output tensors (copies) in the model's order."""
        it = self._get()
        inp = it.get_input_details()[0]["index"]
        if batch.shape[0] != self._batch:
            it.resize_tensor_input(inp, list(batch.shape))
            it.allocate_tensors()
            self._batch = batch.shape[0]
        it.set_tensor(inp, np.ascontiguousarray(batch, np.float32))
        it.invoke()
        return [it.get_tensor(d["index"]).copy() for d in it.get_output_details()]
