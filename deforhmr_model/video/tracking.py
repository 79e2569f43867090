"""One identity per person across frames: ByteTrack-style association on boxes and keypoints.

Why our own: the maintained multi-object trackers on the package index either pull torch
and are AGPL (boxmot), pull opencv-python next to our headless build and match boxes only
(supervision's ByteTrack), or are unmaintained ports (bytetracker, motpy). People in a
clip are few, so a small association does the job and also uses the 2D keypoints.

Algorithm (per frame, :meth:`PersonTracker.update`):

1. **Predict** every live track's box with its constant-velocity estimate (box velocity
   smoothed with factor :attr:`PersonTracker.velocity_smoothing`).
2. **Similarity** between each track and each detection:
   ``0.5 * IoU(predicted box, box) + 0.5 * OKS(track keypoints, keypoints)``, where OKS is
   COCO's object keypoint similarity (per-keypoint falloffs, scale = sqrt(box area)) over
   keypoints both sides see with confidence >= 0.3, after shifting the track's keypoints
   by the box motion. Keypoints separate people whose boxes overlap (crossing people).
3. **Two-stage matching** (ByteTrack): detections scoring >= ``high_score`` are matched
   first to every live track (optimal assignment, ``scipy.optimize.linear_sum_assignment``,
   pairs below ``min_similarity`` refused); then the remaining lower-scoring detections to
   the remaining tracks. Lost tracks (missed in recent frames) take part in both stages,
   so a person who is briefly hidden gets their id back.
4. **Births and deaths**: an unmatched high-score detection starts a new track (ids
   0, 1, 2, ... in order of appearance) unless it is mostly (``max_containment``, by
   area) inside a detection matched or born in the same frame: BlazePose's tiles report
   the legs or the upper half of a person as extra "people". Those also score a low
   landmark ``quality`` (on the dev clips <= 0.49; people standing >= 0.69, but a player
   lying in a tackle 0.47-0.56), so a detection below ``birth_quality`` may start a track
   only when it barely overlaps the people already tracked (containment < 0.2); a track missed for more than ``max_missed``
   frames ends and its id is never reused.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# COCO keypoint falloffs (sigmas) of the OKS metric, nose .. ankles.
COCO_SIGMAS = np.array([.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07, 1.07,
                        .87, .87, .89, .89], np.float64) / 10.0
MIN_KEYPOINT_CONF = 0.3


@dataclass
class Track:
    """A tracked person: ``id``, last ``bbox`` (4,) xyxy px, ``keypoints`` (17, 3) COCO
    (x px, y px, confidence), box ``velocity`` (4,) px/frame, ``last_frame`` seen, ``hits``
    (frames matched), ``missed`` (frames since last matched), ``first_frame``."""

    id: int
    bbox: np.ndarray
    keypoints: np.ndarray
    first_frame: int
    last_frame: int
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(4))
    hits: int = 1
    missed: int = 0

    def predicted_box(self, frame: int) -> np.ndarray:
        """Box expected at ``frame`` (constant velocity from the last sighting)."""
        return self.bbox + self.velocity * (frame - self.last_frame)


class PersonTracker:
    """Assigns track ids to per-frame person detections.

    Args:
        high_score: detections at least this confident are matched first and may start tracks;
            the sequence job passes its detector's ``confident_score`` (MoveNet scores the
            people of the dev clips 0.49-0.58, BlazePose 0.7-0.99).
        min_similarity: smallest accepted track-detection similarity (0..1).
        max_missed: frames a track may go unmatched before it ends (occlusions).
        velocity_smoothing: weight of the newest box motion in the velocity estimate.
        max_containment: a new detection with at least this fraction of its box inside the
            box of a person already tracked in the frame is a part of that person, not a track.
        birth_quality: a detection with a lower ``quality`` attribute (landmark confidence,
            when it has one) starts a track only away from the people already tracked.

    ``update(frame, detections)`` takes objects with ``bbox`` (4,) xyxy px, ``score`` and
    ``keypoints_coco`` (17, 3) and returns one track id per detection (-1: not tracked, a
    low-score detection that matched no track).
    """

    def __init__(self, high_score: float = 0.3, min_similarity: float = 0.25, max_missed: int = 30,
                 velocity_smoothing: float = 0.5, max_containment: float = 0.6, birth_quality: float = 0.55):
        self.high_score, self.min_similarity = high_score, min_similarity
        self.max_missed, self.velocity_smoothing = max_missed, velocity_smoothing
        self.max_containment, self.birth_quality = max_containment, birth_quality
        self.tracks: list[Track] = []
        self._next_id = 0

    def live_tracks(self) -> list[Track]:
        """Tracks not yet ended (seen within ``max_missed`` frames)."""
        return list(self.tracks)

    def update(self, frame: int, detections) -> list[int]:
        dets = list(detections)
        ids = [-1] * len(dets)
        boxes = np.array([np.asarray(d.bbox, np.float64) for d in dets]).reshape(-1, 4)
        kps = np.array([np.asarray(d.keypoints_coco, np.float64) for d in dets]).reshape(-1, 17, 3)
        scores = np.array([float(d.score) for d in dets])
        free_tracks = list(range(len(self.tracks)))
        for stage in (scores >= self.high_score, scores < self.high_score):
            cand = [i for i in np.flatnonzero(stage) if ids[i] < 0]
            if not cand or not free_tracks:
                continue
            sim = self.similarity([self.tracks[t] for t in free_tracks], frame, boxes[cand], kps[cand])
            for r, c in zip(*_assign(sim, self.min_similarity)):
                ids[cand[c]] = free_tracks[r]  # track list index for now
            used = {ids[i] for i in cand if ids[i] >= 0}
            free_tracks = [t for t in free_tracks if t not in used]
        out = [-1] * len(dets)
        for i, t in enumerate(ids):
            if t >= 0:
                self._match(self.tracks[t], frame, boxes[i], kps[i])
                out[i] = self.tracks[t].id
        for t in free_tracks:
            self.tracks[t].missed = frame - self.tracks[t].last_frame
        self.tracks = [t for t in self.tracks if t.missed <= self.max_missed]
        for i in sorted(range(len(dets)), key=lambda i: -scores[i]):
            if out[i] >= 0 or scores[i] < self.high_score:
                continue
            taken = [j for j in range(len(dets)) if out[j] >= 0]
            inside = containment(boxes[i], boxes[taken]).max() if taken else 0.0
            limit = self.max_containment if getattr(dets[i], "quality", 1.0) >= self.birth_quality else 0.2
            if inside < limit:
                tr = Track(self._next_id, boxes[i].copy(), kps[i].copy(), frame, frame)
                self._next_id += 1
                self.tracks.append(tr)
                out[i] = tr.id
        return out

    def similarity(self, tracks: list[Track], frame: int, boxes: np.ndarray, kps: np.ndarray) -> np.ndarray:
        """(T, D) similarity in [0, 1]: half box IoU (predicted boxes), half keypoint OKS."""
        pred = np.array([t.predicted_box(frame) for t in tracks]).reshape(-1, 4)
        iou = box_iou(pred, boxes)
        shift = np.array([((t.predicted_box(frame) - t.bbox)[:2] + (t.predicted_box(frame) - t.bbox)[2:]) / 2
                          for t in tracks]).reshape(-1, 2)
        tk = np.array([t.keypoints for t in tracks]).reshape(-1, 17, 3).copy()
        tk[..., :2] += shift[:, None]
        return 0.5 * iou + 0.5 * oks(tk, kps, boxes)

    def _match(self, tr: Track, frame: int, box: np.ndarray, kp: np.ndarray) -> None:
        dt = max(frame - tr.last_frame, 1)
        v = (box - tr.bbox) / dt
        a = self.velocity_smoothing if tr.hits > 1 else 1.0
        tr.velocity = a * v + (1 - a) * tr.velocity
        tr.bbox, tr.keypoints, tr.last_frame = box.copy(), kp.copy(), frame
        tr.hits += 1
        tr.missed = 0


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, 4) x (M, 4) xyxy boxes -> (N, M) intersection over union."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area = lambda x: np.clip(x[:, 2:] - x[:, :2], 0, None).prod(-1)  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None] - inter, 1e-9)


def containment(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Fraction of ``box`` (4,) xyxy lying inside each of ``others`` (M, 4): (M,) in [0, 1]."""
    b = np.asarray(box, np.float64)
    o = np.asarray(others, np.float64).reshape(-1, 4)
    lt, rb = np.maximum(b[:2], o[:, :2]), np.minimum(b[2:], o[:, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    return inter / max(float(np.clip(b[2:] - b[:2], 0, None).prod()), 1e-9)


def oks(ka: np.ndarray, kb: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """COCO object keypoint similarity (N, M) between keypoint sets (N, 17, 3) and (M, 17, 3)
    (x px, y px, confidence); scale from the (M, 4) boxes; 0 where no keypoint is seen by both."""
    ka, kb = np.asarray(ka, np.float64), np.asarray(kb, np.float64)
    d2 = ((ka[:, None, :, :2] - kb[None, :, :, :2]) ** 2).sum(-1)              # (N, M, 17)
    area = np.clip(boxes_b[:, 2:] - boxes_b[:, :2], 1, None).prod(-1)          # (M,)
    var = (2 * COCO_SIGMAS) ** 2                                               # (17,)
    e = d2 / (2 * var * area[None, :, None] * 0.53)  # 0.53: box area -> segment area (COCO)
    vis = (ka[:, None, :, 2] >= MIN_KEYPOINT_CONF) & (kb[None, :, :, 2] >= MIN_KEYPOINT_CONF)
    n = vis.sum(-1)
    return np.where(n > 0, (np.exp(-e) * vis).sum(-1) / np.maximum(n, 1), 0.0)


def _assign(sim: np.ndarray, min_sim: float):
    from scipy.optimize import linear_sum_assignment
    if sim.size == 0:
        return [], []
    r, c = linear_sum_assignment(-sim)
    keep = sim[r, c] >= min_sim
    return r[keep], c[keep]
