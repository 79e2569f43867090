"""Detect People: IMAGE (batch) -> DEFORHMR_PEOPLE (boxes + 2D keypoints) and core BOUNDING_BOX."""
from __future__ import annotations

from . import host
from .handles import BOUNDING_BOX, CATEGORY, MODEL, PEOPLE

DEFAULT_MIN_PERSON = 0.2   # deforhmr_model.people.detection.DEFAULT_MIN_PERSON (nodes import the library lazily)

DETECTORS = ("movenet", "blazepose")
_PIPELINE = None   # detection-only front door when no model is connected (it holds the detector cache)


def _pipeline(model):
    """The pipeline whose ``detect`` serves this node: the connected model's, else one shared
    fit-only pipeline (created once; detection never touches its body model)."""
    global _PIPELINE
    if model is not None:
        return model.pipeline
    if _PIPELINE is None:
        from deforhmr_model.pipeline import HMRPipeline
        with host.autograd_allowed():
            _PIPELINE = HMRPipeline(model="none")   # detection only: never loads a network
    return _PIPELINE


class DetectPeople:
    """Find every person (box + COCO-17 keypoints) in each frame, or add keypoints to given boxes."""

    DESCRIPTION = ("MoveNet MultiPose finds people and the BlazePose landmark model their 2D keypoints in every "
                   "frame (both shipped, no download; detector 'blazepose' uses BlazePose's own detector instead). "
                   "Connect a BOUNDING_BOX (e.g. from SAM3 Detect) to use your own person boxes instead.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "One photo or a batch of frames"}),
                "threshold": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.01,
                                        "tooltip": "Person detector score threshold; 0 = the detector's default "
                                                   "(movenet 0.2, blazepose 0.5)"}),
                "max_people": ("INT", {"default": 0, "min": 0, "max": 64, "step": 1,
                                       "tooltip": "Keep at most this many people per frame (highest scores); 0 = all"}),
                "refine_keypoints": ("BOOLEAN", {"default": False,
                                                 "tooltip": "Run the keypoint model a second time on the rotated "
                                                            "crop from its first pass and keep the more confident "
                                                            "pass (twice the keypoint cost; the default MoveNet "
                                                            "crops are already rotated)"}),
            },
            "optional": {
                "min_person": ("FLOAT", {"default": 0.2, "min": 0.05, "max": 1.0, "step": 0.05,
                                         "tooltip": "Smallest person to look for, as a fraction of the image's "
                                                    "short side: 0.2 also finds small background people; "
                                                    "0.4 is ~4x faster and keeps to the main subjects"}),
                "bboxes": (BOUNDING_BOX, {"forceInput": True,
                                          "tooltip": "Person boxes (x, y, width, height px): one box, a list, or "
                                                     "one list per frame. Skips the detector."}),
                "detector": (list(DETECTORS), {"default": "movenet",
                                              "tooltip": "movenet: MoveNet MultiPose, tiled (finds crowds, small "
                                                         "and overlapping people); blazepose: BlazePose's own "
                                                         "detector, tiled (the previous default)"}),
                "model": (MODEL, {"tooltip": "Optional: detect through this loaded model's pipeline"}),
            },
        }

    RETURN_TYPES = (PEOPLE, BOUNDING_BOX)
    RETURN_NAMES = ("people", "bboxes")
    FUNCTION = "detect"
    CATEGORY = CATEGORY

    def detect(self, image, threshold=0.0, max_people=0, refine_keypoints=False, min_person=DEFAULT_MIN_PERSON,
               bboxes=None, detector="movenet", model=None):
        from .convert import image_to_frames
        from .handles import PeopleBatch, boxes_from_bounding_box, boxes_to_bounding_box

        frames = image_to_frames(image)
        pipe = _pipeline(model)
        opts = {"detector": detector, "det_threshold": float(threshold) or None, "min_person": float(min_person),
                "refine_keypoints": bool(refine_keypoints), "max_people": int(max_people) or None}
        given = boxes_from_bounding_box(bboxes, len(frames)) if bboxes is not None else None
        pbar = host.progress_bar(len(frames))
        out = []
        for i, frame in enumerate(frames):
            host.check_interrupted()
            if given is None:
                people = pipe.detect(frame, **opts)
            elif given[i]:
                people = pipe.detect(frame, given[i], **opts)
                people = people[: int(max_people)] if max_people else people
            else:
                people = []
            out.append(list(people))
            pbar.update(1)
        batch = PeopleBatch(frames=out, sizes=[(f.shape[1], f.shape[0]) for f in frames])
        return (batch, boxes_to_bounding_box(batch))
