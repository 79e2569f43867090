"""The one result type of the pipeline and its versioned on-disk form.

Every stage downstream of the network/fit (exporters, renderer, ComfyUI nodes,
the Blender add-on, ``deforhmr`` itself) reads :class:`ImageResult`.

Frames and units
----------------
* Lengths in metres, angles in radians, image coordinates in pixels with the
  origin at the top-left corner of the top-left pixel.
* Camera frame: OpenCV (x right, y down, z forward). A pinhole camera with
  focal length ``focal_length`` (px) and principal point ``principal_point``
  (px) and no rotation sees the people; ``u = f * X / Z + cx``.
* Body frame (rest pose, ``rest_vertices``/``rest_joints``): SMPL's, Y up,
  the body facing +Z, +X the body's left; T-pose with identity joint frames.
* ``global_orient`` rotates the body frame into the camera frame about the root
  joint; ``vertices = LBS(rest, pose) + transl`` are camera-frame coordinates.

On disk (schema ``deforhmr.result`` version 2; version 1 files are still read)
------------------------------------------------------------------------------
Version 2 adds ``"kind"`` to the metadata: ``"image"`` (this section; the arrays are
exactly version 1's, and a file without ``kind`` is an image result) or ``"sequence"``
(:class:`SequenceResult`, tracked people over video frames; see :func:`save_sequence`).

``<stem>.npz`` holds every array below plus ``meta_json`` (a 0-d unicode
array with the metadata JSON); ``<stem>.json`` is the same metadata as a
readable sidecar. The npz alone is sufficient to rebuild the skinned bodies
(the Blender add-on reads only it, with numpy). Arrays (P = people, V =
vertices, F = faces, J = 24 joints):

================  =============  ===================================================
key               shape, dtype   meaning
================  =============  ===================================================
faces             (F, 3) int32   triangle vertex indices (counter-clockwise outside)
lbs_weights       (V, J) f32     linear-blend-skinning weights, rows sum to 1
parents           (J,) int32     kinematic tree, -1 for the root (pelvis)
betas             (P, 10) f32    shape coefficients of the body model
global_orient     (P, 3, 3) f32  root rotation, body frame -> camera frame
body_pose         (P, 23, 3, 3)  parent-relative rotations of joints 1..23 (f32)
global_orient_aa  (P, 3) f32     the same as axis-angle (radians)
body_pose_aa      (P, 23, 3) f32 the same as axis-angle (radians)
transl            (P, 3) f32     camera translation (metres), camera frame
rest_vertices     (P, V, 3) f32  T-pose vertices with the person's betas, body frame
rest_joints       (P, J, 3) f32  joints of the rest mesh, body frame
vertices          (P, V, 3) f32  posed vertices, camera frame (translation applied)
joints            (P, J, 3) f32  posed joints, camera frame (translation applied)
joints_2d         (P, J, 2) f32  ``joints`` projected into the image (px)
keypoints_2d      (P, 17, 3) f32 COCO-17 keypoints used (x px, y px, confidence)
keypoints_extra   (P, 6, 3) f32  heels, toes, hands used (``fitting.fit.EXTRA_NAMES``
                                 order; x px, y px, confidence; 0 = not seen). Optional:
                                 files written before it existed read back as zeros.
world_landmarks   (P, 33, 3) f32 BlazePose world landmarks the fit used (metres, origin
                                 between the hips, x right, y down, z away from the
                                 camera; zeros: none). Optional, as keypoints_extra.
bbox              (P, 4) f32     person box x1, y1, x2, y2 (px)
score             (P,) f32       detection score (user boxes: pose presence)
person_index      (P,) int32     person id, stable across frames when tracked
================  =============  ===================================================

Metadata (``meta_json`` / the sidecar) besides the per-person summary:

* ``camera``: ``model`` ("pinhole"), ``frame``, ``focal_length`` [fx, fy] px,
  ``principal_point`` [cx, cy] px, and (newer files) ``focal_source``: where the
  focal length came from (``user:focal``, ``user:fov``, ``exif:FocalLengthIn35mmFilm``,
  ``exif:FocalLength+FocalPlaneXResolution``, ``standard:30mm``; see
  :func:`deforhmr_model.geometry.camera.choose_camera`; "unknown" when absent) and
  ``focal_length_35mm``, the 35 mm-equivalent lens in mm (``f * 43.27 / diagonal``).
* ``ground_plane`` (newer files, may be null): the floor the people stand on, in the
  camera frame (OpenCV, metres): ``normal`` [nx, ny, nz] unit vector pointing up
  (out of the floor, towards the people; roughly -y for a level camera), ``offset``
  d in metres such that floor points X satisfy ``normal . X + d = 0`` (a body point's
  height above the floor is ``normal . X + d``), ``num_people`` whose feet defined it
  and ``source`` ("feet": fitted heels/toes/ankles of people whose feet are visible,
  normal from the people's mean up direction refined by the feet points). Null when no
  visible feet support it. Readers must treat it as optional.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from deforhmr_model.files.atomic import atomic_write

SCHEMA = "deforhmr.result"
SCHEMA_VERSION = 2
READ_VERSIONS = (1, 2)   # versions :func:`load_result` / :func:`load_sequence` read

PERSON_ARRAYS = (
    "betas", "global_orient", "body_pose", "global_orient_aa", "body_pose_aa", "transl",
    "rest_vertices", "rest_joints", "vertices", "joints", "joints_2d", "keypoints_2d",
    "bbox", "score", "person_index",
)
# Person arrays that files written before they existed lack; read back as zeros of this shape.
OPTIONAL_PERSON_ARRAYS = {"keypoints_extra": (6, 3), "world_landmarks": (33, 3)}
BODY_ARRAYS = ("faces", "lbs_weights", "parents")


class ResultFileError(ValueError):
    """A result file is missing, unreadable, or not a deforhmr result of a known version."""


@dataclass
class PersonResult:
    """One recovered person. Arrays are numpy, shapes as in the module table (no P axis)."""

    betas: np.ndarray            # (10,) f32
    global_orient: np.ndarray    # (3, 3) f32
    body_pose: np.ndarray        # (23, 3, 3) f32
    transl: np.ndarray           # (3,) f32 metres, camera frame
    rest_vertices: np.ndarray    # (V, 3) f32 body frame
    rest_joints: np.ndarray      # (24, 3) f32 body frame
    vertices: np.ndarray         # (V, 3) f32 camera frame
    joints: np.ndarray           # (24, 3) f32 camera frame
    joints_2d: np.ndarray        # (24, 2) f32 px
    keypoints_2d: np.ndarray     # (17, 3) f32 px + confidence
    bbox: np.ndarray             # (4,) f32 xyxy px
    keypoints_extra: np.ndarray = field(default_factory=lambda: np.zeros((6, 3), np.float32))  # (6,3)
    world_landmarks: np.ndarray = field(default_factory=lambda: np.zeros((33, 3), np.float32))  # (33,3) m
    score: float = 1.0
    person_index: int = 0
    method: str = "fit"          # "network:<variant>", "fit", "network:<variant>+refine"
    extras: dict[str, Any] = field(default_factory=dict)  # JSON-able per-person info (losses...)

    @property
    def global_orient_aa(self) -> np.ndarray:
        return _rotmat_to_aa(self.global_orient[None])[0]

    @property
    def body_pose_aa(self) -> np.ndarray:
        return _rotmat_to_aa(self.body_pose)


@dataclass
class ImageResult:
    """All people of one image plus the camera and the body model they were built with."""

    people: list[PersonResult]
    image_size: tuple[int, int]          # (width, height) px
    focal_length: float                  # px, both axes
    principal_point: tuple[float, float]  # (cx, cy) px
    faces: np.ndarray                    # (F, 3) int32
    lbs_weights: np.ndarray              # (V, 24) f32
    parents: np.ndarray                  # (24,) int32, -1 root
    joint_names: list[str]
    body_model: dict[str, Any]           # {"id", "name", "license", ...}
    image_path: str | None = None
    model: dict[str, Any] = field(default_factory=dict)  # {"name", "checkpoint"} or {}
    focal_source: str = "unknown"        # see the module docstring (camera.focal_source)
    ground_plane: dict[str, Any] | None = None  # {"normal": [3], "offset": m, ...} or None

    def metadata(self) -> dict[str, Any]:
        from deforhmr_model import __version__
        W, H = self.image_size
        return {
            "schema": SCHEMA,
            "version": SCHEMA_VERSION,
            "kind": "image",
            "created_by": f"deforhmr {__version__}",
            "units": {"length": "metres", "angle": "radians", "image": "pixels"},
            "image": {"path": self.image_path, "width": int(W), "height": int(H)},
            "camera": {
                "model": "pinhole", "frame": "opencv (x right, y down, z forward)",
                "focal_length": [float(self.focal_length)] * 2,
                "principal_point": [float(c) for c in self.principal_point],
                "focal_source": self.focal_source,
                "focal_length_35mm": float(self.focal_length) * float(np.hypot(36.0, 24.0))
                / float(np.hypot(W, H)),
            },
            "ground_plane": self.ground_plane,
            "body_model": {**self.body_model, "num_vertices": int(self.lbs_weights.shape[0]),
                           "num_joints": int(self.parents.shape[0]),
                           "joint_names": list(self.joint_names),
                           "parents": [int(p) for p in self.parents]},
            "model": self.model,
            "people": [
                {"index": int(p.person_index), "method": p.method, "score": float(p.score),
                 "bbox": [float(v) for v in p.bbox], "transl": [float(v) for v in p.transl],
                 "betas": [float(v) for v in p.betas], **p.extras}
                for p in self.people
            ],
        }

    def arrays(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {
            "faces": self.faces.astype(np.int32),
            "lbs_weights": self.lbs_weights.astype(np.float32),
            "parents": self.parents.astype(np.int32),
        }
        V, J = self.lbs_weights.shape
        empty = {"betas": (10,), "global_orient": (3, 3), "body_pose": (23, 3, 3),
                 "global_orient_aa": (3,), "body_pose_aa": (23, 3), "transl": (3,),
                 "rest_vertices": (V, 3), "rest_joints": (J, 3), "vertices": (V, 3),
                 "joints": (J, 3), "joints_2d": (J, 2), "keypoints_2d": (17, 3), "bbox": (4,),
                 "score": (), "person_index": ()}
        empty.update(OPTIONAL_PERSON_ARRAYS)
        for key in (*PERSON_ARRAYS, *OPTIONAL_PERSON_ARRAYS):
            vals = [np.asarray(getattr(p, key)) for p in self.people]
            dtype = np.int32 if key == "person_index" else np.float32
            out[key] = (np.stack(vals).astype(dtype) if vals
                        else np.zeros((0, *empty[key]), dtype))
        return out


def save_result(result: ImageResult, stem: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``<stem>.npz`` and ``<stem>.json`` atomically (temporary file + rename).

    Returns:
        (npz_path, json_path).
    Raises:
        OSError: if the folder is not writable (nothing partial is left behind).
    """
    return _save_npz_json(stem, result.metadata(), result.arrays())


