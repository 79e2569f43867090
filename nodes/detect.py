"""Detect People: IMAGE (batch) -> DEFORHMR_PEOPLE (boxes + 2D keypoints) and core BOUNDING_BOX."""
from __future__ import annotations

from . import host
from .handles import BOUNDING_BOX, CATEGORY, PEOPLE

_DETECTORS: dict[tuple, object] = {}   # BlazePose interpreters, reused across runs (cheap to keep)


def _detector(threshold: float, max_people: int, refine: bool, min_person: float = 0.2):
    from deforhmr_model.people.detection import BlazePoseDetector
    key = (round(float(threshold), 4), int(max_people), bool(refine), round(float(min_person), 4))
    if key not in _DETECTORS:
        if len(_DETECTORS) >= 4:
            _DETECTORS.pop(next(iter(_DETECTORS)))
        _DETECTORS[key] = BlazePoseDetector(threshold=float(threshold), max_people=int(max_people) or None,
                                            refine=bool(refine), min_person=float(min_person))
    return _DETECTORS[key]


class DetectPeople:
    """Find every person (box + COCO-17 keypoints) in each frame, or add keypoints to given boxes."""

    DESCRIPTION = ("BlazePose (shipped, no download) finds people and their 2D keypoints in every frame. "
                   "Connect a BOUNDING_BOX (e.g. from SAM3 Detect) to use your own person boxes instead.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "One photo or a batch of frames"}),
                "threshold": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01,
                                        "tooltip": "Person detector score threshold"}),
                "max_people": ("INT", {"default": 0, "min": 0, "max": 64, "step": 1,
                                       "tooltip": "Keep at most this many people per frame (highest scores); 0 = all"}),
                "refine_keypoints": ("BOOLEAN", {"default": False,
                                                 "tooltip": "Run the keypoint model twice per person "
                                                            "(better keypoints, twice the cost)"}),
            },
            "optional": {
                "min_person": ("FLOAT", {"default": 0.2, "min": 0.05, "max": 1.0, "step": 0.05,
                                         "tooltip": "Smallest person to look for, as a fraction of the image's "
                                                    "short side: 0.2 also finds small background people; "
                                                    "0.4 is ~4x faster and keeps to the main subjects"}),
                "bboxes": (BOUNDING_BOX, {"forceInput": True,
                                          "tooltip": "Person boxes (x, y, width, height px): one box, a list, or "
                                                     "one list per frame. Skips the detector."}),
            },
        }

    RETURN_TYPES = (PEOPLE, BOUNDING_BOX)
    RETURN_NAMES = ("people", "bboxes")
    FUNCTION = "detect"
    CATEGORY = CATEGORY

    def detect(self, image, threshold=0.5, max_people=0, refine_keypoints=False, min_person=0.2, bboxes=None):
        from .convert import image_to_frames
        from .handles import PeopleBatch, boxes_from_bounding_box, boxes_to_bounding_box

        frames = image_to_frames(image)
        det = _detector(threshold, max_people, refine_keypoints, min_person)
        given = boxes_from_bounding_box(bboxes, len(frames)) if bboxes is not None else None
        pbar = host.progress_bar(len(frames))
        out = []
        for i, frame in enumerate(frames):
            host.check_interrupted()
            if given is None:
                people = det.detect(frame)
            elif given[i]:
                people = det.keypoints_for_boxes(frame, given[i])
                people = people[: int(max_people)] if max_people else people
            else:
                people = []
            out.append(list(people))
            pbar.update(1)
        batch = PeopleBatch(frames=out, sizes=[(f.shape[1], f.shape[0]) for f in frames])
        return (batch, boxes_to_bounding_box(batch))
