"""SMPL files without chumpy: chumpy-style pickles, hostile pickles, npz conversion and errors."""
from __future__ import annotations

import contextlib
import os
import pickle
import sys
import types

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from deforhmr_model.body.model import BodyModel, load_body_data
from deforhmr_model.geometry.rotation import axis_angle_to_rotmat
from deforhmr_model.body.smpl_io import (
    SMPLFileError, UnsafePickleError, convert_smpl, read_body_arrays, read_smpl_pkl, write_body_npz,
)

from .body_fixtures import make_test_smpl_arrays, make_test_smpl_npz


@contextlib.contextmanager
def fake_chumpy():
    """A stand-in ``chumpy.ch.Ch`` (pickles like chumpy: state dict with ``x``), used only to
    *write* pickles; removed from sys.modules afterwards."""
    pkg, mod = types.ModuleType("chumpy"), types.ModuleType("chumpy.ch")

    class Ch:
        def __init__(self, x):
            self.x = np.asarray(x)

        def __getstate__(self):
            return {**self.__dict__, "_dirty_vars": {"x"}, "_itr": None, "_depends_on_deps": {},
                    "_make_dense": False, "_make_sparse": False}

    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    mod.Ch, pkg.ch = Ch, mod
    sys.modules["chumpy"], sys.modules["chumpy.ch"] = pkg, mod
    try:
        yield Ch
    finally:
        del sys.modules["chumpy"], sys.modules["chumpy.ch"]


def write_chumpy_smpl_pkl(path, seed=0, protocol=2, num_shape=300):
    """An SMPL-style pickle: chumpy arrays, scipy csc J_regressor, plain arrays and strings."""
    a = make_test_smpl_arrays(seed, num_shape=num_shape)
    with fake_chumpy() as Ch:
        content = {
            "v_template": Ch(a["v_template"]), "shapedirs": Ch(a["shapedirs"]), "weights": Ch(a["weights"]),
            "posedirs": a["posedirs"], "J_regressor": sp.csc_matrix(a["J_regressor"]),
            "J_regressor_prior": sp.csc_matrix(a["J_regressor"]), "kintree_table": a["kintree_table"],
            "f": a["f"], "J": a["J_regressor"] @ a["v_template"], "bs_style": "lbs", "bs_type": "lrotmin",
            "pose_training_info": {"nsubj": 7, "data": [1.5, "x"]}, "vert_sym_idxs": np.arange(4),
            "face_vertex_names": a["face_vertex_names"], "face_vertex_ids": a["face_vertex_ids"],
        }
        path.write_bytes(pickle.dumps(content, protocol=protocol))
    assert "chumpy" not in sys.modules
    return a


@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_chumpy_pickle_loads_without_chumpy(tmp_path, protocol):
    path = tmp_path / "basicModel_neutral_lbs_10_207_0_v1.0.0.pkl"
    a = write_chumpy_smpl_pkl(path, protocol=protocol)
    raw = read_smpl_pkl(path)
    assert "chumpy" not in sys.modules
    assert isinstance(raw["v_template"], np.ndarray) and sp.issparse(raw["J_regressor"])
    assert raw["bs_style"] == "lbs" and raw["pose_training_info"]["nsubj"] == 7
    got = read_body_arrays(path)
    V = len(a["v_template"])
    np.testing.assert_allclose(got["v_template"], a["v_template"], rtol=1e-6)
    np.testing.assert_array_equal(got["faces"], a["f"].astype(np.int64))
    np.testing.assert_allclose(got["J_regressor"], a["J_regressor"], rtol=1e-6)
    np.testing.assert_allclose(got["lbs_weights"], a["weights"])
    assert got["parents"][0] == -1 and got["parents"][1:].tolist() == a["kintree_table"][0, 1:].tolist()
    assert got["shapedirs"].shape == (V, 3, 10)  # 300 components: the first 10 kept
    np.testing.assert_allclose(got["shapedirs"], a["shapedirs"][:, :, :10], rtol=1e-6)
    np.testing.assert_allclose(got["posedirs"], a["posedirs"].reshape(V * 3, 207).T, rtol=1e-6)


