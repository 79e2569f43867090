"""DeforHMR importer for Blender: results of the DeforHMR pipeline as rigged SMPL bodies.

Installs as a Blender 4.2+ extension (``blender_manifest.toml``) or as a legacy add-on
on Blender 3.6-4.1 (``bl_info``). Layout like Blender's glTF importer: ``reader``
(numpy, no bpy) validates files, ``builder`` creates the objects, ``convert`` is the one
place for axes and units, ``operators``/``panel``/``properties`` are the thin UI.
"""
bl_info = {
    "name": "DeforHMR Importer",
    "author": "DeforHMR developers",
    "version": (0, 1, 0),
    "blender": (3, 6, 0),
    "location": "File > Import > DeforHMR result (.npz); 3D Viewport > Sidebar > DeforHMR",
    "description": "Import DeforHMR human mesh recovery results as posed, skinned SMPL "
                   "bodies with armatures and the photo's camera",
    "category": "Import-Export",
}

import bpy  # noqa: E402

from . import operators, panel, properties  # noqa: E402

classes = (
    properties.DeforHMRSceneSettings,
    operators.IMPORT_SCENE_OT_deforhmr,
    operators.DEFORHMR_OT_select_person,
    panel.VIEW3D_PT_deforhmr,
)


def register():
    for cls in classes:
        bpy.utils.register_class(cls)
    bpy.types.Scene.deforhmr = bpy.props.PointerProperty(type=properties.DeforHMRSceneSettings)
    bpy.types.TOPBAR_MT_file_import.append(operators.menu_import)


def unregister():
    bpy.types.TOPBAR_MT_file_import.remove(operators.menu_import)
    del bpy.types.Scene.deforhmr
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
