"""End-to-end tests of the main job on the real dev photos (issue: the main job)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from deforhmr_model.body.layouts import COCO_TO_SMPL_JOINT
from deforhmr_model.files.result import load_result, save_result

# MPII joint order -> SMPL joint (limbs only): r_ankle, r_knee, r_hip, l_hip, l_knee, l_ankle,
# ..., r_wrist 10, r_elbow 11, r_shoulder 12, l_shoulder 13, l_elbow 14, l_wrist 15
MPII_TO_SMPL = {0: 8, 1: 5, 2: 2, 3: 1, 4: 4, 5: 7, 10: 21, 11: 19, 12: 17, 13: 16, 14: 18, 15: 20}


def _iou(a, b):
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return inter / max(area(a) + area(b) - inter, 1e-9)


def _annotations(photos):
    """[(image path, gt box xyxy, box size px, {smpl_joint: (x, y)})] for COCO and MPII people.

    COCO: every annotated person with keypoints (the two without any are 11x68 and 17x32 px
    fragments, which COCO's keypoint benchmark ignores too); box = the annotated bbox.
    MPII: box = the visible joints' box padded by 5% of its longer side (joints are joint
    centres; feet and hands reach beyond them); box size for PCK = scale * 200 px.
    """
    out = []
    coco = json.loads((photos / "coco" / "test_coco.json").read_text())
    names = {im["id"]: im["file_name"] for im in coco["images"]}
    for a in coco["annotations"]:
        if a["num_keypoints"] == 0:
            continue
        x, y, w, h = a["bbox"]
        kp = np.array(a["keypoints"], float).reshape(17, 3)
        joints = {COCO_TO_SMPL_JOINT[i]: kp[i, :2] for i in range(5, 17) if kp[i, 2] > 0}
        out.append((photos / "coco" / names[a["image_id"]], np.array([x, y, x + w, y + h]), max(w, h), joints))
    for a in json.loads((photos / "mpii" / "test_mpii.json").read_text()):
        j = np.array(a["joints"], float)
        vis = np.array(a["joints_vis"]) > 0
        size = a["scale"] * 200.0  # MPII scale = box height / 200
        lo, hi = j[vis].min(0), j[vis].max(0)
        pad = 0.05 * float(max(hi - lo))
        box = np.concatenate([lo - pad, hi + pad])
        joints = {s: j[m] for m, s in MPII_TO_SMPL.items() if vis[m]}
        out.append((photos / "mpii" / a["image"], box, size, joints))
    return out


def _match(result, gt_joints, gt_box):
    """The result person whose projected joints fit the annotation best (PCK-style matching)."""
    best, best_err = None, np.inf
    for p in result.people:
        d = [np.linalg.norm(p.joints_2d[s] - xy) for s, xy in gt_joints.items()]
        err = float(np.median(d)) if d else np.inf
        if _iou(p.bbox, gt_box) > 0.1 and err < best_err:
            best, best_err = p, err
    return best


def test_every_annotated_person_found_and_pck(dev_results, photos):
    anns = _annotations(photos)
    correct = total = 0
    for path, box, size, joints in anns:
        result = dev_results[path]
        ious = [_iou(p.bbox, box) for p in result.people]
        assert ious and max(ious) >= 0.5, f"{path.name}: annotated person {box.round()} not found (IoUs {ious})"
        person = _match(result, joints, box)
        assert person is not None
        for s, xy in joints.items():
            correct += np.linalg.norm(person.joints_2d[s] - xy) < 0.2 * size
            total += 1
    pck = correct / total
    print(f"\nPCK@0.2 of projected body joints on COCO+MPII annotations: {pck:.3f} ({correct}/{total}, "
          f"{len(anns)} people)")
    assert pck >= 0.75


def test_skates_has_at_least_six_people(dev_results, photos):
    result = dev_results[photos / "skates.png"]
    print(f"\nskates.png: {len(result.people)} people")
    assert len(result.people) >= 6


def test_bodies_are_upright_and_in_front_of_the_camera(dev_results):
    for path, result in dev_results.items():
        for p in result.people:
            assert p.transl[2] > 0.5, f"{path.name}: person behind/at the camera"
            head, pelvis = p.joints[15], p.joints[0]
            # standing people in these photos: the head is above the pelvis (camera y points down)
            if "skates" in path.name or "pexels" in path.name:
                assert head[1] < pelvis[1], f"{path.name}: upside-down body"


def test_result_round_trip(dev_results, photos, tmp_path):
    result = dev_results[photos / "skates.png"]
    npz, js = save_result(result, tmp_path / "skates")
    back = load_result(npz)
    assert len(back.people) == len(result.people)
    for a, b in zip(result.people, back.people):
        for k in ("vertices", "joints", "body_pose", "betas", "transl", "keypoints_2d", "rest_vertices"):
            np.testing.assert_array_equal(getattr(a, k), getattr(b, k))
        assert a.method == b.method
    assert json.loads(js.read_text())["schema"] == "deforhmr.result"
    assert back.image_size == result.image_size and back.focal_length == pytest.approx(result.focal_length)
