"""Person detection (BlazePose via LiteRT): decoding maths on synthetic inputs, and recall,
box and keypoint accuracy on the real dev photos (../shared/photos/dev).

Ground truth on the photos (see ../shared/photos/README.md):
* COCO: every annotated person with at least one labelled keypoint (12 of the 14; the two
  without keypoints are 11x68 and 17x32 px fragments, ignored as COCO's keypoint
  benchmark ignores them); box = the annotated ``bbox`` (x, y, w, h -> x0, y0, x1, y1).
* MPII: box = the box around the visible joints, padded by 5% of its longer side on
  every side (MPII's head_top marks the crown, but ankles and wrists are joint centres:
  feet and hands reach beyond them). The annotated ``center`` must lie inside the
  detected box, and the detected box height must agree with ``scale`` (= box height /
  200 px, MPII's box being about 1.25x the person's height).
A person is found when the best-matching detection box has IoU >= 0.5 with the GT box.
"""
import json
import math
from pathlib import Path

import numpy as np
import pytest

from deforhmr_model.people import blazepose as bp
from deforhmr_model.people.detection import (COCO_FROM_BLAZEPOSE, BlazePoseDetector, Detection, PersonDetector,
                                      body_box, dedup, keypoints_for_boxes, landmark_box, tile_regions)
from deforhmr_model.files.weights import MissingModelFileError

from tests.conftest import PHOTOS as DEV
needs_photos = pytest.mark.skipif(not DEV.is_dir(), reason="shared photos not available")


# ----------------------------------------------------------------------------- anchors and decoding
def test_ssd_anchors_layout():
    a = bp.ssd_anchors()
    assert a.shape == (2254, 2) and a.dtype == np.float32
    assert bp.anchor_group_sizes() == [28 * 28 * 2, 14 * 14 * 2, 7 * 7 * 6]
    np.testing.assert_allclose(a[0], [0.5 / 28, 0.5 / 28])
    np.testing.assert_allclose(a[1], a[0])                                  # 2 anchors per cell
    np.testing.assert_allclose(a[2], [1.5 / 28, 0.5 / 28])                  # row-major: x first
    np.testing.assert_allclose(a[1568], [0.5 / 14, 0.5 / 14])
    np.testing.assert_allclose(a[-1], [6.5 / 7, 6.5 / 7])
    np.testing.assert_allclose(a[-6:], np.repeat(a[-1:], 6, axis=0))      # 3 layers x 2 at stride 32


def test_decode_detections_known_anchor():
    anchors = bp.ssd_anchors()
    raw = np.zeros((2254, 12), np.float32)
    logits = np.full(2254, -10.0, np.float32)
    i = 1568 + 14 * 3 + 5                      # stride-16 grid, row 3, column 5 (first of its pair)
    cx, cy = anchors[i] * 224
    raw[i, :4] = (4.0, -2.0, 30.0, 40.0)                           # dx, dy, w, h in input pixels
    raw[i, 4:] = (1, 2, 3, 4, 5, 6, 7, 8)                          # keypoint offsets
    logits[i] = 2.0
    logits[7] = 1e4                                                 # clipped, no overflow
    boxes, kps, scores = bp.decode_detections(raw, logits, anchors, threshold=0.5)
    assert boxes.shape == (2, 4) and kps.shape == (2, 4, 2) and scores.shape == (2,)
    j = int(np.argmin(np.abs(scores - 1 / (1 + math.exp(-2.0)))))
    np.testing.assert_allclose(boxes[j], [cx + 4 - 15, cy - 2 - 20, cx + 4 + 15, cy - 2 + 20], atol=1e-4)
    np.testing.assert_allclose(kps[j], [[cx + 1, cy + 2], [cx + 3, cy + 4], [cx + 5, cy + 6], [cx + 7, cy + 8]],
                               atol=1e-4)
    assert np.isclose(scores.max(), 1.0)
    none = bp.decode_detections(raw, np.full(2254, -5.0), anchors, threshold=0.5)
    assert all(len(x) == 0 for x in none)


