"""Recover Human Motion and Save Human Motion: an IMAGE batch as a video -> tracked, smoothed,
animated bodies (DEFORHMR_SEQUENCE) -> animated GLB, BVH per person, sequence result file."""
from __future__ import annotations

from . import host
from .handles import CATEGORY, MODEL, RESULTS, SEQUENCE

SMOOTHING = ("light", "strong", "off")
MOTION_FORMATS = ("glb + bvh + result", "glb (animated)", "bvh", "result (npz + json)")


class RecoverHumanMotion:
    """The frames of a video (an IMAGE batch, e.g. from Load Video) as one sequence."""

    DESCRIPTION = ("Treats the IMAGE batch as the frames of a video: follows each person across frames "
                   "(one id per person), fits each frame starting from the same person's previous frame "
                   "with one body shape per person, and smooths the motion over time (rotations on SO(3), "
                   "translation, depth). Outputs the sequence (for Save Human Motion) and per-frame results "
                   "whose person index is the track id (for Render / Save Human Mesh).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": (MODEL, {"tooltip": "From Load DeforHMR Model"}),
            "image": ("IMAGE", {"tooltip": "The video's frames in order (Load Video, or any IMAGE batch)"}),
            "fps": ("FLOAT", {"default": 24.0, "min": 1.0, "max": 240.0, "step": 0.001,
                              "tooltip": "Frame rate of the frames (Load Video's frame rate); sets the "
                                         "animation's frame times"}),
            "smoothing": (list(SMOOTHING), {"default": "light",
                                            "tooltip": "Temporal smoothing: light (about 0.07 s), strong "
                                                       "(0.15 s), off"}),
            "detect_every": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 10.0, "step": 0.1,
                                       "tooltip": "Seconds between full person detections (new people are "
                                                  "found then; in between people are followed); 0 = every frame"}),
        }, "optional": {
            "foot_lock": ("BOOLEAN", {"default": True,
                                      "tooltip": "Keep planted feet from sliding: the body is shifted along the "
                                                 "floor while a foot stands (the pose is unchanged)"}),
        }}

    RETURN_TYPES = (SEQUENCE, RESULTS)
    RETURN_NAMES = ("sequence", "results")
    OUTPUT_TOOLTIPS = ("Tracked people over the frames (Save Human Motion)",
                       "Per-frame results, person index = track id (Render Human Mesh, Save Human Mesh)")
    FUNCTION = "recover"
    CATEGORY = CATEGORY

    def recover(self, model, image, fps=24.0, smoothing="light", detect_every=0.5, foot_lock=True):
        from deforhmr_model.video.reader import ArraySource
        from deforhmr_model.video.sequence import SequenceConfig, frame_result, recover_sequence

        from .convert import NodeInputError, image_to_frames
        if smoothing not in SMOOTHING:
            raise NodeInputError(f"smoothing must be one of {', '.join(SMOOTHING)}, got {smoothing!r}")
        frames = image_to_frames(image)
        pipe = model.ready()
        pbar = host.progress_bar(len(frames))

        def progress(frame, n):
            pbar.update(1)
            host.check_interrupted()

        with host.autograd_allowed(pipe.model is None or pipe.refine):
            seq = recover_sequence(pipe, ArraySource(frames, fps=float(fps), name="comfyui"),
                                   SequenceConfig(smoothing=smoothing, detect_every=float(detect_every),
                                                  foot_lock=bool(foot_lock)),
                                   progress=progress)
            results = [frame_result(seq, pipe.body, i) for i in range(seq.num_frames)]
        return (seq, results)


class SaveHumanMotion:
    """Write the animated GLB (all people), one BVH per person and the sequence result file."""

    DESCRIPTION = ("Saves the motion into ComfyUI's output folder: one animated, skinned GLB with an SMPL rig "
                   "per person (plays in Blender, the 3D preview and glTF viewers), one BVH per person "
                   "(SMPL skeleton) and the sequence result (.npz + .json) that the DeforHMR Blender add-on "
                   "imports as animated rigs.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "sequence": (SEQUENCE, {"tooltip": "From Recover Human Motion"}),
            "filename_prefix": ("STRING", {"default": "deforhmr/motion",
                                           "tooltip": "Relative to ComfyUI's output folder"}),
            "format": (list(MOTION_FORMATS), {"default": MOTION_FORMATS[0],
                                              "tooltip": "What to write: the animated GLB, BVH per person, "
                                                         "the sequence result, or all three"}),
        }}

    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("model_file",)
    OUTPUT_TOOLTIPS = ("The animated GLB, relative to the output folder (for Preview 3D)",)
    FUNCTION = "save"
    OUTPUT_NODE = True
    CATEGORY = CATEGORY

    @classmethod
    def VALIDATE_INPUTS(cls, format, filename_prefix):
        from .save import check_save_inputs
        return check_save_inputs(format, filename_prefix, MOTION_FORMATS, "deforhmr/motion")

    def save(self, sequence, filename_prefix="deforhmr/motion", format=MOTION_FORMATS[0]):
        from deforhmr_model.video.sequence import write_sequence_outputs
        want = {"glb + bvh + result": ["npz", "glb", "bvh"], "glb (animated)": ["glb"], "bvh": ["bvh"],
                "result (npz + json)": ["npz"]}[format]
        W, H = sequence.image_size
        folder, name, counter, subfolder = host.save_path(filename_prefix, W, H)
        stem = f"{name}_{counter:05}_"
        saved = write_sequence_outputs(sequence, None, None, folder, stem, want)
        out_dir = host.output_directory()
        rel = [p.relative_to(out_dir).as_posix() if p.is_relative_to(out_dir) else str(p) for p in saved]
        glbs = [p for p in saved if p.suffix == ".glb"]
        meshes = [{"filename": p.name, "subfolder": subfolder, "type": "output"} for p in glbs]
        notes = [] if any(len(t.frames) for t in sequence.tracks) else ["no person was tracked; no GLB/BVH written"]
        model_file = next((r for r in rel if r.endswith(".glb")), "")
        text = "\n".join([f"saved {len(rel)} file(s):", *rel, *notes])
        return {"ui": {"3d": meshes, "text": [text], "files": rel}, "result": (model_file,)}
