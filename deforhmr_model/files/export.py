"""Exporters: posed OBJ per person, one skinned GLB for all people, and the npz/json result;
for a video, one animated skinned GLB for all tracks (:func:`export_animated_glb`).

Frame conversion (done here once, for every exported mesh file)
---------------------------------------------------------------
Results are in the OpenCV camera frame (x right, y down, z forward, metres;
``result.py``). OBJ and glTF consumers (Blender, Maya, three.js, glTF viewers)
expect Y up, and glTF's camera looks down -Z. The exporters map a camera-frame
point ``p`` to ``C p`` with ``C = diag(1, -1, -1)`` (a 180° rotation about x,
determinant +1, so triangle winding and handedness are kept). In that frame the
photo's camera sits at the origin looking down -Z with +Y up: exactly a glTF
camera with an identity transform, which the GLB includes.

GLB layout (glTF 2.0, written with pygltflib)
---------------------------------------------
Scene roots: ``camera`` (perspective, yfov from the focal length; glTF cannot
store an off-centre principal point), then for person ``k`` (``person_index``):

* ``p{k}`` — armature root node: rotation ``C`` (quaternion (1, 0, 0, 0) in
  glTF's x, y, z, w order), translation ``C @ transl``;
* ``p{k}_pelvis`` … ``p{k}_right_hand`` — 24 joint nodes in SMPL's tree
  (names from ``result.joint_names``): translation = rest offset from the
  parent joint (``rest_joints[j] - rest_joints[parent]``, the pelvis: its rest
  position), rotation = ``global_orient`` (pelvis) or ``body_pose[j-1]``;
* ``p{k}_body`` — the skinned mesh node (a scene root, no transform, as glTF
  requires): the bind-pose (T-pose, body frame, Y up, facing +Z) mesh
  ``rest_vertices`` with NORMAL, JOINTS_0/WEIGHTS_0 (u8 joint indices, f32
  weights: the 4 largest ``lbs_weights``) and, for bodies with more than 4
  influences on some vertex, JOINTS_1/WEIGHTS_1 (the next 4), renormalised to
  sum 1 over both sets; a pastel material (the renderer's
  colour), and a skin whose inverse bind matrices are ``T(-rest_joints[j])``
  and whose skeleton is ``p{k}``.

glTF skinning (``sum_j w_j * world(joint_j) * IBM_j``) then gives
``C (LBS(rest_vertices, pose) + transl) = C vertices``: the posed meshes of the
result in the Y-up frame, except for SMPL's pose-corrective blend shapes
(``posedirs``), which glTF skins cannot express (zero for the open body; a few
mm for SMPL), and for weights beyond the kept 8 (or 4) per vertex. Faces and
joint/weight sets are shared by all people; positions and normals are per
person (their betas differ).

Animated GLB (a :class:`~deforhmr_model.files.result.SequenceResult`)
--------------------------------------------------------------------
The same layout with one rig per track (``p{id}``, id = track id, posed as in the
track's first frame) plus one animation ``deforhmr`` holding, per track, a LINEAR
``rotation`` channel for each of the 24 joint nodes (``global_orient`` for the pelvis,
``body_pose`` for the others, unit quaternions sign-continuous over time), a LINEAR
``translation`` channel on the armature root (``C @ transl``), keyed at the frame times
of the video (seconds from the first frame) where the track was seen; and, for a track
absent from some frames, a STEP ``scale`` channel on the root (1 where seen, 0 elsewhere)
so that the person is hidden while not tracked.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from deforhmr_model.files.atomic import atomic_write
from deforhmr_model.files.result import ImageResult, save_result

__all__ = ["export_obj", "export_glb", "export_result", "ExportError", "to_y_up", "Y_UP",
           "EXPORT_FORMATS", "export_animated_glb"]

Y_UP = np.diag([1.0, -1.0, -1.0])  # OpenCV camera frame -> Y-up (glTF/OBJ) frame
EXPORT_FORMATS = ("npz", "obj", "glb")

# glTF enums
_FLOAT, _U8, _U16, _U32 = 5126, 5121, 5123, 5125
_ARRAY_BUFFER, _ELEMENT_ARRAY_BUFFER = 34962, 34963


class ExportError(ValueError):
    """An export request that cannot be written (unknown format, malformed result)."""


def to_y_up(points: np.ndarray) -> np.ndarray:
    """(..., 3) camera-frame (OpenCV) points to the exporters' Y-up frame, ``(x, -y, -z)``."""
    return np.asarray(points) * np.array([1.0, -1.0, -1.0], dtype=np.asarray(points).dtype)


