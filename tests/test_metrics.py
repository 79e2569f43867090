"""Evaluation: metric definitions against hand-computed cases, joint regressor files, and the
Table-1 protocol end to end (``deforhmr eval``) with a model whose output is the ground truth."""
from __future__ import annotations

import argparse
import json
import math
import pickle

import numpy as np
import pytest
import torch

from deforhmr_model.body.joints import RegressorFileError, load_regressor
from deforhmr_model.geometry.metrics import mpjpe, pa_mpjpe, pck, pelvis_align, pve, similarity_align


def _rot(axis, deg):
    from scipy.spatial.transform import Rotation
    return torch.tensor(Rotation.from_rotvec(np.asarray(axis, float) / np.linalg.norm(axis) * math.radians(deg))
                        .as_matrix(), dtype=torch.float64)


@pytest.fixture
def joints():
    g = torch.Generator().manual_seed(0)
    return torch.randn(3, 14, 3, generator=g, dtype=torch.float64) * 0.3     # metres


def test_pa_mpjpe_is_zero_under_rotation_scale_translation(joints):
    R = _rot([1, 2, 3], 70)
    moved = 1.7 * joints @ R.T + torch.tensor([0.5, -1.0, 4.0], dtype=torch.float64)
    assert pa_mpjpe(moved, joints).max() < 1e-9
    assert mpjpe(moved, joints).min() > 100.0                                # but not the plain MPJPE
    np.testing.assert_allclose(similarity_align(moved, joints), joints, atol=1e-12)


def test_pa_mpjpe_keeps_reflections_as_error(joints):
    mirrored = joints * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)
    assert pa_mpjpe(mirrored, joints).min() > 1.0                            # proper rotations only


def test_mpjpe_of_a_known_offset(joints):
    off = torch.tensor([0.03, 0.04, 0.0], dtype=torch.float64)               # |off| = 50 mm
    np.testing.assert_allclose(mpjpe(joints + off, joints), 50.0, rtol=1e-12)
    # one joint off by 140 mm: 140 / 14 = 10 mm
    one = joints.clone()
    one[:, 5, 2] += 0.14
    np.testing.assert_allclose(mpjpe(one, joints), 10.0, rtol=1e-12)
    # pelvis alignment removes a global translation
    a = pelvis_align(joints + off, (0,))
    np.testing.assert_allclose(mpjpe(a, pelvis_align(joints, (0,))), 0.0, atol=1e-12)
    np.testing.assert_allclose(pelvis_align(joints, (1, 2))[:, [1, 2]].mean(1), 0.0, atol=1e-12)


def test_pa_mpjpe_hand_computed_scale_case():
    # GT: a unit square in the z=0 plane; prediction: the same square scaled by 2 and shifted.
    gt = torch.tensor([[[1.0, 1, 0], [-1, 1, 0], [-1, -1, 0], [1, -1, 0]]], dtype=torch.float64)
    pred = gt * 2 + 3
    assert pa_mpjpe(pred, gt, scale=1.0) < 1e-12
    # MPJPE after centring: every point is sqrt(2) away (|2p - p| = |p|)
    c = lambda x: x - x.mean(1, keepdim=True)                                # noqa: E731
    np.testing.assert_allclose(mpjpe(c(pred), c(gt), scale=1.0), math.sqrt(2), rtol=1e-12)
    # a 4x2 rectangle onto the 2x2 square: K = diag(8, 4) so R = I, s = 12 / 20 = 0.6, the
    # aligned corners are (±1.2, ±0.6) and every corner is sqrt(0.2²+0.4²) = sqrt(0.2) off
    rect = gt * torch.tensor([2.0, 1.0, 1.0], dtype=torch.float64)
    np.testing.assert_allclose(pa_mpjpe(rect, gt, scale=1.0), math.sqrt(0.2), rtol=1e-10)
    np.testing.assert_allclose(similarity_align(rect, gt)[0, 0], [1.2, 0.6, 0.0], atol=1e-12)


