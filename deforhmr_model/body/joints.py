"""Joint sets, keypoint layouts and joint regressors used by training and evaluation.

Layouts
-------
* **J24** — the 24 "ground-truth" joints of the SPIN/ProHMR data files (keys
  ``part`` (2D) and ``S`` (3D)): the 19 "J19" joints (LSP-14 + MPII pelvis and
  thorax + H36M spine, jaw, head) followed by five face points. The 44 joints
  of HMR 2.0 are the 25 OpenPose joints followed by J24[:19]
  (``hmr2_reference.md`` §5.2); :data:`J24_FROM_OPENPOSE` fills the face points
  from OpenPose slots.
* **H36M-17** — the output of ``J_regressor_h36m.npy`` (SPIN/CLIFF protocol).
* **SMPL-24** — the body model's own skeleton joints.

Joint regressors are user-supplied files (not redistributable): ``SMPL_to_J19.pkl``
(HMR 2.0 / ProHMR, also shipped by SPIN as ``J_regressor_extra.npy``) and
``J_regressor_h36m.npy`` (SPIN). Without ``SMPL_to_J19.pkl`` the J24 joints are
approximated from the skeleton (:data:`J24_FROM_SMPL24`; documented deviation,
fine for synthetic data that is labelled the same way, biased on real data).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

J24_NAMES = (
    "right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle",
    "right_wrist", "right_elbow", "right_shoulder", "left_shoulder", "left_elbow", "left_wrist",
    "neck_lsp", "head_top_lsp", "pelvis_mpii", "thorax_mpii", "spine_h36m", "jaw_h36m", "head_h36m",
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
)
#: J24 index of each joint after a horizontal flip (left <-> right).
J24_FLIP = (5, 4, 3, 2, 1, 0, 11, 10, 9, 8, 7, 6, 12, 13, 14, 15, 16, 17, 18, 19, 21, 20, 23, 22)
#: Training pelvis: the mid-point of the two hips (SPIN / CLIFF loss convention).
J24_HIPS = (2, 3)
#: J24 index -> SMPL-24 joint for the skeleton approximation (no J19 regressor).
J24_FROM_SMPL24 = {0: 8, 1: 5, 2: 2, 3: 1, 4: 4, 5: 7, 6: 21, 7: 19, 8: 17, 9: 16, 10: 18, 11: 20,
                   12: 12, 14: 0, 18: 15}
#: J24 face slots -> ``BodyModelData.face_vertex_ids`` keys.
J24_FACE = {19: "nose", 20: "left_eye", 21: "right_eye", 22: "left_ear", 23: "right_ear"}
#: J24 face slots -> OpenPose BODY_25 indices (nose 0, REye 15, LEye 16, REar 17, LEar 18).
J24_FROM_OPENPOSE = {19: 0, 20: 16, 21: 15, 22: 18, 23: 17}
#: SMPL-24 joint index after a horizontal flip.
SMPL24_FLIP = (0, 2, 1, 3, 5, 4, 6, 8, 7, 9, 11, 10, 12, 14, 13, 15, 17, 16, 19, 18, 21, 20, 23, 22)
#: The 14 LSP joints of the H36M-17 regressor output (SPIN's H36M_TO_J14).
H36M_TO_J14 = (6, 5, 4, 1, 2, 3, 16, 15, 14, 11, 12, 13, 8, 10)
#: HMR 2.0's 14 evaluation joints as J19 indices (44-joint indices 25..37 and 43).
J19_TO_LSP14 = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 18)


class RegressorFileError(ValueError):
    """A joint-regressor file exists but has the wrong content or shape."""


@dataclass(frozen=True)
class JointProtocol:
    """How evaluation joints are obtained from a mesh (``hmr2_reference.md`` §7).

    regressor: file name of the (rows, V) vertex regressor, or None for the
        body model's own ``J_regressor`` (SMPL-24).
    rows: number of regressed joints.
    select: indices of the evaluated joints among the ``rows``.
    pelvis: indices (among ``rows``) averaged to the pelvis used for alignment.
    """

    name: str
    regressor: str | None
    rows: int
    select: tuple[int, ...]
    pelvis: tuple[int, ...]
    description: str


PROTOCOLS = {
    "h36m14": JointProtocol("h36m14", "J_regressor_h36m.npy", 17, H36M_TO_J14, (0,),
                            "14 LSP joints from J_regressor_h36m, H36M pelvis (SPIN/CLIFF 3DPW protocol)"),
    "lsp14": JointProtocol("lsp14", "SMPL_to_J19.pkl", 19, J19_TO_LSP14, (14,),
                           "14 LSP joints from SMPL_to_J19, J19 pelvis (HMR 2.0 / 4D-Humans protocol)"),
    "smpl24": JointProtocol("smpl24", None, 24, tuple(range(24)), (1, 2),
                            "24 SMPL skeleton joints, mid-hip pelvis (EMDB-style protocol)"),
}


def safe_unpickle(data: bytes):
    """Load a pickle of numpy arrays/containers with :func:`deforhmr_model.body.smpl_io.safe_unpickle`'s
    allow-list (Python-2 pickles read as latin1). Raises ``SMPLFileError`` (a ValueError)."""
    from deforhmr_model.body.smpl_io import safe_unpickle as _safe
    return _safe(data, "<regressor/label pickle>")


def load_regressor(path: str | Path, rows: int, num_vertices: int | None = None) -> np.ndarray:
    """Read a joint regressor (``.pkl``, ``.npy`` or ``.npz``) as a dense float32 (rows, V) array.

    Raises:
        FileNotFoundError: the file does not exist.
        RegressorFileError: unreadable, or not of shape (rows, V) (V = ``num_vertices`` if given).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"joint regressor not found: {path}")
    try:
        if path.suffix == ".pkl":
            arr = safe_unpickle(path.read_bytes())
        elif path.suffix == ".npz":   # entries size-checked from their headers before reading
            from deforhmr_model.files.npz import read_npz
            z = read_npz(path)
            keys = [k for k in ("J_regressor", "regressor", "arr_0") if k in z] or list(z)
            arr = z[keys[0]]
        else:                         # memory-mapped: the declared shape is checked before a read
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - reported as one clear error
        raise RegressorFileError(f"{path}: cannot read the joint regressor ({exc})") from exc
    shape = tuple(arr.shape) if hasattr(arr, "shape") else np.shape(arr)   # before any dense copy
    if len(shape) != 2 or shape[0] != rows or (num_vertices is not None and shape[1] != num_vertices):
        want = f"({rows}, {num_vertices if num_vertices is not None else 'V'})"
        raise RegressorFileError(f"{path}: expected a joint regressor of shape {want}, got {shape}; "
                                 "use the regressor made for this body model (SMPL: 6890 vertices)")
    if hasattr(arr, "toarray"):
        arr = arr.toarray()
    return np.array(arr, dtype=np.float32)        # a copy: no memory map left open


