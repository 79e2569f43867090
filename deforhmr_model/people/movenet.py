"""MoveNet MultiPose Lightning person detector (LiteRT), tiled, followed by BlazePose landmarks.

Model (Apache-2.0, Google; unmodified TF-Hub file
``movenet/multipose/lightning/tflite/float16/1``, see ``weights/LICENSE-movenet.txt``):
input ``(1, H, W, 3)`` uint8 RGB, H and W multiples of 32; output ``(1, 6, 56)``: per
person slot 17 COCO keypoints as (y, x, score) normalised to the input, then
ymin, xmin, ymax, xmax, score of the person. It returns at most 6 people per pass.

How people are found (:class:`MoveNetDetector`):

1. **Passes.** The whole image and overlapping tiles (:func:`movenet_regions`, at most
   :data:`MAX_TILES`), each letterboxed (aspect kept, black border) into one fixed
   ``canvas`` x ``canvas`` input (the interpreter is never resized). Tiles let it find
   more than 6 people and people too small for the whole-image pass. A pass that fills
   (nearly) all 6 slots is split into 2 x 2 smaller tiles (:func:`split_region`): crowds
   get more passes, ordinary photos none. The whole image is also run turned by 90, 180
   and 270 degrees (``turns``, three more passes): MoveNet misses most people lying down
   or upside down (on the COCO and MPII dev photos turned by 90 degrees it found 12 of 17
   people, 16 with the turned passes; turned 180 degrees 12 and 14). The turned passes use
   a smaller canvas (:data:`TURN_CANVAS`, 0.56x the cost; at the full canvas they found 17
   and 16 at twice the cost). A person found both upright and turned keeps the upright
   pass's keypoints (:data:`TURNED_SCORE`).
2. **Cut people.** A tile detection whose box reaches an *inner* tile edge (one that is
   not the image border) is dropped: the person continues outside the tile and is seen
   whole by a larger pass or a neighbouring, overlapping tile.
3. **Merge.** Detections of all passes, best score first; a detection is dropped when
   its box overlaps a kept one with IoU > :data:`MERGE_IOU` or its keypoints agree with
   a kept one's (object keypoint similarity > :data:`MERGE_OKS`).
4. **Landmarks.** Each person's first ROI comes from its MoveNet keypoints
   (:func:`roi_from_keypoints`: hip centre, the hips->shoulders direction as "up", the
   keypoint extent as size: already rotated, as MediaPipe's ROI from alignment points);
   the BlazePose landmark model runs on it. With ``refine`` (off by default here) it runs
   once more on the ROI from its own alignment points (MediaPipe's tracking ROI) where that
   ROI differs, and keeps the pass it is more confident about. On the dev sets the second
   pass lowered the fitted bodies' PCK@0.2 (92.2 -> 91.1 overall; OCHuman 80.6 -> 75.0,
   measured with the fitter of the time) at twice the landmark cost, so MoveNet's keypoint
   ROI is used alone. The person keeps MoveNet's box (COCO-style, closer to the
   annotations than the landmark/mask box) and score; its COCO-17
   keypoints are the mean of MoveNet's and the landmark model's (:func:`fuse_keypoints`),
   its 33 landmarks and world landmarks are the landmark model's. A person is kept when
   MoveNet is sure (score >= ``sure``) or the landmark model is (quality >= ``min_quality``).
5. **Assist.** Where two of MoveNet's people overlap (box IoU > :data:`ASSIST_IOU`),
   BlazePose's own detector (whole image + tiles down to ``assist_min_person``) adds
   candidates MoveNet misses in overlapping crowds (figure-skating composites); they
   go through the same landmark passes, are kept when the landmark quality is high, and
   rank after MoveNet's people. Duplicates are removed last (:func:`detection.dedup`).

Coordinates are image pixels, x right, y down, continuous (pixel i spans [i, i+1)).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from deforhmr_model.people import blazepose as bp
from deforhmr_model.people.detection import (DEFAULT_MIN_PERSON, Detection, LandmarkDetector, detector_input,
                                             check_search_options,
                                             dedup, same_roi, tile_regions)

MOVENET_FILE = "movenet_multipose_lightning.tflite"
CANVAS = 256               # input side (px, multiple of 32)
TURN_CANVAS = 192          # input side of the turned whole-image passes (their people are large; 0.56x the cost)
MAX_SLOTS = 6              # people per pass
EDGE_MARGIN = 0.02         # a box within this fraction of the tile side of an inner edge is cut
MERGE_IOU = 0.6
MERGE_OKS = 0.5
OKS_SIGMAS = np.array([.026, .025, .025, .035, .035, .079, .079, .072, .072, .062, .062,
                       .107, .107, .087, .087, .089, .089])   # COCO keypoint sigmas
KP_MIN_SCORE = 0.2         # keypoints below this MoveNet score do not shape the first ROI
TILE_FIT = (1.2, 3.5)      # a tile finds people whose extent is side / fit[1] .. side / fit[0]
MAX_TILES = 12
SPLIT_CHILD = 0.6          # a saturated pass's region is split into 2 x 2 tiles of this x its side
SPLIT_MIN = 2.0            # ... down to tiles of this x the smallest person looked for
MAX_SPLIT_PASSES = 12      # at most this many passes from splitting
TURNED_SCORE = 0.8         # a person found both upright and turned keeps the upright pass's keypoints
ASSIST_IOU = 0.2           # the assist runs when two MoveNet people's boxes overlap by more than this
ASSIST_SCORE = 0.5         # BlazePose-detector candidates rank after MoveNet's (scores are not comparable)
ASSIST_SAME_ROI = 0.1      # a candidate whose ROI is this close to a MoveNet person's (detection.same_roi) is
                           # that person: its landmark passes are skipped


def decode_movenet(out: np.ndarray, affine: np.ndarray, canvas: int = CANVAS
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One pass's output ``(1, 6, 56)`` (or ``(6, 56)``) to image pixels.

    affine: (2, 3) canvas px -> image px (from ``ImagePyramid.letterbox``).
    Returns boxes (6, 4) f64 x0, y0, x1, y1 px, keypoints (6, 17, 3) f64 (x px, y px, score),
    scores (6,) f64, in slot order.
    """
    o = np.asarray(out, np.float64).reshape(MAX_SLOTS, 56)
    kp = o[:, :51].reshape(MAX_SLOTS, 17, 3)
    xy = np.stack([kp[..., 1], kp[..., 0]], axis=-1) * canvas          # canvas px (x, y)
    xy = xy @ affine[:, :2].T + affine[:, 2]
    corners = np.stack([o[:, [52, 51]], o[:, [54, 53]]], axis=1) * canvas  # (6, 2, 2): (xmin, ymin), (xmax, ymax)
    corners = corners @ affine[:, :2].T + affine[:, 2]
    boxes = corners.reshape(MAX_SLOTS, 4)
    return boxes, np.concatenate([xy, kp[..., 2:3]], axis=-1), o[:, 55].copy()


