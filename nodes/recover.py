"""Recover Human Mesh and Refine with 2D Pose: IMAGE + people -> DEFORHMR_RESULTS."""
from __future__ import annotations

from . import host
from .handles import CATEGORY, MODEL, PEOPLE, RESULTS


class RecoverHumanMesh:
    """One SMPL-format body per detected person, per frame (network, or a fit to the keypoints)."""

    DESCRIPTION = ("Recovers each person's 3D body (SMPL parameters, mesh, camera) in every frame. "
                   "Without a people input the default detector (MoveNet + BlazePose landmarks, shipped) runs with the model pipeline's settings.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (MODEL, {"tooltip": "From Load DeforHMR Model"}),
                "image": ("IMAGE", {"tooltip": "The frames the people were detected in"}),
                "frames_per_batch": ("INT", {"default": 4, "min": 1, "max": 256, "step": 1,
                                             "tooltip": "Frames whose people go through the network together "
                                                        "(more = faster on GPU, more memory)"}),
            },
            "optional": {
                "people": (PEOPLE, {"tooltip": "From Detect People; one entry per frame of image"}),
                "focal_length_px": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0e6, "step": 1.0,
                                              "tooltip": "Camera focal length in pixels; 0 = use field_of_view, "
                                                         "or if that is 0 too a standard 30 mm full-frame-"
                                                         "equivalent lens (ComfyUI images carry no EXIF)"}),
                "field_of_view": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 179.0, "step": 0.5,
                                            "tooltip": "Camera field of view in degrees across the longer "
                                                       "image side (used when focal_length_px is 0); 0 = standard"}),
            },
        }

    RETURN_TYPES = (RESULTS,)
    RETURN_NAMES = ("results",)
    FUNCTION = "recover"
    CATEGORY = CATEGORY

    def recover(self, model, image, frames_per_batch=4, people=None, focal_length_px=0.0, field_of_view=0.0):
        from deforhmr_model.geometry.camera import choose_camera

        from .convert import NodeInputError, image_to_frames

        frames = image_to_frames(image)
        if people is not None and len(people) != len(frames):
            raise NodeInputError(
                f"people has {len(people)} frame(s) but image has {len(frames)}; connect the same IMAGE "
                "to Detect People and Recover Human Mesh")
        if people is not None:
            for i, (f, size) in enumerate(zip(frames, people.sizes)):
                if tuple(size) != (f.shape[1], f.shape[0]):
                    raise NodeInputError(
                        f"frame {i}: people were detected on a {size[0]}x{size[1]} image but image is "
                        f"{f.shape[1]}x{f.shape[0]}; connect the same IMAGE to both nodes")
        pipe = model.ready()
        # one step per frame and stage (detection when no people input, then recovery), so that a
        # single photo also shows progress
        pbar = host.progress_bar(len(frames) * (1 if people is not None else 2))
        results = []
        step = int(frames_per_batch)
        for start in range(0, len(frames), step):
            host.check_interrupted()
            chunk = frames[start:start + step]
            if people is not None:
                dets = people.frames[start:start + step]
            else:
                dets = [pipe.detect(f) for f in chunk]
                pbar.update(len(chunk))
                host.check_interrupted()
            # ComfyUI runs nodes in inference mode; only the keypoint fit (no network) needs autograd
            cams = [choose_camera(f.shape[1], f.shape[0], float(focal_length_px) or None,
                                  float(field_of_view) or None) for f in chunk]
            with host.autograd_allowed(pipe.model is None or pipe.refine):
                results.extend(pipe.recover(chunk, dets, cams))
            pbar.update(len(chunk))
        return (results,)


class RefineWith2DPose:
    """Pull each recovered body towards its 2D keypoints (the paper's optional refinement)."""

    DESCRIPTION = ("2D pose-guided refinement: optimises each person's pose, shape and translation so that "
                   "the body's joints project onto the detected 2D keypoints, starting from the recovery.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": (MODEL, {"tooltip": "The model that produced the results (its body model is used)"}),
            "results": (RESULTS, {"tooltip": "From Recover Human Mesh"}),
        }}

    RETURN_TYPES = (RESULTS,)
    RETURN_NAMES = ("results",)
    FUNCTION = "refine"
    CATEGORY = CATEGORY

    def refine(self, model, results):
        pipe = model.ready()
        pbar = host.progress_bar(len(results))
        out = []
        for i, r in enumerate(results):
            host.check_interrupted()
            made_with = r.body_model.get("id")
            if made_with is not None and made_with != pipe.body_data.id:
                from .convert import NodeInputError
                raise NodeInputError(
                    f"results frame {i} was made with body model {made_with!r} but this model uses "
                    f"{pipe.body_data.id!r}; connect the model that produced the results")
            with host.autograd_allowed():
                out.append(pipe.refine_result(r))
            pbar.update(1)
        return (out,)