class _Evil:
    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


def test_hostile_pickle_refused_and_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "SMPL_NEUTRAL.pkl"
    path.write_bytes(pickle.dumps({"v_template": np.zeros((3, 3)), "x": _Evil(f"touch {marker}")}, protocol=2))
    with pytest.raises(UnsafePickleError, match=r"refusing to load class (posix|os|nt)\.system"):
        read_smpl_pkl(path)
    with pytest.raises(SMPLFileError, match="system"):
        load_body_data(path)
    assert not marker.exists()


@pytest.mark.parametrize("payload", [
    pickle.dumps(eval),                                          # builtins.eval
    b"cbuiltins\nexec\n(Vprint(1)\ntR.",                         # builtins.exec call
    b"csubprocess\nPopen\n(Vls\ntR.",
    b"cnumpy\nload\n(V/etc/passwd\ntR.",                         # allowed module, refused name
    b"ccopy_reg\n_reconstructor\n(c__builtin__\ndict\nc__builtin__\nobject\nNtR.",
])
def test_other_refused_classes(tmp_path, payload):
    path = tmp_path / "m.pkl"
    path.write_bytes(payload)
    with pytest.raises(UnsafePickleError, match="refusing"):
        read_smpl_pkl(path)


def test_bad_pickles(tmp_path):
    good = tmp_path / "good.pkl"
    write_chumpy_smpl_pkl(good)
    broken = tmp_path / "broken.pkl"
    broken.write_bytes(good.read_bytes()[:500])
    with pytest.raises(SMPLFileError, match="not a readable SMPL pickle"):
        read_smpl_pkl(broken)
    lst = tmp_path / "list.pkl"
    lst.write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(SMPLFileError, match="expected a pickled dict"):
        read_body_arrays(lst)
    with fake_chumpy() as Ch:  # a chumpy expression object without a stored array
        obj = Ch(np.zeros(3))
        del obj.x
        obj.a, obj.b = Ch(np.ones(3)), 2.0  # like chumpy's a + b
        (tmp_path / "expr.pkl").write_bytes(pickle.dumps({"v_template": obj}, protocol=2))
    with pytest.raises(SMPLFileError, match="stores no array"):
        read_smpl_pkl(tmp_path / "expr.pkl")


def test_convert_smpl_round_trip(tmp_path):
    pkl = tmp_path / "basicmodel_f_lbs_10_207_0_v1.1.0.pkl"
    write_chumpy_smpl_pkl(pkl, seed=5)
    npz = convert_smpl(pkl, tmp_path / "SMPL_FEMALE.npz")
    with np.load(npz, allow_pickle=False) as z:  # plain arrays only
        assert {"v_template", "f", "J_regressor", "weights", "kintree_table", "shapedirs", "posedirs"} <= set(z.files)
        assert str(z["id"]) == "smpl_female" and "SMPL" in str(z["license"])
        for k in z.files:
            assert z[k].dtype != object
    a, b = BodyModel(load_body_data(pkl)), BodyModel(load_body_data(npz))
    R = axis_angle_to_rotmat(torch.randn(3, 24, 3) * 0.5)
    betas, transl = torch.randn(3, 10), torch.randn(3, 3)
    oa, ob = a(R[:, 0], R[:, 1:], betas, transl), b(R[:, 0], R[:, 1:], betas, transl)
    assert torch.equal(oa.vertices, ob.vertices) and torch.equal(oa.joints, ob.joints)
    assert torch.equal(a.faces, b.faces) and a.face_vertex_ids == b.face_vertex_ids
    with pytest.raises(SMPLFileError, match=r"\.npz"):
        convert_smpl(pkl, tmp_path / "out.pkl")
    with pytest.raises(FileNotFoundError):
        convert_smpl(tmp_path / "missing.pkl", tmp_path / "x.npz")


