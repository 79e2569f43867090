"""Checks run by ``.venv-blender/bin/python`` (real bpy): import results with the add-on,
measure the scene, write a JSON report. Driven by ``tests/test_blender_addon.py``.

Usage: python checks.py {still,sequence,video,bad,install,placement} ARGS.json OUT.json

Expected positions are computed here straight from the npz with the documented axis
change (README: OpenCV camera (x, y, z) -> Blender Z-up (x, z, -y); Y-up (x, -y, -z)),
independently of the add-on's ``convert`` module.
"""
from __future__ import annotations

import json
import os
import sys
import types
from pathlib import Path

import bpy
import numpy as np
from bpy_extras.object_utils import world_to_camera_view
from mathutils import Vector

REPO = Path(__file__).resolve().parents[2]
DATA_KINDS = ("objects", "meshes", "armatures", "cameras", "images", "actions", "collections")
TAG = "deforhmr_person_index"
AXES = {  # world = M @ x_opencv ; up component index ; bone rest rotation (body -> world)
    "Z": (np.array([[1, 0, 0], [0, 0, 1], [0, -1, 0]], float), 2,
          np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]], float)),
    "Y": (np.diag([1.0, -1.0, -1.0]), 1, np.eye(3)),
}


def main() -> None:
    command, args_path, out_path = sys.argv[1:4]
    args = json.loads(Path(args_path).read_text())
    bpy.ops.wm.read_factory_settings(use_empty=True)
    report = {"bpy_version": bpy.app.version_string}
    try:
        report.update(COMMANDS[command](args))
    finally:
        if _LOADED:  # also: bpy 4.2 crashes at exit while Python operators are registered
            _LOADED.pop().unregister()
    Path(out_path).write_text(json.dumps(report, indent=1))
    if bpy.app.version < (4, 3, 0):
        # bpy 4.2 (the module build) segfaults at interpreter exit after any glTF export,
        # reproduced with a one-triangle mesh and no add-on; the report is complete here.
        sys.stdout.flush()
        os._exit(0)


_LOADED = []


def load_addon():
    """Register the add-on from the repository folder (as a package ``blender_addon``)."""
    sys.path.insert(0, str(REPO))
    import blender_addon
    blender_addon.register()
    _LOADED.append(blender_addon)
    return blender_addon


