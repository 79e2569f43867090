"""The Blender add-on, tested with the real ``bpy`` in its own virtual environment.

This file runs in the main venv: it writes result files with ``deforhmr_model.files.result``
(from the pipeline on a real photo, and from a synthetic skinned SMPL-layout body with a
known pose), then runs ``tests/blender_checks/checks.py`` with ``.venv-blender/bin/python``
(``tools/setup_blender_venv.sh``; bpy needs numpy<2) and asserts on the measurements that
script writes as JSON. Without ``.venv-blender`` the Blender tests fail with the setup
command (the one skip policy, ``tests/conftest.py``: ``DEFORHMR_ALLOW_SKIPS=1`` lets them skip).
"""
from __future__ import annotations

import ast
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from deforhmr_model.body.layouts import SMPL_JOINT_NAMES
from deforhmr_model.body.layouts import SMPL_PARENTS as _SMPL_PARENTS
from deforhmr_model.files import result as result_mod
from deforhmr_model.files.result import ImageResult, PersonResult, save_result

from .body_fixtures import REST_JOINTS as SHARED_REST_JOINTS
from .hostile_files import write_npz_bomb

REPO = Path(__file__).resolve().parents[1]
PHOTOS = Path(os.environ.get("DEFORHMR_SHARED", REPO.parent / "shared")) / "photos" / "dev"
ADDON = REPO / "blender_addon"
BLENDER_PY = Path(os.environ.get("DEFORHMR_BLENDER_PYTHON",
                                 REPO / ".venv-blender" / "bin" / "python"))
CHECKS = REPO / "tests" / "blender_checks" / "checks.py"
PHOTO = PHOTOS / "coco" / "000000196141.jpg"

SMPL_PARENTS = np.array(_SMPL_PARENTS)


