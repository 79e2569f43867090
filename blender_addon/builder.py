"""Create Blender objects from validated result data (:mod:`.reader`).

Per person: an armature object "DeforHMR_P<index>" (24 bones named after SMPL's
joints, heads at the rest joints, rest frames = the body frame so pose quaternions
are SMPL's rotations, see :mod:`.convert`) and a child mesh "DeforHMR_P<index>_body"
(rest vertices with the person's shape, vertex groups = skin weights, smooth shading,
an Armature modifier). Optionally the photo's camera. Everything goes into one new
collection; on any failure everything created so far is deleted again and
:class:`BuildError` is raised, so an import either completes or leaves no trace.

Positions are converted only by :mod:`.convert`. Data is written through bpy.data;
the single operator call is entering armature edit mode, which Blender offers only
as an operator (edit bones exist only there; the glTF importer does the same).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import bpy
import numpy as np
from mathutils import Matrix

from . import convert, placement
from .reader import CameraData, PersonData, ResultFrame

BONE_LENGTH_M = 0.1  # bones point along the body's +Y (up); their length is cosmetic
TAG = "deforhmr_person_index"  # custom property marking imported people (panel list)


class BuildError(Exception):
    """Building failed; nothing was left in the file. The message is meant for users."""


@dataclass(frozen=True)
class ImportSettings:
    """What to build. ``scale`` is Blender units per metre (already over the unit scale)."""

    people: frozenset[int] | None = None   # person_index values; None = everybody
    scale: float = 1.0
    up: str = "Z"                          # one of convert.UP_AXES
    create_camera: bool = True
    frame_start: int = 1                   # scene frame of the first result of a sequence
    placement: str = "CAMERA"              # one of placement.PLACEMENTS


@dataclass
class ImportSummary:
    armatures: list = field(default_factory=list)   # bpy Objects, one per person
    camera: object = None                           # bpy Object or None
    collection: object = None
    warnings: list[str] = field(default_factory=list)


def import_results(scene, frames: list[ResultFrame], settings: ImportSettings,
                   name: str) -> ImportSummary:
    """Build one rig per person of ``frames`` (one frame = a still; more = keyframed animation).

    People are matched across frames by ``person_index``.

    Raises:
        BuildError: a requested person is absent, or building failed (nothing is left).
    """
    tracks = _tracks(frames, settings.people)
    summary = ImportSummary(warnings=_sequence_warnings(frames, tracks))
    created = _Created()
    try:
        summary.collection = created.add(bpy.data.collections.new(f"DeforHMR {name}"))
        scene.collection.children.link(summary.collection)
        body = frames[0].body
        for index, track in tracks.items():
            frame_no, first = track[0]
            arm = _build_rig(summary.collection, body, first, settings, created)
            arm["deforhmr_source"] = frames[frame_no].path
            place = None
            if settings.placement == "GROUND":
                place = placement.ground_transform(first, body, frames[frame_no].ground_plane,
                                                   settings.up, settings.scale)
                arm.rotation_mode = "QUATERNION"
                arm.rotation_quaternion = Matrix(place[0].tolist()).to_quaternion()
            if len(frames) == 1:
                _pose(arm, first, body.joint_names, settings, place=place)
            else:
                _animate(arm, track, body.joint_names, settings, place)
            summary.armatures.append(arm)
        if settings.create_camera:
            summary.camera = _build_camera(summary.collection, frames[0].camera, settings,
                                           created, summary.warnings)
    except Exception as e:  # noqa: BLE001 - anything: undo, then one error for the user
        created.remove_all()
        raise BuildError(f"building the scene failed ({type(e).__name__}: {e}); "
                         "nothing was imported") from e
    _set_scene(scene, frames, settings, summary)
    return summary


def _tracks(frames: list[ResultFrame], wanted: frozenset[int] | None) -> dict[int, list]:
    """person_index -> [(frame number, PersonData)], in order of first appearance."""
    tracks: dict[int, list] = {}
    for k, frame in enumerate(frames):
        for person in frame.people:
            if wanted is None or person.person_index in wanted:
                tracks.setdefault(person.person_index, []).append((k, person))
    present = sorted({p.person_index for f in frames for p in f.people})
    if wanted is not None and not wanted <= set(present):
        raise BuildError(f"people {sorted(wanted - set(present))} are not in the result "
                         f"(person indices present: {present or 'none'})")
    if not tracks:
        raise BuildError("the result holds no people to import")
    return tracks


def _sequence_warnings(frames: list[ResultFrame], tracks: dict[int, list]) -> list[str]:
    warnings = []
    cams = {(f.camera.width, f.camera.height, round(f.camera.focal_length, 3)) for f in frames}
    if len(cams) > 1:
        warnings.append("camera differs between frames; the first frame's camera is used")
    for index, track in tracks.items():
        rest = np.stack([p.rest_joints for _, p in track])
        if np.abs(rest - rest[0]).max() > 0.01:
            warnings.append(f"person {index}: body shape changes between frames; "
                            "the first frame's shape is used")
    return warnings


# --- rig ------------------------------------------------------------------------------

def _build_rig(collection, body, person: PersonData, settings: ImportSettings,
               created: "_Created"):
    """Armature object (at the origin, not posed yet) with the skinned body mesh as its child."""
    name = f"DeforHMR_P{person.person_index}"
    arm = created.add(bpy.data.objects.new(name, created.add(bpy.data.armatures.new(name))))
    collection.objects.link(arm)
    arm.show_in_front = True
    heads = convert.body_to_world(person.rest_joints, settings.up, settings.scale)
    up_dir = convert.body_to_world(np.array([0.0, BONE_LENGTH_M, 0.0]), settings.up,
                                   settings.scale)
    with _edit_mode(arm):
        bones = []
        for j, joint in enumerate(body.joint_names):
            bone = arm.data.edit_bones.new(joint)
            bone.head, bone.tail = heads[j].tolist(), (heads[j] + up_dir).tolist()
            bone.roll = 0.0  # with the tail along the body's +Y: rest frame = body frame
            bone.use_deform = True
            if body.parents[j] >= 0:
                bone.parent = bones[body.parents[j]]
            bones.append(bone)
    for pb in arm.pose.bones:
        pb.rotation_mode = "QUATERNION"
    mesh_obj = _build_mesh(name + "_body", body, person, settings, created)
    collection.objects.link(mesh_obj)
    mesh_obj.parent = arm
    mesh_obj.modifiers.new("Armature", "ARMATURE").object = arm
    for obj in (arm, mesh_obj):
        obj[TAG] = person.person_index
    arm["deforhmr_method"] = person.method
    arm["deforhmr_betas"] = [float(b) for b in person.betas]
    return arm


def _build_mesh(name: str, body, person: PersonData, settings: ImportSettings,
                created: "_Created"):
    """Mesh object in armature space: rest vertices, faces, skin weights, smooth shading."""
    mesh = created.add(bpy.data.meshes.new(name))
    verts = convert.body_to_world(person.rest_vertices, settings.up, settings.scale)
    mesh.from_pydata(verts.tolist(), [], body.faces.tolist())
    if hasattr(mesh, "shade_smooth"):  # Blender 4.1+
        mesh.shade_smooth()
    else:
        mesh.polygons.foreach_set("use_smooth", [True] * len(mesh.polygons))
    mesh.update()
    obj = created.add(bpy.data.objects.new(name, mesh))
    weights = body.lbs_weights
    for j, joint in enumerate(body.joint_names):
        group = obj.vertex_groups.new(name=joint)
        for v in np.flatnonzero(weights[:, j] > 0).tolist():
            group.add((v,), float(weights[v, j]), "REPLACE")
    return obj


def _pose(arm, person: PersonData, names: tuple[str, ...], settings: ImportSettings,
          previous=None, place=None) -> list:
    """Set location and bone quaternions of ``arm`` from ``person``; returns the quaternions.

    ``previous`` (quaternions of the last key) flips signs for smooth interpolation; ``place``
    (``(R, shift)`` of :func:`.placement.ground_transform`) moves the rig: world' = R world - shift
    (the object's rotation is R).
    """
    location = convert.root_location(person.transl, person.rest_joints[0], settings.up, settings.scale)
    if place is not None:
        location = place[0] @ location - place[1]
    arm.location = location.tolist()
    rotations = [convert.root_rotation(person.global_orient), *person.body_pose]
    quats = []
    for j, (name, rot) in enumerate(zip(names, rotations)):
        pb = arm.pose.bones[name]
        q = Matrix(rot.tolist()).to_quaternion()
        if previous is not None:
            q.make_compatible(previous[j])
        pb.rotation_quaternion = q
        quats.append(q)
    return quats


def _animate(arm, track: list, names: tuple[str, ...], settings: ImportSettings, place) -> None:
    """Keyframe location and bone quaternions on each frame where the person appears.

    The rig gets its own action, named after it, which Blender's FBX export (default options:
    "All Actions") gives to this rig only: besides the transforms it keys a custom property that
    only this rig has (``deforhmr_take_P<index>``), so the action's channels do not all resolve
    on another rig and the exporter does not try it there (two rigs would otherwise export four
    cross-combined takes)."""
    take = f"deforhmr_take_{arm.name.removeprefix('DeforHMR_')}"
    arm[take] = 1.0
    previous = None
    for frame_no, person in track:
        frame = settings.frame_start + frame_no
        previous = _pose(arm, person, names, settings, previous, place)
        arm.keyframe_insert("location", frame=frame, group="Object Transforms")
        arm.keyframe_insert(f'["{take}"]', frame=frame, group="Object Transforms")
        for name in names:
            arm.pose.bones[name].keyframe_insert("rotation_quaternion", frame=frame, group=name)
    arm.animation_data.action.name = f"{arm.name}_motion"


class _edit_mode:
    """Context manager: ``arm`` in armature edit mode, back to object mode afterwards."""

    def __init__(self, arm):
        self.arm = arm

    def __enter__(self):
        layer = bpy.context.view_layer
        self.previous = layer.objects.active
        layer.objects.active = self.arm
        with bpy.context.temp_override(active_object=self.arm, object=self.arm):
            bpy.ops.object.mode_set(mode="EDIT")
        return self

    def __exit__(self, *exc):
        with bpy.context.temp_override(active_object=self.arm, object=self.arm):
            bpy.ops.object.mode_set(mode="OBJECT")
        bpy.context.view_layer.objects.active = self.previous
        return False


# --- camera and scene -----------------------------------------------------------------

def _build_camera(collection, camera: CameraData, settings: ImportSettings,
                  created: "_Created", warnings: list[str]):
    """The photo's camera at the world origin (rotation = up matrix), photo as background."""
    data = created.add(bpy.data.cameras.new("DeforHMR_camera"))
    intr = convert.camera_intrinsics(camera.focal_length, camera.principal_point,
                                     camera.width, camera.height)
    data.sensor_fit = "HORIZONTAL"
    data.sensor_width, data.lens = intr["sensor_width"], intr["lens"]
    data.shift_x, data.shift_y = intr["shift_x"], intr["shift_y"]
    data.clip_start, data.clip_end = 0.01 * settings.scale, 1000.0 * settings.scale
    obj = created.add(bpy.data.objects.new("DeforHMR_camera", data))
    collection.objects.link(obj)
    obj.matrix_world = Matrix(convert.up_matrix(settings.up).tolist()).to_4x4()
    obj["deforhmr_camera"] = True
    if camera.image_path:
        before = set(bpy.data.images)
        try:
            image = bpy.data.images.load(camera.image_path, check_existing=True)
        except RuntimeError as e:
            warnings.append(f"photo {Path(camera.image_path).name} not loaded ({e})")
        else:
            if image not in before:
                created.add(image)
            background = data.background_images.new()
            background.image = image
            data.show_background_images = True
    else:
        warnings.append(camera.image_note or "the result's photo was not found; camera has no background image")
    return obj