def _save_npz_json(stem: str | os.PathLike, meta: dict, arrays: dict) -> tuple[Path, Path]:
    """``<stem>.npz`` (the arrays + the metadata JSON as ``meta_json``) and ``<stem>.json``,
    each written atomically; the one writer of both result kinds."""
    stem = Path(stem)
    text = json.dumps(meta, indent=1)
    npz_path, json_path = stem.with_name(stem.name + ".npz"), stem.with_name(stem.name + ".json")
    arrays = {**arrays, "meta_json": np.array(text)}
    atomic_write(npz_path, lambda f: np.savez_compressed(f, **arrays))
    atomic_write(json_path, lambda f: f.write(text.encode()))
    return npz_path, json_path


def load_result(path: str | os.PathLike) -> ImageResult:
    """Read a result written by :func:`save_result` (``.npz``; a ``.json`` path finds its npz).

    Raises:
        ResultFileError: missing file, not a result file, or an unknown schema version.
    """
    path, data, meta = _load_npz(path)
    _check_schema(path, meta, "image")
    missing = [k for k in (*BODY_ARRAYS, *PERSON_ARRAYS) if k not in data]
    if missing:
        raise ResultFileError(f"{path}: missing arrays {missing}")
    for key, shape in OPTIONAL_PERSON_ARRAYS.items():
        if key not in data:
            data[key] = np.zeros((len(meta["people"]), *shape), np.float32)
        elif data[key].shape != (len(meta["people"]), *shape):
            raise ResultFileError(f"{path}: {key} has shape {data[key].shape}, expected "
                                  f"({len(meta['people'])}, {', '.join(map(str, shape))})")
    people = []
    for i, info in enumerate(meta["people"]):
        known = {"index", "method", "score", "bbox", "transl", "betas"}
        people.append(PersonResult(
            **{k: data[k][i] for k in (*PERSON_ARRAYS, *OPTIONAL_PERSON_ARRAYS)
               if k not in ("score", "person_index", "global_orient_aa", "body_pose_aa")},
            score=float(data["score"][i]), person_index=int(data["person_index"][i]),
            method=info.get("method", "unknown"),
            extras={k: v for k, v in info.items() if k not in known}))
    bm = {k: v for k, v in meta["body_model"].items()
          if k not in ("num_vertices", "num_joints", "joint_names", "parents")}
    cam = meta["camera"]
    return ImageResult(
        people=people, image_size=(meta["image"]["width"], meta["image"]["height"]),
        focal_length=float(cam["focal_length"][0]), principal_point=tuple(cam["principal_point"]),
        faces=data["faces"], lbs_weights=data["lbs_weights"], parents=data["parents"],
        joint_names=meta["body_model"]["joint_names"], body_model=bm,
        image_path=meta["image"]["path"], model=meta.get("model", {}),
        focal_source=str(cam.get("focal_source", "unknown")), ground_plane=_ground_plane(meta.get("ground_plane")))