def _rewrite(path, **changes):
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    for k, v in changes.items():
        if v is None:
            arrays.pop(k)
        else:
            arrays[k] = v
    np.savez(path, **arrays)
    return path


def test_npz_errors_name_the_problem(tmp_path):
    make = lambda name: make_test_smpl_npz(tmp_path / name, seed=0)  # noqa: E731
    with pytest.raises(SMPLFileError, match="missing array 'J_regressor'"):
        read_body_arrays(_rewrite(make("a.npz"), J_regressor=None))
    with pytest.raises(SMPLFileError, match=r"'weights' must have shape \(\d+, 24\), got \(\d+, 23\)"):
        read_body_arrays(_rewrite(make("b.npz"), weights=np.zeros((10, 23))))
    with pytest.raises(SMPLFileError, match="face indices"):
        read_body_arrays(_rewrite(make("c.npz"), f=np.array([[0, 1, 99999]])))
    obj = np.empty(1, dtype=object)
    obj[0] = {"a": 1}
    with pytest.raises(SMPLFileError, match="pickled Python objects.*convert-smpl"):
        read_body_arrays(_rewrite(make("d.npz"), J_regressor=obj))
    # an unused object entry (e.g. pose_training_info) is ignored
    assert read_body_arrays(_rewrite(make("e.npz"), pose_training_info=obj))["v_template"].shape[1] == 3
    (tmp_path / "x.obj").write_text("v 0 0 0\n")
    with pytest.raises(SMPLFileError, match="unknown body model file type"):
        read_body_arrays(tmp_path / "x.obj")
    with pytest.raises(FileNotFoundError):
        read_body_arrays(tmp_path / "nope.npz")


def test_npz_layouts_and_padding(tmp_path):
    a = make_test_smpl_arrays(seed=0, num_shape=4)
    V = len(a["v_template"])
    p = make_test_smpl_npz(tmp_path / "own.npz", seed=0, num_shape=4)
    own = _rewrite(p, faces=a["f"], f=None, lbs_weights=a["weights"], weights=None,
                   parents=np.array(a["kintree_table"][0]), kintree_table=None,
                   posedirs=a["posedirs"].reshape(V * 3, 207).T.copy())
    got = read_body_arrays(own)
    assert got["shapedirs"].shape == (V, 3, 10) and not got["shapedirs"][:, :, 4:].any()
    np.testing.assert_allclose(got["shapedirs"][:, :, :4], a["shapedirs"], rtol=1e-6)
    np.testing.assert_allclose(got["posedirs"], a["posedirs"].reshape(V * 3, 207).T, rtol=1e-6)
    assert got["parents"][0] == -1 and got["meta"]["id"] == "test_smpl"


def test_write_body_npz_round_trip(tmp_path):
    got = read_body_arrays(make_test_smpl_npz(tmp_path / "a.npz", seed=0))
    meta = {"id": "x", "name": "n", "license": "l", "source": "s", "generator_version": "9"}
    out = write_body_npz(tmp_path / "b.npz", got, meta)
    back = read_body_arrays(out)
    assert back["meta"] == meta and back["face_vertex_ids"] == got["face_vertex_ids"]
    for k in ("v_template", "faces", "J_regressor", "lbs_weights", "parents", "shapedirs", "posedirs"):
        np.testing.assert_array_equal(back[k], got[k])
    np.testing.assert_array_equal(back["extra_regressors"]["j5"], got["extra_regressors"]["j5"])
    with pytest.raises(ValueError, match="unknown meta key"):
        write_body_npz(tmp_path / "c.npz", got, {"colour": "red"})
    assert not (tmp_path / "c.npz").exists() and not list(tmp_path.glob(".c.npz*"))