def _set_scene(scene, frames: list[ResultFrame], settings: ImportSettings,
               summary: ImportSummary) -> None:
    """Scene-wide settings, changed only after everything was built."""
    if summary.camera is not None:
        cam = frames[0].camera
        scene.render.resolution_x, scene.render.resolution_y = cam.width, cam.height
        scene.render.resolution_percentage = 100
        scene.render.pixel_aspect_x = scene.render.pixel_aspect_y = 1.0
        scene.camera = summary.camera
    fps = frames[0].fps
    if fps:   # a video sequence file: play at the video's rate (29.97 = 30 / 1.001)
        scene.render.fps = max(1, int(round(fps)))
        scene.render.fps_base = scene.render.fps / fps
    if len(frames) > 1:
        scene.frame_start = settings.frame_start
        scene.frame_end = settings.frame_start + len(frames) - 1
        scene.frame_set(settings.frame_start)


class _Created:
    """Datablocks created by one import, removed in reverse order on failure."""

    def __init__(self):
        self.items = []

    def add(self, datablock):
        self.items.append(datablock)
        return datablock

    def remove_all(self) -> None:
        actions = [o.animation_data.action for o in self.items
                   if isinstance(o, bpy.types.Object) and o.animation_data
                   and o.animation_data.action]
        for item in [*reversed(self.items), *actions]:
            try:
                getattr(bpy.data, _DATA[type(item).__name__]).remove(item)
            except (ReferenceError, RuntimeError):
                pass  # already gone with its owner


_DATA = {"Object": "objects", "Mesh": "meshes", "Armature": "armatures",
         "Camera": "cameras", "Image": "images", "Collection": "collections",
         "Action": "actions"}
