"""Human Mesh to MESH: DEFORHMR_RESULTS -> ComfyUI's core MESH (for Save 3D Model / Preview 3D).

Core MESH (``comfy_api.latest._util.geometry_types.MESH``): ``vertices`` float32
(B, N, 3) and ``faces`` int (B, M, 3); core "Save 3D Model" (SaveGLB) writes one GLB
per batch entry. Our vertices are in the OpenCV camera frame (y down, z forward);
glTF viewers expect +Y up, so the vertices go through the exporters' one frame
conversion, :func:`deforhmr_model.files.export.to_y_up` (180° about x, as in our GLB).
"""
from __future__ import annotations

from .handles import CATEGORY, MESH, RESULTS

GROUPING = ("one mesh per person", "one mesh per frame (people merged)")
PLACEMENT = ("as in the photo (camera at origin)", "centred at origin")


class _FallbackMesh:
    """Same attributes as the core MESH, for hosts whose comfy_api has no real MESH class."""

    def __init__(self, vertices, faces):
        self.vertices = vertices
        self.faces = faces


def make_mesh(vertices, faces):
    """A core MESH object holding ``vertices`` (B,N,3) and ``faces`` (B,M,3)."""
    try:
        from comfy_api.latest._util import MESH as CoreMesh
        mesh = CoreMesh(vertices, faces)
        if getattr(mesh, "vertices", None) is vertices:  # a stand-in may ignore its arguments
            return mesh
    except Exception:  # ComfyUI < 0.3.4x (no MESH type) or a stand-in runtime
        pass
    return _FallbackMesh(vertices, faces)


class HumanMeshToMESH:
    """Hand the recovered bodies to ComfyUI's core 3D nodes."""

    DESCRIPTION = ("Converts the results to ComfyUI's core MESH (static triangle meshes, +Y up) so that "
                   "'Save 3D Model' and 'Preview 3D' work on them. For a rigged GLB use Save Human Mesh.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "results": (RESULTS, {"tooltip": "From Recover Human Mesh or Refine with 2D Pose"}),
            "grouping": (list(GROUPING), {"default": GROUPING[0],
                                          "tooltip": "Batch entries of the MESH: one per person (all frames) or "
                                                     "one per frame with its people merged (equal counts needed)"}),
            "placement": (list(PLACEMENT), {"default": PLACEMENT[0],
                                            "tooltip": "Keep the people where the camera saw them (metres, "
                                                       "several people stay apart), or centre each mesh"}),
        }}

    RETURN_TYPES = (MESH,)
    RETURN_NAMES = ("mesh",)
    FUNCTION = "convert"
    CATEGORY = CATEGORY

    def convert(self, results, grouping=GROUPING[0], placement=PLACEMENT[0]):
        import numpy as np
        import torch
        from deforhmr_model.files.export import to_y_up

        from .convert import NodeInputError

        verts, faces = [], []
        if grouping == GROUPING[0]:
            for r in results:
                for p in r.people:
                    verts.append(to_y_up(np.asarray(p.vertices, np.float32)))
                    faces.append(np.asarray(r.faces, np.int64))
        else:
            counts = {len(r.people) for r in results}
            if len(counts) > 1:
                raise NodeInputError(
                    f"grouping 'one mesh per frame' needs the same number of people in every frame, got "
                    f"{sorted(counts)}; use 'one mesh per person' or set max_people in Detect People")
            for r in results:
                if not r.people:
                    continue
                V = r.people[0].vertices.shape[0]
                verts.append(np.concatenate([to_y_up(np.asarray(p.vertices, np.float32)) for p in r.people]))
                faces.append(np.concatenate([np.asarray(r.faces, np.int64) + k * V for k in range(len(r.people))]))
        if not verts:
            raise NodeInputError("no people in any frame, so there is no mesh; check Detect People "
                                 "(lower its threshold) or the image")
        if placement == PLACEMENT[1]:
            verts = [v - 0.5 * (v.min(0) + v.max(0)) for v in verts]
        if len({v.shape for v in verts}) > 1 or len({f.shape for f in faces}) > 1:
            raise NodeInputError("the results use different body models, so their meshes cannot be batched; "
                                 "recover them with one model")
        return (make_mesh(torch.from_numpy(np.stack(verts)), torch.from_numpy(np.stack(faces))),)