def _load_npz(path: str | os.PathLike) -> tuple[Path, dict[str, np.ndarray], dict]:
    path = Path(path)
    if path.suffix == ".json":
        path = path.with_suffix(".npz")
    if not path.is_file():
        raise ResultFileError(f"result file not found: {path}")
    from deforhmr_model.files.npz import ObjectEntry, read_npz
    try:
        data = read_npz(path)                      # sizes checked from the headers before reading
        objects = [k for k, v in data.items() if isinstance(v, ObjectEntry)]
        if objects:
            raise ValueError(f"arrays {objects} are pickled Python objects, which are not read")
        meta = json.loads(str(data.pop("meta_json")))
    except Exception as e:  # zip/JSON/pickle errors all mean "not a result file"
        raise ResultFileError(f"{path}: not a readable deforhmr result file ({e})") from None
    return path, data, meta


def result_kind(meta: dict) -> str:
    """``"image"`` or ``"sequence"`` for a result file's metadata (version 1: always image)."""
    return str(meta.get("kind", "image"))


def _check_schema(path, meta: dict, kind: str) -> None:
    if meta.get("schema") != SCHEMA or meta.get("version") not in READ_VERSIONS:
        raise ResultFileError(
            f"{path}: schema {meta.get('schema')!r} version {meta.get('version')!r}; "
            f"this reader understands {SCHEMA!r} versions {', '.join(map(str, READ_VERSIONS))}")
    if result_kind(meta) != kind:
        other = "load_sequence" if result_kind(meta) == "sequence" else "load_result"
        raise ResultFileError(f"{path}: this is a {result_kind(meta)} result, not {'an image' if kind == 'image' else 'a sequence'} result; read it with {other}")