def test_weighted_merge_groups_one_person_not_neighbours():
    # two detections of one person (same hips, similar extent) and a neighbour whose
    # box overlaps theirs heavily but whose hips are elsewhere
    boxes = np.array([[0, 0, 100, 100], [4, 0, 104, 100], [30, 0, 130, 100]], float)
    kps = np.zeros((3, 4, 2))
    kps[0, :2] = [[50, 200], [50, 100]]
    kps[1, :2] = [[56, 200], [56, 96]]
    kps[2, :2] = [[150, 200], [150, 100]]
    scores = np.array([0.9, 0.6, 0.8])
    b, k, s = bp.weighted_merge(boxes, kps, scores)
    assert len(s) == 2 and list(s) == [0.9, 0.8]
    np.testing.assert_allclose(b[0], (0.9 * boxes[0] + 0.6 * boxes[1]) / 1.5)
    np.testing.assert_allclose(k[0], (0.9 * kps[0] + 0.6 * kps[1]) / 1.5)
    np.testing.assert_allclose(k[1], kps[2])
    empty = bp.weighted_merge(np.zeros((0, 4)), np.zeros((0, 4, 2)), np.zeros(0))
    assert [x.shape for x in empty] == [(0, 4), (0, 4, 2), (0,)]


def test_box_iou():
    a = np.array([[0, 0, 10, 10]], float)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], float)
    np.testing.assert_allclose(bp.box_iou(a, b), [[1.0, 50 / 150, 0.0]])


# ----------------------------------------------------------------------------- ROI geometry
def test_roi_from_alignment_upright_and_rotated():
    up = bp.roi_from_alignment(np.array([100.0, 300.0]), np.array([100.0, 200.0]))
    assert up.rotation == pytest.approx(0.0) and up.size == pytest.approx(2 * 100 * 1.25)
    np.testing.assert_allclose(up.center, [100, 300])
    right = bp.roi_from_alignment(np.array([0.0, 0.0]), np.array([50.0, 0.0]))   # head to the right
    assert right.rotation == pytest.approx(math.pi / 2)
    # the crop's "up" (top-centre of the crop) must land on the head side of the body
    top_centre = bp.landmarks_to_image(np.array([[0.5, 0.0]]), right.crop_to_image(1))[0]
    np.testing.assert_allclose(top_centre, [right.size / 2, 0.0], atol=1e-9)


def test_roi_from_box():
    roi = bp.roi_from_box(np.array([10.0, 20.0, 50.0, 120.0]))
    np.testing.assert_allclose(roi.center, [30, 70])
    assert roi.size == pytest.approx(150.0) and roi.rotation == 0.0


def test_warp_and_unprojection_round_trip():
    # a bright dot in a dark image: sampled through a rotated ROI, found in the crop,
    # mapped back through the ROI, it must land where it was drawn
    img = np.zeros((300, 400, 3), np.uint8)
    img[119:122, 249:252] = 255                                     # centre at pixel (250, 120) -> 250.5, 120.5
    pyr = bp.ImagePyramid(img)
    roi = bp.Roi(np.array([230.0, 140.0]), 96.0, math.radians(30))
    crop = pyr.warp(roi.crop_to_image(64), 64).astype(float)[..., 0]
    ys, xs = np.nonzero(crop > 0.5 * crop.max())
    w = crop[ys, xs]
    uv = np.array([[(xs * w).sum() / w.sum() + 0.5, (ys * w).sum() / w.sum() + 0.5]]) / 64
    back = bp.landmarks_to_image(uv, roi.crop_to_image(1))[0]
    np.testing.assert_allclose(back, [250.5, 120.5], atol=0.75)


def test_letterbox_maps_tile_to_image():
    h, w = 120, 300
    xx, yy = np.meshgrid(np.arange(w), np.arange(h))
    img = np.stack([xx % 256, yy * 2, np.zeros_like(xx)], axis=2).astype(np.uint8)
    pyr = bp.ImagePyramid(img)
    tile, affine = pyr.letterbox((0.0, 0.0, float(w), float(h)), 100)
    assert tile.shape == (100, 100, 3)
    assert affine[0, 0] == pytest.approx(3.0) and affine[1, 1] == pytest.approx(3.0)
    u, v = 40, 50                                                   # a tile pixel inside the image area
    x, y = affine[:, :2] @ np.array([u + 0.5, v + 0.5]) + affine[:, 2]
    assert abs(int(tile[v, u, 1]) - 2 * (y - 0.5)) <= 4              # green encodes the row
    assert tile[:25, :, :].max() == 0                               # black letterbox bars
    big = bp.ImagePyramid(np.zeros((3000, 2000, 3), np.uint8))
    big.letterbox((0.0, 0.0, 2000.0, 3000.0), 224)
    assert len(big.levels) >= 4                                     # shrinks through the pyramid


