"""Operators: File > Import > DeforHMR result (.npz), and selecting an imported person."""

import os
import re
from pathlib import Path

import bpy
from bpy.props import CollectionProperty, StringProperty
from bpy_extras.io_utils import ImportHelper

from . import builder, convert, reader
from .properties import ImportOptions


class IMPORT_SCENE_OT_deforhmr(bpy.types.Operator, ImportHelper, ImportOptions):
    """Import DeforHMR results as posed, skinned SMPL bodies with armatures (and the camera)"""

    bl_idname = "import_scene.deforhmr"
    bl_label = "Import DeforHMR Result"
    bl_options = {"REGISTER", "UNDO", "PRESET"}

    filename_ext = ".npz"
    filter_glob: StringProperty(default="*.npz", options={"HIDDEN"})
    files: CollectionProperty(type=bpy.types.OperatorFileListElement,
                              options={"HIDDEN", "SKIP_SAVE"})
    directory: StringProperty(subtype="DIR_PATH", options={"HIDDEN", "SKIP_SAVE"})

    def draw(self, context):
        layout = self.layout
        layout.use_property_split = True
        for key in ("people", "scale", "up_axis", "placement", "create_camera", "sequence"):
            layout.prop(self, key)
        if self.sequence or len(self.files) > 1:
            layout.prop(self, "frame_start")

    def execute(self, context):
        keywords = self.as_keywords(ignore=("filter_glob", "files", "directory", "filepath"))
        try:
            paths = self._paths()
            summary = import_files(context, paths, **keywords)
        except (reader.ResultReadError, builder.BuildError) as e:
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        for warning in summary.warnings:
            self.report({"WARNING"}, warning)
        self.report({"INFO"}, f"DeforHMR: imported {len(summary.armatures)} people "
                              f"from {len(paths)} file(s)")
        return {"FINISHED"}

    def _paths(self) -> list[Path]:
        """The result files: the folder for a sequence, several picked files, or one file."""
        path = Path(bpy.path.abspath(self.filepath))
        if self.sequence or path.is_dir():
            return reader.list_sequence(path if path.is_dir() else path.parent)
        names = [f.name for f in self.files if f.name]
        if len(names) > 1:
            folder = Path(bpy.path.abspath(self.directory)) if self.directory else path.parent
            return sorted((folder / n for n in names),
                          key=lambda p: [int(t) if t.isdigit() else t.lower()
                                         for t in re.split(r"(\d+)", p.name)])
        return [path]


def import_files(context, paths: list[os.PathLike], *, people: str = "all", scale: float = 1.0,
                 up_axis: str = "Z", create_camera: bool = True, sequence: bool = False,
                 frame_start: int = 1, placement: str = "CAMERA") -> builder.ImportSummary:
    """Read ``paths`` (one still, or the frames of a sequence) and build them into the scene.

    ``sequence`` only chooses which files the operator collects; more than one path is
    always imported as an animation. Raises ResultReadError or BuildError (nothing built).
    """
    frames = reader.read_sequence(paths)
    settings = builder.ImportSettings(
        people=reader.parse_people(people),
        scale=convert.blender_units_per_metre(scale, context.scene.unit_settings.scale_length),
        up=up_axis, create_camera=create_camera, frame_start=frame_start, placement=placement)
    if context.mode != "OBJECT" and bpy.ops.object.mode_set.poll():
        bpy.ops.object.mode_set(mode="OBJECT")
    first = Path(paths[0])
    name = first.parent.name if len(paths) > 1 else first.stem
    summary = builder.import_results(context.scene, frames, settings, name)
    _select(context, summary.armatures)
    return summary


class DEFORHMR_OT_select_person(bpy.types.Operator):
    """Select an imported person (armature and body mesh) and make it active"""

    bl_idname = "deforhmr.select_person"
    bl_label = "Select Person"
    bl_options = {"REGISTER", "UNDO"}

    object_name: StringProperty(name="Object", description="Name of the person's armature")

    def execute(self, context):
        obj = context.scene.objects.get(self.object_name)
        if obj is None:
            self.report({"ERROR"}, f"no object named {self.object_name!r} in this scene")
            return {"CANCELLED"}
        _select(context, [obj, *obj.children])
        return {"FINISHED"}


def _select(context, objects: list) -> None:
    for obj in context.view_layer.objects:
        obj.select_set(False)
    for obj in objects:
        if obj.name in context.view_layer.objects:
            obj.select_set(True)
    if objects:
        context.view_layer.objects.active = objects[0]


def menu_import(self, context):
    self.layout.operator(IMPORT_SCENE_OT_deforhmr.bl_idname, text="DeforHMR result (.npz)")