def cut_by_inner_edge(boxes: np.ndarray, region, size: tuple[int, int], margin: float = EDGE_MARGIN) -> np.ndarray:
    """(N,) bool: boxes (N, 4) px that reach an inner edge of the tile ``region``
    (x0, y0, x1, y1 px), i.e. an edge inside the image of ``size`` = (W, H), within
    ``margin`` x the tile's longer side."""
    x0, y0, x1, y1 = region
    m = margin * max(x1 - x0, y1 - y0)
    W, H = size
    cut = np.zeros(len(boxes), bool)
    if x0 > 0.5:
        cut |= boxes[:, 0] <= x0 + m
    if y0 > 0.5:
        cut |= boxes[:, 1] <= y0 + m
    if x1 < W - 0.5:
        cut |= boxes[:, 2] >= x1 - m
    if y1 < H - 0.5:
        cut |= boxes[:, 3] >= y1 - m
    return cut


def keypoint_oks(a: np.ndarray, b: np.ndarray, area: float, min_score: float = KP_MIN_SCORE) -> float:
    """COCO object keypoint similarity of keypoints a, b (17, 3) (x, y px, score) over the
    keypoints both see with score >= ``min_score``; ``area`` = box area px^2. 0 when none."""
    both = (a[:, 2] >= min_score) & (b[:, 2] >= min_score)
    if not both.any():
        return 0.0
    d2 = ((a[both, :2] - b[both, :2]) ** 2).sum(1)
    return float(np.exp(-d2 / (2 * max(area, 1.0) * (2 * OKS_SIGMAS[both]) ** 2)).mean())