def test_refine_from_heatmaps():
    hm = np.full((1, 64, 64, 2), -8.0, np.float32)
    yy, xx = np.mgrid[0:64, 0:64]
    hm[0, :, :, 0] = 6.0 - 4.0 * ((xx - 20) ** 2 + (yy - 30) ** 2)  # sharp peak at cell (20, 30)
    uv = np.array([[[21.5 / 64, 28.5 / 64], [0.5, 0.5]]])
    out, peak = bp.refine_from_heatmaps(uv, hm)
    np.testing.assert_allclose(out[0, 0], [20 / 64, 30 / 64], atol=1e-3)
    np.testing.assert_allclose(out[0, 1], uv[0, 1])                 # no confident peak: unchanged
    assert peak[0, 0] > 0.99 and peak[0, 1] < 0.01
    outside, _ = bp.refine_from_heatmaps(np.array([[[1.5, 0.5], [-0.1, 0.2]]]), hm)
    np.testing.assert_allclose(outside, [[[1.5, 0.5], [-0.1, 0.2]]])


def test_decode_landmarks_shapes_and_activations():
    raw = np.zeros((2, 195), np.float32)
    raw.reshape(2, 39, 5)[0, 0] = (128.0, 64.0, 3.0, 0.0, 100.0)
    out = bp.decode_landmarks(raw, np.full((2, 64, 64, 39), -9.0, np.float32))
    assert out.shape == (2, 39, 5)
    np.testing.assert_allclose(out[0, 0], [0.5, 0.25, 0.5, 1.0, out[0, 0, 4]], atol=1e-6)
    assert out[0, 0, 4] < 0.01                                      # heatmap confidence


def test_mask_points_follow_the_roi():
    seg = np.full((256, 256), -5.0, np.float32)
    seg[0:64, 0:32] = 5.0                                           # top-left block of the crop
    roi = bp.Roi(np.array([500.0, 400.0]), 128.0, 0.0)              # 0.5 image px per crop px
    pts = bp.mask_points(seg, roi.crop_to_image(256))
    assert pts.shape == (32 * 16, 2)                                # every 2nd row and column
    np.testing.assert_allclose(pts.min(0), [436.5, 336.5])
    np.testing.assert_allclose(pts.max(0), [451.5, 367.5])


