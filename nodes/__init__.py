"""DeforHMR ComfyUI nodes: thin adapters over :mod:`deforhmr_model` (V1 node API).

Importing this package is cheap: node classes only declare sockets; torch, numpy
and the library are imported when a node runs. See ``nodes/README.md``.
"""
from __future__ import annotations

import functools

from . import deps
from .attention import AttentionMap
from .detect import DetectPeople
from .loader import LoadDeforHMRModel
from .mesh import HumanMeshToMESH
from .pose import KeypointsToPoseKeypoint
from .recover import RecoverHumanMesh, RefineWith2DPose
from .render import RenderHumanMesh
from .save import SaveHumanMesh
from .sequence import RecoverHumanMotion, SaveHumanMotion

# node id -> (class, display name); ids are prefixed so they never collide with other packs.
_NODES = {
    "DeforHMRLoadModel": (LoadDeforHMRModel, "Load DeforHMR Model"),
    "DeforHMRDetectPeople": (DetectPeople, "Detect People (DeforHMR)"),
    "DeforHMRRecover": (RecoverHumanMesh, "Recover Human Mesh"),
    "DeforHMRRefine": (RefineWith2DPose, "Refine with 2D Pose"),
    "DeforHMRRender": (RenderHumanMesh, "Render Human Mesh"),
    "DeforHMRSave": (SaveHumanMesh, "Save Human Mesh"),
    "DeforHMRToMESH": (HumanMeshToMESH, "Human Mesh to MESH"),
    "DeforHMRToPoseKeypoint": (KeypointsToPoseKeypoint, "Keypoints to POSE_KEYPOINT"),
    "DeforHMRAttention": (AttentionMap, "Attention Map (DeforHMR)"),
    "DeforHMRRecoverMotion": (RecoverHumanMotion, "Recover Human Motion (video)"),
    "DeforHMRSaveMotion": (SaveHumanMotion, "Save Human Motion (animated GLB, BVH)"),
}


def _requirements_first(cls: type) -> type:
    """Make ``cls``'s FUNCTION raise the one-line missing-requirements message (with the pip
    command) before it runs, instead of a ModuleNotFoundError from deep inside the library."""
    fn = getattr(cls, cls.FUNCTION)
    if getattr(fn, "_deforhmr_guarded", False):
        return cls

    @functools.wraps(fn)
    def run(self, *args, **kwargs):
        deps.require()
        return fn(self, *args, **kwargs)

    run._deforhmr_guarded = True
    setattr(cls, cls.FUNCTION, run)
    return cls


NODE_CLASS_MAPPINGS = {k: _requirements_first(cls) for k, (cls, _) in _NODES.items()}
NODE_DISPLAY_NAME_MAPPINGS = {k: name for k, (_, name) in _NODES.items()}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