# ----------------------------------------------------------------------------- sequences
TRACK_ROW_ARRAYS = ("frame_index", "person_index", "global_orient", "body_pose", "global_orient_aa",
                    "body_pose_aa", "transl", "joints", "keypoints_2d", "bbox", "score")
TRACK_ARRAYS = ("track_ids", "track_betas", "track_rest_vertices", "track_rest_joints")
MAX_SEQUENCE_ROWS = 10_000_000   # frames x people a sequence file may hold (size check before use)


@dataclass
class TrackResult:
    """One tracked person over the frames it was seen in (N frames, sorted).

    ``track_id`` is the person's id (``person_index`` of its frames); ``frames`` (N,) int32
    frame indices into :attr:`SequenceResult.frame_times`; ``betas`` (10,) one shape for the
    whole track; ``rest_vertices`` (V, 3) / ``rest_joints`` (24, 3) its T-pose (body frame);
    per frame: ``global_orient`` (N, 3, 3), ``body_pose`` (N, 23, 3, 3), ``transl`` (N, 3)
    metres (camera frame), ``joints`` (N, 24, 3) posed joints (camera frame, metres),
    ``keypoints_2d`` (N, 17, 3) COCO-17 detections (px, confidence), ``bbox`` (N, 4) xyxy px,
    ``score`` (N,). All float32 unless stated."""

    track_id: int
    frames: np.ndarray
    betas: np.ndarray
    rest_vertices: np.ndarray
    rest_joints: np.ndarray
    global_orient: np.ndarray
    body_pose: np.ndarray
    transl: np.ndarray
    joints: np.ndarray
    keypoints_2d: np.ndarray
    bbox: np.ndarray
    score: np.ndarray
    method: str = "fit"