# ----------------------------------------------------------------------------- tiles, boxes, dedup
def test_tile_regions():
    assert tile_regions(640, 427, min_person=1.0) == []
    for w, h in [(640, 427), (1334, 550), (4016, 6016), (300, 900)]:
        coarse, fine = tile_regions(w, h, 0.3), tile_regions(w, h, 0.15)
        assert len(fine) > len(coarse) > 0
        for x0, y0, x1, y1 in fine:
            tw, th = x1 - x0, y1 - y0
            assert max(tw, th) <= 1.25 * min(tw, th) + 1e-6                    # square or slightly stretched
            assert -1e-6 <= x0 and x1 <= w + 1e-6 and -1e-6 <= y0 and y1 <= h + 1e-6
        smallest = min(min(x1 - x0, y1 - y0) for x0, y0, x1, y1 in fine)
        assert smallest <= 0.15 * min(w, h) * 2.5 + 1e-6                     # reaches the small people
        covered = np.zeros((math.ceil(h / 4), math.ceil(w / 4)), bool)       # the last level tiles the image
        for x0, y0, x1, y1 in fine:
            if abs(min(x1 - x0, y1 - y0) - smallest) < 1e-6:
                covered[int(y0) // 4:math.ceil(y1 / 4), int(x0) // 4:math.ceil(x1 / 4)] = True
        assert covered.all()
    assert len(tile_regions(640, 427, 0.3)) == 6 and len(tile_regions(1280, 720, 0.3)) == 11


def _person(x0, y0, scale=1.0, score=0.9):
    kps = np.zeros((33, 3), np.float32)
    kps[:, 2] = 0.9
    body = {0: (50, 20), 2: (45, 15), 5: (55, 15), 7: (40, 18), 8: (60, 18), 11: (35, 45), 12: (65, 45),
            13: (30, 75), 14: (70, 75), 15: (28, 100), 16: (72, 100), 23: (40, 110), 24: (60, 110),
            25: (40, 150), 26: (60, 150), 27: (40, 190), 28: (60, 190)}
    for i in range(33):
        kps[i, :2] = body.get(i, (50, 100))
    kps[:, :2] = kps[:, :2] * scale + (x0, y0)
    return Detection(bbox=landmark_box(kps, (2000, 2000)), score=score, keypoints=kps,
                     keypoints_coco=kps[list(COCO_FROM_BLAZEPOSE)])


def test_landmark_box_and_body_box():
    p = _person(100, 100)
    x0, y0, x1, y1 = p.bbox
    assert x0 < 128 and x1 > 172 and y1 > 290 and y0 < 115 - 0.6 * 30          # head top above the eyes
    assert landmark_box(p.keypoints, (150, 150))[2:].max() <= 150              # clipped to the image
    mask = np.array([[60.0 + i, 105.0 + j] for i in range(0, 130, 2) for j in range(0, 200, 2)])
    b = body_box(p.keypoints, mask, (2000, 2000))
    np.testing.assert_allclose(b, [60, 105, 188, 303], atol=1e-4)             # a limb the landmarks missed
    far = np.concatenate([mask, [[900.0, 900.0]] * 50])                        # a neighbour's mask: ignored
    np.testing.assert_allclose(body_box(p.keypoints, far, (2000, 2000)), b)
    np.testing.assert_allclose(body_box(p.keypoints, mask[:5], (2000, 2000)), p.bbox)   # too few: landmarks


def test_dedup_keeps_first_of_each_person():
    a, a2, b = _person(100, 100, score=0.9), _person(103, 101, score=0.8), _person(160, 100, score=0.7)
    kept = dedup([a, a2, b])
    assert kept == [a, b]


# ----------------------------------------------------------------------------- API and errors
def test_protocol_and_argument_errors(tmp_path):
    det = BlazePoseDetector()
    assert isinstance(det, PersonDetector)
    with pytest.raises(ValueError, match="threshold"):
        BlazePoseDetector(threshold=1.5)
    with pytest.raises(ValueError, match="max_people"):
        BlazePoseDetector(max_people=0)
    with pytest.raises(ValueError, match="min_person"):
        BlazePoseDetector(min_person=0)
    with pytest.raises(ValueError, match="uint8 RGB"):
        det.detect(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(ValueError, match="uint8 RGB"):
        det.detect(np.zeros((10, 10), np.uint8))
    img = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(ValueError, match="x1 > x0"):
        det.keypoints_for_boxes(img, [[10, 10, 5, 40]])
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        det.keypoints_for_boxes(img, [[1, 2, 3]])
    missing = BlazePoseDetector(detector_path=tmp_path / "gone.tflite")
    with pytest.raises(MissingModelFileError, match="gone.tflite"):
        missing.detect(img)


def test_blank_image_has_nobody_and_batched_detector_matches_single():
    det = BlazePoseDetector()
    assert det.detect(np.full((240, 320, 3), 128, np.uint8)) == []
    with pytest.raises(ValueError, match="too small to find people in"):    # tiny: refused, naming the fix
        det.detect(np.zeros((2, 2, 3), np.uint8))
    assert det.detect(np.zeros((60, 2000, 3), np.uint8)) == []                # strip: many tiles
    people = det.keypoints_for_boxes(np.zeros((50, 40, 3), np.uint8), [0, 0, 40, 50])
    assert len(people) == 1 and people[0].keypoints.shape == (33, 3)         # one per box, even if empty
    model = det._detector_model()
    x = np.random.default_rng(0).uniform(-1, 1, (3, 224, 224, 3)).astype(np.float32)
    boxes, scores = bp.split_detector_outputs(model.run(x), 3, 2254)
    for i in range(3):
        b1, s1 = bp.split_detector_outputs(model.run(x[i:i + 1]), 1, 2254)
        np.testing.assert_allclose(b1[0], boxes[i], atol=1e-5)
        np.testing.assert_allclose(s1[0], scores[i], atol=1e-5)


# ----------------------------------------------------------------------------- real photos
@pytest.fixture(scope="module")
def default_detector():
    return BlazePoseDetector()


def _coco():
    data = json.loads((DEV / "coco" / "test_coco.json").read_text())
    out = []
    for im in data["images"]:
        anns = [a for a in data["annotations"] if a["image_id"] == im["id"] and a["num_keypoints"] > 0]
        gts = [(np.array([a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]),
                np.array(a["keypoints"], float).reshape(17, 3)) for a in anns]
        out.append((DEV / "coco" / im["file_name"], gts))
    return out


def _best(dets, gt_box):
    ious = [bp.box_iou(d.bbox[None].astype(float), gt_box[None])[0, 0] for d in dets]
    i = int(np.argmax(ious)) if ious else -1
    return (dets[i], ious[i]) if ious else (None, 0.0)


def _pck_hits(pred, gt_kps, gt_box, alpha=0.2):
    vis = gt_kps[:, 2] > 0
    err = np.linalg.norm(pred[vis, :2] - gt_kps[vis, :2], axis=1)
    return int((err < alpha * max(gt_box[2] - gt_box[0], gt_box[3] - gt_box[1])).sum()), int(vis.sum())


@needs_photos
def test_coco_every_person_found_and_keypoints(capsys):
    from deforhmr_model.files.image_io import load_image
    det = BlazePoseDetector(min_person=0.2)              # the COCO set has people 96 px tall in 429 px
    found = total = hits = labelled = 0
    lines = []
    for path, gts in _coco():
        dets = det.detect(load_image(path))
        ious = []
        for box, kps in gts:
            d, iou = _best(dets, box)
            ious.append(iou)
            total += 1
            found += iou >= 0.5
            if iou >= 0.5:
                h, n = _pck_hits(d.keypoints_coco, kps, box)
                hits, labelled = hits + h, labelled + n
        lines.append(f"  {path.name}: {len(dets)} detected, {len(gts)} annotated, IoUs "
                     + " ".join(f"{i:.2f}" for i in ious))
    pck = hits / labelled
    with capsys.disabled():
        print(f"\nCOCO recall {found}/{total}, PCK@0.2 (box size) {pck:.3f} over {labelled} keypoints")
        print("\n".join(lines))
    assert found == total
    assert pck >= 0.9                                    # measured 0.945-0.956


@needs_photos
def test_coco_keypoints_for_given_boxes(default_detector, capsys):
    from deforhmr_model.files.image_io import load_image
    hits = labelled = 0
    for path, gts in _coco():
        boxes = np.stack([b for b, _ in gts])
        dets = keypoints_for_boxes(load_image(path), boxes, default_detector)
        assert len(dets) == len(boxes)                   # one per box, in order, none dropped
        for d, (box, kps) in zip(dets, gts):
            assert d.keypoints.shape == (33, 3) and d.keypoints_coco.shape == (17, 3)
            assert bp.box_iou(d.bbox[None].astype(float), box[None])[0, 0] > 0.3
            h, n = _pck_hits(d.keypoints_coco, kps, box)
            hits, labelled = hits + h, labelled + n
            w = d.world_landmarks                        # metres, hip-centred, image axes
            assert w.shape == (33, 3) and w.dtype == np.float32
            assert np.linalg.norm(w[[23, 24]].mean(0)) < 0.1          # origin between the hips
            assert 0.2 < np.linalg.norm(w[11] - w[12]) < 0.6           # shoulder width of an adult
            sh, hip = w[[11, 12]].mean(0), w[[23, 24]].mean(0)
            img_dir = d.keypoints[[11, 12], :2].mean(0) - d.keypoints[[23, 24], :2].mean(0)
            if np.linalg.norm(img_dir) > 20:             # hips->shoulders points the same way in the image
                assert np.dot((sh - hip)[:2], img_dir) > 0
    with capsys.disabled():
        print(f"\nCOCO keypoints from GT boxes: PCK@0.2 {hits / labelled:.3f} over {labelled} keypoints")
    assert hits / labelled >= 0.9                        # measured 0.978


@needs_photos
def test_mpii_every_person_found(default_detector, capsys):
    from deforhmr_model.files.image_io import load_image
    found = 0
    entries = json.loads((DEV / "mpii" / "test_mpii.json").read_text())
    for e in entries:
        dets = default_detector.detect(load_image(DEV / "mpii" / e["image"]))
        joints, vis = np.array(e["joints"]), np.array(e["joints_vis"]) > 0
        lo, hi = joints[vis].min(0), joints[vis].max(0)
        pad = 0.05 * float(max(hi - lo))
        gt = np.concatenate([lo - pad, hi + pad])
        d, iou = _best(dets, gt)
        found += iou >= 0.5
        with capsys.disabled():
            print(f"\n  {e['image']}: {len(dets)} detected, IoU with padded visible-joint box {iou:.2f}", end="")
        assert iou >= 0.5
        cx, cy = e["center"]
        assert d.bbox[0] <= cx <= d.bbox[2] and d.bbox[1] <= cy <= d.bbox[3]
        height = d.bbox[3] - d.bbox[1]
        assert 0.4 < height / (200 * e["scale"]) < 1.2   # MPII's box is ~1.25x the person
    with capsys.disabled():
        print(f"\nMPII recall {found}/{len(entries)}")


@needs_photos
def test_skates_many_people(default_detector, capsys):
    from deforhmr_model.files.image_io import load_image
    image = load_image(DEV / "skates.png")
    dets = default_detector.detect(image)
    with capsys.disabled():
        print(f"\nskates.png: {len(dets)} people")
    assert len(dets) >= 6
    assert [d.score for d in dets] == sorted((d.score for d in dets), reverse=True)
    centres = sorted(float((d.bbox[0] + d.bbox[2]) / 2) for d in dets)
    assert centres[-1] - centres[0] > 0.6 * image.shape[1]          # spread along the row
    whole = BlazePoseDetector(min_person=1.0)                        # the single pass misses them
    assert len(whole.detect(image)) < len(dets)
    assert len(BlazePoseDetector(max_people=3).detect(image)) == 3


@needs_photos
def test_huge_photo_one_person(default_detector):
    from deforhmr_model.files.image_io import load_image
    image = load_image(DEV / "pexels-anete-lusina-4793258.jpg")
    dets = default_detector.detect(image)
    assert len(dets) == 1
    d = dets[0]
    assert d.bbox.dtype == np.float32 and d.keypoints.dtype == np.float32
    assert (d.bbox[3] - d.bbox[1]) > 0.3 * image.shape[0]           # full-resolution pixel units
    inside = (d.keypoints_coco[:, 0] >= d.bbox[0] - 1) & (d.keypoints_coco[:, 0] <= d.bbox[2] + 1)
    assert inside.mean() > 0.8


_NATIVE_RUN = """
import logging, sys
import numpy as np
from deforhmr_model.files.weights import require_file
from deforhmr_model.people.blazepose import NATIVE_LOG, TfliteModel
if sys.argv[1] == "verbose":
    NATIVE_LOG.setLevel(logging.INFO)
print("python stderr still works", file=sys.stderr)
TfliteModel(require_file("pose_detection.tflite"), 1).run(np.zeros((1, 224, 224, 3), np.float32))
"""


def test_litert_info_lines_only_when_verbose():
    import subprocess
    import sys
    runs = {mode: subprocess.run([sys.executable, "-c", _NATIVE_RUN, mode], capture_output=True, text=True,
                                 timeout=120) for mode in ("quiet", "verbose")}
    assert all(r.returncode == 0 for r in runs.values()), {m: r.stderr for m, r in runs.items()}
    assert "XNNPACK" not in runs["quiet"].stderr and "python stderr still works" in runs["quiet"].stderr
    assert "XNNPACK" in runs["verbose"].stderr
