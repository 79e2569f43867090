"""Keypoints to POSE_KEYPOINT: our COCO-17 keypoints as OpenPose JSON + an OpenPose skeleton IMAGE.

POSE_KEYPOINT (the ComfyUI ControlNet ecosystem's type, as produced by the
controlnet_aux OpenPose/DWPose preprocessors): a list with one dict per frame::

    {"people": [{"pose_keypoints_2d": [x, y, c] * 18, "face_keypoints_2d": None,
                 "hand_left_keypoints_2d": None, "hand_right_keypoints_2d": None}, ...],
     "canvas_width": W, "canvas_height": H}

The 18 points are OpenPose's COCO-18 order (COCO-17 plus a neck, the midpoint of
the shoulders): nose, neck, r/l shoulder-elbow-wrist, r/l hip-knee-ankle, r/l eye,
r/l ear. x, y are fractions of the canvas (controlnet_aux's convention) or pixels;
c is 1 for a kept keypoint and 0 (with x = y = 0) for a missing one, since
controlnet_aux treats any c < 1 as missing.
"""
from __future__ import annotations

from .handles import CATEGORY, PEOPLE, POSE_KEYPOINT, RESULTS

# COCO-17 index of each OpenPose COCO-18 point; -1 = neck (mid-shoulder).
OPENPOSE18_FROM_COCO17 = (0, -1, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3)
# OpenPose body limbs (0-based COCO-18 indices) and the colours OpenPose ControlNets were trained on.
LIMBS = ((1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12),
         (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17))
COLORS = ((255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
          (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
          (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85))
COORDINATES = ("normalized (0-1, controlnet_aux)", "pixels (OpenPose)")


def coco17_to_openpose18(kp, min_confidence: float):
    """(17,3) COCO keypoints (x px, y px, conf) -> (18,3) OpenPose order; missing points are zeros, kept c = 1."""
    import numpy as np
    kp = np.asarray(kp, np.float32)
    out = np.zeros((18, 3), np.float32)
    for j, c in enumerate(OPENPOSE18_FROM_COCO17):
        if c >= 0:
            if kp[c, 2] >= min_confidence:
                out[j] = (kp[c, 0], kp[c, 1], 1.0)
        elif kp[5, 2] >= min_confidence and kp[6, 2] >= min_confidence:
            out[j] = (0.5 * (kp[5, 0] + kp[6, 0]), 0.5 * (kp[5, 1] + kp[6, 1]), 1.0)
    return out


def pose_frame(people_kp: list, width: int, height: int, normalized: bool) -> dict:
    """One POSE_KEYPOINT frame from a list of (18,3) OpenPose arrays (pixel coordinates)."""
    people = []
    for kp in people_kp:
        k = kp.copy()
        if normalized:
            k[:, 0] /= float(width)
            k[:, 1] /= float(height)
        people.append({"pose_keypoints_2d": [float(v) for v in k.reshape(-1)], "face_keypoints_2d": None,
                       "hand_left_keypoints_2d": None, "hand_right_keypoints_2d": None})
    return {"people": people, "canvas_width": int(width), "canvas_height": int(height)}


def draw_openpose(people_kp: list, width: int, height: int):
    """OpenPose-style skeleton picture (H,W,3) uint8 on black, as OpenPose ControlNets expect."""
    import math

    import cv2
    import numpy as np
    canvas = np.zeros((height, width, 3), np.uint8)
    stick = max(2, round(4 * max(width, height) / 512))
    for kp in people_kp:
        for i, (a, b) in enumerate(LIMBS):
            if kp[a, 2] <= 0 or kp[b, 2] <= 0:
                continue
            (x0, y0), (x1, y1) = kp[a, :2], kp[b, :2]
            length = math.hypot(x1 - x0, y1 - y0)
            angle = math.degrees(math.atan2(y1 - y0, x1 - x0))
            poly = cv2.ellipse2Poly((int((x0 + x1) / 2), int((y0 + y1) / 2)), (int(length / 2), stick),
                                    int(angle), 0, 360, 1)
            limb = canvas.copy()
            cv2.fillConvexPoly(limb, poly, COLORS[i])
            canvas = cv2.addWeighted(canvas, 0.4, limb, 0.6, 0)
        for j in range(18):
            if kp[j, 2] > 0:
                cv2.circle(canvas, (int(kp[j, 0]), int(kp[j, 1])), stick, COLORS[j], thickness=-1)
    return canvas


class KeypointsToPoseKeypoint:
    """Our detections (or the keypoints stored in results) for ControlNet pose nodes."""

    DESCRIPTION = ("OpenPose JSON (POSE_KEYPOINT) of the detected 2D keypoints for pose editors and ControlNet "
                   "nodes, plus an OpenPose skeleton image to feed 'Apply ControlNet' with an OpenPose model.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "min_confidence": ("FLOAT", {"default": 0.3, "min": 0.0, "max": 1.0, "step": 0.05,
                                             "tooltip": "Keypoints below this confidence are left out"}),
                "coordinates": (list(COORDINATES), {"default": COORDINATES[0],
                                                    "tooltip": "controlnet_aux nodes use fractions of the canvas; "
                                                               "OpenPose's own JSON uses pixels"}),
            },
            "optional": {
                "people": (PEOPLE, {"tooltip": "From Detect People"}),
                "results": (RESULTS, {"tooltip": "Or: the keypoints stored in recovery results"}),
            },
        }

    RETURN_TYPES = (POSE_KEYPOINT, "IMAGE")
    RETURN_NAMES = ("pose_keypoint", "pose_image")
    FUNCTION = "convert"
    CATEGORY = CATEGORY

    def convert(self, min_confidence=0.3, coordinates=COORDINATES[0], people=None, results=None):
        from .convert import NodeInputError, frames_to_image

        if people is not None:
            frames = [([d.keypoints_coco for d in dets], size) for dets, size in zip(people.frames, people.sizes)]
        elif results is not None:
            frames = [([p.keypoints_2d for p in r.people], tuple(r.image_size)) for r in results]
        else:
            raise NodeInputError("connect people (from Detect People) or results (from Recover Human Mesh)")
        sizes = {size for _, size in frames}
        if len(sizes) > 1:  # an IMAGE batch needs one size; the frames of one IMAGE always share it
            raise NodeInputError(f"frames have different sizes {sorted(sizes)}; convert them separately")
        normalized = coordinates == COORDINATES[0]
        poses, pictures = [], []
        for kps, (W, H) in frames:
            op = [coco17_to_openpose18(k, float(min_confidence)) for k in kps]
            poses.append(pose_frame(op, W, H, normalized))
            pictures.append(draw_openpose(op, W, H))
        return (poses, frames_to_image(pictures))
