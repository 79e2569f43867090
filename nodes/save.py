"""Save Human Mesh: DEFORHMR_RESULTS -> skinned GLB / OBJ / result files in ComfyUI's output folder."""
from __future__ import annotations

from . import host
from .handles import CATEGORY, RESULTS

FORMATS = ("glb (skinned)", "obj", "result (npz + json)", "glb + result", "all")


class SaveHumanMesh:
    """Write every frame's people with numbered names: ``<prefix>_00001_.glb`` (as core Save 3D Model),
    ``<prefix>_00001_person0.obj``, ``<prefix>_00001_.npz``/``.json``; ComfyUI's counter reads them all."""

    DESCRIPTION = ("Saves one file set per frame into ComfyUI's output folder: a skinned GLB with all people "
                   "(SMPL armature, opens in Blender and the 3D preview), OBJ meshes, and/or the result file "
                   "(.npz + .json) that the DeforHMR Blender add-on and `deforhmr` read.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "results": (RESULTS, {"tooltip": "From Recover Human Mesh or Refine with 2D Pose"}),
                "filename_prefix": ("STRING", {"default": "deforhmr/mesh",
                                               "tooltip": "Relative to ComfyUI's output folder; may contain "
                                                          "%date% style fields like Save Image"}),
                "format": (list(FORMATS), {"default": "glb + result",
                                           "tooltip": "glb: one skinned GLB per frame (all people, SMPL armature); "
                                                      "obj: one posed OBJ per person; result: .npz + .json"}),
            },
        }

    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("model_file",)
    OUTPUT_TOOLTIPS = ("First saved GLB, relative to the output folder (for Preview 3D)",)
    FUNCTION = "save"
    OUTPUT_NODE = True
    CATEGORY = CATEGORY

    @classmethod
    def VALIDATE_INPUTS(cls, format, filename_prefix):
        return check_save_inputs(format, filename_prefix, FORMATS, "deforhmr/mesh")

    def save(self, results, filename_prefix="deforhmr/mesh", format="glb + result"):
        from deforhmr_model.files.result import save_result

        want_glb = format in ("glb (skinned)", "glb + result", "all")
        want_obj = format in ("obj", "all")
        want_result = format in ("result (npz + json)", "glb + result", "all")
        W, H = results[0].image_size if results else (0, 0)
        folder, name, counter, subfolder = host.save_path(filename_prefix, W, H)
        saved, meshes, notes = [], [], []
        pbar = host.progress_bar(len(results))
        for i, result in enumerate(results):
            host.check_interrupted()
            stem = f"{name}_{counter:05}"
            counter += 1
            if result.people and want_glb:
                from deforhmr_model.files.export import export_glb
                path = export_glb(result, folder / f"{stem}_.glb")
                saved.append(path)
                meshes.append({"filename": path.name, "subfolder": subfolder, "type": "output"})
            if result.people and want_obj:
                from deforhmr_model.files.export import export_obj
                saved.extend(export_obj(result, folder, stem))
            if not result.people and (want_glb or want_obj):
                notes.append(f"frame {i}: no people, no mesh written")
            if want_result:
                saved.extend(save_result(result, folder / f"{stem}_"))
            pbar.update(1)
        out_dir = host.output_directory()
        rel = [p.relative_to(out_dir).as_posix() if p.is_relative_to(out_dir) else str(p) for p in saved]
        model_file = next((r for r in rel if r.endswith(".glb")), "")
        text = "\n".join([f"saved {len(rel)} file(s):", *rel, *notes])
        # "3d": the payload core Save 3D Model (SaveGLB) sends, one {filename, subfolder, type} per GLB
        return {"ui": {"3d": meshes, "text": [text], "files": rel}, "result": (model_file,)}


def check_save_inputs(format, filename_prefix, formats, example: str):
    """ComfyUI ``VALIDATE_INPUTS`` of the save nodes: True, or the message naming the fix."""
    if format not in formats:
        return f"format must be one of {', '.join(formats)}, got {format!r}"
    if not str(filename_prefix).strip():
        return f"filename_prefix is empty; give a name such as {example}"
    return True
