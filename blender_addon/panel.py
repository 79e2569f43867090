"""Sidebar panel (3D Viewport > N > DeforHMR): import options and the imported people."""

import bpy

from .builder import TAG
from .operators import DEFORHMR_OT_select_person, IMPORT_SCENE_OT_deforhmr
from .properties import OPTION_KEYS


class VIEW3D_PT_deforhmr(bpy.types.Panel):
    bl_label = "DeforHMR"
    bl_idname = "VIEW3D_PT_deforhmr"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "DeforHMR"

    def draw(self, context):
        layout = self.layout
        settings = context.scene.deforhmr
        col = layout.column()
        col.use_property_split = True
        col.prop(settings, "filepath")
        for key in OPTION_KEYS:
            if key != "frame_start" or settings.sequence:
                col.prop(settings, key)
        row = layout.row()
        row.enabled = bool(settings.filepath)
        row.operator_context = "EXEC_DEFAULT"
        op = row.operator(IMPORT_SCENE_OT_deforhmr.bl_idname, text="Import", icon="IMPORT")
        op.filepath = bpy.path.abspath(settings.filepath)
        for key in OPTION_KEYS:
            setattr(op, key, getattr(settings, key))

        box = layout.box()
        people = imported_people(context.scene)
        box.label(text=f"Imported people: {len(people)}")
        for obj in people:
            row = box.row(align=True)
            row.label(text=f"{obj.name}  (person {obj[TAG]})", icon="ARMATURE_DATA")
            op = row.operator(DEFORHMR_OT_select_person.bl_idname, text="",
                              icon="RESTRICT_SELECT_OFF")
            op.object_name = obj.name


def imported_people(scene) -> list:
    """Armature objects of ``scene`` tagged by the importer, sorted by name."""
    return sorted((o for o in scene.objects if o.type == "ARMATURE" and TAG in o),
                  key=lambda o: o.name)