@dataclass
class SequenceResult:
    """Tracked people over the frames of a video or image sequence.

    ``frame_times`` (T,) float64 seconds from the first frame (from the video's timestamps);
    ``fps`` the source's nominal frame rate; camera and body model as :class:`ImageResult`
    (one camera for the whole clip); ``tracks`` sorted by id; ``smoothing`` the temporal
    smoothing applied (``off``/``light``/``strong``); ``foot_lock`` whether planted feet were
    locked (:mod:`deforhmr_model.video.contacts`); ``source`` the video or folder path.

    On disk (``kind: "sequence"``): per track ``track_ids`` (K,) int32, ``track_betas``
    (K, 10), ``track_rest_vertices`` (K, V, 3), ``track_rest_joints`` (K, 24, 3); one row per
    (track, frame) sorted by track then frame: ``frame_index``, ``person_index`` (= track
    id) (N,) int32 and the per-frame arrays of :class:`TrackResult` (plus ``*_aa``
    axis-angle forms); ``frame_times`` (T,) float64; ``faces``, ``lbs_weights``, ``parents``.
    """

    frame_times: np.ndarray
    fps: float
    image_size: tuple[int, int]
    focal_length: float
    principal_point: tuple[float, float]
    faces: np.ndarray
    lbs_weights: np.ndarray
    parents: np.ndarray
    joint_names: list[str]
    body_model: dict[str, Any]
    tracks: list[TrackResult]
    source: str | None = None
    smoothing: str = "off"
    model: dict[str, Any] = field(default_factory=dict)
    focal_source: str = "unknown"   # as ImageResult.focal_source
    foot_lock: bool = False

    @property
    def num_frames(self) -> int:
        return int(len(self.frame_times))

    def metadata(self) -> dict[str, Any]:
        from deforhmr_model import __version__
        W, H = self.image_size
        return {
            "schema": SCHEMA, "version": SCHEMA_VERSION, "kind": "sequence",
            "created_by": f"deforhmr {__version__}",
            "units": {"length": "metres", "angle": "radians", "image": "pixels", "time": "seconds"},
            "source": {"path": self.source, "width": int(W), "height": int(H), "fps": float(self.fps),
                       "num_frames": self.num_frames},
            "camera": {
                "model": "pinhole", "frame": "opencv (x right, y down, z forward)",
                "focal_length": [float(self.focal_length)] * 2,
                "principal_point": [float(c) for c in self.principal_point],
                "focal_source": self.focal_source,
            },
            "body_model": {**self.body_model, "num_vertices": int(self.lbs_weights.shape[0]),
                           "num_joints": int(self.parents.shape[0]),
                           "joint_names": list(self.joint_names),
                           "parents": [int(p) for p in self.parents]},
            "model": self.model,
            "smoothing": self.smoothing,
            "foot_lock": bool(self.foot_lock),
            "tracks": [{"id": int(t.track_id), "method": t.method, "num_frames": int(len(t.frames)),
                        "first_frame": int(t.frames[0]) if len(t.frames) else -1,
                        "last_frame": int(t.frames[-1]) if len(t.frames) else -1,
                        "betas": [float(b) for b in t.betas]} for t in self.tracks],
        }

    def arrays(self) -> dict[str, np.ndarray]:
        V, J = self.lbs_weights.shape
        out: dict[str, np.ndarray] = {
            "faces": self.faces.astype(np.int32), "lbs_weights": self.lbs_weights.astype(np.float32),
            "parents": self.parents.astype(np.int32),
            "frame_times": np.asarray(self.frame_times, np.float64),
            "track_ids": np.array([t.track_id for t in self.tracks], np.int32),
        }
        for key, attr, shape in (("track_betas", "betas", (10,)), ("track_rest_vertices", "rest_vertices", (V, 3)),
                                 ("track_rest_joints", "rest_joints", (J, 3))):
            vals = [np.asarray(getattr(t, attr), np.float32) for t in self.tracks]
            out[key] = np.stack(vals) if vals else np.zeros((0, *shape), np.float32)
        rows = {k: [] for k in TRACK_ROW_ARRAYS}
        for t in self.tracks:
            n = len(t.frames)
            rows["frame_index"].append(np.asarray(t.frames, np.int32))
            rows["person_index"].append(np.full(n, t.track_id, np.int32))
            for k in ("global_orient", "body_pose", "transl", "joints", "keypoints_2d", "bbox", "score"):
                rows[k].append(np.asarray(getattr(t, k), np.float32))
            rows["global_orient_aa"].append(_rotmat_to_aa(np.asarray(t.global_orient)).reshape(n, 3))
            rows["body_pose_aa"].append(_rotmat_to_aa(np.asarray(t.body_pose)).reshape(n, J - 1, 3))
        empty = {"frame_index": (), "person_index": (), "global_orient": (3, 3), "body_pose": (J - 1, 3, 3),
                 "global_orient_aa": (3,), "body_pose_aa": (J - 1, 3), "transl": (3,), "joints": (J, 3),
                 "keypoints_2d": (17, 3), "bbox": (4,), "score": ()}
        for k, vals in rows.items():
            dtype = np.int32 if k in ("frame_index", "person_index") else np.float32
            out[k] = np.concatenate(vals).astype(dtype) if vals else np.zeros((0, *empty[k]), dtype)
        return out