def export_obj(result: ImageResult, folder: str | os.PathLike, stem: str) -> list[Path]:
    """Write one posed OBJ per person: ``<folder>/<stem>_person<k>.obj`` (k = person_index).

    Vertices are the result's posed camera-frame vertices converted to the Y-up frame
    (module docstring), metres; faces as in the result (counter-clockwise outside), with
    vertex normals. Each file is written atomically.

    Returns:
        The paths written, in ``result.people`` order (empty when there are no people).
    Raises:
        OSError: folder missing or not writable.
    """
    import trimesh
    folder = Path(folder)
    paths = []
    for p in result.people:
        mesh = trimesh.Trimesh(vertices=to_y_up(np.asarray(p.vertices, np.float64)),
                               faces=np.asarray(result.faces), process=False)
        text = trimesh.exchange.obj.export_obj(mesh, include_normals=True, include_texture=False,
                                               header=f"deforhmr person {p.person_index}, "
                                                      f"metres, Y up (OpenCV camera frame x,-y,-z)")
        path = folder / f"{stem}_person{p.person_index}.obj"
        paths.append(atomic_write(path, lambda f, t=text: f.write(t.encode())))
    return paths


def export_glb(result: ImageResult, path: str | os.PathLike,
               colors: Sequence[Sequence[float]] | None = None, max_influences: int = 8) -> Path:
    """Write all people as skinned meshes with SMPL armatures into one GLB (module docstring).

    Args:
        result: the people; needs rest_vertices, rest_joints, lbs_weights, parents, faces.
        path: output ``.glb`` path (written atomically).
        colors: one RGB colour in [0, 1] per person; default the renderer's pastel colours.
        max_influences: joints per vertex kept, 8 (default) or 4. With 8, a second set
            JOINTS_1/WEIGHTS_1 is written only when some vertex has more than 4 weights (the
            open body has up to 6; Blender, Godot, Babylon.js read both sets; three.js reads
            the first and renormalises it). With 4, only JOINTS_0/WEIGHTS_0 (what every
            engine reads): the 4 largest weights renormalised, which moves the open body's
            multi-influence vertices by up to a few mm.
    Returns:
        ``path``.
    Raises:
        ExportError: inconsistent arrays (e.g. weights not (V, 24), parents not a tree).
        OSError: folder missing or not writable.
    """
    glb = _glb_bytes(build_glb(result, colors, max_influences))
    return atomic_write(Path(path), lambda f: f.write(glb))


