"""Person detection and 2D body keypoints without downloads, behind a small protocol.

Any object with a ``detect(image) -> list[Detection]`` method (:class:`PersonDetector`)
can serve the pipeline. The shipped ones share :class:`LandmarkDetector` (the BlazePose
landmark model on each person's ROI: 33 landmarks, 3D world landmarks, person mask;
verification; duplicates) and differ in how they find people; :func:`make_detector`
builds them by name:

* ``"movenet"`` (default): tiled MoveNet MultiPose Lightning,
  :class:`deforhmr_model.people.movenet.MoveNetDetector`.
* ``"blazepose"``: BlazePose's own detector, tiled, :class:`BlazePoseDetector` (below).

Each returns, per person, a body box, the 33 BlazePose landmarks, the COCO-17 keypoints
and the world landmarks (:class:`Detection`). ``keypoints_for_boxes(image, boxes)`` skips
detection and runs the landmark model on user-given person boxes.

BlazePose's detector: how people are found (model details
, and the MediaPipe graphs this follows, are in
:mod:`deforhmr_model.people.blazepose`):

1. **Detector passes.** The 224x224 BlazePose detector reliably finds people whose extent
   is roughly 40-80% of its input (measured on the dev photos; it was made for one
   person filling a video frame). It runs on the whole image, letterboxed, and on
   overlapping tiles at the sizes :func:`tile_regions` chooses so that people down to
   ``min_person`` x the image's short side are seen at a size it handles (tiles are
   batched, 8 per interpreter call). Anchors scoring >= ``threshold`` are merged per pass
   and across passes (weighted NMS by body ROI, :func:`blazepose.weighted_merge`).
   Cost: one detector pass per region, so ``min_person`` sets the speed (see the class).
2. **Landmarks.** Each merged detection gives a rotated square ROI (mid-hip centre, body
   extent and rotation from the detector's alignment keypoints); the 256x256 landmark
   model runs on the ROI crops in batches. Its person mask gives the body box
   (:func:`body_box`), its landmarks the keypoints.
3. **Verification.** Tiles make the detector see limbs, wheels and folds as small or
   upside-down "people". A detection is kept when the landmark model is confident about
   its keypoints: ``quality`` (mean heatmap confidence of the body landmarks inside the
   image) >= ``min_quality`` (0.45: on the dev photos false detections scored <= 0.41,
   people <= 0.47 only when mostly hidden) and pose presence >= :data:`MIN_PRESENCE`.
4. **Duplicates.** A person found twice (two passes, two ROIs) is kept once: detections
   whose COCO keypoints nearly coincide, or whose boxes overlap with IoU > 0.8, are
   duplicates; the higher score wins.

Coordinates are image pixels, x right, y down, continuous (pixel i spans [i, i+1)).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from deforhmr_model.people import blazepose as bp
from deforhmr_model.people.exposure import correct_exposure
from deforhmr_model.people.tiling import MIN_TILE_SIDE, bounded_tile_side

# BlazePose landmark index of each COCO-17 keypoint (COCO order: nose, left/right eye,
# left/right ear, shoulders, elbows, wrists, hips, knees, ankles).
COCO_FROM_BLAZEPOSE = (0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28)
BOX_MARGIN = 0.04          # body box = landmark extent padded by this fraction of its longer side
HEAD_TOP = 0.6             # head top = eyes + HEAD_TOP * (eyes - shoulders)
MASK_REACH = 0.3           # mask pixels count up to this fraction of the landmark box beyond it
MIN_MASK_POINTS = 20
TILE_STRETCH = 1.25       # an axis at most this x the tile side gets one stretched tile
DEDUP_IOU = 0.8
DEDUP_KEYPOINT_DIST = 0.1  # median COCO keypoint distance, in units of sqrt(box area)
DEFAULT_MIN_PERSON = 0.2   # smallest person looked for, fraction of the short side (one default everywhere)
BATCH = 8                  # detector tiles per interpreter call (bounded: resizing the input is slow);
                           # landmark crops run one per call (fastest per crop, measured on 2 threads)
ROI_TOLERANCE = 0.1        # refine: ROIs this close give the same landmarks (no second pass)
MIN_IMAGE_SIDE = 16        # px; smaller images hold no findable person (1x1, 1000x1 strips)
MIN_PRESENCE = 0.1         # pose presence below this: nobody in the crop (MediaPipe uses 0.5, which drops
                           # people overlapped by others; false detections score high anyway)


@dataclass
class Detection:
    """One person (image pixels, x right, y down).

    bbox: (4,) f32 x0, y0, x1, y1, body box (person mask and landmarks, :func:`body_box`),
        clipped to the image.
    score: detector confidence in [0, 1] (from :meth:`BlazePoseDetector.keypoints_for_boxes`:
        the landmark model's pose presence).
    keypoints: (33, 3) f32 BlazePose landmarks (x px, y px, visibility in [0, 1]).
    keypoints_coco: (17, 3) f32 COCO-17 keypoints (x px, y px, confidence in [0, 1]),
        rows of ``keypoints`` picked by :data:`COCO_FROM_BLAZEPOSE`.
    presence: landmark model's pose-presence probability in [0, 1].
    quality: mean heatmap confidence in [0, 1] of the body landmarks inside the image.
    roi: (4,) f32 centre x px, centre y px, side px, rotation (radians, clockwise) of the
        landmark model's crop.
    world_landmarks: (33, 3) f32 metres or None: the landmark model's 3D body landmarks
        (BlazePose order, as ``keypoints``), origin between the hips, x right, y down (image
        axes), z away from the camera; they carry depth order. None when no landmark model ran.
    """

    bbox: np.ndarray
    score: float
    keypoints: np.ndarray
    keypoints_coco: np.ndarray
    presence: float = 1.0
    quality: float = 1.0
    roi: np.ndarray = field(default_factory=lambda: np.zeros(4, np.float32))
    world_landmarks: np.ndarray | None = None


@runtime_checkable
class PersonDetector(Protocol):
    """Finds people: ``detect(image (H, W, 3) uint8 RGB) -> list[Detection]``, highest score first."""

    def detect(self, image: np.ndarray) -> list[Detection]: ...


class LandmarkDetector:
    """Base of the shipped detectors: a person finder (subclasses' ``detect``) followed by
    the BlazePose landmark model on each person's ROI (33 landmarks, world landmarks,
    person mask), keypoint-quality verification and duplicate removal.

    Parameters (shared by the subclasses)
    ----------
    max_people : keep at most this many people (highest scores first); None keeps all.
    num_threads : CPU threads of each LiteRT interpreter.
    min_quality : keep people whose keypoint quality is at least this (0 keeps all).
    refine : run the landmark model a second time on the ROI from its own alignment
        points (MediaPipe's tracking step: keeps the body's rotation; a second landmark pass)
        and keep that pass where its keypoint quality (:func:`landmark_quality`) is at least
        the first's. User boxes (:meth:`keypoints_for_boxes`) always get it.
    landmark_path : landmark model file; default ``pose_landmark_full.tflite`` found by
        ``deforhmr_model.files.weights.require_file``.

    Interpreters are created on first use, once per instance. A missing model file raises
    ``deforhmr_model.files.weights.MissingModelFileError`` then.
    """

    def __init__(self, max_people: int | None = None, *, num_threads: int = 2, min_quality: float = 0.45,
                 refine: bool = False, landmark_path=None):
        if max_people is not None and max_people < 1:
            raise ValueError(f"max_people must be >= 1 or None, got {max_people}")
        self.max_people, self.num_threads = max_people, num_threads
        self.min_quality, self.refine = min_quality, refine
        self._landmark_path = landmark_path
        self._lm_model: bp.TfliteModel | None = None

    def detect(self, image: np.ndarray) -> list[Detection]:  # pragma: no cover - subclasses
        raise NotImplementedError

    def keypoints_for_boxes(self, image: np.ndarray, boxes, refine: bool = True) -> list[Detection]:
        """Landmarks for user-given person boxes ((N, 4) or (4,) x0, y0, x1, y1 px): one
        :class:`Detection` per box, in the boxes' order, none dropped.

        The ROI is the upright square around the box centre, side 1.5 x the box's longer
        side (:func:`blazepose.roi_from_box`); the model runs again on the ROI from its own
        alignment points, kept where it is at least as confident (an upright box has lost
        the body's rotation); ``refine`` False skips it. ``score`` is the pose presence.
        Raises ValueError for a bad image or boxes.
        """
        pyr = detector_input(image)
        rois = [bp.roi_from_box(b) for b in _check_boxes(boxes)]
        return self._landmarks(pyr, rois, None, refine)

    # ------------------------------------------------------------------ landmark stage
    def _landmark_model(self) -> bp.TfliteModel:
        if self._lm_model is None:
            from deforhmr_model.files.weights import require_file
            lm = require_file(str(self._landmark_path or "pose_landmark_full.tflite"))
            self._lm_model = bp.TfliteModel(lm, self.num_threads)
        return self._lm_model

    def _verified(self, people: list[Detection]) -> list[Detection]:
        """People the landmark model is confident about, duplicates removed, best first."""
        people = [p for p in people if p.presence >= MIN_PRESENCE and p.quality >= self.min_quality]
        people = dedup(people)
        return people[: self.max_people] if self.max_people else people

    def _landmarks(self, pyr: bp.ImagePyramid, rois: list[bp.Roi], scores, refine: bool) -> list[Detection]:
        """Landmark model on each ROI (batched), optionally once more on the refined ROIs."""
        if not rois:
            return []
        lms, presence, masks, world = self._run_landmarks(pyr, rois)
        if refine:       # a second pass where the ROI from the alignment points differs from the first
            rois = list(rois)
            new = [bp.roi_from_alignment(lm[bp.AUX_HIP_CENTER, :2], lm[bp.AUX_SCALE_POINT, :2]) for lm in lms]
            redo = [i for i, (a, b) in enumerate(zip(rois, new)) if not same_roi(a, b)]
            if redo:
                lms2, presence2, masks2, world2 = self._run_landmarks(pyr, [new[i] for i in redo])
                for k, i in enumerate(redo):
                    if landmark_quality(lms2[k], pyr.size) >= landmark_quality(lms[i], pyr.size):
                        rois[i], lms[i], presence[i], masks[i], world[i] = new[i], lms2[k], presence2[k], masks2[k], world2[k]
        people = []
        for i, roi in enumerate(rois):
            score = float(scores[i]) if scores is not None else float(presence[i])
            people.append(_make_detection(lms[i], masks[i], score, float(presence[i]), roi, pyr.size,
                                          bp.world_landmarks(world[i], roi.rotation)))
        if scores is not None:
            people.sort(key=lambda d: -d.score)
        return people

    def _run_landmarks(self, pyr: bp.ImagePyramid, rois: list[bp.Roi]):
        """Landmarks (N, 39, 5) (x px, y px, visibility, presence, heatmap confidence),
        pose presence (N,), per ROI the person-mask pixels (M, 2) px, and the raw world
        landmarks (N, 117) (:func:`blazepose.world_landmarks`)."""
        lm_model = self._landmark_model()
        affines = [roi.crop_to_image(bp.LM_SIZE) for roi in rois]
        crops = np.stack([pyr.warp(a, bp.LM_SIZE) for a in affines]).astype(np.float32) / 255.0
        chunks = [bp.split_landmark_outputs(lm_model.run(crops[i:i + 1])) for i in range(len(crops))]
        raw, flag, heat, seg, world = (np.concatenate(parts) for parts in zip(*chunks))
        out = bp.decode_landmarks(raw, heat)                       # u, v in crop units [0, 1]
        masks = []
        for i, roi in enumerate(rois):
            out[i, :, :2] = bp.landmarks_to_image(out[i, :, :2], roi.crop_to_image(1))
            masks.append(bp.mask_points(seg[i], affines[i]))
        return out, flag.reshape(-1).astype(np.float64), masks, world  # the flag is a probability already


class BlazePoseDetector(LandmarkDetector):
    """Multi-person BlazePose (detector + landmark model, LiteRT on the CPU) with tiling.

    Parameters (besides :class:`LandmarkDetector`'s)
    ----------
    threshold : detector score threshold in [0, 1] (MediaPipe's default 0.5).
    min_person : smallest person to look for, as a fraction of the image's short side
        (person extent = longer side of the body box). Smaller values add tile levels
        (:func:`tile_regions`); detector passes for a 3:2 / 16:9 photo: 0.4 -> 3 / 4,
        0.3 -> 7 / 12, 0.2 (default) -> 22 / 22; >= 1 -> 1 (the whole image only, as
        MediaPipe). Each pass costs about one landmark-model run (~8 ms, 2 threads).
    tile_overlap : overlap of neighbouring tiles, fraction of the tile side.
    detector_path : detector model file; default ``pose_detection.tflite``.
    """

    def __init__(self, threshold: float = 0.5, max_people: int | None = None, *, num_threads: int = 2,
                 min_person: float = DEFAULT_MIN_PERSON, tile_overlap: float = 0.4, min_quality: float = 0.45,
                 refine: bool = False, detector_path=None, landmark_path=None):
        super().__init__(max_people, num_threads=num_threads, min_quality=min_quality, refine=refine,
                         landmark_path=landmark_path)
        check_search_options(threshold, min_person, tile_overlap)
        self.threshold = threshold
        self.confident_score = max(0.6, threshold)   # surely a person (trackers start tracks from here)
        self.min_person, self.tile_overlap = min_person, tile_overlap
        self._detector_path = detector_path
        self._det_model: bp.TfliteModel | None = None
        self._anchors = bp.ssd_anchors()

    def detect(self, image: np.ndarray) -> list[Detection]:
        """People in ``image`` ((H, W, 3) uint8 RGB), highest score first.

        Raises ValueError for an image of the wrong type, shape or dtype.
        """
        pyr = detector_input(image)
        _, kps, scores = self._detect_regions(pyr, self.regions(*pyr.size))
        rois = [bp.roi_from_alignment(k[0], k[1]) for k in kps]
        return self._verified(self._landmarks(pyr, rois, scores, self.refine))

    def regions(self, width: int, height: int) -> list[tuple[float, float, float, float]]:
        """Every detector pass's region (x0, y0, x1, y1) px: the whole image, then the tiles."""
        return [(0.0, 0.0, float(width), float(height))] + tile_regions(width, height, self.min_person,
                                                                        self.tile_overlap)

    def _detector_model(self) -> bp.TfliteModel:
        if self._det_model is None:
            from deforhmr_model.files.weights import require_file
            path = require_file(str(self._detector_path or "pose_detection.tflite"))
            self._det_model = bp.TfliteModel(path, self.num_threads)
        return self._det_model

    def _detect_regions(self, pyr: bp.ImagePyramid, regions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Detector on every region; merged boxes (M, 4), alignment keypoints (M, 4, 2), scores (M,), px."""
        det = self._detector_model()
        tiles, affines = zip(*(pyr.letterbox(r, bp.DET_SIZE) for r in regions))
        raw_boxes, raw_scores = [], []
        for i in range(0, len(tiles), BATCH):
            x = np.stack(tiles[i:i + BATCH]).astype(np.float32) / 127.5 - 1.0
            b, s = bp.split_detector_outputs(det.run(x), x.shape[0], self._anchors.shape[0])
            raw_boxes += list(b)
            raw_scores += list(s)
        all_b, all_k, all_s = [], [], []
        for rb, rs, affine in zip(raw_boxes, raw_scores, affines):
            b, k, s = bp.decode_detections(rb, rs, self._anchors, self.threshold)
            b, k, s = bp.weighted_merge(b, k, s)
            all_b.append(_affine_boxes(b, affine))
            all_k.append(k @ affine[:, :2].T + affine[:, 2])
            all_s.append(s)
        return bp.weighted_merge(np.concatenate(all_b), np.concatenate(all_k), np.concatenate(all_s))


DETECTORS = ("movenet", "blazepose")


def make_detector(name: str = "movenet", **options) -> LandmarkDetector:
    """A shipped detector by name: ``"movenet"`` (default: tiled MoveNet MultiPose +
    BlazePose landmarks, :class:`deforhmr_model.people.movenet.MoveNetDetector`) or
    ``"blazepose"`` (BlazePose's own detector, tiled: :class:`BlazePoseDetector`).
    ``options`` go to the class (threshold, max_people, min_person, refine, num_threads, ...).
    Raises ValueError for an unknown name.
    """
    key = str(name).lower()
    if key == "movenet":
        from deforhmr_model.people.movenet import MoveNetDetector
        return MoveNetDetector(**options)
    if key == "blazepose":
        return BlazePoseDetector(**options)
    raise ValueError(f"unknown detector {name!r}; use one of {', '.join(DETECTORS)}")


def check_search_options(threshold: float, min_person: float, tile_overlap: float) -> None:
    """ValueError unless threshold is in [0, 1], min_person > 0 (a fraction of the image's short
    side) and tile_overlap in [0, 1): the search options every tiled detector takes."""
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    if not min_person > 0:
        raise ValueError(f"min_person must be > 0 (a fraction of the image's short side), got {min_person}")
    if not 0.0 <= tile_overlap < 1.0:
        raise ValueError(f"tile_overlap must be in [0, 1), got {tile_overlap}")


def tile_regions(width: int, height: int, min_person: float = DEFAULT_MIN_PERSON, overlap: float = 0.4,
                 fit: tuple[float, float] = (1.25, 2.5)) -> list[tuple[float, float, float, float]]:
    """Tiles (x0, y0, x1, y1) px for the detector passes after the whole-image pass.

    The detector finds a person reliably when the tile side is ``fit[0]``..``fit[1]`` times
    the person's extent (measured on the dev photos; isolated people also beyond, people
    in crowds not). The whole-image pass covers extents >= L / fit[1] (L = long side).
    Levels of smaller tiles (side at most the short side S) extend the covered range
    down to ``min_person * S``: the last level is as large as it can be while reaching
    that size; the levels before it continue the covered range without a gap. Tiles of
    a level are squares overlapping by ``overlap`` x side, except along an axis the image
    exceeds by less than :data:`TILE_STRETCH` x side, where one tile spans the image.
    The work is bounded (:func:`tiling.bounded_tile_side`): a level has at most
    ``MAX_TILES_PER_LEVEL`` tiles of at least ``MIN_TILE_SIDE`` px; a level that had to be
    coarsened is the last one (strips and tiny images get fewer, larger, letterboxed tiles).
    Returns [] when the whole image suffices.
    """
    big, small = max(width, height), min(width, height)
    target = min_person * small
    covered = big / fit[1]
    regions: list[tuple[float, float, float, float]] = []
    if small < MIN_TILE_SIDE:                      # a strip or a thumbnail: the whole image is one pass
        return regions
    while covered > target * 1.05 and covered > 16:
        last = target * fit[1] >= covered * fit[0]
        side = min(float(small), target * fit[1] if last else covered * fit[0])
        bounded = bounded_tile_side(side, lambda s: len(_grid(width, height, s, overlap)))
        if bounded >= big:
            break                                  # the whole-image pass already covers it
        regions += _grid(width, height, bounded, overlap)
        covered = bounded / fit[1]
        if last or bounded != side:
            break
    return regions


def same_roi(a: bp.Roi, b: bp.Roi, tol: float = ROI_TOLERANCE) -> bool:
    """Whether two landmark ROIs would crop nearly the same: centres within ``tol`` x the
    side, sides within a factor 1 + ``tol``, rotations within ``tol`` radians (~6 deg at 0.1)."""
    d_center = float(np.linalg.norm(np.asarray(a.center) - np.asarray(b.center)))
    d_rot = abs(math.remainder(a.rotation - b.rotation, 2 * math.pi))
    ratio = max(a.size, b.size) / max(min(a.size, b.size), 1e-6)
    return d_center <= tol * max(a.size, b.size) and ratio <= 1 + tol and d_rot <= tol


def dedup(people: list[Detection]) -> list[Detection]:
    """Keep the first (best) of detections of the same person: box IoU > :data:`DEDUP_IOU`,
    or median COCO-keypoint distance < :data:`DEDUP_KEYPOINT_DIST` x sqrt(box area)."""
    kept: list[Detection] = []
    for p in people:
        if not any(_same_person(p, q) for q in kept):
            kept.append(p)
    return kept


def keypoints_for_boxes(image: np.ndarray, boxes, detector: LandmarkDetector | None = None) -> list[Detection]:
    """:meth:`LandmarkDetector.keypoints_for_boxes` on ``detector`` (default: one shared instance)."""
    global _SHARED
    if detector is None:
        _SHARED = _SHARED or BlazePoseDetector()
        detector = _SHARED
    return detector.keypoints_for_boxes(image, boxes)


_SHARED: BlazePoseDetector | None = None


def body_box(keypoints: np.ndarray, mask_xy: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Body box (4,) f32 x0, y0, x1, y1 px, clipped to the image ``size`` = (W, H).

    The landmark model's person mask gives the outline (COCO boxes are mask boxes too),
    restricted to the landmark box (:func:`landmark_box`) grown by :data:`MASK_REACH` of
    its longer side, so that the masks of touching neighbours do not leak in while limbs
    the landmarks place wrongly still count. Fewer than :data:`MIN_MASK_POINTS` mask
    points: the landmark box.

    keypoints (33, >=2) px; mask_xy (M, 2) px (from ``blazepose.mask_points``).
    """
    lm_box = landmark_box(keypoints, size)
    reach = MASK_REACH * float(max(lm_box[2:] - lm_box[:2]))
    lo, hi = lm_box[:2] - reach, lm_box[2:] + reach
    pts = mask_xy[np.all((mask_xy >= lo) & (mask_xy <= hi), axis=1)]
    if len(pts) < MIN_MASK_POINTS:
        return lm_box
    box = np.concatenate([pts.min(0), pts.max(0)])
    box[[0, 2]] = np.clip(box[[0, 2]], 0, size[0])
    box[[1, 3]] = np.clip(box[[1, 3]], 0, size[1])
    return box.astype(np.float32)


def landmark_box(keypoints: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Body box (4,) f32 x0, y0, x1, y1 px from the 33 BlazePose landmarks (33, >=2) px.

    All landmarks count (occluded ones are predicted too, so the box covers the whole
    body), plus an estimated head top: the eyes' midpoint moved away from the shoulders'
    midpoint by :data:`HEAD_TOP` x their distance (adult proportions: eyes to crown is
    about 0.6 x shoulders to eyes). The extent is padded by :data:`BOX_MARGIN` of its
    longer side on each side, then clipped to the image ``size`` = (W, H).
    """
    pts = keypoints[:, :2].astype(np.float64)
    eyes, shoulders = pts[[2, 5]].mean(0), pts[[11, 12]].mean(0)
    pts = np.vstack([pts, eyes + HEAD_TOP * (eyes - shoulders)])
    lo, hi = pts.min(0), pts.max(0)
    pad = BOX_MARGIN * float(max(hi - lo))
    box = np.array([lo[0] - pad, lo[1] - pad, hi[0] + pad, hi[1] + pad])
    box[[0, 2]] = np.clip(box[[0, 2]], 0, size[0])
    box[[1, 3]] = np.clip(box[[1, 3]], 0, size[1])
    return box.astype(np.float32)


# ----------------------------------------------------------------------------- helpers
def landmark_quality(lm: np.ndarray, size: tuple[int, int]) -> float:
    """Keypoint quality in [0, 1] of one landmark-model output (39, 5) (x px, y px,
    visibility, presence, heatmap confidence): the mean heatmap confidence of the 33 body
    landmarks inside the image of ``size`` = (W, H); 0 when none is inside."""
    body = lm[: bp.NUM_BODY]
    inside = (body[:, 0] >= 0) & (body[:, 0] < size[0]) & (body[:, 1] >= 0) & (body[:, 1] < size[1])
    return float(body[inside, 4].mean()) if inside.any() else 0.0


def _make_detection(lm: np.ndarray, mask_xy: np.ndarray, score: float, presence: float, roi: bp.Roi,
                    size, world: np.ndarray | None = None) -> Detection:
    body = lm[: bp.NUM_BODY]
    kps = body[:, :3].astype(np.float32)
    quality = landmark_quality(lm, size)
    return Detection(bbox=body_box(kps, mask_xy, size), score=score, keypoints=kps,
                     keypoints_coco=kps[list(COCO_FROM_BLAZEPOSE)].copy(), presence=presence,
                     quality=quality, roi=np.array([*roi.center, roi.size, roi.rotation], np.float32),
                     world_landmarks=world)


def _grid(width: int, height: int, side: float, overlap: float) -> list[tuple[float, float, float, float]]:
    """Tiles of ``side`` px covering the image with ``overlap``; along an axis the image
    exceeds by less than :data:`TILE_STRETCH` x side, one tile spans it (a rectangle,
    letterboxed by the detector: <= 25% less resolution instead of a second row)."""
    def spans(extent: float) -> list[tuple[float, float]]:
        if extent <= TILE_STRETCH * side:
            return [(0.0, float(extent))]
        n = math.ceil((extent - side) / (side * (1.0 - overlap))) + 1
        return [(float(a), float(a) + side) for a in np.linspace(0.0, extent - side, n)]
    return [(x0, y0, x1, y1) for y0, y1 in spans(height) for x0, x1 in spans(width)]


def _same_person(a: Detection, b: Detection) -> bool:
    if bp.box_iou(a.bbox[None], b.bbox[None])[0, 0] > DEDUP_IOU:
        return True
    scale = math.sqrt(max(_area(a.bbox), _area(b.bbox), 1.0))
    dist = np.linalg.norm(a.keypoints_coco[:, :2] - b.keypoints_coco[:, :2], axis=1)
    return float(np.median(dist)) < DEDUP_KEYPOINT_DIST * scale


def _area(box) -> float:
    return float(max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0))


def _affine_boxes(boxes: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """An axis-aligned (scale + offset) affine applied to xyxy boxes (N, 4)."""
    out = boxes.copy()
    out[:, [0, 2]] = boxes[:, [0, 2]] * affine[0, 0] + affine[0, 2]
    out[:, [1, 3]] = boxes[:, [1, 3]] * affine[1, 1] + affine[1, 2]
    return out


def detector_input(image) -> bp.ImagePyramid:
    """The detectors' view of a user image ((H, W, 3) uint8 RGB): checked
    (:func:`_check_image`), exposure-corrected when it is dark
    (:func:`exposure.correct_exposure`: night shots), as an image pyramid.
    Raises ValueError for an image of the wrong type, shape, dtype or size."""
    return bp.ImagePyramid(correct_exposure(_check_image(image)))


def _check_image(image) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        desc = f"{type(image).__name__} {getattr(image, 'shape', '')} {getattr(image, 'dtype', '')}".strip()
        raise ValueError(f"detection needs an (H, W, 3) uint8 RGB numpy image, got {desc}; "
                         "convert it with deforhmr_model.files.image_io.load_image")
    if image.shape[0] < MIN_IMAGE_SIDE or image.shape[1] < MIN_IMAGE_SIDE:
        raise ValueError(f"image {image.shape[1]}x{image.shape[0]} px is too small to find people in "
                         f"(at least {MIN_IMAGE_SIDE} px on each side); use a larger photo")
    return np.ascontiguousarray(image)


def clip_boxes(boxes, size: tuple[int, int]) -> np.ndarray:
    """User boxes (N, 4) or (4,) x0, y0, x1, y1 px clipped to the image ``size`` = (W, H) -> (N, 4) f64.

    Raises ValueError (naming the box) for a non-finite box, x1 <= x0 / y1 <= y0, or a box with
    less than a pixel inside the image.
    """
    b = _check_boxes(boxes).copy()
    W, H = size
    b[:, [0, 2]] = np.clip(b[:, [0, 2]], 0, W)
    b[:, [1, 3]] = np.clip(b[:, [1, 3]], 0, H)
    empty = np.flatnonzero((b[:, 2] - b[:, 0] < 1) | (b[:, 3] - b[:, 1] < 1))
    if empty.size:
        k = int(empty[0])
        raise ValueError(f"box {k + 1} ({', '.join(f'{v:g}' for v in np.asarray(boxes, np.float64).reshape(-1, 4)[k])}) "
                         f"lies outside the {W}x{H} px image; give boxes in pixels inside it")
    return b


def _check_boxes(boxes) -> np.ndarray:
    b = np.asarray(boxes, dtype=np.float64)
    if b.ndim == 1 and b.size == 4:
        b = b[None]
    if b.ndim != 2 or b.shape[1] != 4 or not np.isfinite(b).all():
        raise ValueError(f"boxes must be (N, 4) finite x0, y0, x1, y1 pixels, got shape {b.shape}")
    if (b[:, 2] <= b[:, 0]).any() or (b[:, 3] <= b[:, 1]).any():
        raise ValueError("each box needs x1 > x0 and y1 > y0 (x0, y0, x1, y1 pixels, not x, y, w, h)")
    return b
