"""MoveNet MultiPose detector: decoding, tile edges and merging, ROI maths on synthetic
inputs; people found on a real COCO dev photo; the pipeline, CLI and node paths use it."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from deforhmr_model.people import blazepose as bp
from deforhmr_model.people import movenet as mn
from deforhmr_model.people.detection import LandmarkDetector, PersonDetector, make_detector, same_roi
from tests.conftest import PHOTOS as DEV


# ----------------------------------------------------------------------------- synthetic
def _slot(kps_yx_score, box_yxyx, score):
    return np.concatenate([np.asarray(kps_yx_score, np.float32).ravel(), np.asarray(box_yxyx, np.float32),
                           [score]])


def test_decode_movenet_maps_canvas_to_image():
    out = np.zeros((1, 6, 56), np.float32)
    kp = np.zeros((17, 3))
    kp[:, 0], kp[:, 1], kp[:, 2] = 0.25, 0.5, 0.9          # y, x, score
    kp[5] = (0.1, 0.2, 0.3)
    out[0, 2] = _slot(kp, (0.1, 0.2, 0.6, 0.8), 0.7)         # ymin, xmin, ymax, xmax
    affine = np.array([[2.0, 0.0, 10.0], [0.0, 2.0, -20.0]])  # canvas px -> image px
    boxes, kps, scores = mn.decode_movenet(out, affine, canvas=256)
    assert boxes.shape == (6, 4) and kps.shape == (6, 17, 3) and scores.shape == (6,)
    np.testing.assert_allclose(scores[2], 0.7, rtol=1e-6)
    np.testing.assert_allclose(boxes[2], [0.2 * 512 + 10, 0.1 * 512 - 20, 0.8 * 512 + 10, 0.6 * 512 - 20], rtol=1e-5)
    np.testing.assert_allclose(kps[2, 0], [0.5 * 512 + 10, 0.25 * 512 - 20, 0.9], rtol=1e-5)
    np.testing.assert_allclose(kps[2, 5], [0.2 * 512 + 10, 0.1 * 512 - 20, 0.3], rtol=1e-5)


def test_letterbox_and_decode_round_trip():
    # a region letterboxed into the canvas and decoded back lands on the same image pixels
    pyr = bp.ImagePyramid(np.zeros((300, 500, 3), np.uint8))
    region = (100.0, 50.0, 400.0, 250.0)
    _, affine = pyr.letterbox(region, 256)
    out = np.zeros((6, 56), np.float32)
    k = 300 / 256                                               # region px per canvas px (longer side)
    y_canvas = (120 - (150 - k * 128)) / k                      # image y 120 -> canvas
    x_canvas = (130 - 100) / k
    out[0, :51] = np.tile([y_canvas / 256, x_canvas / 256, 1.0], 17)
    _, kps, _ = mn.decode_movenet(out, affine, 256)
    np.testing.assert_allclose(kps[0, 0, :2], [130, 120], atol=1e-3)


def test_turned_affine_maps_a_turned_tile_back():
    # a point of the tile turned 180 degrees lands where the same image point of the upright tile does
    affine = np.array([[2.0, 0.0, 10.0], [0.0, 2.0, -20.0]])
    C = 256
    x, y = 40.0, 100.0                                         # upright canvas px
    up = affine[:, :2] @ [x, y] + affine[:, 2]
    for k in (0, 1, 2, 3):                                     # the same pixel found in np.rot90(tile, k)
        tile = np.zeros((C, C), np.uint8)
        tile[int(y), int(x)] = 1
        yy, xx = np.argwhere(np.rot90(tile, k))[0] + 0.5         # pixel centre in the turned tile
        turned = mn.turned_affine(affine, C, k)
        np.testing.assert_allclose(turned[:, :2] @ [xx, yy] + turned[:, 2], affine[:, :2] @ [x + 0.5, y + 0.5]
                                   + affine[:, 2], atol=1e-9)
    with pytest.raises(ValueError, match="quarter turns"):
        mn.MoveNetDetector(turns=(0,))


def test_cut_by_inner_edge_only_inner_edges():
    size = (1000, 600)
    region = (400.0, 0.0, 800.0, 400.0)   # left, right and bottom edges are inside the image; top is the border
    boxes = np.array([[405, 100, 500, 300],    # touches the left inner edge: cut
                      [500, 0, 600, 200],      # touches the top image border only: kept
                      [500, 100, 600, 395],    # touches the bottom inner edge: cut
                      [450, 50, 750, 350],     # inside: kept
                      [700, 50, 799, 350]], float)  # touches the right inner edge: cut
    np.testing.assert_array_equal(mn.cut_by_inner_edge(boxes, region, size), [True, False, True, False, True])
    whole = (0.0, 0.0, 1000.0, 600.0)
    assert not mn.cut_by_inner_edge(boxes, whole, size).any()


def _person(cx, top, height, score=0.9):
    """Synthetic COCO-17 keypoints of an upright person (x px, y px, score) and their box."""
    rel = np.array([[0, .06], [-.02, .05], [.02, .05], [-.04, .06], [.04, .06], [-.1, .2], [.1, .2], [-.12, .35],
                    [.12, .35], [-.13, .48], [.13, .48], [-.07, .52], [.07, .52], [-.07, .74], [.07, .74],
                    [-.07, .95], [.07, .95]])
    kp = np.concatenate([np.stack([cx + rel[:, 0] * height, top + rel[:, 1] * height], 1),
                         np.full((17, 1), score)], 1)
    box = np.array([cx - 0.2 * height, top, cx + 0.2 * height, top + height])
    return kp, box


def test_merge_people_keeps_one_per_person_and_close_neighbours():
    a, box_a = _person(200, 100, 300)
    a2, box_a2 = _person(204, 104, 296, score=0.8)             # the same person seen in a second pass
    b, box_b = _person(260, 110, 280)                            # a neighbour, boxes overlap (IoU ~0.5)
    c, box_c = _person(600, 100, 300)
    boxes = np.stack([box_a2, box_a, box_b, box_c])
    kps = np.stack([a2, a, b, c])
    scores = np.array([0.5, 0.9, 0.6, 0.4])
    assert 0.2 < bp.box_iou(box_a[None], box_b[None])[0, 0] < MERGE_IOU_LIMIT
    keep = mn.merge_people(boxes, kps, scores)
    assert list(keep) == [1, 2, 3]                               # best first; the duplicate (index 0) dropped
    assert mn.keypoint_oks(a, a2, 60 * 300) > 0.9 and mn.keypoint_oks(a, b, 60 * 300) < 0.1
    assert mn.keypoint_oks(a, b * [1, 1, 0], 1.0) == 0.0         # no keypoint seen by both
    assert len(mn.merge_people(np.zeros((0, 4)), np.zeros((0, 17, 3)), np.zeros(0))) == 0


MERGE_IOU_LIMIT = mn.MERGE_IOU


def test_tiles_merge_whole_person_once_and_drop_cut_ones():
    """The detector's tile logic on synthetic passes: a person cut by a tile's inner edge is
    dropped there and kept from the pass that sees them whole; the same person from two
    passes is kept once."""
    size = (1200, 600)
    passes = {(0.0, 0.0, 1200.0, 600.0): [_person(300, 100, 400), _person(900, 150, 350)],
              (0.0, 0.0, 600.0, 600.0): [_person(305, 102, 398), _person(590, 150, 350)],   # 2nd cut at x=600
              (600.0, 0.0, 1200.0, 600.0): [_person(902, 148, 352)]}
    all_b, all_k, all_s = [], [], []
    for i, (region, people) in enumerate(passes.items()):
        b = np.stack([p[1] for p in people])
        k = np.stack([p[0] for p in people])
        s = np.full(len(people), 0.6 + 0.1 * i)
        keep = np.ones(len(people), bool) if i == 0 else ~mn.cut_by_inner_edge(b, region, size)
        all_b.append(b[keep]), all_k.append(k[keep]), all_s.append(s[keep])
    b, k, s = np.concatenate(all_b), np.concatenate(all_k), np.concatenate(all_s)
    assert len(s) == 4                                           # the cut one is gone
    keep = mn.merge_people(b, k, s)
    centres = sorted(float((b[i, 0] + b[i, 2]) / 2) for i in keep)
    assert len(keep) == 2 and abs(centres[0] - 300) < 10 and abs(centres[1] - 900) < 10


def test_split_region_and_regions_bounded():
    quads = mn.split_region((0.0, 0.0, 1000.0, 500.0), min_side=100)
    assert len(quads) == 2 * 1 or len(quads) == 4
    for q in quads:
        assert q[0] >= 0 and q[2] <= 1000 and q[1] >= 0 and q[3] <= 500
    xs = sorted({q[0] for q in quads})
    assert xs[0] == 0 and max(q[2] for q in quads) == 1000     # the children cover the region
    assert mn.split_region((0.0, 0.0, 100.0, 100.0), min_side=80) == []
    assert len(mn.movenet_regions(20000, 300, 0.2)) <= mn.MAX_TILES        # a long strip stays bounded
    assert mn.movenet_regions(640, 480, 1.0) == []                        # whole image only


def test_roi_from_keypoints_rotation_and_size():
    kp, box = _person(200, 100, 300)
    roi = mn.roi_from_keypoints(kp, box)
    hips = kp[[11, 12], :2].mean(0)
    np.testing.assert_allclose(roi.center, hips)
    assert abs(roi.rotation) < 1e-6                              # upright
    reach = np.linalg.norm(kp[:, :2] - hips, axis=1).max()
    assert roi.size == pytest.approx(2 * 1.15 * reach * bp.ROI_SCALE)
    # the same person upside down (rotated 180 deg about the hips): rotation pi, same size
    flipped = kp.copy()
    flipped[:, :2] = 2 * hips - kp[:, :2]
    roi_f = mn.roi_from_keypoints(flipped, box)
    assert abs(abs(roi_f.rotation) - math.pi) < 1e-6 and roi_f.size == pytest.approx(roi.size)
    # lying with the head to the right (rotated 90 deg clockwise on screen): +pi/2
    turned = kp.copy()
    d = kp[:, :2] - hips
    turned[:, :2] = hips + np.stack([-d[:, 1], d[:, 0]], 1)
    assert mn.roi_from_keypoints(turned, box).rotation == pytest.approx(math.pi / 2)
    # the crop's "up" axis points from the hips to the shoulders in the image
    up = roi_f.crop_to_image(1)[:, :2] @ np.array([0.0, -1.0])
    assert np.dot(up, flipped[[5, 6], :2].mean(0) - hips) > 0
    # hips unseen: box centre, upright
    blind = kp.copy()
    blind[[11, 12], 2] = 0.0
    roi_b = mn.roi_from_keypoints(blind, box)
    np.testing.assert_allclose(roi_b.center, [(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])
    assert roi_b.rotation == 0.0


def test_same_roi():
    a = bp.Roi(np.array([100.0, 100.0]), 200.0, 0.0)
    assert same_roi(a, bp.Roi(np.array([105.0, 100.0]), 210.0, 0.05))
    assert not same_roi(a, bp.Roi(np.array([100.0, 100.0]), 200.0, 0.5))        # turned ~30 deg
    assert not same_roi(a, bp.Roi(np.array([150.0, 100.0]), 200.0, 0.0))        # moved
    assert not same_roi(a, bp.Roi(np.array([100.0, 100.0]), 300.0, 0.0))        # larger
    assert same_roi(bp.Roi(a.center, 200.0, math.pi - 0.02), bp.Roi(a.center, 200.0, -math.pi + 0.02))


def test_fuse_keypoints_is_the_mean():
    from deforhmr_model.people.detection import Detection
    lm = np.zeros((33, 3), np.float32)
    coco = np.tile(np.array([[10.0, 20.0, 0.8]], np.float32), (17, 1))
    mv = np.tile(np.array([[14.0, 16.0, 0.4]]), (17, 1))
    p = Detection(bbox=np.zeros(4, np.float32), score=1.0, keypoints=lm, keypoints_coco=coco)
    fused = mn.fuse_keypoints(p, mv)
    assert fused.dtype == np.float32 and fused.shape == (17, 3)
    np.testing.assert_allclose(fused[0], [12.0, 18.0, 0.6], rtol=1e-6)


def test_detector_options_and_errors():
    det = make_detector("movenet")
    assert isinstance(det, mn.MoveNetDetector) and isinstance(det, LandmarkDetector)
    assert isinstance(det, PersonDetector) and not det.refine       # MoveNet's keypoint ROI is already rotated
    assert type(make_detector("BlazePose")).__name__ == "BlazePoseDetector"
    with pytest.raises(ValueError, match="unknown detector"):
        make_detector("yolo")
    with pytest.raises(ValueError, match="multiples of 32"):
        mn.MoveNetDetector(canvas=250)
    with pytest.raises(ValueError, match="threshold"):
        mn.MoveNetDetector(threshold=2)
    with pytest.raises(ValueError, match="uint8"):
        det.detect(np.zeros((10, 10, 3), np.float32))


# ----------------------------------------------------------------------------- real photos
@pytest.fixture(scope="module")
def coco_crowd():
    """COCO dev image 000000196141.jpg and its annotated people with >= 8 labelled keypoints."""
    from deforhmr_model.files.image_io import load_image
    data = json.loads((DEV / "coco" / "test_coco.json").read_text())
    im = next(i for i in data["images"] if i["file_name"] == "000000196141.jpg")
    gts = [a for a in data["annotations"] if a["image_id"] == im["id"] and a["num_keypoints"] >= 8]
    boxes = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                      for a in gts])
    kps = np.array([a["keypoints"] for a in gts], float).reshape(-1, 17, 3)
    return load_image(DEV / "coco" / im["file_name"]), boxes, kps


def test_movenet_finds_the_annotated_people(coco_crowd):
    image, gt_boxes, gt_kps = coco_crowd
    assert len(gt_boxes) >= 3
    det = mn.MoveNetDetector()
    boxes, kps, scores = det.find(image)
    assert kps.shape[1:] == (17, 3) and np.all(np.diff(scores) <= 0)
    iou = bp.box_iou(gt_boxes, boxes)
    assert (iou.max(1) >= 0.5).all(), iou.max(1)                # every annotated person, by MoveNet alone
    # MoveNet's keypoints of the matched people lie on the annotated ones (PCK@0.2 of the box size)
    hits = n = 0
    for g, j in enumerate(iou.argmax(1)):
        vis = gt_kps[g, :, 2] > 0
        err = np.linalg.norm(kps[j, vis, :2] - gt_kps[g, vis, :2], axis=1)
        hits += int((err < 0.2 * np.ptp(gt_boxes[g].reshape(2, 2), 0).max()).sum())
        n += int(vis.sum())
    assert hits / n > 0.8
    people = det.detect(image)                                   # + landmarks, verification
    assert people and all(p.keypoints.shape == (33, 3) and p.world_landmarks.shape == (33, 3) for p in people)
    final = np.stack([p.bbox for p in people]).astype(float)
    assert (bp.box_iou(gt_boxes, final).max(1) >= 0.5).all()
    assert [p.score for p in people] == sorted((p.score for p in people), reverse=True)


def _turn_points(xy, k, W, H):
    """Image points (..., 2) of a W x H image -> the same points in np.rot90(image, k)."""
    xy = np.asarray(xy, float)
    for j in range(k):
        w = W if j % 2 == 0 else H
        xy = np.stack([xy[..., 1], w - xy[..., 0]], -1)
    return xy


@pytest.mark.parametrize("k", [1, 2])
def test_lying_and_upside_down_people_are_found_with_their_keypoints(coco_crowd, k):
    """The photo turned 90 degrees (people lying) and 180 degrees (upside down): people are
    found and their keypoints land on the turned annotations; the landmark crops are turned
    too (their rotation comes from MoveNet's hips -> shoulders)."""
    image, gt_boxes, gt_kps = coco_crowd
    H, W = image.shape[:2]
    people = mn.MoveNetDetector().detect(np.ascontiguousarray(np.rot90(image, k)))
    boxes = np.stack([p.bbox for p in people]).astype(float)
    corners = _turn_points(gt_boxes.reshape(-1, 2, 2), k, W, H)
    t_boxes = np.concatenate([corners.min(1), corners.max(1)], 1)
    iou = bp.box_iou(t_boxes, boxes)
    found = iou.max(1) >= 0.5
    assert found.sum() >= len(gt_boxes) - 1, iou.max(1)
    hits = n = 0
    for g in np.flatnonzero(found):
        p = people[int(iou[g].argmax())]
        vis = gt_kps[g, :, 2] > 0
        truth = _turn_points(gt_kps[g, vis, :2], k, W, H)
        err = np.linalg.norm(p.keypoints_coco[vis, :2] - truth, axis=1)
        hits += int((err < 0.2 * np.ptp(t_boxes[g].reshape(2, 2), 0).max()).sum())
        n += int(vis.sum())
        turn = abs(np.remainder(float(p.roi[3]), 2 * np.pi) - np.pi)     # distance from upside down
        assert abs(turn - (np.pi / 2 if k == 1 else 0.0)) < 0.8          # the crop is turned, not upright
    assert hits / n > 0.8


def test_pipeline_cli_and_node_paths_use_movenet(coco_crowd, tmp_path):
    from deforhmr_model.pipeline import HMRPipeline
    image, gt_boxes, _ = coco_crowd
    pipe = HMRPipeline(model="none")
    assert isinstance(pipe.detector, mn.MoveNetDetector) and pipe.detector.min_person == 0.2
    dets = pipe.detect(image)
    assert (bp.box_iou(gt_boxes, np.stack([d.bbox for d in dets]).astype(float)).max(1) >= 0.5).all()
    assert pipe.detect(image, detector="blazepose") is not None
    assert {k[0] for k in pipe.detection.cache} == {"movenet", "blazepose"}          # one cache, in the pipeline
    assert len(pipe.detect(image, max_people=2)) == 2
    given = pipe.detect(image, gt_boxes[:2])
    np.testing.assert_allclose(np.stack([d.bbox for d in given]), gt_boxes[:2], atol=1e-3)
    with pytest.raises(ValueError, match="unknown detector"):
        HMRPipeline(detector="yolo")