def export_result(result: ImageResult, folder: str | os.PathLike, stem: str,
                  formats: Iterable[str] = EXPORT_FORMATS) -> list[Path]:
    """Write the result in several formats into ``folder``.

    ``npz`` -> ``<stem>.npz`` + ``<stem>.json`` (:func:`~deforhmr_model.files.result.save_result`),
    ``obj`` -> ``<stem>_person<k>.obj`` per person, ``glb`` -> ``<stem>.glb``.

    Returns:
        Every path written. Raises ExportError for an unknown format (before writing anything).
    """
    formats = list(formats)
    bad = [f for f in formats if f not in EXPORT_FORMATS]
    if bad:
        raise ExportError(f"unknown export format(s) {bad}; choose from {list(EXPORT_FORMATS)}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out: list[Path] = []
    if "npz" in formats:
        out.extend(save_result(result, folder / stem))
    if "obj" in formats:
        out.extend(export_obj(result, folder, stem))
    if "glb" in formats:
        out.append(export_glb(result, folder / f"{stem}.glb"))
    return out


# ----------------------------------------------------------------------------- glTF building

def build_glb(result: ImageResult, colors: Sequence[Sequence[float]] | None = None,
              max_influences: int = 8, animate=None):
    """The :class:`pygltflib.GLTF2` document of :func:`export_glb` (binary blob attached);
    ``animate(doc, blob)``, if given, adds animations before the buffer is closed."""
    import pygltflib as g
    from deforhmr_model import __version__
    from deforhmr_model.files.render import person_colors

    if max_influences not in (4, 8):
        raise ExportError(f"max_influences must be 4 or 8, got {max_influences}")
    faces, weights, parents, names = _check_body(result)
    cols = list(colors) if colors is not None else person_colors(len(result.people))
    if len(cols) < len(result.people):
        raise ExportError(f"colors: need one per person ({len(result.people)}), got {len(cols)}")
    doc = g.GLTF2(asset=g.Asset(version="2.0", generator=f"deforhmr {__version__}"))
    blob = _Blob(doc)
    W, H = result.image_size
    doc.cameras.append(g.Camera(name="camera", type="perspective", perspective=g.Perspective(
        yfov=float(2 * np.arctan(H / (2 * result.focal_length))), aspectRatio=float(W / H),
        znear=0.01)))
    doc.nodes.append(g.Node(name="camera", camera=0))
    scene_nodes = [0]
    if result.people:
        index_acc = blob.add(faces.astype(np.uint16 if faces.max() < 65535 else np.uint32).ravel(),
                             "SCALAR", _ELEMENT_ARRAY_BUFFER)
        skin_attrs = {}
        for i, (jn, wt) in enumerate(_skin_sets(weights, max_influences // 4)):
            skin_attrs[f"JOINTS_{i}"] = blob.add(jn, "VEC4", _ARRAY_BUFFER)
            skin_attrs[f"WEIGHTS_{i}"] = blob.add(wt, "VEC4", _ARRAY_BUFFER)
    for k, person in enumerate(result.people):
        scene_nodes += _add_person(doc, blob, person, cols[k], names, parents, faces,
                                   index_acc, skin_attrs)
    doc.scenes.append(g.Scene(name="deforhmr", nodes=scene_nodes))
    doc.scene = 0
    if animate is not None:
        animate(doc, blob)
    blob.finish()
    return doc


def export_animated_glb(seq, path: str | os.PathLike, colors: Sequence[Sequence[float]] | None = None,
                        max_influences: int = 8) -> Path:
    """Write a :class:`~deforhmr_model.files.result.SequenceResult` as one GLB: a skinned,
    animated SMPL rig per track (module docstring, "Animated GLB").

    Args:
        seq: the tracks (needs at least one track with one frame).
        path: output ``.glb`` (written atomically).
        colors: one RGB colour per track id (index = track id); default the renderer's colours.
        max_influences: as :func:`export_glb`.
    Returns:
        ``path``.
    Raises:
        ExportError: no tracks, or inconsistent arrays. OSError: folder not writable.
    """
    glb = _glb_bytes(build_animated_glb(seq, colors, max_influences))
    return atomic_write(Path(path), lambda f: f.write(glb))


def build_animated_glb(seq, colors=None, max_influences: int = 8):
    """The :class:`pygltflib.GLTF2` document of :func:`export_animated_glb`."""
    from types import SimpleNamespace

    from deforhmr_model.files.render import person_colors
    tracks = [t for t in seq.tracks if len(t.frames)]
    if not tracks:
        raise ExportError("the sequence has no tracked person; nothing to animate")
    rigs = [SimpleNamespace(  # the rig's rest state: the track's first frame
        person_index=int(t.track_id), rest_vertices=t.rest_vertices, rest_joints=t.rest_joints,
        global_orient=t.global_orient[0], body_pose=t.body_pose[0], transl=t.transl[0],
        score=float(np.mean(t.score)), method=t.method, betas=t.betas) for t in tracks]
    stand_in = SimpleNamespace(people=rigs, faces=seq.faces, lbs_weights=seq.lbs_weights,
                               parents=seq.parents, joint_names=seq.joint_names,
                               image_size=seq.image_size, focal_length=seq.focal_length)
    n_ids = max(t.track_id for t in tracks) + 1
    palette = list(colors) if colors is not None else person_colors(n_ids)
    if len(palette) < n_ids:
        raise ExportError(f"colors: need one per track id (0..{n_ids - 1}), got {len(palette)}")
    cols = [palette[t.track_id] for t in tracks]
    times_all = np.asarray(seq.frame_times, np.float64)

    def animate(doc, blob):
        import pygltflib as g
        anim = g.Animation(name="deforhmr", channels=[], samplers=[])
        J = len(seq.joint_names)

        def channel(node, path, times_acc, values, type_, interp="LINEAR"):
            out = blob.add(np.ascontiguousarray(values, np.float32), type_, None)
            anim.samplers.append(g.AnimationSampler(input=times_acc, output=out, interpolation=interp))
            anim.channels.append(g.AnimationChannel(sampler=len(anim.samplers) - 1,
                                                    target=g.AnimationChannelTarget(node=node, path=path)))

        names = [n.name for n in doc.nodes]
        for t in tracks:
            root = names.index(f"p{t.track_id}")
            first = root + 1   # joint nodes follow the root (_add_person)
            times = times_all[t.frames].astype(np.float32)
            t_acc = blob.add(times, "SCALAR", None, minmax=True)
            R = np.concatenate([np.asarray(t.global_orient)[:, None], np.asarray(t.body_pose)], 1)  # (N,24,3,3)
            q = _quat_xyzw(R.reshape(-1, 3, 3)).reshape(len(times), J, 4)
            for i in range(1, len(q)):   # sign continuity: q and -q are the same rotation
                flip = (q[i] * q[i - 1]).sum(-1) < 0
                q[i, flip] *= -1
            for j in range(J):
                channel(first + j, "rotation", t_acc, q[:, j], "VEC4")
            channel(root, "translation", t_acc, to_y_up(np.asarray(t.transl, np.float64)), "VEC3")
            seen = np.zeros(len(times_all), bool)
            seen[t.frames] = True
            if not seen.all():
                s_acc = blob.add(times_all.astype(np.float32), "SCALAR", None, minmax=True)
                scale = np.repeat(seen.astype(np.float32)[:, None], 3, 1)
                channel(root, "scale", s_acc, scale, "VEC3", "STEP")
        doc.animations.append(anim)

    return build_glb(stand_in, cols, max_influences, animate=animate)


def _add_person(doc, blob, person, color, names, parents, faces, index_acc,
                skin_attrs: dict[str, int]) -> list[int]:
    """Append one person's armature, mesh, skin and material; return its scene-root node ids."""
    import pygltflib as g
    tag = f"p{person.person_index}"
    rest_v = np.asarray(person.rest_vertices, np.float64)
    rest_j = np.asarray(person.rest_joints, np.float64)
    quats = _quat_xyzw(np.concatenate([np.asarray(person.global_orient)[None],
                                       np.asarray(person.body_pose)], 0))
    root = len(doc.nodes)
    doc.nodes.append(g.Node(name=tag, rotation=[1.0, 0.0, 0.0, 0.0],
                            translation=[float(x) for x in to_y_up(np.asarray(person.transl, np.float64))],
                            extras={"person_index": int(person.person_index), "score": float(person.score),
                                    "method": person.method,
                                    "betas": [float(b) for b in person.betas]}))
    first = len(doc.nodes)
    for j, name in enumerate(names):
        offset = rest_j[j] - (rest_j[parents[j]] if parents[j] >= 0 else 0.0)
        doc.nodes.append(g.Node(name=f"{tag}_{name}", translation=[float(x) for x in offset],
                                rotation=[float(x) for x in quats[j]]))
    doc.nodes[root].children = [first]
    for j in range(1, len(names)):
        doc.nodes[first + parents[j]].children.append(first + j)
    ibm = np.tile(np.eye(4), (len(names), 1, 1))
    ibm[:, :3, 3] = -rest_j
    ibm_acc = blob.add(ibm.transpose(0, 2, 1).reshape(-1, 16).astype(np.float32), "MAT4", None)
    doc.skins.append(g.Skin(name=f"{tag}_skin", inverseBindMatrices=ibm_acc, skeleton=root,
                            joints=list(range(first, first + len(names)))))
    doc.materials.append(g.Material(
        name=f"{tag}_material", doubleSided=False,
        pbrMetallicRoughness=g.PbrMetallicRoughness(
            baseColorFactor=[float(c) for c in color[:3]] + [1.0], metallicFactor=0.0,
            roughnessFactor=0.8)))
    pos_acc = blob.add(rest_v.astype(np.float32), "VEC3", _ARRAY_BUFFER, minmax=True)
    nrm_acc = blob.add(_vertex_normals(rest_v, faces), "VEC3", _ARRAY_BUFFER)
    attrs = g.Attributes(POSITION=pos_acc, NORMAL=nrm_acc, **skin_attrs)
    doc.meshes.append(g.Mesh(name=f"{tag}_body", primitives=[g.Primitive(
        attributes=attrs, indices=index_acc, material=len(doc.materials) - 1, mode=4)]))
    doc.nodes.append(g.Node(name=f"{tag}_body", mesh=len(doc.meshes) - 1, skin=len(doc.skins) - 1))
    return [root, len(doc.nodes) - 1]


class _Blob:
    """Accumulates accessor data into the GLB's single binary buffer (4-byte aligned views)."""

    def __init__(self, doc):
        self.doc, self.buf = doc, io.BytesIO()

    def add(self, arr: np.ndarray, type_: str, target: int | None, minmax: bool = False) -> int:
        import pygltflib as g
        arr = np.ascontiguousarray(arr)
        ctype = {np.dtype(np.float32): _FLOAT, np.dtype(np.uint8): _U8,
                 np.dtype(np.uint16): _U16, np.dtype(np.uint32): _U32}[arr.dtype]
        ncomp = {"SCALAR": 1, "VEC3": 3, "VEC4": 4, "MAT4": 16}[type_]
        offset = self.buf.tell()
        self.buf.write(arr.tobytes())
        self.buf.write(b"\0" * (-self.buf.tell() % 4))
        self.doc.bufferViews.append(g.BufferView(buffer=0, byteOffset=offset,
                                                 byteLength=arr.nbytes, target=target))
        flat = arr.reshape(-1, ncomp)
        acc = g.Accessor(bufferView=len(self.doc.bufferViews) - 1, componentType=ctype,
                         count=int(flat.shape[0]), type=type_)
        if minmax:
            acc.min = [float(x) for x in flat.min(0)]
            acc.max = [float(x) for x in flat.max(0)]
        self.doc.accessors.append(acc)
        return len(self.doc.accessors) - 1

    def finish(self) -> None:
        import pygltflib as g
        data = self.buf.getvalue()
        if not data:  # no people: a GLB without a BIN chunk
            return
        self.doc.buffers.append(g.Buffer(byteLength=len(data)))
        self.doc.set_binary_blob(data)


# ----------------------------------------------------------------------------- helpers

def _glb_bytes(doc) -> bytes:
    """GLB container of ``doc``; pygltflib always writes a BIN chunk, which must be omitted
    (and the empty buffer with it) when there is no binary data (glTF 2.0 §4.4.3)."""
    import struct
    if doc.buffers:
        return b"".join(doc.save_to_bytes())
    js = doc.gltf_to_json(separators=(",", ":"), indent=None).encode()
    js += b" " * (-len(js) % 4)
    return b"glTF" + struct.pack("<II", 2, 12 + 8 + len(js)) + struct.pack("<I", len(js)) + b"JSON" + js


def _check_body(result: ImageResult):
    faces = np.asarray(result.faces, np.int64)
    weights = np.asarray(result.lbs_weights, np.float64)
    parents = np.asarray(result.parents, np.int64)
    names = list(result.joint_names)
    J = len(parents)
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise ExportError(f"faces must be (F, 3), got {faces.shape}")
    if weights.ndim != 2 or weights.shape[1] != J or len(names) != J:
        raise ExportError(f"lbs_weights {weights.shape}, parents ({J},) and {len(names)} joint names "
                          "disagree; the result file is inconsistent")
    if parents[0] != -1 or any(not 0 <= parents[j] < j for j in range(1, J)):
        raise ExportError(f"parents must start with -1 and list each joint after its parent, "
                          f"got {parents.tolist()}")
    V = weights.shape[0]
    if faces.size and (faces.min() < 0 or faces.max() >= V):
        raise ExportError(f"face indices out of range for {V} vertices")
    for p in result.people:
        if np.asarray(p.rest_vertices).shape != (V, 3) or np.asarray(p.rest_joints).shape != (J, 3):
            raise ExportError(f"person {p.person_index}: rest_vertices/rest_joints must be ({V}, 3)/"
                              f"({J}, 3), got {np.shape(p.rest_vertices)}/{np.shape(p.rest_joints)}")
    return faces, weights, parents, names


def _skin_sets(weights: np.ndarray, max_sets: int = 1) -> list[tuple[np.ndarray, np.ndarray]]:
    """(V, J) weights -> [(JOINTS_n (V, 4) u8/u16, WEIGHTS_n (V, 4) f32)] for n < max_sets.

    Keeps the 4 * n largest weights (n = as many sets as the most-influenced vertex needs, at
    most ``max_sets``), renormalised so that each vertex's weights over all sets sum to 1
    (float32 rounding folded into its largest weight). Zero-weight slots point at joint 0
    (the validator's convention). A vertex with no positive weight is bound to the root.
    """
    w = np.clip(np.asarray(weights, np.float64), 0.0, None)
    need = int(np.ceil(max(1, (w > 0).sum(1).max(initial=1)) / 4))
    n = 4 * min(max_sets, need)
    idx = np.argsort(-w, axis=1, kind="stable")[:, :n]
    top = np.take_along_axis(w, idx, 1)
    orphan = top.sum(1) <= 0
    top[orphan, 0] = 1.0
    idx[orphan] = 0
    top = (top / top.sum(1, keepdims=True)).astype(np.float32)
    top[:, 0] += np.float32(1.0) - top.sum(1, dtype=np.float32)
    idx[top == 0] = 0
    dtype = np.uint8 if weights.shape[1] <= 256 else np.uint16
    return [(idx[:, i:i + 4].astype(dtype), np.ascontiguousarray(top[:, i:i + 4]))
            for i in range(0, n, 4)]


def _quat_xyzw(R: np.ndarray) -> np.ndarray:
    """(N, 3, 3) rotation matrices -> (N, 4) float64 unit quaternions in glTF's (x, y, z, w) order."""
    import torch
    from deforhmr_model.geometry.rotation import rotmat_to_quat_wxyz
    q = rotmat_to_quat_wxyz(torch.as_tensor(np.asarray(R, np.float64))).numpy()
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    return q[:, [1, 2, 3, 0]]


def _vertex_normals(v: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(V, 3) f32 unit vertex normals (trimesh's); (0, 1, 0) for vertices in no face."""
    import trimesh
    vn = np.asarray(trimesh.Trimesh(vertices=v, faces=faces, process=False).vertex_normals, np.float64)
    norm = np.linalg.norm(vn, axis=1, keepdims=True)
    vn = np.where(norm > 0.5, vn / np.maximum(norm, 1e-12), [0.0, 1.0, 0.0])
    return vn.astype(np.float32)