def test_pve_and_mesh_mismatch():
    v = torch.zeros(2, 100, 3)
    w = v.clone()
    w[:, :, 0] = 0.012                                                       # 12 mm everywhere
    np.testing.assert_allclose(pve(w, v), 12.0, rtol=1e-6)
    w[1, :50, 0] = 0.0
    np.testing.assert_allclose(pve(w, v), [12.0, 6.0], rtol=1e-6)
    with pytest.raises(ValueError, match="same body model topology"):
        pve(torch.zeros(1, 10, 3), torch.zeros(1, 11, 3))


def test_pck_hand_computed():
    gt = torch.zeros(1, 4, 2)
    pred = torch.tensor([[[1.0, 0.0], [0.0, 7.0], [20.0, 0.0], [0.0, 0.0]]])
    vis = torch.tensor([[True, True, True, False]])
    out = pck(pred, gt, vis, torch.tensor([100.0]), (0.05, 0.1))
    np.testing.assert_array_equal(out[0.05][0, :3].numpy(), [1, 0, 0])
    np.testing.assert_array_equal(out[0.1][0, :3].numpy(), [1, 1, 0])
    assert torch.isnan(out[0.1][0, 3])


def test_regressor_files(tmp_path):
    arr = np.random.default_rng(0).random((19, 50)).astype(np.float32)
    (tmp_path / "SMPL_to_J19.pkl").write_bytes(pickle.dumps(arr, protocol=2))
    np.testing.assert_array_equal(load_regressor(tmp_path / "SMPL_to_J19.pkl", 19, 50), arr)
    np.save(tmp_path / "J_regressor_h36m.npy", arr[:17])
    assert load_regressor(tmp_path / "J_regressor_h36m.npy", 17, 50).shape == (17, 50)
    with pytest.raises(RegressorFileError, match=r"expected a joint regressor of shape \(17, 60\)"):
        load_regressor(tmp_path / "J_regressor_h36m.npy", 17, 60)
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps(argparse.Namespace(x=1)))
    with pytest.raises(RegressorFileError, match="refusing to load"):
        load_regressor(tmp_path / "evil.pkl", 19)
    with pytest.raises(FileNotFoundError):
        load_regressor(tmp_path / "none.npy", 17)


# ----------------------------------------------------------------------------- protocol end to end

@pytest.fixture(scope="module")
def eval_data(tmp_path_factory):
    """A 3DPW-like file: one fixed pose (so a model can output the exact ground truth), two
    sequences, half the people labelled male; a 2D-only copy; regressors for the test body."""
    from deforhmr_model.body.joints import J24Regressor
    from deforhmr_model.body.smpl_io import write_body_npz
    from deforhmr_model.body.model import BodyModel, load_body_data
    from deforhmr_model.train.synthetic import SynthConfig, generate
    from .train_helpers import tiny_body_arrays
    root = tmp_path_factory.mktemp("eval")
    body_file = write_body_npz(root / "body.npz", tiny_body_arrays(), meta={"id": "tiny_body"})
    body = BodyModel(load_body_data(body_file))
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    cfg = SynthConfig(num_samples=12, seed=5, image_size=(128, 128), poses=("stand",), pose_noise=0.0,
                      yaw_range=0.0, tilt=0.0, shape_std=0.0, background_kinds=("flat",))
    src = generate(root / "gen", body, J24Regressor(body.face_vertex_ids), cfg)
    torch.set_num_threads(n)
    z = dict(np.load(src))
    z["sequence"] = np.array(["seq_a"] * 6 + ["seq_b"] * 6)
    z["gender"] = np.array(["m", "f"] * 6)
    np.savez(root / "gen" / "pw3d_like.npz", **z)
    np.savez(root / "gen" / "twod.npz", imgname=z["imgname"], center=z["center"], scale=z["scale"], part=z["part"])
    V = body.num_vertices
    rng = np.random.default_rng(1)
    h36m = rng.random((17, V)) * (rng.random((17, V)) < 0.02)
    np.save(root / "J_regressor_h36m.npy", (h36m / h36m.sum(1, keepdims=True)).astype(np.float32))
    j19 = rng.random((19, V)) * (rng.random((19, V)) < 0.02)
    (root / "SMPL_to_J19.pkl").write_bytes(pickle.dumps((j19 / j19.sum(1, keepdims=True)).astype(np.float32)))
    return root, body_file, z