def save_sequence(seq: SequenceResult, stem: str | os.PathLike) -> tuple[Path, Path]:
    """Write a sequence result as ``<stem>.npz`` + ``<stem>.json`` (atomically, as
    :func:`save_result`). Returns (npz_path, json_path); raises OSError if not writable."""
    return _save_npz_json(stem, seq.metadata(), seq.arrays())


def load_sequence(path: str | os.PathLike) -> SequenceResult:
    """Read a sequence result written by :func:`save_sequence`.

    Raises:
        ResultFileError: missing/unreadable file, an image result, an unknown version,
            or arrays whose shapes disagree.
    """
    path, data, meta = _load_npz(path)
    _check_schema(path, meta, "sequence")
    missing = [k for k in (*BODY_ARRAYS, *TRACK_ARRAYS, *TRACK_ROW_ARRAYS, "frame_times") if k not in data]
    if missing:
        raise ResultFileError(f"{path}: missing arrays {missing}")
    N, K = len(data["frame_index"]), len(data["track_ids"])
    V, J = data["lbs_weights"].shape if data["lbs_weights"].ndim == 2 else (0, 0)
    shapes = {"person_index": (N,), "global_orient": (N, 3, 3), "body_pose": (N, J - 1, 3, 3), "transl": (N, 3),
              "joints": (N, J, 3), "keypoints_2d": (N, 17, 3), "bbox": (N, 4), "score": (N,),
              "track_betas": (K, data["track_betas"].shape[-1]), "track_rest_vertices": (K, V, 3),
              "track_rest_joints": (K, J, 3)}
    bad = [k for k, s in shapes.items() if data[k].shape != s]
    T = len(data["frame_times"])
    if N > MAX_SEQUENCE_ROWS or bad or (N and not (0 <= data["frame_index"].min() and data["frame_index"].max() < T)):
        raise ResultFileError(f"{path}: inconsistent sequence arrays {bad or ['frame_index']}")
    info = {int(t["id"]): t for t in meta.get("tracks", [])}
    tracks = []
    for k, tid in enumerate(data["track_ids"]):
        m = data["person_index"] == tid
        tracks.append(TrackResult(
            track_id=int(tid), frames=data["frame_index"][m], betas=data["track_betas"][k],
            rest_vertices=data["track_rest_vertices"][k], rest_joints=data["track_rest_joints"][k],
            **{key: data[key][m] for key in ("global_orient", "body_pose", "transl", "joints", "keypoints_2d",
                                             "bbox", "score")},
            method=info.get(int(tid), {}).get("method", "unknown")))
    bm = {k: v for k, v in meta["body_model"].items()
          if k not in ("num_vertices", "num_joints", "joint_names", "parents")}
    cam, src = meta["camera"], meta["source"]
    return SequenceResult(
        frame_times=data["frame_times"], fps=float(src["fps"]), image_size=(src["width"], src["height"]),
        focal_length=float(cam["focal_length"][0]), principal_point=tuple(cam["principal_point"]),
        faces=data["faces"], lbs_weights=data["lbs_weights"], parents=data["parents"],
        joint_names=meta["body_model"]["joint_names"], body_model=bm, tracks=tracks,
        source=src.get("path"), smoothing=meta.get("smoothing", "off"), model=meta.get("model", {}),
        focal_source=str(cam.get("focal_source", "unknown")), foot_lock=meta.get("foot_lock") is True)


def _ground_plane(gp) -> dict[str, Any] | None:
    """The metadata's ground plane if well-formed (unit normal (3,), finite offset), else None."""
    if not isinstance(gp, dict):
        return None
    try:
        n = np.asarray(gp["normal"], np.float64).reshape(3)
        d = float(gp["offset"])
    except (KeyError, TypeError, ValueError):
        return None
    if not (np.isfinite(n).all() and np.isfinite(d)) or abs(np.linalg.norm(n) - 1.0) > 1e-3:
        return None
    return dict(gp)


def _rotmat_to_aa(R: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotation matrices -> (..., 3) float32 axis-angle (radians), through
    :func:`deforhmr_model.geometry.rotation.rotmat_to_axis_angle` (roma) in float64."""
    import torch

    from deforhmr_model.geometry.rotation import rotmat_to_axis_angle
    R = np.asarray(R)
    aa = rotmat_to_axis_angle(torch.from_numpy(R.reshape(-1, 3, 3).astype(np.float64))).numpy()
    return aa.astype(np.float32).reshape(*R.shape[:-2], 3)
