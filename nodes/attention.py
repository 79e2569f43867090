"""Attention Map: where the network's cross-attention looks (paper Fig. 1, 5), as IMAGEs."""
from __future__ import annotations

from . import host
from .handles import CATEGORY, MODEL, PEOPLE


class AttentionMap:
    """Sampling points (deformable models) or attention over the 16x12 token grid (regular
    models such as HMR 2.0) of one decoder layer and head, drawn per person."""

    DESCRIPTION = ("Draws where the decoder's cross-attention looks for each person: the deformable sampling "
                   "points (DeforHMR) or the attention weights over the 16x12 token grid (HMR 2.0), coloured by "
                   "weight, on the frame and on each person's network input. Needs a network checkpoint.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (MODEL, {"tooltip": "From Load DeforHMR Model (a network checkpoint, not 'none')"}),
                "image": ("IMAGE", {"tooltip": "The frames"}),
                "layer": ("INT", {"default": -1, "min": -64, "max": 63, "step": 1,
                                  "tooltip": "Decoder layer, 0-based; -1 = last"}),
                "head": ("INT", {"default": 0, "min": 0, "max": 63, "step": 1,
                                 "tooltip": "Cross-attention head, 0-based (def-m has 16, HMR 2.0 has 8)"}),
                "query": ("INT", {"default": -1, "min": -1, "max": 63, "step": 1,
                                  "tooltip": "Query token (def-m: 0-23 SMPL joints, 24 shape/camera); -1 = mean of all"}),
            },
            "optional": {
                "people": (PEOPLE, {"tooltip": "From Detect People; default: the shipped detector"}),
            },
        }

    RETURN_TYPES = ("IMAGE", "IMAGE")
    RETURN_NAMES = ("overlay", "crops")
    FUNCTION = "draw"
    CATEGORY = CATEGORY

    def draw(self, model, image, layer=-1, head=0, query=-1, people=None):
        import numpy as np
        from deforhmr_model.attention import draw_attention, draw_crop, person_attention

        from .convert import NodeInputError, frames_to_image, image_to_frames

        pipe = model.ready()
        if pipe.model is None:
            raise NodeInputError("attention maps need a network: choose a checkpoint (or 'download: hmr2') in "
                                 "Load DeforHMR Model instead of 'none'")
        frames = image_to_frames(image)
        if people is not None and len(people) != len(frames):
            raise NodeInputError(f"people has {len(people)} frame(s) but image has {len(frames)}; "
                                 "connect the same IMAGE to Detect People and Attention Map")
        pbar = host.progress_bar(len(frames))
        overlays, crops = [], []
        for i, frame in enumerate(frames):
            host.check_interrupted()
            dets = people.frames[i] if people is not None else pipe.detect(frame)
            try:
                maps = person_attention(pipe.model, frame, [np.asarray(d.bbox) for d in dets], layer=int(layer),
                                        head=int(head), query=None if int(query) < 0 else int(query))
            except ValueError as e:
                raise NodeInputError(str(e)) from None
            overlays.append(draw_attention(frame, maps, max_side=max(frame.shape[:2]), panel=False))
            for m in maps:
                crops.append(draw_crop(m))
            pbar.update(1)
        if not crops:
            crops = [np.zeros((512, 384, 3), np.uint8)]
        return (frames_to_image(overlays), frames_to_image(crops))

