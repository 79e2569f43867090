"""Render Human Mesh: DEFORHMR_RESULTS over their IMAGE -> overlay IMAGE, body MASK, depth IMAGE."""
from __future__ import annotations

from . import host
from .handles import CATEGORY, RESULTS

VIEWS = ("camera", "side (90°)")


class RenderHumanMesh:
    """Draw the recovered bodies over the frames (software rasteriser, no OpenGL)."""

    DESCRIPTION = ("Overlay of the recovered meshes on each frame, a MASK of the pixels the bodies cover and "
                   "a depth picture (near = bright, background black) for depth ControlNets.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "image": ("IMAGE", {"tooltip": "The frames the results were recovered from (or a resized copy)"}),
            "results": (RESULTS, {"tooltip": "From Recover Human Mesh or Refine with 2D Pose"}),
            "alpha": ("FLOAT", {"default": 0.8, "min": 0.0, "max": 1.0, "step": 0.05,
                                "tooltip": "Opacity of the meshes in the overlay"}),
            "view": (list(VIEWS), {"default": "camera",
                                   "tooltip": "camera: as seen in the photo; side: turned 90° about the "
                                              "vertical axis (checks depth)"}),
        }}

    RETURN_TYPES = ("IMAGE", "MASK", "IMAGE")
    RETURN_NAMES = ("overlay", "mask", "depth")
    FUNCTION = "render"
    CATEGORY = CATEGORY

    def render(self, image, results, alpha=0.8, view="camera"):
        from deforhmr_model.files.render import render_overlay, render_side_view

        from .convert import NodeInputError, depth_to_image, frames_to_image, image_to_frames, masks_to_mask

        frames = image_to_frames(image)
        if len(results) != len(frames):
            raise NodeInputError(f"results has {len(results)} frame(s) but image has {len(frames)}; "
                                 "connect the IMAGE the results were recovered from")
        device = host.torch_device("auto")
        pbar = host.progress_bar(len(frames))
        overlays, masks, depths = [], [], []
        for frame, result in zip(frames, results):
            host.check_interrupted()
            if view == "camera":
                r = render_overlay(frame, result, alpha=float(alpha), device=device)
            else:
                r = render_side_view(result, frame, alpha=float(alpha), device=device)
            overlays.append(r.overlay)
            masks.append(r.mask)
            depths.append(depth_to_image(r.depth))
            pbar.update(1)
        return (frames_to_image(overlays), masks_to_mask(masks), frames_to_image(depths))