def merge_people(boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray,
                 iou: float = MERGE_IOU, oks: float = MERGE_OKS) -> np.ndarray:
    """Greedy merge of detections from several passes: indices of the kept ones, best
    score first. A detection is dropped when its box has IoU > ``iou`` with a kept one or
    its keypoints have OKS > ``oks`` with a kept one's (OKS on the smaller box's area).

    boxes (N, 4) px, keypoints (N, 17, 3), scores (N,).
    """
    order = np.argsort(-scores, kind="stable")
    kept: list[int] = []
    for i in order:
        dup = False
        for j in kept:
            if bp.box_iou(boxes[i:i + 1], boxes[j:j + 1])[0, 0] > iou:
                dup = True
                break
            area = min(_area(boxes[i]), _area(boxes[j]))
            if keypoint_oks(keypoints[i], keypoints[j], area) > oks:
                dup = True
                break
        if not dup:
            kept.append(int(i))
    return np.asarray(kept, int)


def roi_from_keypoints(keypoints: np.ndarray, box: np.ndarray, min_score: float = KP_MIN_SCORE,
                       scale: float = bp.ROI_SCALE) -> bp.Roi:
    """First landmark ROI from a MoveNet person: keypoints (17, 3) (x, y px, score), box (4,) px.

    Centre: the hips' midpoint when both hips are seen (score >= ``min_score``), else the box
    centre. Rotation: "up" = hips' midpoint -> shoulders' midpoint when both pairs are seen
    (as MediaPipe's alignment points: a tilted or upside-down body keeps its rotation),
    else upright. Size: as MediaPipe's ROI, ``2 * r * scale`` with r the half extent of the
    body around the centre: the farthest seen keypoint, grown by 15% for the head top and
    feet beyond the outermost joints, and at least the distance to the box's farthest edge
    midpoint.
    """
    kp = np.asarray(keypoints, np.float64)
    seen = kp[:, 2] >= min_score
    bx = np.asarray(box, np.float64)
    hips, shoulders = seen[[11, 12]].all(), seen[[5, 6]].all()
    center = kp[[11, 12], :2].mean(0) if hips else np.array([(bx[0] + bx[2]) / 2, (bx[1] + bx[3]) / 2])
    rotation = 0.0
    if hips and shoulders:
        up = kp[[5, 6], :2].mean(0) - center
        if np.linalg.norm(up) > 1e-6:
            rotation = bp.roi_from_alignment(center, center + up).rotation
    r_kp = 1.15 * float(np.linalg.norm(kp[seen, :2] - center, axis=1).max()) if seen.any() else 0.0
    r_box = float(max(abs(bx[0] - center[0]), abs(bx[2] - center[0]), abs(bx[1] - center[1]), abs(bx[3] - center[1])))
    return bp.Roi(center, 2.0 * max(r_kp, r_box, 4.0) * scale, rotation)


def fuse_keypoints(person: Detection, movenet_kps: np.ndarray) -> np.ndarray:
    """COCO-17 keypoints (17, 3) f32 of one person: the mean of MoveNet's keypoints and the
    landmark model's (``person.keypoints_coco``), positions and confidences alike.

    Two independent estimates of the same joints: on the dev sets (limbs, PCK@0.2 of the
    box size) the mean scored 0.914 against 0.912 (MoveNet) and 0.889 (landmarks) alone.
    ``person.keypoints`` keeps the 33 landmarks (feet, hands) unchanged.
    """
    return ((np.asarray(person.keypoints_coco, np.float64) + np.asarray(movenet_kps, np.float64)) / 2
            ).astype(np.float32)