class J24Regressor(nn.Module):
    """The J24 training joints of a posed body (``part``/``S`` layout of SPIN data).

    With ``j19`` (the SMPL_to_J19 regressor, (19, V)) joints 0-18 are regressed
    from the vertices as in HMR 2.0; without it they are taken from the
    skeleton where :data:`J24_FROM_SMPL24` defines them and masked otherwise.
    Face points 19-23 come from the body's ``face_vertex_ids``.

    Buffers: ``mask`` (24,) float — 1 for joints this regressor defines.
    """

    def __init__(self, face_vertex_ids: dict[str, int], j19: np.ndarray | None = None):
        super().__init__()
        self.register_buffer("j19", None if j19 is None else torch.as_tensor(j19, dtype=torch.float32),
                             persistent=False)
        self.face_ids = [int(face_vertex_ids[J24_FACE[i]]) for i in range(19, 24)]
        mask = torch.zeros(24)
        mask[19:] = 1
        if j19 is None:
            mask[list(J24_FROM_SMPL24)] = 1
        else:
            mask[:19] = 1
        self.register_buffer("mask", mask, persistent=False)
        select = torch.zeros(19, 24)  # skeleton approximation as a (19, 24) selection matrix
        for dst, src in J24_FROM_SMPL24.items():
            select[dst, src] = 1.0
        self.register_buffer("select", select, persistent=False)

    def forward(self, vertices: torch.Tensor, joints: torch.Tensor) -> torch.Tensor:
        """(B, V, 3) vertices and (B, 24, 3) SMPL joints (metres) -> (B, 24, 3) J24 joints.

        Undefined joints (``mask == 0``) are zeros.
        """
        if self.j19 is not None:
            body = torch.einsum("jv,bvc->bjc", self.j19.to(vertices.dtype), vertices)
        else:
            body = torch.einsum("jk,bkc->bjc", self.select.to(joints.dtype), joints)
        return torch.cat([body, vertices[:, self.face_ids]], dim=1)


def make_j24_regressor(body, j19_path: str | Path | None = None) -> J24Regressor:
    """The J24 regressor for a :class:`deforhmr_model.body.model.BodyModel`, best source first:

    1. ``j19_path`` (a ``SMPL_to_J19.pkl`` / ``J_regressor_extra.npy`` for this body);
    2. for SMPL (6890 vertices), ``SMPL_to_J19.pkl`` found in the weights folders;
    3. the body's own extra regressor named ``j19`` (a (19, V) array in its ``.npz``);
    4. the skeleton approximation (:data:`J24_FROM_SMPL24`), with a warning.

    Raises FileNotFoundError / RegressorFileError for a bad explicit path.
    """
    import logging
    from deforhmr_model.files.weights import find_file
    V = body.num_vertices
    if j19_path is None and V == 6890:
        j19_path = find_file("SMPL_to_J19.pkl", subdirs=("", "smpl"))
    if j19_path is not None:
        return J24Regressor(body.face_vertex_ids, load_regressor(j19_path, 19, V))
    if "j19" in getattr(body, "extra_names", ()):
        return J24Regressor(body.face_vertex_ids, getattr(body, "extra_j19").cpu().numpy())
    logging.getLogger("deforhmr").warning(
        "no J19 joint regressor for body %r: J24 training joints approximated from the skeleton "
        "(pass SMPL_to_J19.pkl for real datasets)", getattr(body, "id", "?"))
    return J24Regressor(body.face_vertex_ids)
