"""Import options, shared by the import operator and the sidebar panel's scene settings."""

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, IntProperty, StringProperty

from . import convert

UP_AXIS_ITEMS = (
    ("Z", "Z Up", "Blender's convention: people stand on +Z, the photo's camera at the "
     "origin looks along +Y"),
    ("Y", "Y Up", "Y-up world (OpenGL/glTF style): people stand on +Y, the photo's camera "
     "at the origin looks along -Z"),
)
assert tuple(i[0] for i in UP_AXIS_ITEMS) == convert.UP_AXES


class ImportOptions:
    """Mixin: the options of one import (see ``builder.ImportSettings``)."""

    people: StringProperty(
        name="People", default="all",
        description="'all', or a comma list of person indices to import, e.g. '0, 2'")
    scale: FloatProperty(
        name="Scale", default=1.0, min=1e-4, max=1e4, soft_min=0.01, soft_max=100.0,
        description="Size factor on top of the scene's unit scale "
                    "(1 = real size: 1 m in the result shows as 1 m in Blender)")
    up_axis: EnumProperty(
        name="Up Axis", items=UP_AXIS_ITEMS, default="Z",
        description="World axis the people stand along")
    create_camera: BoolProperty(
        name="Create Camera", default=True,
        description="Add the photo's camera (focal length, principal point, image size as "
                    "scene resolution) with the photo as background image, and make it "
                    "the scene camera")
    placement: EnumProperty(
        name="Placement", default="CAMERA", items=(
            ("CAMERA", "As Photographed", "Each body where the photo's camera saw it (camera at the origin)"),
            ("GROUND", "At Origin, on Ground", "Each body at the world origin with its feet on the ground "
             "(the result's ground plane, else its lowest foot point); no camera distance baked in, for "
             "FBX/game-engine export. A sequence keeps its motion (first frame's placement)"),
        ),
        description="Where each body goes")
    sequence: BoolProperty(
        name="Image Sequence", default=False,
        description="Import every result (.npz) in the file's folder, in name order, as "
                    "frames of one animation; people are matched by person index")
    frame_start: IntProperty(
        name="Start Frame", default=1,
        description="Scene frame of the first result of a sequence")


class DeforHMRSceneSettings(ImportOptions, bpy.types.PropertyGroup):
    """Sidebar panel settings, saved with the .blend (``scene.deforhmr``)."""

    filepath: StringProperty(
        name="Result", subtype="FILE_PATH", default="",
        description="DeforHMR result file (.npz); for a sequence any file of the folder, "
                    "or the folder itself")


OPTION_KEYS = ("people", "scale", "up_axis", "placement", "create_camera", "sequence", "frame_start")