def movenet_regions(width: int, height: int, min_person: float = DEFAULT_MIN_PERSON, overlap: float = 0.3,
                    max_tiles: int = MAX_TILES) -> list[tuple[float, float, float, float]]:
    """Tiles after the whole-image pass (:func:`detection.tile_regions` with MoveNet's
    :data:`TILE_FIT`), at most ``max_tiles``: when more are needed for ``min_person``, the
    smallest person size is raised until they fit (a very long panorama gets fewer,
    larger tiles instead of hundreds)."""
    target = min_person
    while True:
        regions = tile_regions(width, height, target, overlap, fit=TILE_FIT)
        if len(regions) <= max_tiles or target >= 1.0:
            return regions[:max_tiles]
        target *= 1.25


class MoveNetDetector(LandmarkDetector):
    """Tiled MoveNet MultiPose Lightning + BlazePose landmarks (the default detector).

    Parameters (besides :class:`LandmarkDetector`'s: max_people, num_threads, min_quality,
    refine (default False here: the keypoint ROI is already rotated), landmark_path)
    ----------
    threshold : MoveNet person score threshold in [0, 1].
    min_person : smallest person to look for, as a fraction of the image's short side
        (tiles, :func:`movenet_regions`); >= 1: the whole image only.
    tile_overlap : overlap of neighbouring tiles, fraction of the tile side.
    max_tiles : at most this many tile passes besides the whole image.
    canvas : model input side px (multiple of 32).
    sure : MoveNet score from which a person is kept whatever the landmark quality.
    assist_min_person : BlazePose's detector adds candidates, tiled down to this
        fraction of the short side; None: MoveNet alone.
    turns : also run the whole image turned by these quarter turns (counter-clockwise):
        (1, 2, 3) (default) finds people lying down and upside down; (2,) upside down
        only (two passes fewer); () none.
    turn_canvas : input side px of the turned passes (multiple of 32).
    movenet_path : model file; default ``movenet_multipose_lightning.tflite``.

    Cost: one MoveNet pass per region (~15-25 ms at 256 px, 2 threads), a few BlazePose
    detector passes (~8 ms each) plus one or two landmark passes per person (~8 ms each).
    Raises ValueError for an argument out of range.
    """

    def __init__(self, threshold: float = 0.2, max_people: int | None = None, *, num_threads: int = 2,
                 min_person: float = DEFAULT_MIN_PERSON, tile_overlap: float = 0.5, max_tiles: int = MAX_TILES,
                 min_quality: float = 0.45, sure: float = 0.25, refine: bool = False, canvas: int = CANVAS,
                 assist_min_person: float | None = 0.4, turns: tuple[int, ...] = (1, 2, 3),
                 turn_canvas: int = TURN_CANVAS, movenet_path=None, landmark_path=None):
        super().__init__(max_people, num_threads=num_threads, min_quality=min_quality, refine=refine,
                         landmark_path=landmark_path)
        check_search_options(threshold, min_person, tile_overlap)
        for c in (canvas, turn_canvas):
            if c < 32 or c % 32:
                raise ValueError(f"canvas and turn_canvas must be multiples of 32 px, got {c}")
        self.turn_canvas = turn_canvas
        self.threshold, self.min_person, self.tile_overlap = threshold, min_person, tile_overlap
        self.max_tiles, self.canvas, self.sure = max_tiles, canvas, sure
        if any(t % 4 == 0 for t in turns) or len(set(t % 4 for t in turns)) != len(turns):
            raise ValueError(f"turns must be distinct quarter turns among 1, 2, 3, got {turns}")
        self.turns = tuple(int(t) % 4 for t in turns)
        self.confident_score = sure   # a score from which a detection is surely a person (trackers start tracks)
        self.assist = None
        if assist_min_person:
            from deforhmr_model.people.detection import BlazePoseDetector
            self.assist = BlazePoseDetector(num_threads=num_threads, min_person=assist_min_person,
                                            landmark_path=landmark_path)
        self._movenet_path = movenet_path
        self._movenet: bp.TfliteModel | None = None
        self._movenet_turned: bp.TfliteModel | None = None

    def regions(self, width: int, height: int) -> list[tuple[float, float, float, float]]:
        """Every pass's region (x0, y0, x1, y1) px: the whole image, then the tiles."""
        return [(0.0, 0.0, float(width), float(height))] + movenet_regions(
            width, height, self.min_person, self.tile_overlap, self.max_tiles)

    def find(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """MoveNet people only (no landmarks): boxes (M, 4) px, keypoints (M, 17, 3)
        (x px, y px, score), scores (M,), merged over all passes, best first."""
        return self._find(detector_input(image))

    def detect(self, image: np.ndarray) -> list[Detection]:
        """People in ``image`` ((H, W, 3) uint8 RGB), highest score first.

        Raises ValueError for an image of the wrong type, shape or dtype.
        """
        pyr = detector_input(image)
        boxes, kps, scores = self._find(pyr)
        rois = [roi_from_keypoints(k, b) for k, b in zip(kps, boxes)]
        n = len(rois)
        ascores = np.zeros(0)
        if self.assist is not None and _overlapping(boxes, ASSIST_IOU):   # BlazePose's detector adds
            # candidates where MoveNet's people overlap (crowds, composites); elsewhere it finds no one new
            _, akps, ascores = self.assist._detect_regions(pyr, self.assist.regions(*pyr.size))
            arois = [bp.roi_from_alignment(k[0], k[1]) for k in akps]
            new = [i for i, r in enumerate(arois) if not any(same_roi(r, m, ASSIST_SAME_ROI) for m in rois[:n])]
            rois += [arois[i] for i in new]              # people MoveNet has already found are not run again
            ascores = ascores[new]
        people = self._landmarks(pyr, rois, None, self.refine)
        out = [dataclasses.replace(p, bbox=b.astype(np.float32), score=float(s), keypoints_coco=fuse_keypoints(p, k))
               for p, b, k, s in zip(people[:n], boxes, kps, scores) if s >= self.sure or p.quality >= self.min_quality]
        if len(ascores):
            extra = [dataclasses.replace(p, score=float(s) * ASSIST_SCORE)
                     for p, s in zip(people[n:], ascores) if p.quality >= self.min_quality]
            out += sorted(extra, key=lambda p: -p.score)
        people = dedup(out)
        people.sort(key=lambda p: -p.score)
        return people[: self.max_people] if self.max_people else people

    def _turned_model(self) -> bp.TfliteModel:
        """A second interpreter of the same model for the turned passes' smaller canvas
        (one input shape per interpreter: resizing re-allocates)."""
        if self.turn_canvas == self.canvas:
            return self._movenet
        if self._movenet_turned is None:
            self._movenet_turned = bp.TfliteModel(self._movenet.path, self.num_threads)
        return self._movenet_turned

    def _find(self, pyr: bp.ImagePyramid):
        if self._movenet is None:
            from deforhmr_model.files.weights import require_file
            self._movenet = bp.TfliteModel(require_file(str(self._movenet_path or MOVENET_FILE)), self.num_threads)
        W, H = pyr.size
        queue = self.regions(W, H)
        min_side = SPLIT_MIN * self.min_person * min(W, H)
        all_b, all_k, all_s = [], [], []
        passes = 0
        while queue and passes < 1 + self.max_tiles + MAX_SPLIT_PASSES:
            region = queue.pop(0)
            passes += 1
            tile, affine = pyr.letterbox(region, self.canvas)
            b, k, s = decode_movenet(self._movenet.run(tile[None])[0], affine, self.canvas)
            keep = s >= self.threshold
            if keep.sum() >= MAX_SLOTS - 1:        # (nearly) every slot used: people may be left out
                queue += split_region(region, min_side)
            if passes > 1:
                keep &= ~cut_by_inner_edge(b, region, pyr.size)
            all_b.append(b[keep])
            all_k.append(k[keep])
            all_s.append(s[keep])
            if passes == 1 and self.turns:      # the whole image turned: people upside down / lying in it
                small, small_affine = pyr.letterbox(region, self.turn_canvas)
            for turns in (self.turns if passes == 1 else ()):
                turned = np.ascontiguousarray(np.rot90(small, turns))
                b, k, s = decode_movenet(self._turned_model().run(turned[None])[0],
                                         turned_affine(small_affine, self.turn_canvas, turns), self.turn_canvas)
                keep = s >= self.threshold
                all_b.append(_sorted_corners(b[keep]))
                all_k.append(k[keep])
                all_s.append(s[keep] * TURNED_SCORE)
        b, k, s = np.concatenate(all_b), np.concatenate(all_k), np.concatenate(all_s)
        b[:, [0, 2]] = np.clip(b[:, [0, 2]], 0, W)
        b[:, [1, 3]] = np.clip(b[:, [1, 3]], 0, H)
        keep = merge_people(b, k, s)
        return b[keep], k[keep], s[keep]


def split_region(region, min_side: float, child: float = SPLIT_CHILD) -> list[tuple[float, float, float, float]]:
    """Four overlapping sub-tiles (2 x 2, each side ``child`` x the region's) of a region
    whose pass used every person slot; [] when they would be smaller than ``min_side`` px.
    Along an axis shorter than the other's ``child`` share, one tile spans the region."""
    x0, y0, x1, y1 = region
    side = child * max(x1 - x0, y1 - y0)
    if side < min_side:
        return []
    def spans(a, b):
        if b - a <= side * 1.05:
            return [(a, b)]
        return [(a, a + side), (b - side, b)]
    return [(ax, ay, bx, by) for ay, by in spans(y0, y1) for ax, bx in spans(x0, x1)]


def turned_affine(affine: np.ndarray, canvas: int, quarter_turns: int = 2) -> np.ndarray:
    """The (2, 3) canvas px -> image px affine of a square tile turned by ``np.rot90(tile,
    quarter_turns)`` (counter-clockwise on screen), given the upright tile's ``affine``.
    A turned canvas point (x, y) is the upright point (C - y, x) after one quarter turn,
    (C - x, C - y) after two, (y, C - x) after three (C = ``canvas``)."""
    C = float(canvas)
    back = {0: ((1, 0, 0), (0, 1, 0)), 1: ((0, -1, C), (1, 0, 0)),
            2: ((-1, 0, C), (0, -1, C)), 3: ((0, 1, 0), (-1, 0, C))}[quarter_turns % 4]
    T = np.array(back, float)                                 # turned canvas -> upright canvas
    out = np.empty((2, 3))
    out[:, :2] = affine[:, :2] @ T[:, :2]
    out[:, 2] = affine[:, :2] @ T[:, 2] + affine[:, 2]
    return out


def _sorted_corners(boxes: np.ndarray) -> np.ndarray:
    """Boxes (N, 4) with each axis's corners in increasing order (x0 <= x1, y0 <= y1)."""
    return np.concatenate([np.minimum(boxes[:, :2], boxes[:, 2:]), np.maximum(boxes[:, :2], boxes[:, 2:])], 1)


def _overlapping(boxes: np.ndarray, iou: float) -> bool:
    """Whether any two boxes (N, 4) px overlap with IoU > ``iou``."""
    if len(boxes) < 2:
        return False
    m = bp.box_iou(boxes.astype(np.float64), boxes.astype(np.float64))
    np.fill_diagonal(m, 0.0)
    return bool((m > iou).any())


def _area(box) -> float:
    return float(max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0))


__all__ = ["MoveNetDetector", "decode_movenet", "turned_affine", "cut_by_inner_edge", "merge_people",
           "roi_from_keypoints", "keypoint_oks", "movenet_regions", "MOVENET_FILE"]
