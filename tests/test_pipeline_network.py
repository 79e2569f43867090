"""The network path of the pipeline (a checkpoint installed), with a small test-made checkpoint.

No DeforHMR weights can be downloaded here, so the test builds a tiny def-m (vit-tiny encoder,
2 decoder layers) with random weights, saves it in the product's safetensors format and runs
the real pipeline on a real photo: crops, batched forward, camera conversion, refinement.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from deforhmr_model.network.checkpoint import save_checkpoint
from deforhmr_model.network.model import build_model
from deforhmr_model.files.result import load_result, save_result
from deforhmr_model.pipeline import HMRPipeline


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model("def-m", "vit-tiny", depth=2, dim=64, mlp_dim=64)
    with torch.no_grad():  # readouts start at the mean parameters, as a trained model is near them
        for head in (model.smpl_head.decpose, model.smpl_head.decshape, model.smpl_head.deccam):
            head.weight.mul_(0.01)
            head.bias.zero_()
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "tiny-def-m.safetensors")


def _mean_reprojection(result):
    errs = []
    for p in result.people:
        from deforhmr_model.body.layouts import COCO_TO_SMPL_JOINT
        ok = p.keypoints_2d[:, 2] > 0.5
        idx = [i for i in range(5, 17) if ok[i]]
        errs.append(np.mean([np.linalg.norm(p.joints_2d[COCO_TO_SMPL_JOINT[i]] - p.keypoints_2d[i, :2])
                             for i in idx]))
    return np.array(errs)


def test_network_path_and_refinement(photos, tiny_checkpoint):
    image = photos / "coco" / "000000197388.jpg"  # five skiers: batched forward
    net = HMRPipeline(model=tiny_checkpoint)(image)
    assert len(net.people) >= 4
    assert all(p.method.startswith("network:") and not p.method.endswith("+refine") for p in net.people)
    for p in net.people:
        assert np.isfinite(p.vertices).all() and p.transl[2] > 0
        # the weak-perspective camera places each body on its own box (HMR 2.0 camera)
        cx, cy = (p.bbox[:2] + p.bbox[2:]) / 2
        size = max(p.bbox[2] - p.bbox[0], p.bbox[3] - p.bbox[1])
        assert np.linalg.norm(p.joints_2d.mean(0) - [cx, cy]) < size
    refined = HMRPipeline(model=tiny_checkpoint, refine=True)(image)
    assert all(p.method.endswith("+refine") for p in refined.people)
    before, after = _mean_reprojection(net), _mean_reprojection(refined)
    print(f"\nrandom tiny network: reprojection px {before.round(1)} -> refined {after.round(1)}")
    assert (after < before).all() and np.median(after) < 15


def test_refine_result_reuses_a_result(photos, tiny_checkpoint, tmp_path):
    pipe = HMRPipeline(model=tiny_checkpoint)
    res = pipe(photos / "coco" / "000000000785.jpg")
    assert (res.people[0].keypoints_extra[:, 2] > 0).any()  # heels, toes, hands are kept in the result
    save_result(res, tmp_path / "r")
    again = pipe.refine_result(load_result(tmp_path / "r.npz"))  # the Refine node's path, via a file
    assert again.people[0].method.endswith("+refine")
    assert _mean_reprojection(again)[0] < _mean_reprojection(res)[0]
    # ... is the same refinement as refine=True (same keypoints, extremities included, same camera)
    pipe.refine = True
    direct = pipe(photos / "coco" / "000000000785.jpg")
    assert again.focal_length == direct.focal_length and again.focal_source == direct.focal_source
    np.testing.assert_allclose(again.people[0].joints, direct.people[0].joints, atol=2e-3)


def test_network_betas_apply_only_to_an_smpl_shape_space(photos, tiny_checkpoint):
    from deforhmr_model.files.image_io import load_image
    from deforhmr_model.files.weights import REPO_WEIGHTS
    from deforhmr_model.stages import NetworkStage, Person
    pipe = HMRPipeline(model=tiny_checkpoint, body=REPO_WEIGHTS / "open_body.npz")
    assert not pipe.body_data.smpl_betas
    image = load_image(photos / "coco" / "000000000785.jpg")
    people = [[Person(np.asarray(d.bbox, np.float32), float(d.score), np.asarray(d.keypoints_coco, np.float32))
               for d in pipe.detect(image)]]
    zeroed = pipe.network([image], people, [pipe.camera(image)])[0]
    kept = NetworkStage(pipe.model, pipe.device, "tiny", smpl_betas=True)([image], people, [pipe.camera(image)])[0]
    assert torch.all(zeroed.betas == 0) and kept.betas.abs().max() > 0
    torch.testing.assert_close(zeroed.transl, kept.transl)


def test_detection_overlapped_with_network_gives_the_same_results(photos, tiny_checkpoint):
    """run_many's GPU mode (detection on a background thread, network chunk by chunk) on the CPU:
    same people, same parameters as the sequential path, in the images' order."""
    import glob
    from deforhmr_model.files.image_io import load_image
    paths = sorted(glob.glob(str(photos / "coco" / "*.jpg")))[:3]
    images = [load_image(p) for p in paths] * 2                       # 6 images, chunks of 2
    pipe = HMRPipeline(model=str(tiny_checkpoint))
    seq = pipe.run_many(images, overlap=False)
    ovl = pipe.run_many(images, overlap=True, chunk=2)
    assert [len(r.people) for r in ovl] == [len(r.people) for r in seq] and sum(len(r.people) for r in seq) > 0
    for a, b in zip(seq, ovl):
        for pa, pb in zip(a.people, b.people):
            np.testing.assert_allclose(pa.bbox, pb.bbox)
            np.testing.assert_allclose(pa.transl, pb.transl, atol=1e-4)
            np.testing.assert_allclose(pa.body_pose, pb.body_pose, atol=1e-4)
