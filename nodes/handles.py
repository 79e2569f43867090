"""The pack's custom socket types and the objects that travel on them.

=================  ===========================================================
socket type        Python value
=================  ===========================================================
DEFORHMR_MODEL     :class:`ModelHandle` (pipeline + ComfyUI model patcher)
DEFORHMR_PEOPLE    :class:`PeopleBatch` (per frame: boxes + 2D keypoints)
DEFORHMR_RESULTS   ``list[deforhmr_model.files.result.ImageResult]``, one per frame
DEFORHMR_SEQUENCE  ``deforhmr_model.files.result.SequenceResult`` (tracked people of a video)
BOUNDING_BOX       ComfyUI core boxes: ``{"x","y","width","height"}`` px dicts;
                   one dict, a list (every frame) or a list of lists (per frame)
POSE_KEYPOINT      OpenPose JSON dicts, one per frame (see ``nodes/pose.py``)
MESH               ComfyUI core mesh: ``.vertices`` (B,N,3), ``.faces`` (B,M,3)
=================  ===========================================================
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MODEL = "DEFORHMR_MODEL"
PEOPLE = "DEFORHMR_PEOPLE"
RESULTS = "DEFORHMR_RESULTS"
SEQUENCE = "DEFORHMR_SEQUENCE"
BOUNDING_BOX = "BOUNDING_BOX"
POSE_KEYPOINT = "POSE_KEYPOINT"
MESH = "MESH"
CATEGORY = "DeforHMR"


@dataclass
class ModelHandle:
    """A loaded :class:`deforhmr_model.pipeline.HMRPipeline` and how ComfyUI manages it.

    pipeline: the library pipeline (network or fitting-only, plus the body model).
    patcher:  ComfyUI ``ModelPatcher`` around the network (None: no network, or outside
              ComfyUI); ComfyUI moves the network between ``device`` and the offload device.
    device:   torch device the pipeline computes on.
    label:    what was loaded, for messages ("def-m.safetensors + open body").
    """

    pipeline: Any
    patcher: Any
    device: Any
    label: str

    def ready(self):
        """The pipeline with its network loaded onto ``device`` (ComfyUI may have offloaded it)."""
        from . import host
        host.load_to_device(self.patcher)
        return self.pipeline


@dataclass
class PeopleBatch:
    """Detections for a batch of frames.

    frames: per frame, the ``deforhmr_model.people.detection.Detection`` list (bbox (4,) xyxy px,
            score, keypoints (33,3) BlazePose, keypoints_coco (17,3) x px, y px, confidence),
            sorted by score.
    sizes:  per frame, (width, height) px of the image the detections belong to.
    """

    frames: list[list[Any]]
    sizes: list[tuple[int, int]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.frames)


def boxes_from_bounding_box(value, n_frames: int) -> list[list[list[float]]]:
    """ComfyUI ``BOUNDING_BOX`` value -> per frame, a list of ``[x1, y1, x2, y2]`` px boxes.

    Accepts what core nodes produce: one dict (every frame), a list of dicts (every frame),
    or a list of lists of dicts (per frame; a shorter list repeats its last frame).
    Raises:
        ValueError: anything else, or a dict without x/y/width/height.
    """
    def box(d) -> list[float]:
        if not isinstance(d, dict) or not all(k in d for k in ("x", "y", "width", "height")):
            raise ValueError(f"bboxes: expected dicts with x, y, width, height (pixels), got {d!r}")
        x, y, w, h = (float(d[k]) for k in ("x", "y", "width", "height"))
        if w <= 0 or h <= 0:
            raise ValueError(f"bboxes: box {d!r} has no area; width and height must be > 0")
        return [x, y, x + w, y + h]

    if isinstance(value, dict):
        return [[box(value)] for _ in range(n_frames)]
    if isinstance(value, (list, tuple)):
        if not value:
            return [[] for _ in range(n_frames)]
        if all(isinstance(v, dict) for v in value):
            shared = [box(v) for v in value]
            return [list(shared) for _ in range(n_frames)]
        if all(isinstance(v, (list, tuple)) for v in value):
            per = [[box(d) for d in frame] for frame in value]
            return [per[min(i, len(per) - 1)] for i in range(n_frames)]
    raise ValueError(f"bboxes: unsupported BOUNDING_BOX value of type {type(value).__name__}; expected a dict, "
                     "a list of dicts or a list (per frame) of lists of dicts")


def boxes_to_bounding_box(people: PeopleBatch) -> list[list[dict]]:
    """:class:`PeopleBatch` -> core ``BOUNDING_BOX`` per frame (x, y, width, height, score)."""
    out = []
    for dets in people.frames:
        frame = []
        for d in dets:
            x1, y1, x2, y2 = (float(v) for v in d.bbox)
            frame.append({"x": x1, "y": y1, "width": x2 - x1, "height": y2 - y1, "score": float(d.score)})
        out.append(frame)
    return out