def _model_at(tmp, name, pose_aa, cam=(0.9, 0.0, 0.0)):
    """A real tiny DeforHMR whose readouts are zero, so it outputs its mean parameters."""
    from deforhmr_model.network.checkpoint import save_checkpoint
    from deforhmr_model.network.model import build_model
    from deforhmr_model.geometry.rotation import axis_angle_to_rotmat, rotmat_to_rot6d
    from deforhmr_model.train.trainer import zero_readout
    torch.manual_seed(0)
    m = build_model("def-m", "vit-tiny", dim=32, depth=1, mlp_dim=32, self_heads=2, self_dim_head=16,
                    cross_heads=2, cross_dim_head=16, groups=2)
    zero_readout(m)
    R = axis_angle_to_rotmat(torch.as_tensor(pose_aa, dtype=torch.float32).reshape(24, 3))
    m.set_mean_params(rotmat_to_rot6d(R).reshape(-1), torch.zeros(10), torch.tensor(cam, dtype=torch.float32))
    return save_checkpoint(m, tmp / f"{name}.safetensors")


def _eval(argv):
    from deforhmr_model.eval.cli import add_eval_parser
    parser = argparse.ArgumentParser()
    add_eval_parser(parser.add_subparsers())
    args = parser.parse_args(["eval", *argv])
    return args.func(args)


def test_eval_cli_exact_model_scores_zero_and_wrong_pose_scores_the_expected_error(eval_data, tmp_path, capsys):
    root, body_file, z = eval_data
    exact = _model_at(tmp_path, "exact", z["pose"][0])
    wrong_pose = z["pose"][0].copy()
    wrong_pose[16 * 3 + 2] += 0.8                                            # left shoulder raised
    wrong = _model_at(tmp_path, "wrong", wrong_pose)
    out = tmp_path / "results.json"
    common = ["--dataset", str(root / "gen" / "pw3d_like.npz"), "--body", str(body_file), "--device", "cpu",
              "--batch-size", "5", "--per-sequence"]
    assert _eval(["--model", str(exact), "--model", str(wrong), "--regressor", str(root / "J_regressor_h36m.npy"),
                  "--body-male", str(body_file), "--body-female", str(body_file), "--output", str(out),
                  *common]) == 0
    text = capsys.readouterr().out
    assert "PA-MPJPE" in text and "seq_a" in text and "seq_b" in text
    doc = json.loads(out.read_text())
    rep = {r["model"]: r for r in doc["reports"]}
    assert rep["exact"]["protocol"] == "h36m14" and rep["exact"]["samples"] == 12
    for k in ("mpjpe", "pa_mpjpe", "pve"):
        assert rep["exact"]["overall"][k] < 1e-3, (k, rep["exact"]["overall"])
    assert set(rep["exact"]["per_sequence"]) == {"seq_a", "seq_b"}
    assert rep["exact"]["notes"] == []
    # the wrong model's MPJPE equals a direct computation with the same regressor and pelvis
    from deforhmr_model.body.model import BodyModel, load_body_data
    from deforhmr_model.geometry.rotation import axis_angle_to_rotmat
    body = BodyModel(load_body_data(body_file))
    reg = torch.from_numpy(np.load(root / "J_regressor_h36m.npy"))
    joints = []
    for p in (wrong_pose, z["pose"][0]):
        R = axis_angle_to_rotmat(torch.from_numpy(p).reshape(1, 24, 3))
        j = torch.einsum("jv,bvc->bjc", reg, body(R[:, 0], R[:, 1:], None, None).vertices)
        joints.append((j - j[:, :1])[:, [6, 5, 4, 1, 2, 3, 16, 15, 14, 11, 12, 13, 8, 10]])
    expected = float((joints[0] - joints[1]).norm(dim=-1).mean() * 1000)
    assert expected > 5.0
    np.testing.assert_allclose(rep["wrong"]["overall"]["mpjpe"], expected, rtol=1e-4)
    assert rep["wrong"]["overall"]["pa_mpjpe"] < rep["wrong"]["overall"]["mpjpe"]
    # lsp14 (HMR 2.0 protocol, SMPL_to_J19) also scores zero for the exact model
    assert _eval(["--model", str(exact), "--joints", "lsp14", "--regressor", str(root / "SMPL_to_J19.pkl"),
                  *common]) == 0
    out2 = capsys.readouterr().out
    assert "neutral body" in out2                                            # gendered GT without gender models
    row = [line for line in out2.splitlines() if line.startswith("exact")][0]
    assert [float(v) for v in row.split()[1:]] == [0.0, 0.0, 0.0]