def load_npz(path: str) -> dict:
    with np.load(path, allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    data["meta"] = json.loads(str(data.pop("meta_json")))
    return data


def counts() -> dict:
    return {k: len(getattr(bpy.data, k)) for k in DATA_KINDS}


def leaked(before: dict) -> dict:
    after = counts()
    return {k: after[k] - before[k] for k in DATA_KINDS if after[k] != before[k]}


def clear_scene() -> None:
    for kind in DATA_KINDS:
        coll = getattr(bpy.data, kind)
        for item in list(coll):
            coll.remove(item)


def imported_armatures() -> dict:
    return {int(o[TAG]): o for o in bpy.context.scene.objects
            if o.type == "ARMATURE" and TAG in o}


def posed_joints(arm, names) -> np.ndarray:
    """World positions (24, 3) of the pose bones' heads, after a depsgraph update."""
    bpy.context.view_layer.update()
    return np.array([tuple(arm.matrix_world @ arm.pose.bones[n].head) for n in names])


# --- still -----------------------------------------------------------------------------

def check_still(args: dict) -> dict:
    load_addon()
    data = load_npz(args["path"])
    scene = bpy.context.scene
    res = bpy.ops.import_scene.deforhmr(filepath=args["path"], create_camera=True)
    out = {"operator": sorted(res), **measure_still(data, "Z", 1.0)}
    cam = scene.camera
    bg = cam.data.background_images[0].image if cam and len(cam.data.background_images) else None
    out["background_image"] = str(Path(bpy.path.abspath(bg.filepath)).resolve()) if bg else None
    out["camera_is_scene_camera"] = bool(cam and cam.get("deforhmr_camera"))
    from blender_addon import panel
    out["panel_people"] = len(panel.imported_people(scene))
    out["panel"] = draw_panel(panel, scene, args["path"])
    arms = imported_armatures()
    first = arms[min(arms)]
    bpy.ops.deforhmr.select_person(object_name=first.name)
    out["select_person"] = (bpy.context.view_layer.objects.active == first
                            and all(o.select_get() for o in (first, *first.children)))
    if "glb" in args:
        out["glb"] = glb_roundtrip(args["glb"], data)
        clear_scene()
        scene.unit_settings.scale_length = 0.5  # 1 BU shows as 0.5 m: 4 BU per metre at scale 2
        bpy.ops.import_scene.deforhmr(filepath=args["path"], up_axis="Y", scale=2.0)
        out["y_up"] = {k: v for k, v in measure_still(data, "Y", 4.0)["persons"][0].items()
                       if k in ("joint_error_mm", "head_above_pelvis", "pelvis_projection_px")}
        scene.unit_settings.scale_length = 1.0
        clear_scene()
        bpy.ops.import_scene.deforhmr(filepath=args["path"], people="3", create_camera=False)
        out["people_option"] = {"imported": sorted(imported_armatures())}
        before = counts()
        try:
            bpy.ops.import_scene.deforhmr(filepath=args["path"], people="0, 7")
            absent_error = False
        except RuntimeError as e:
            absent_error = "[7]" in str(e)
        out["people_option"].update(absent_error=absent_error, absent_leaked=leaked(before))
    return out


class Layout:
    """Records what a panel's draw() puts in its layout (no UI exists in background mode)."""

    def __init__(self, log: list):
        self.log, self.use_property_split, self.enabled, self.operator_context = log, 0, 1, ""

    def column(self, **kwargs):
        return Layout(self.log)

    row = box = column

    def prop(self, data, key, **kwargs):
        self.log.append(("prop", key, key in data.bl_rna.properties.keys()))

    def label(self, **kwargs):
        self.log.append(("label", kwargs.get("text")))

    def operator(self, idname, **kwargs):
        props = types.SimpleNamespace()
        self.log.append(("operator", idname, props, self.operator_context))
        return props


def draw_panel(panel, scene, path: str) -> dict:
    """Draw the sidebar panel into a recorder; what would its buttons run?"""
    scene.deforhmr.filepath, scene.deforhmr.people = path, "3"
    log = []
    panel.VIEW3D_PT_deforhmr.draw(types.SimpleNamespace(layout=Layout(log)), bpy.context)
    ops = [e for e in log if e[0] == "operator"]
    op_props = bpy.ops.import_scene.deforhmr.get_rna_type().properties.keys()
    imp = next(e for e in ops if e[1] == "import_scene.deforhmr")
    return {"props_exist": all(e[2] for e in log if e[0] == "prop"),
            "import_keys_are_operator_props": all(k in op_props for k in vars(imp[2])),
            "import_runs_without_file_browser": imp[3] == "EXEC_DEFAULT",
            "import_filepath": imp[2].filepath, "import_people": imp[2].people,
            "select_buttons": sorted(e[2].object_name for e in ops
                                     if e[1] == "deforhmr.select_person")}


def measure_still(data: dict, up: str, scale: float) -> dict:
    scene = bpy.context.scene
    names = data["meta"]["body_model"]["joint_names"]
    to_world, up_index, rest_rot = AXES[up]
    W, H = data["meta"]["image"]["width"], data["meta"]["image"]["height"]
    arms = imported_armatures()
    persons = []
    for row, index in enumerate(data["person_index"].tolist()):
        arm = arms[index]
        heads = posed_joints(arm, names)
        expected = data["joints"][row] @ to_world.T * scale
        mesh_obj = next(o for o in arm.children if o.type == "MESH")
        mesh = mesh_obj.data
        bone_rest = max(np.abs(np.array(b.matrix_local.to_3x3()) - rest_rot).max()
                        for b in arm.data.bones)
        spine = heads[12] - heads[0]
        front = np.cross(heads[1] - heads[2], spine)  # body +X (left) x up = front
        proj = np.array([tuple(world_to_camera_view(scene, scene.camera, Vector(h)))
                         for h in heads]) if scene.camera else None
        px = (np.stack([proj[:, 0] * W, (1 - proj[:, 1]) * H], 1) if proj is not None
              else np.full((24, 2), np.inf))
        px_err = np.linalg.norm(px - data["joints_2d"][row], axis=1)
        verts = evaluated_vertices(mesh_obj)
        v_err = np.linalg.norm(verts - data["vertices"][row] @ to_world.T * scale, axis=1)
        persons.append({
            "person_index": index,
            "bone_names": [b.name for b in arm.data.bones],
            "bone_names_ok": sorted(b.name for b in arm.data.bones) == sorted(names),
            "num_bones": len(arm.data.bones),
            "num_vertices": len(mesh.vertices), "num_faces": len(mesh.polygons),
            "vertex_groups_ok": [g.name for g in mesh_obj.vertex_groups] == names,
            "smooth": all(p.use_smooth for p in mesh.polygons),
            "bone_rest_frame_error": float(bone_rest),
            "joint_error_mm": float(np.linalg.norm(heads - expected, axis=1).max() / scale * 1e3),
            "head_above_pelvis": bool(heads[15, up_index] > heads[0, up_index]),
            "upright": bool(spine[up_index] / np.linalg.norm(spine) > 0.5),
            "facing_camera": bool(np.dot(front, -heads[0]) > 0),
            "vertex_error_mm_mean": float(v_err.mean() / scale * 1e3),
            "vertex_error_mm_max": float(v_err.max() / scale * 1e3),
            "pelvis_projection_px": float(px_err[0]),
            "joints_projection_px_max": float(px_err.max()),
        })
    return {"people": len(arms), "persons": persons, "image_size": [W, H],
            "resolution": [scene.render.resolution_x, scene.render.resolution_y]}


def evaluated_vertices(obj) -> np.ndarray:
    """World positions (V, 3) of the deformed (armature-evaluated) mesh."""
    depsgraph = bpy.context.evaluated_depsgraph_get()
    evaluated = obj.evaluated_get(depsgraph)
    mesh = evaluated.to_mesh()
    co = np.empty(len(mesh.vertices) * 3)
    mesh.vertices.foreach_get("co", co)
    evaluated.to_mesh_clear()
    M = np.array(obj.matrix_world)
    return co.reshape(-1, 3) @ M[:3, :3].T + M[:3, 3]


def glb_roundtrip(path: str, data: dict) -> dict:
    """Export the scene to GLB, import it into an empty scene, compare rigs and joints."""
    names = data["meta"]["body_model"]["joint_names"]
    kwargs = {"filepath": path, "export_format": "GLB"}
    props = bpy.ops.export_scene.gltf.get_rna_type().properties.keys()
    if "export_rest_position_armature" in props:
        kwargs["export_rest_position_armature"] = False  # export the pose, not the rest
    bpy.ops.export_scene.gltf(**kwargs)
    clear_scene()
    bpy.ops.import_scene.gltf(filepath=path)
    arms = sorted((o for o in bpy.context.scene.objects if o.type == "ARMATURE"),
                  key=lambda o: o.name)
    meshes = sorted((o for o in bpy.context.scene.objects if o.type == "MESH"
                     and any(m.type == "ARMATURE" for m in o.modifiers)), key=lambda o: o.name)
    errors = []
    for row, index in enumerate(data["person_index"].tolist()):
        arm = next((a for a in arms if a.name.startswith(f"DeforHMR_P{index}")), None)
        if arm is None:
            errors.append(float("inf"))
            continue
        heads = posed_joints(arm, names)
        expected = data["joints"][row] @ AXES["Z"][0].T
        errors.append(float(np.linalg.norm(heads - expected, axis=1).max() * 1e3))
    return {"armatures": len(arms),
            "bone_names_ok": all(sorted(b.name for b in a.data.bones) == sorted(names)
                                 for a in arms),
            "mesh_vertices": [len(m.data.vertices) for m in meshes],
            "joint_error_mm": max(errors)}


# --- sequence --------------------------------------------------------------------------

def check_sequence(args: dict) -> dict:
    load_addon()
    paths = args["paths"]
    frames = [load_npz(p) for p in paths]
    names = frames[0]["meta"]["body_model"]["joint_names"]
    scene = bpy.context.scene
    bpy.ops.import_scene.deforhmr(filepath=paths[0], sequence=True, create_camera=False)
    arms = imported_armatures()
    persons = []
    for index, arm in sorted(arms.items()):
        fcurves = action_fcurves(arm)
        keyed = sorted({int(round(k.co[0])) for fc in fcurves for k in fc.keyframe_points})
        per_frame = sum(1 for fc in fcurves if any(round(k.co[0]) == 1 for k in fc.keyframe_points))
        errors = []
        for k, data in enumerate(frames):
            scene.frame_set(1 + k)
            row = data["person_index"].tolist().index(index)
            heads = posed_joints(arm, names)
            expected = data["joints"][row] @ AXES["Z"][0].T
            errors.append(np.linalg.norm(heads - expected, axis=1).max() * 1e3)
        persons.append({"person_index": index, "keyed_frames": keyed,
                        "channels_per_frame": per_frame, "joint_error_mm": float(max(errors)),
                        "joint_error_mm_per_frame": [float(e) for e in errors]})
    return {"armatures": len(arms), "persons": persons,
            "frame_range": [scene.frame_start, scene.frame_end]}


def action_fcurves(obj) -> list:
    """F-curves of an object's action: Blender 4.4+ slotted actions and older ones."""
    anim = obj.animation_data
    action = anim.action if anim else None
    if action is None:
        return []
    if getattr(action, "layers", None) and hasattr(anim, "action_slot"):
        channelbag = action.layers[0].strips[0].channelbag(anim.action_slot)
        return list(channelbag.fcurves) if channelbag else []
    return list(action.fcurves)


# --- video: the sequence file (add-on), the animated GLB and the BVH files -------------

def keyed_frames(objects) -> list[int]:
    return sorted({int(round(k.co[0])) for o in objects for fc in action_fcurves(o) for k in fc.keyframe_points})


def check_video(args: dict) -> dict:
    load_addon()
    data = load_npz(args["npz"])
    names = data["meta"]["body_model"]["joint_names"]
    M = AXES["Z"][0]
    scene = bpy.context.scene
    out = {}
    # 1. the add-on: one rig per track, scene fps and frame range from the video
    bpy.ops.import_scene.deforhmr(filepath=args["npz"], create_camera=False)
    arms = imported_armatures()
    errors = []
    for tid, arm in sorted(arms.items()):
        rows = np.flatnonzero(data["person_index"] == tid)
        for r in rows:
            scene.frame_set(1 + int(data["frame_index"][r]))
            errors.append(np.linalg.norm(posed_joints(arm, names) - data["joints"][r] @ M.T, axis=1).max() * 1e3)
    out["addon"] = {"armatures": sorted(arms), "fps": scene.render.fps / scene.render.fps_base,
                    "frame_range": [scene.frame_start, scene.frame_end],
                    "keyed_frames": {str(t): keyed_frames([a]) for t, a in arms.items()},
                    "joint_error_mm": float(max(errors))}
    # 2. the animated GLB through Blender's glTF importer
    clear_scene()
    scene.render.fps, scene.render.fps_base = int(round(data["meta"]["source"]["fps"])), 1.0
    bpy.ops.import_scene.gltf(filepath=args["glb"])
    gl_arms = [o for o in scene.objects if o.type == "ARMATURE"]
    errors, moved = [], []
    for tid in data["track_ids"].tolist():
        arm = next(a for a in gl_arms if f"p{tid}_pelvis" in a.pose.bones)
        owners = [arm, *([arm.parent] if arm.parent else [])]
        keyed = keyed_frames(owners)
        rows = np.flatnonzero(data["person_index"] == tid)
        heads = []
        for k, r in enumerate(rows):
            scene.frame_set(keyed[k])
            heads.append(posed_joints(arm, [f"p{tid}_{n}" for n in names]))
            errors.append(np.linalg.norm(heads[-1] - data["joints"][r] @ M.T, axis=1).max() * 1e3)
        moved.append(float(np.abs(heads[-1] - heads[0]).max()))
    out["glb"] = {"armatures": len(gl_arms), "joint_error_mm": float(max(errors)), "motion_m": moved}
    # 3. each BVH through Blender's BVH importer
    bvh = []
    for tid, path in args["bvh"].items():
        clear_scene()
        bpy.ops.import_anim.bvh(filepath=path, axis_forward="-Z", axis_up="Y", frame_start=1,
                                use_fps_scale=False, update_scene_fps=True, update_scene_duration=True)
        arm = next(o for o in scene.objects if o.type == "ARMATURE")
        rows = np.flatnonzero(data["person_index"] == int(tid))
        errs = []
        for r in rows:
            scene.frame_set(1 + int(data["frame_index"][r]) - int(data["frame_index"][rows[0]]))
            errs.append(np.linalg.norm(posed_joints(arm, names) - data["joints"][r] @ M.T, axis=1).max() * 1e3)
        bvh.append({"track": int(tid), "bones": len(arm.data.bones), "frames": [scene.frame_start, scene.frame_end],
                    "fps": scene.render.fps / scene.render.fps_base, "joint_error_mm": float(max(errs))})
    out["bvh"] = bvh
    return out


# --- bad files -------------------------------------------------------------------------

def attempt(**kwargs) -> dict:
    before = counts()
    try:
        result = bpy.ops.import_scene.deforhmr(**kwargs)
        case = {"cancelled_with_error": False, "message": f"returned {sorted(result)}"}
    except RuntimeError as e:  # how bpy surfaces an operator's ERROR report to scripts
        case = {"cancelled_with_error": str(e).startswith("Error"), "message": str(e)}
    case["leaked"] = leaked(before)
    return case


def check_bad(args: dict) -> dict:
    addon = load_addon()
    cases = {name: attempt(filepath=path) for name, (path, _) in args["files"].items()}
    builder = addon.builder
    original = builder._build_camera

    def camera_then_fail(*a, **k):  # fault injection: fail after rigs, camera and photo exist
        original(*a, **k)
        raise RuntimeError("injected failure")

    builder._build_camera = camera_then_fail
    try:
        injected = attempt(filepath=args["good"], create_camera=True)
    finally:
        builder._build_camera = original
    return {"cases": cases, "injected_failure": injected}


# --- install ---------------------------------------------------------------------------

def check_install(args: dict) -> dict:
    import addon_utils
    out = {}
    res = bpy.ops.extensions.package_install_files(
        filepath=args["zip"], repo="user_default", enable_on_install=True)
    module = "bl_ext.user_default.deforhmr_importer"
    out["extension"] = {"result": sorted(res),
                        "installed": module in bpy.context.preferences.addons,
                        "operator": hasattr(bpy.types, "IMPORT_SCENE_OT_deforhmr")}
    if "still" in args:
        bpy.ops.import_scene.deforhmr(filepath=args["still"])
        out["extension"]["imported_people"] = len(imported_armatures())
    addon_utils.disable(module)
    clean = not hasattr(bpy.types, "IMPORT_SCENE_OT_deforhmr") and not hasattr(
        bpy.types.Scene, "deforhmr")
    bpy.ops.extensions.package_uninstall(repo_index=1, pkg_id="deforhmr_importer")
    bpy.ops.preferences.addon_install(filepath=args["zip"])
    addon_utils.enable("deforhmr_importer", default_set=True)
    out["legacy"] = {"enabled": "deforhmr_importer" in bpy.context.preferences.addons,
                     "operator": hasattr(bpy.types, "IMPORT_SCENE_OT_deforhmr")}
    addon_utils.disable("deforhmr_importer")
    out["unregister_clean"] = clean and not hasattr(bpy.types, "IMPORT_SCENE_OT_deforhmr")
    return out


# --- placement and FBX -------------------------------------------------------------------

def body_of(arm):
    return next(o for o in arm.children if o.type == "MESH")


def check_placement(args: dict) -> dict:
    """Import with placement GROUND: a sequence (no ground plane) and a still with a ground plane;
    measure pelvis and feet; export the sequence with Blender's default FBX options and import
    it into an empty file."""
    load_addon()
    scene = bpy.context.scene
    out = {}
    bpy.ops.import_scene.deforhmr(filepath=args["sequence"][0], sequence=True, create_camera=False,
                                  placement="GROUND")
    names = load_npz(args["sequence"][0])["meta"]["body_model"]["joint_names"]
    seq = {}
    for index, arm in sorted(imported_armatures().items()):
        rows = []
        for k in range(len(args["sequence"])):
            scene.frame_set(1 + k)
            pelvis = posed_joints(arm, names)[0]
            rows.append({"pelvis": pelvis.tolist(), "lowest": float(evaluated_vertices(body_of(arm))[:, 2].min())})
        seq[str(index)] = {"frames": rows, "action": arm.animation_data.action.name}
    out["sequence"] = seq
    fbx = str(Path(args["tmp"]) / "two_rigs.fbx")
    bpy.ops.export_scene.fbx(filepath=fbx)  # Blender's defaults (bake animation, all actions, NLA strips)
    clear_scene()
    bpy.ops.import_scene.fbx(filepath=fbx)
    arms = [o for o in bpy.context.scene.objects if o.type == "ARMATURE"]
    out["fbx"] = {"actions": sorted(a.name for a in bpy.data.actions),
                  "armatures": sorted(o.name for o in arms),
                  "assigned": sorted(o.animation_data.action.name for o in arms
                                     if o.animation_data and o.animation_data.action)}
    clear_scene()
    bpy.ops.import_scene.deforhmr(filepath=args["ground"], create_camera=False, placement="GROUND")
    data = load_npz(args["ground"])
    gp = data["meta"]["ground_plane"]
    n, d = np.array(gp["normal"]), float(gp["offset"])
    ground = {}
    for index, arm in sorted(imported_armatures().items()):
        row = data["person_index"].tolist().index(index)
        world = evaluated_vertices(body_of(arm))
        heights = data["vertices"][row] @ n + d  # each vertex's height above the result's floor
        ground[str(index)] = {"pelvis": posed_joints(arm, names)[0].tolist(),
                              "pelvis_height": float(data["joints"][row][0] @ n + d),
                              "height_error_mm": float(np.abs(world[:, 2] - heights).max() * 1e3)}
    out["ground"] = ground
    return out


COMMANDS = {"still": check_still, "sequence": check_sequence, "video": check_video, "bad": check_bad,
            "install": check_install, "placement": check_placement}

if __name__ == "__main__":
    main()