def _load(name: str):
    """An add-on module that needs no bpy (reader, convert), loaded by path in this venv."""
    spec = importlib.util.spec_from_file_location(f"_addon_{name}", ADDON / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# --- a synthetic skinned body in SMPL's layout (used until/unless the pipeline runs) ----

# Rough SMPL T-pose joints (m, body frame: Y up, facing +Z, +X the body's left).
_REST_JOINTS = SHARED_REST_JOINTS  # tests/body_fixtures.py: SMPL-like T-pose joints (m)


def synthetic_body():
    """A tube per bone (8 around x 4 rings), skinned parent->child: faces, weights, template."""
    verts, weights, faces = [], [], []
    ring = np.stack([np.cos(np.linspace(0, 2 * np.pi, 9)[:8]),
                     np.sin(np.linspace(0, 2 * np.pi, 9)[:8])], 1) * 0.04
    ends = [(SMPL_PARENTS[j], j) for j in range(1, 24)]
    ends += [(j, j) for j in (10, 11, 15, 22, 23)]  # caps on feet, head, hands
    for a, b in ends:
        start = _REST_JOINTS[a]
        end = _REST_JOINTS[b] if a != b else _REST_JOINTS[a] + [0, 0.08, 0]
        axis = (end - start) / np.linalg.norm(end - start)
        u = np.cross(axis, [0, 0, 1.0] if abs(axis[2]) < 0.9 else [1.0, 0, 0])
        u /= np.linalg.norm(u)
        v = np.cross(axis, u)
        base = len(verts)
        for i, t in enumerate(np.linspace(0, 1, 4)):
            for c, s in ring:
                verts.append(start + t * (end - start) + c * u + s * v)
                w = np.zeros(24)
                w[a] += 1 - 0.5 * t
                w[b] += 0.5 * t
                weights.append(w)
            if i:
                for k in range(8):
                    p, q = base + (i - 1) * 8 + k, base + (i - 1) * 8 + (k + 1) % 8
                    faces += [[p, q, q + 8], [p, q + 8, p + 8]]
    return np.array(verts), np.array(faces), np.array(weights)


def pose_body(template, weights, rest_joints, global_orient, body_pose, transl):
    """SMPL forward kinematics + linear blend skinning (no pose correctives), numpy."""
    rots = np.concatenate([global_orient[None], body_pose])
    G = np.zeros((24, 4, 4))
    for j in range(24):
        local = np.eye(4)
        local[:3, :3] = rots[j]
        p = SMPL_PARENTS[j]
        local[:3, 3] = rest_joints[j] - (rest_joints[p] if p >= 0 else 0)
        G[j] = G[p] @ local if p >= 0 else local
    joints = G[:, :3, 3] + transl
    A = G.copy()
    A[:, :3, 3] -= np.einsum("jab,jb->ja", G[:, :3, :3], rest_joints)
    T = np.einsum("vj,jab->vab", weights, A)
    verts = np.einsum("vab,vb->va", T[:, :3, :3], template) + T[:, :3, 3] + transl
    return verts, joints


def synthetic_person(index, template, weights, yaw_deg, transl, seed, focal, pp, beta0=0.0):
    rng = np.random.default_rng(seed)
    scale = 1 + 0.05 * beta0
    rest_joints = (_REST_JOINTS - _REST_JOINTS[0]) * scale + _REST_JOINTS[0]
    rest_verts = (template - _REST_JOINTS[0]) * scale + _REST_JOINTS[0]
    # Upright, facing the camera (body Y -> camera -y, body Z -> camera -z), turned by yaw.
    go = (Rotation.from_rotvec([np.pi, 0, 0]) * Rotation.from_euler("yx", [yaw_deg, 6],
                                                                     degrees=True)).as_matrix()
    aa = rng.normal(0, 0.25, (23, 3))
    aa[17] = [0, 0, -1.1]  # right elbow bent
    aa[3] = [0.9, 0, 0]    # left knee bent
    bp = Rotation.from_rotvec(aa).as_matrix()
    transl = np.asarray(transl, float)
    verts, joints = pose_body(rest_verts, weights, rest_joints, go, bp, transl)
    j2d = joints[:, :2] / joints[:, 2:] * focal + np.asarray(pp)
    v2d = verts[:, :2] / verts[:, 2:] * focal + np.asarray(pp)
    f32 = lambda a: np.asarray(a, np.float32)  # noqa: E731
    return PersonResult(
        betas=f32(np.r_[beta0, np.zeros(9)]), global_orient=f32(go), body_pose=f32(bp),
        transl=f32(transl), rest_vertices=f32(rest_verts), rest_joints=f32(rest_joints),
        vertices=f32(verts), joints=f32(joints), joints_2d=f32(j2d),
        keypoints_2d=f32(np.c_[j2d[:17], np.ones(17)]),
        bbox=f32([*v2d.min(0), *v2d.max(0)]), score=0.9, person_index=index, method="fit")


def synthetic_result(people_specs, image_size=(640, 427), image_path=None):
    template, faces, weights = synthetic_body()
    W, H = image_size
    focal, pp = 1.1 * max(W, H), (W / 2 + 23.5, H / 2 - 14.25)  # off-centre principal point
    people = [synthetic_person(i, template, weights, yaw, t, seed, focal, pp, beta0=b)
              for i, yaw, t, seed, b in people_specs]
    return ImageResult(
        people=people, image_size=image_size, focal_length=focal, principal_point=pp,
        faces=faces.astype(np.int32), lbs_weights=weights.astype(np.float32),
        parents=SMPL_PARENTS.astype(np.int32), joint_names=list(SMPL_JOINT_NAMES),
        body_model={"id": "synthetic_tubes", "name": "test tubes", "license": "test"},
        image_path=image_path)


# --- fixtures -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict:
    """Result files: a still with 2 people, a 3-frame sequence, broken files."""
    root = tmp_path_factory.mktemp("results")
    from PIL import Image
    size = Image.open(PHOTO).size
    photo = root / PHOTO.name                  # photos load only from the result's folder or its parent
    shutil.copyfile(PHOTO, photo)
    still = synthetic_result([(0, 25.0, (-0.45, 0.15, 4.5), 1, 0.0),
                              (3, -50.0, (0.55, 0.1, 5.5), 2, 1.5)], size, str(photo))
    npz, _ = save_result(still, root / "still")

    seq = root / "sequence"
    seq.mkdir()
    frames = []
    for k, name in enumerate(("frame_1", "frame_2", "frame_10")):  # natural order 1, 2, 10
        specs = [(0, 20.0 + 15 * k, (-0.4 + 0.1 * k, 0.15, 4.5), 10 + k, 0.0),
                 (3, -40.0 - 10 * k, (0.6, 0.1, 5.5 - 0.2 * k), 20 + k, 1.5)]
        if k == 1:
            specs = specs[::-1]  # other order: people are matched by person_index
        frames.append(str(save_result(synthetic_result(specs, size, str(photo)), seq / name)[0]))

    bad = root / "bad"
    bad.mkdir()
    data = dict(np.load(npz, allow_pickle=False))
    meta = json.loads(str(data["meta_json"]))

    def write(name, arrays):
        np.savez(bad / name, **arrays)
        return str(bad / name)

    raw = npz.read_bytes()
    (bad / "truncated.npz").write_bytes(raw[: len(raw) // 2])
    (bad / "text.npz").write_text("not a result")
    bad_files = {
        "truncated": (str(bad / "truncated.npz"), "truncated or corrupt"),
        "not_a_zip": (str(bad / "text.npz"), "not a readable result file"),
        "missing_file": (str(bad / "nope.npz"), "file not found"),
        "wrong_version": (write("v3.npz", {**data, "meta_json": np.array(json.dumps(
            {**meta, "version": 3}))}), "version 3 is not supported"),
        "wrong_schema": (write("other.npz", {**data, "meta_json": np.array(json.dumps(
            {**meta, "schema": "other"}))}), "is not supported"),
        "missing_arrays": (write("noweights.npz", {k: v for k, v in data.items()
                                                   if k not in ("lbs_weights", "joints")}),
                           "missing arrays ['lbs_weights', 'joints']"),
        "no_meta": (write("nometa.npz", {k: v for k, v in data.items() if k != "meta_json"}),
                    "no 'meta_json'"),
        "bad_shape": (write("shape.npz", {**data, "rest_vertices": data["rest_vertices"][:, :-1]}),
                      "rest_vertices has shape"),
        "not_rotation": (write("rot.npz", {**data, "global_orient": 2 * data["global_orient"]}),
                         "not rotation matrices"),
        "nan": (write("nan.npz", {**data, "transl": np.full_like(data["transl"], np.nan)}),
                "non-finite"),
    }
    return {"root": root, "still": str(npz), "photo": str(photo.resolve()), "sequence": frames, "bad": bad_files,
            "still_result": still}


def run_blender(command: str, args: dict, tmp_path: Path) -> dict:
    """Run ``checks.py <command>`` in the blender venv; returns its JSON report."""
    if not BLENDER_PY.exists():
        pytest.skip(f"{BLENDER_PY} is missing: run `bash tools/setup_test_deps.sh` "
                    "(Blender as a Python module, ~1 GB)")
    out = tmp_path / f"{command}.json"
    (tmp_path / "args.json").write_text(json.dumps(args))
    home = tmp_path / "blender_home"  # isolate Blender's user config/extensions
    env = {**os.environ, "BLENDER_USER_RESOURCES": str(home),
           "BLENDER_USER_CONFIG": str(home / "config"),
           "BLENDER_USER_SCRIPTS": str(home / "scripts"),
           "BLENDER_USER_EXTENSIONS": str(home / "extensions")}
    proc = subprocess.run([str(BLENDER_PY), str(CHECKS), command, str(tmp_path / "args.json"),
                           str(out)], capture_output=True, text=True, timeout=300, env=env,
                          cwd=REPO)
    if proc.returncode != 0 or not out.exists():
        pytest.fail(f"checks.py {command} failed (rc {proc.returncode}):\n"
                    f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    report = json.loads(out.read_text())
    print(f"[blender {report.get('bpy_version')}] {command}: {json.dumps(report)[:3000]}")
    return report


def _assert_still(report: dict, people: int, vertices: int, vertex_tol_mm: float) -> None:
    assert report["people"] == people
    for person in report["persons"]:
        assert person["bone_names_ok"], person["bone_names"]
        assert person["num_bones"] == 24
        assert person["num_vertices"] == vertices
        assert person["vertex_groups_ok"] and person["smooth"]
        assert person["bone_rest_frame_error"] < 1e-5  # bone rest frames = body frame
        assert person["joint_error_mm"] < 1.0
        assert person["head_above_pelvis"]
        assert person["vertex_error_mm_mean"] < vertex_tol_mm
        assert person["pelvis_projection_px"] < 2.0
        assert person["joints_projection_px_max"] < 2.0
    assert report["resolution"] == report["image_size"]
    assert report["panel_people"] == people


# --- tests: pure Python parts of the add-on in this venv -----------------------------

def test_manifest_and_bl_info_agree():
    manifest = tomllib.loads((ADDON / "blender_manifest.toml").read_text())
    for key in ("schema_version", "id", "version", "name", "tagline", "maintainer", "type",
                "blender_version_min", "license"):
        assert manifest.get(key), key
    assert manifest["type"] == "add-on" and manifest["id"] == "deforhmr_importer"
    assert tuple(int(v) for v in manifest["blender_version_min"].split(".")) >= (4, 2, 0)
    tree = ast.parse((ADDON / "__init__.py").read_text())
    bl_info = next(ast.literal_eval(node.value) for node in tree.body
                   if isinstance(node, ast.Assign) and node.targets[0].id == "bl_info")
    assert ".".join(map(str, bl_info["version"])) == manifest["version"]
    assert bl_info["blender"] == (3, 6, 0)


def test_addon_imports_only_bpy_numpy_and_stdlib():
    allowed = {"bpy", "bpy_extras", "mathutils", "numpy", *sys.stdlib_module_names}
    for path in ADDON.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            assert all(n.split(".")[0] in allowed for n in names), (path.name, names)


def test_reader_matches_result_schema(results):
    reader = _load("reader")
    assert (reader.SCHEMA, reader.SCHEMA_VERSION) == (result_mod.SCHEMA, result_mod.SCHEMA_VERSION)
    assert reader.PERSON_ARRAYS == result_mod.PERSON_ARRAYS
    assert reader.BODY_ARRAYS == result_mod.BODY_ARRAYS
    frame = reader.read_result(results["still"])
    still = results["still_result"]
    assert [p.person_index for p in frame.people] == [0, 3]
    assert frame.body.joint_names == SMPL_JOINT_NAMES
    assert frame.camera.image_path == results["photo"]
    np.testing.assert_allclose(frame.people[1].joints, still.people[1].joints, atol=1e-6)
    assert frame.camera.principal_point == pytest.approx(still.principal_point)
    for name, (path, message) in results["bad"].items():
        with pytest.raises(reader.ResultReadError, match=None) as err:
            reader.read_result(path)
        assert message in str(err.value), (name, str(err.value))
    assert [Path(p).name for p in reader.list_sequence(Path(results["sequence"][0]).parent)] == [
        "frame_1.npz", "frame_2.npz", "frame_10.npz"]
    assert reader.parse_people("all") is None and reader.parse_people("0, 3") == {0, 3}
    with pytest.raises(reader.ResultReadError):
        reader.parse_people("first")


def test_reader_rejects_malformed_content_with_its_own_error(results, tmp_path):
    reader = _load("reader")
    data = dict(np.load(results["still"], allow_pickle=False))
    meta = json.loads(str(data["meta_json"]))

    def variant(name, meta_change=None, **arrays):
        m = json.loads(json.dumps(meta))
        if meta_change:
            meta_change(m)
        np.savez(tmp_path / name, **{**data, **arrays, "meta_json": np.array(json.dumps(m))})
        return tmp_path / f"{name}.npz"

    bad = {
        "no_image": variant("a", lambda m: m.pop("image")),
        "width_text": variant("b", lambda m: m["image"].update(width="wide")),
        "focal_scalar": variant("c", lambda m: m["camera"].update(focal_length=5)),
        "pp_short": variant("d", lambda m: m["camera"].update(principal_point=[1.0])),
        "names_number": variant("e", lambda m: m["body_model"].update(joint_names=123)),
        "names_23": variant("f", lambda m: m["body_model"]["joint_names"].pop()),
        "parents": variant("g", parents=np.zeros(24, np.int32)),
        "faces_range": variant("h", faces=data["faces"] + 10_000),
        "weights_sum": variant("i", lbs_weights=data["lbs_weights"] * 2),
        "index_2d": variant("j", person_index=data["person_index"][:, None]),
        "faces_float": variant("k", faces=data["faces"].astype(np.float32)),
    }
    for name, path in bad.items():
        with pytest.raises(reader.ResultReadError):
            reader.read_result(path)
    odd_people = variant("ok", lambda m: m.update(people="x"))  # only informative metadata
    assert [p.method for p in reader.read_result(odd_people).people] == ["unknown"] * 2


def test_reader_refuses_npz_bombs_huge_render_sizes_and_photos_elsewhere(results, tmp_path):
    """Hostile result files (issue 10): sizes come from the .npy headers before anything is
    allocated (run under an address-space limit in a subprocess: a 4 GB array would not fit),
    the metadata's image size cannot set an absurd render, and only image files in the result's
    folder or its parent are loaded as the camera photo."""
    data = dict(np.load(results["still"], allow_pickle=False))
    meta = json.loads(str(data["meta_json"]))
    case = tmp_path / "case" / "results"
    case.mkdir(parents=True)

    def variant(name, **changes):
        m = json.loads(json.dumps(meta))
        m["image"].update(changes)
        np.savez(case / name, **{**data, "meta_json": np.array(json.dumps(m))})
        return case / f"{name}.npz"

    bomb = write_npz_bomb(case / "bomb.npz", {k: v for k, v in data.items() if k != "vertices"},
                          "vertices", (2, 6890, 3, 24000))              # 4 GB of zeros, ~4 MB on disk
    assert bomb.stat().st_size < 8 * 2**20
    script = ("import resource, sys, importlib.util\n"
              "resource.setrlimit(resource.RLIMIT_AS, (1024 * 2**20, 1024 * 2**20))\n"
              f"spec = importlib.util.spec_from_file_location('r', {str(ADDON / 'reader.py')!r})\n"
              "r = importlib.util.module_from_spec(spec); sys.modules['r'] = r; spec.loader.exec_module(r)\n"
              "try:\n    r.read_result(sys.argv[1])\nexcept r.ResultReadError as e:\n    print('refused:', e)\n")
    proc = subprocess.run([sys.executable, "-c", script, str(bomb)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "refused: bomb.npz: array 'vertices' declares shape" in proc.stdout, \
        proc.stdout + proc.stderr

    reader = _load("reader")
    with pytest.raises(reader.ResultReadError, match=r"image size 1000000000x\d+ px is not a photo size"):
        reader.read_result(variant("huge", width=1_000_000_000))
    cam = reader.read_result(variant("passwd", path="/etc/passwd")).camera
    assert cam.image_path is None and "outside the result's folder" in cam.image_note
    elsewhere = tmp_path.parent / f"{tmp_path.name}_elsewhere.jpg"    # a real photo, outside
    shutil.copyfile(PHOTO, elsewhere)
    cam = reader.read_result(variant("elsewhere", path=str(elsewhere))).camera
    assert cam.image_path is None and "copy the photo next to the result" in cam.image_note
    (case / "notes.jpg").write_text("not an image")
    cam = reader.read_result(variant("fake", path="notes.jpg")).camera
    assert cam.image_path is None and "not an image file" in cam.image_note
    shutil.copyfile(PHOTO, tmp_path / "case" / "photo.jpg")              # the result folder's parent
    for path in ("photo.jpg", str(tmp_path / "case" / "photo.jpg")):
        cam = reader.read_result(variant("parent", path=path)).camera
        assert cam.image_path == str((tmp_path / "case" / "photo.jpg").resolve()) and cam.image_note is None


def test_convert_is_the_documented_axis_change():
    convert = _load("convert")
    p = np.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(convert.cv_to_world(p, "Z", 1.0), [1, 3, -2])  # (x, z, -y)
    np.testing.assert_allclose(convert.body_to_world(p, "Z", 2.0), [2, -6, 4])  # (x, -z, y)
    np.testing.assert_allclose(convert.cv_to_world(p, "Y", 1.0), [1, -2, -3])
    np.testing.assert_allclose(convert.body_to_world(p, "Y", 1.0), p)
    # An upright person facing the camera (global_orient = 180 deg about x) has no root turn.
    np.testing.assert_allclose(convert.root_rotation(np.diag([1.0, -1, -1])), np.eye(3))
    with pytest.raises(ValueError, match="up axis"):
        convert.up_matrix("X")


# --- tests: in Blender -----------------------------------------------------------------

def test_blender_imports_still_with_camera_and_glb_roundtrip(results, tmp_path):
    report = run_blender("still", {"path": results["still"], "glb": str(tmp_path / "x.glb"),
                                   "image": str(PHOTO)}, tmp_path)
    V = results["still_result"].lbs_weights.shape[0]
    _assert_still(report, people=2, vertices=V, vertex_tol_mm=1.0)
    # Both people were made upright and facing the camera.
    assert all(p["upright"] and p["facing_camera"] for p in report["persons"])
    assert report["select_person"]
    panel = report["panel"]
    assert panel["props_exist"] and panel["import_keys_are_operator_props"]
    assert panel["import_runs_without_file_browser"]
    assert panel["import_filepath"] == results["still"] and panel["import_people"] == "3"
    assert panel["select_buttons"] == ["DeforHMR_P0", "DeforHMR_P3"]
    assert report["background_image"] == results["photo"]
    assert report["camera_is_scene_camera"]
    # Y up and scale 2: same bodies, other axes.
    assert report["y_up"]["joint_error_mm"] < 1.0 and report["y_up"]["head_above_pelvis"]
    assert report["y_up"]["pelvis_projection_px"] < 2.0
    glb = report["glb"]
    assert glb["armatures"] == 2 and glb["bone_names_ok"]
    assert glb["mesh_vertices"] == [V, V]
    assert glb["joint_error_mm"] < 1.0
    assert report["people_option"]["imported"] == [3]
    assert report["people_option"]["absent_error"]
    assert report["people_option"]["absent_leaked"] == {}


def test_blender_sequence_is_one_animated_rig_per_person(results, tmp_path):
    report = run_blender("sequence", {"paths": results["sequence"]}, tmp_path)
    assert report["armatures"] == 2
    for person in report["persons"]:
        assert person["keyed_frames"] == [1, 2, 3]
        assert person["channels_per_frame"] >= 24 * 4 + 3
        assert person["joint_error_mm"] < 1.0  # on every frame, matched by person_index
    assert report["frame_range"] == [1, 3]


def test_blender_reports_bad_files_and_leaves_nothing(results, tmp_path):
    report = run_blender("bad", {"files": results["bad"], "good": results["still"]}, tmp_path)
    for name, (path, message) in results["bad"].items():
        case = report["cases"][name]
        assert case["cancelled_with_error"], (name, case)
        assert message in case["message"], (name, case["message"])
        assert case["leaked"] == {}, (name, case["leaked"])
    injected = report["injected_failure"]
    assert injected["cancelled_with_error"] and "nothing was imported" in injected["message"]
    assert injected["leaked"] == {}


def test_blender_installs_zip_as_extension_and_legacy_addon(results, tmp_path):
    zip_path = tmp_path / "deforhmr_importer.zip"
    subprocess.run([sys.executable, str(REPO / "tools" / "build_blender_addon_zip.py"),
                    "--out", str(zip_path)], check=True, capture_output=True)
    with zipfile.ZipFile(zip_path) as z:
        assert "deforhmr_importer/blender_manifest.toml" in z.namelist()
        assert "deforhmr_importer/__init__.py" in z.namelist()
    report = run_blender("install", {"zip": str(zip_path), "still": results["still"]}, tmp_path)
    assert report["extension"]["installed"] and report["extension"]["operator"]
    assert report["extension"]["imported_people"] == 2
    assert report["legacy"]["enabled"] and report["legacy"]["operator"]
    assert report["unregister_clean"]


def test_blender_imports_pipeline_result_on_real_photo(tmp_path):
    """The real job on a real photo (HMRPipeline, no checkpoint: fit to keypoints)."""
    from deforhmr_model.pipeline import HMRPipeline
    photo = tmp_path / PHOTO.name
    shutil.copyfile(PHOTO, photo)
    result = HMRPipeline(model="none", device="cpu")(photo)
    assert result.people, "the pipeline found nobody in the photo"
    npz, _ = save_result(result, tmp_path / "photo")
    report = run_blender("still", {"path": str(npz), "image": str(photo)}, tmp_path)
    _assert_still(report, people=len(result.people), vertices=result.lbs_weights.shape[0],
                  vertex_tol_mm=30.0)  # pose correctives (posedirs) are not in Blender
    assert report["background_image"] == str(photo.resolve())


def test_blender_places_bodies_on_ground_and_fbx_exports_one_action_per_rig(results, tmp_path):
    """Placement "At Origin, on Ground": without a ground plane the pelvis goes above the origin and
    the lowest foot point to z = 0 (a sequence keeps its motion); with the result's ground plane
    every vertex's z is its height above that floor. Blender's FBX export (default options) of a
    two-rig sequence, imported into an empty file, holds one action per rig."""
    import dataclasses
    still = results["still_result"]
    n = np.array([0.12, -0.97, 0.2])
    n /= np.linalg.norm(n)
    d = 0.9 - float(still.people[0].joints[0] @ n)  # first person's pelvis 0.9 m above a tilted floor
    ground, _ = save_result(dataclasses.replace(still, ground_plane={"normal": n.tolist(), "offset": d,
                                                                      "num_people": 2, "source": "feet"}),
                            results["root"] / "with_ground")
    report = run_blender("placement", {"sequence": results["sequence"], "ground": str(ground),
                                       "tmp": str(tmp_path)}, tmp_path)
    seq = report["sequence"]
    assert set(seq) == {"0", "3"}
    for person in seq.values():
        first = person["frames"][0]
        assert np.abs(first["pelvis"][:2]).max() < 1e-4 and first["pelvis"][2] > 0.5
        assert abs(first["lowest"]) < 0.01, first  # feet on the ground (LBS vs rigid feet: < 1 cm)
    p0 = [f["pelvis"][0] for f in seq["0"]["frames"]]
    assert np.allclose(np.diff(p0), 0.1, atol=1e-4), p0  # person 0 walks +0.1 m in x per frame: kept
    fbx = report["fbx"]
    assert len(fbx["armatures"]) == 2 and len(fbx["actions"]) == 2, fbx
    for rig in ("DeforHMR_P0", "DeforHMR_P3"):
        assert sum(rig in a for a in fbx["actions"]) == 1, fbx  # one take per rig, none cross-combined
    for index, person in report["ground"].items():
        assert np.abs(person["pelvis"][:2]).max() < 1e-4
        assert abs(person["pelvis"][2] - person["pelvis_height"]) < 1e-4
        assert person["height_error_mm"] < 1.0, person
    assert abs(report["ground"]["0"]["pelvis_height"] - 0.9) < 1e-6