def _weak_perspective_fit(body_file, z):
    """(s, tx, ty) fitting sample 0's crop keypoints: x_crop = s/2 (X + tx) (HMR 2.0 camera, far body)."""
    from deforhmr_model.body.model import BodyModel, load_body_data
    from deforhmr_model.body.joints import J24Regressor
    from deforhmr_model.geometry.rotation import axis_angle_to_rotmat
    from deforhmr_model.people.crop import crop_matrix
    from deforhmr_model.train.augment import transform_keypoints_2d
    from deforhmr_model.datasets.readers import box_size_from_scale
    body = BodyModel(load_body_data(body_file))
    R = axis_angle_to_rotmat(torch.from_numpy(z["pose"][0]).reshape(1, 24, 3))
    o = body(R[:, 0], R[:, 1:], None, None)
    X = J24Regressor(body.face_vertex_ids)(o.vertices, o.joints)[0].numpy()
    kp = transform_keypoints_2d(z["part"][0], crop_matrix(z["center"][0], box_size_from_scale(z["scale"][:1])[0]),
                                False)
    m = kp[:, 2] > 0
    A = np.zeros((2 * m.sum(), 3))
    A[0::2, 0], A[1::2, 0] = X[m, 0] / 2, X[m, 1] / 2
    A[0::2, 1], A[1::2, 2] = 1, 1
    s, a, b = np.linalg.lstsq(A, kp[m, :2].reshape(-1), rcond=None)[0]
    return float(s), float(2 * a / s), float(2 * b / s)


def test_eval_cli_pck_and_errors(eval_data, tmp_path, capsys):
    root, body_file, z = eval_data
    cam = _weak_perspective_fit(body_file, z)
    exact = _model_at(tmp_path, "exact", z["pose"][0], cam)
    raised = z["pose"][0].copy()
    raised[16 * 3 + 2] += 1.2
    raised[17 * 3 + 2] -= 1.2
    wrong = _model_at(tmp_path, "raised", raised, cam)
    out = tmp_path / "pck.json"
    assert _eval(["--model", str(exact), "--model", str(wrong), "--dataset", str(root / "gen" / "twod.npz"),
                  "--body", str(body_file), "--device", "cpu", "--output", str(out)]) == 0
    rep = {r["model"]: r["overall"] for r in json.loads(out.read_text())["reports"]}
    assert rep["exact"]["pck@0.05"] > 0.9 and rep["exact"]["pck@0.1"] == 1.0
    assert rep["raised"]["pck@0.1"] < 0.95
    capsys.readouterr()
    # missing regressor: one line naming the file and where to put it
    assert _eval(["--model", str(exact), "--dataset", str(root / "gen" / "pw3d_like.npz"),
                  "--body", str(body_file), "--device", "cpu"]) == 1
    assert "J_regressor_h36m.npy" in capsys.readouterr().err
    assert _eval(["--model", str(exact), "--dataset", "3dpw", "--data-root", str(tmp_path),
                  "--body", str(body_file), "--device", "cpu"]) == 1
    assert "3dpw_test.npz" in capsys.readouterr().err


def test_regressor_file_declaring_a_huge_array_is_refused_before_allocation(tmp_path):
    """A 1 KB .npy/.npz whose header declares 24 x 1e9 floats (96 GB) is refused from its header."""
    import io
    import zipfile
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False,
                                                  "shape": (24, 10**9)})
    npy = tmp_path / "bomb.npy"
    npy.write_bytes(header.getvalue() + b"\0" * 1024)
    with pytest.raises(RegressorFileError, match="cannot read the joint regressor"):
        load_regressor(npy, 24)
    npz = tmp_path / "bomb.npz"
    with zipfile.ZipFile(npz, "w") as zf:
        zf.writestr("J_regressor.npy", header.getvalue() + b"\0" * 1024)
    with pytest.raises(RegressorFileError, match="cannot read the joint regressor"):
        load_regressor(npz, 24)
