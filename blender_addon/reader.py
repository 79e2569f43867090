"""Read and fully validate DeforHMR result files (numpy + stdlib only, no bpy).

The schema is ``deforhmr.result`` versions 1 and 2, defined in
``deforhmr_model/files/result.py`` (npz arrays + ``meta_json``); version 2 adds video
sequence files (``kind: "sequence"``, read as one :class:`ResultFrame` per video frame). Everything the builder needs is checked here, before a
single Blender object exists: a file either yields complete :class:`ResultFrame` data
or raises :class:`ResultReadError` with a one-line message meant for users.
"""
from __future__ import annotations

import json
import os
import re
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SCHEMA = "deforhmr.result"
SCHEMA_VERSION = 2
READ_VERSIONS = (1, 2)   # version 2: "kind" image (= version 1's arrays) or sequence
SEQUENCE_ARRAYS = ("frame_times", "track_ids", "track_betas", "track_rest_vertices", "track_rest_joints",
                   "frame_index", "person_index", "global_orient", "body_pose", "transl", "joints", "score")
MAX_SEQUENCE_ROWS = 10_000_000
NUM_JOINTS = 24
BODY_ARRAYS = ("faces", "lbs_weights", "parents")
PERSON_ARRAYS = (
    "betas", "global_orient", "body_pose", "global_orient_aa", "body_pose_aa", "transl",
    "rest_vertices", "rest_joints", "vertices", "joints", "joints_2d", "keypoints_2d",
    "bbox", "score", "person_index",
)
# Shapes without the leading people axis; "V" = vertices, "J" = joints.
_PERSON_SHAPES = {
    "global_orient": (3, 3), "body_pose": (NUM_JOINTS - 1, 3, 3), "transl": (3,),
    "rest_vertices": ("V", 3), "rest_joints": (NUM_JOINTS, 3), "joints": (NUM_JOINTS, 3),
    "joints_2d": (NUM_JOINTS, 2), "betas": (None,), "score": (), "person_index": (),
}
_ROTATION_TOL = 1e-3
# Hostile-file limits, checked from each .npy header before anything is allocated (an "npz bomb":
# a 4 MB file declaring a 4 GB array). A 50-person SMPL result is about 30 MB in all.
MAX_ARRAY_BYTES = 256 * 2**20
MAX_TOTAL_BYTES = 512 * 2**20
MAX_IMAGE_SIDE = 32768          # px; a larger "photo" size in the metadata is refused (render size)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
_IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"BM", b"II*\x00", b"MM\x00*", b"RIFF")


class ResultReadError(Exception):
    """A result file is missing, unreadable, malformed or of an unknown schema version."""


@dataclass(frozen=True)
class BodyData:
    """The skinned body shared by all people of a file."""

    faces: np.ndarray          # (F, 3) int64 vertex indices, counter-clockwise outside
    lbs_weights: np.ndarray    # (V, 24) f32 skinning weights, rows sum to 1
    parents: np.ndarray        # (24,) int64, -1 for the root, parents[j] < j
    joint_names: tuple[str, ...]  # 24 SMPL joint names (bone and vertex-group names)


@dataclass(frozen=True)
class CameraData:
    """The photo's pinhole camera (OpenCV frame, no rotation)."""

    width: int                  # px
    height: int                 # px
    focal_length: float         # px
    principal_point: tuple[float, float]  # (cx, cy) px
    image_path: str | None      # the photo, resolved against the result's folder; None if absent
    image_note: str | None = None  # why the photo is not loaded (refused path), for the user


@dataclass(frozen=True)
class PersonData:
    """One person; all arrays float64, metres/radians, frames as in ``result.py``."""

    person_index: int
    rest_vertices: np.ndarray   # (V, 3) T-pose vertices, body frame
    rest_joints: np.ndarray     # (24, 3) T-pose joints, body frame
    global_orient: np.ndarray   # (3, 3) body frame -> camera frame
    body_pose: np.ndarray       # (23, 3, 3) parent-relative rotations of joints 1..23
    transl: np.ndarray          # (3,) camera frame
    joints: np.ndarray          # (24, 3) posed joints, camera frame
    joints_2d: np.ndarray       # (24, 2) px
    betas: np.ndarray           # (B,)
    score: float
    method: str


@dataclass(frozen=True)
class ResultFrame:
    """One validated result file."""

    path: str
    body: BodyData
    camera: CameraData
    people: tuple[PersonData, ...]
    fps: float | None = None    # frames of a video sequence file: its frame rate
    ground_plane: tuple[tuple[float, float, float], float] | None = None  # (unit normal, offset), camera frame


def read_result(path: str | os.PathLike) -> ResultFrame:
    """Read and validate one ``<stem>.npz`` result (a ``.json`` sidecar path finds its npz).

    Raises:
        ResultReadError: missing/truncated file, wrong schema or version, missing arrays,
            inconsistent shapes, non-finite values or invalid rotations.
    """
    path, arrays, meta = _open_result(path)
    name = path.name
    if meta.get("kind", "image") == "sequence":
        raise ResultReadError(f"{name}: a video sequence result; import it on its own (it holds every frame)")
    missing = [k for k in (*BODY_ARRAYS, *PERSON_ARRAYS) if k not in arrays]
    if missing:
        raise ResultReadError(f"{name}: missing arrays {missing}; the file is incomplete")
    try:
        body = _body(arrays, meta)
        camera = _camera(meta, path.parent)
        people = _people(arrays, meta, num_vertices=body.lbs_weights.shape[0])
    except KeyError as e:
        raise ResultReadError(f"{name}: metadata field {e} is missing") from None
    except (TypeError, ValueError, IndexError) as e:
        raise ResultReadError(f"{name}: {e}") from None
    return ResultFrame(path=str(path), body=body, camera=camera, people=people,
                       ground_plane=_ground_plane(meta.get("ground_plane")))


def _ground_plane(gp) -> tuple[tuple[float, float, float], float] | None:
    """The optional floor of newer results: ``(normal, offset)`` when well-formed (unit normal,
    finite offset), else None (older files, or no visible feet)."""
    if not isinstance(gp, dict):
        return None
    try:
        n = np.asarray(gp["normal"], np.float64).reshape(3)
        d = float(gp["offset"])
    except (KeyError, TypeError, ValueError):
        return None
    if not (np.isfinite(n).all() and np.isfinite(d)) or abs(np.linalg.norm(n) - 1.0) > 1e-3:
        return None
    return (float(n[0]), float(n[1]), float(n[2])), d


def read_sequence(paths: list[str | os.PathLike]) -> list[ResultFrame]:
    """Read per-frame results (an image sequence) in the given order; all must share one body.

    Raises:
        ResultReadError: any file is invalid, the bodies differ, or a ``person_index``
            repeats within a frame (people are matched across frames by it).
    """
    if not paths:
        raise ResultReadError("no result files (.npz) to import")
    if len(paths) == 1 and _is_sequence_file(Path(paths[0])):
        return read_sequence_file(paths[0])
    frames = [read_result(p) for p in paths]
    first = frames[0].body
    for fr in frames:
        if (fr.body.faces.shape != first.faces.shape or fr.body.joint_names != first.joint_names
                or not np.array_equal(fr.body.parents, first.parents)
                or fr.body.lbs_weights.shape != first.lbs_weights.shape):
            raise ResultReadError(f"{Path(fr.path).name}: body model differs from "
                                  f"{Path(frames[0].path).name}; a sequence needs one body model")
        ids = [p.person_index for p in fr.people]
        if len(set(ids)) != len(ids):
            raise ResultReadError(f"{Path(fr.path).name}: person_index values {ids} repeat; "
                                  "people are matched across frames by person_index")
    return frames


def read_sequence_file(path: str | os.PathLike) -> list[ResultFrame]:
    """Read a video sequence result (``kind: "sequence"``, written by ``deforhmr`` for a video)
    as one :class:`ResultFrame` per video frame; ``person_index`` = track id, ``fps`` set.

    Raises:
        ResultReadError: missing/corrupt file, not a sequence, arrays missing or inconsistent.
    """
    path, arrays, meta = _open_result(path)
    name = path.name
    if meta.get("kind") != "sequence":
        raise ResultReadError(f"{name}: not a video sequence result")
    missing = [k for k in (*BODY_ARRAYS, *SEQUENCE_ARRAYS) if k not in arrays]
    if missing:
        raise ResultReadError(f"{name}: missing arrays {missing}; the file is incomplete")
    try:
        body = _body(arrays, meta)
        src = meta["source"]
        camera = _camera({"image": {"width": src["width"], "height": src["height"], "path": None},
                          "camera": meta["camera"]}, path.parent)
        fps = float(src["fps"])
        if not (np.isfinite(fps) and fps > 0):
            raise ValueError(f"frame rate {fps} is not positive")
        people = _sequence_people(arrays, meta, body.lbs_weights.shape[0], camera)
    except KeyError as e:
        raise ResultReadError(f"{name}: metadata field {e} is missing") from None
    except (TypeError, ValueError, IndexError) as e:
        raise ResultReadError(f"{name}: {e}") from None
    return [ResultFrame(path=str(path), body=body, camera=camera, people=tuple(ppl), fps=fps) for ppl in people]


def _sequence_people(arrays: dict, meta: dict, num_vertices: int, camera: CameraData) -> list[list[PersonData]]:
    """Per frame, the tracked people (``PersonData``, ``person_index`` = track id)."""
    T, N, K = len(arrays["frame_times"]), len(arrays["frame_index"]), len(arrays["track_ids"])
    if N > MAX_SEQUENCE_ROWS or T > MAX_SEQUENCE_ROWS:
        raise ValueError(f"{N} rows / {T} frames is more than this add-on reads")
    shapes = {"person_index": (N,), "global_orient": (N, 3, 3), "body_pose": (N, NUM_JOINTS - 1, 3, 3),
              "transl": (N, 3), "joints": (N, NUM_JOINTS, 3), "score": (N,), "track_ids": (K,),
              "track_rest_vertices": (K, num_vertices, 3), "track_rest_joints": (K, NUM_JOINTS, 3)}
    for key, shape in shapes.items():
        if arrays[key].shape != shape:
            raise ValueError(f"{key} has shape {arrays[key].shape}, expected {shape}")
        _finite(key, arrays[key])
    if arrays["track_betas"].ndim != 2 or arrays["track_betas"].shape[0] != K:
        raise ValueError(f"track_betas has shape {arrays['track_betas'].shape}, expected ({K}, B)")
    fi = arrays["frame_index"].astype(np.int64)
    if N and (fi.min() < 0 or fi.max() >= T):
        raise ValueError(f"frame_index outside 0..{T - 1}")
    rots = np.concatenate([arrays["global_orient"][:, None], arrays["body_pose"]], 1).astype(np.float64)
    rots = rots.reshape(-1, 3, 3)
    if N and (np.abs(rots @ rots.transpose(0, 2, 1) - np.eye(3)).max() > _ROTATION_TOL
              or np.abs(np.linalg.det(rots) - 1).max() > _ROTATION_TOL):
        raise ValueError("global_orient/body_pose are not rotation matrices")
    methods = {int(t.get("id", -1)): str(t.get("method", "unknown")) for t in meta.get("tracks", [])
               if isinstance(t, dict)}
    row_of = {int(tid): k for k, tid in enumerate(arrays["track_ids"])}
    f = camera.focal_length
    cx, cy = camera.principal_point
    frames: list[list[PersonData]] = [[] for _ in range(T)]
    rest_v = [arrays["track_rest_vertices"][k].astype(np.float64) for k in range(K)]
    rest_j = [arrays["track_rest_joints"][k].astype(np.float64) for k in range(K)]
    for i in range(N):
        tid = int(arrays["person_index"][i])
        if tid not in row_of:
            raise ValueError(f"row {i}: person_index {tid} is not in track_ids")
        k = row_of[tid]
        joints = arrays["joints"][i].astype(np.float64)
        z = np.where(np.abs(joints[:, 2]) > 1e-9, joints[:, 2], 1e-9)
        frames[int(fi[i])].append(PersonData(
            person_index=tid, rest_vertices=rest_v[k], rest_joints=rest_j[k],
            global_orient=arrays["global_orient"][i].astype(np.float64),
            body_pose=arrays["body_pose"][i].astype(np.float64), transl=arrays["transl"][i].astype(np.float64),
            joints=joints, joints_2d=np.stack([f * joints[:, 0] / z + cx, f * joints[:, 1] / z + cy], -1),
            betas=arrays["track_betas"][k].astype(np.float64), score=float(arrays["score"][i]),
            method=methods.get(tid, "unknown")))
    return frames


def _open_result(path: str | os.PathLike) -> tuple[Path, dict[str, np.ndarray], dict]:
    """The ``.npz`` of a result path (a ``.json`` sidecar path finds its npz), its arrays and
    metadata, of a schema version this reader knows.

    Raises:
        ResultReadError: missing/unreadable file or an unknown schema version.
    """
    path = Path(path)
    if path.suffix.lower() == ".json":
        path = path.with_suffix(".npz")
    if not path.is_file():
        raise ResultReadError(f"{path.name}: file not found ({path})")
    arrays, meta = _load_npz(path)
    _check_version(path.name, meta)
    return path, arrays, meta


def _check_version(name: str, meta: dict) -> None:
    if meta.get("schema") != SCHEMA or meta.get("version") not in READ_VERSIONS:
        raise ResultReadError(
            f"{name}: schema {meta.get('schema')!r} version {meta.get('version')!r} is not "
            f"supported; this add-on reads {SCHEMA!r} versions {', '.join(map(str, READ_VERSIONS))} "
            "(update the add-on or re-export the result)")


def _is_sequence_file(path: Path) -> bool:
    """True when ``path`` is a result whose metadata says ``kind: "sequence"`` (reads only the
    size-checked ``meta_json`` entry; anything unreadable is left to :func:`read_result`)."""
    if path.suffix.lower() == ".json":
        path = path.with_suffix(".npz")
    try:
        with zipfile.ZipFile(path) as z:
            info = z.getinfo("meta_json.npy")
            _checked_size(z, info, path.name)
            with z.open(info) as f:
                meta = json.loads(str(np.lib.format.read_array(f, allow_pickle=False)))
    except Exception:  # noqa: BLE001 - read_result reports unreadable files properly
        return False
    return isinstance(meta, dict) and meta.get("kind") == "sequence"


def list_sequence(folder: str | os.PathLike) -> list[Path]:
    """The ``*.npz`` files of ``folder`` in natural order (``f2`` before ``f10``).

    Raises:
        ResultReadError: the folder does not exist or holds no ``.npz`` file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ResultReadError(f"folder not found: {folder}")
    files = [p for p in folder.iterdir() if p.suffix.lower() == ".npz" and p.is_file()]
    if not files:
        raise ResultReadError(f"{folder}: no result files (.npz) in this folder")
    return sorted(files, key=lambda p: [int(t) if t.isdigit() else t.lower()
                                        for t in re.split(r"(\d+)", p.name)])


def parse_people(text: str) -> frozenset[int] | None:
    """``"all"``/empty -> None (everybody); ``"0, 2"`` -> {0, 2} (person_index values).

    Raises:
        ResultReadError: the text is neither ``all`` nor a comma list of integers >= 0.
    """
    text = (text or "").strip().lower()
    if text in ("", "all", "*"):
        return None
    problem = f"people {text!r}: write 'all' or person indices like '0, 2'"
    try:
        ids = frozenset(int(t) for t in text.replace(";", ",").split(",") if t.strip())
    except ValueError:
        raise ResultReadError(problem) from None
    if not ids or min(ids) < 0:
        raise ResultReadError(problem)
    return ids


# --- loading --------------------------------------------------------------------------

def _load_npz(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    name = path.name
    wanted = {*BODY_ARRAYS, *PERSON_ARRAYS, *SEQUENCE_ARRAYS, "meta_json"}
    try:
        with zipfile.ZipFile(path) as z:
            members = [i for i in z.infolist() if i.filename.endswith(".npy") and i.filename[:-4] in wanted]
            total = sum(_checked_size(z, info, name) for info in members)
            if total > MAX_TOTAL_BYTES:
                raise ResultReadError(f"{name}: arrays declare {total / 2**20:,.0f} MB in all (limit "
                                      f"{MAX_TOTAL_BYTES // 2**20} MB); not a DeforHMR result file")
            arrays = {}
            for info in members:
                with z.open(info) as f:
                    arrays[info.filename[:-4]] = np.lib.format.read_array(f, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error) as e:
        raise ResultReadError(f"{name}: not a readable result file, truncated or corrupt "
                              f"({type(e).__name__}: {e})") from None
    if "meta_json" not in arrays:
        raise ResultReadError(f"{name}: no 'meta_json' entry; not a DeforHMR result file")
    try:
        meta = json.loads(str(arrays.pop("meta_json")))
    except ValueError as e:
        raise ResultReadError(f"{name}: metadata is not valid JSON ({e})") from None
    if not isinstance(meta, dict):
        raise ResultReadError(f"{name}: metadata is not a JSON object")
    return arrays, meta


def _checked_size(z: zipfile.ZipFile, info: zipfile.ZipInfo, name: str) -> int:
    """Declared data bytes of one npz entry, from its .npy header; ResultReadError for object
    dtypes, sizes over :data:`MAX_ARRAY_BYTES` or a header that disagrees with the zip directory."""
    key = info.filename[:-4]
    with z.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"entry {key!r}: unsupported .npy version {version}")
        header = f.tell()
    if dtype.hasobject or dtype.kind not in "biufSU":
        raise ResultReadError(f"{name}: array {key!r} has dtype {dtype}; not a DeforHMR result file")
    nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize if shape else dtype.itemsize
    if nbytes > MAX_ARRAY_BYTES:
        raise ResultReadError(f"{name}: array {key!r} declares shape {shape} ({nbytes / 2**20:,.0f} MB, "
                              f"limit {MAX_ARRAY_BYTES // 2**20} MB); refused before reading it")
    if info.file_size != header + nbytes:
        raise ResultReadError(f"{name}: array {key!r} is truncated or corrupt (header and zip sizes differ)")
    return nbytes


def _body(arrays: dict, meta: dict) -> BodyData:
    weights = _finite("lbs_weights", arrays["lbs_weights"])
    if weights.ndim != 2 or weights.shape[1] != NUM_JOINTS or weights.shape[0] < 1:
        raise ValueError(f"lbs_weights has shape {weights.shape}, expected (V, {NUM_JOINTS})")
    if np.abs(weights.sum(1) - 1.0).max() > 1e-2 or weights.min() < -1e-4:
        raise ValueError("lbs_weights rows must be non-negative and sum to 1")
    faces = arrays["faces"]
    if faces.ndim != 2 or faces.shape[1] != 3 or not np.issubdtype(faces.dtype, np.integer):
        raise ValueError(f"faces has shape {faces.shape} ({faces.dtype}), expected (F, 3) integers")
    if faces.size and (faces.min() < 0 or faces.max() >= weights.shape[0]):
        raise ValueError(f"faces index vertices outside 0..{weights.shape[0] - 1}")
    parents = arrays["parents"].astype(np.int64)
    if parents.shape != (NUM_JOINTS,) or parents[0] != -1 or any(
            not 0 <= parents[j] < j for j in range(1, NUM_JOINTS)):
        raise ValueError(f"parents must be ({NUM_JOINTS},) with parents[0] = -1 and "
                         "0 <= parents[j] < j (SMPL's kinematic tree)")
    names = tuple(meta["body_model"]["joint_names"])
    if len(names) != NUM_JOINTS or len(set(names)) != NUM_JOINTS or not all(
            isinstance(n, str) and n for n in names):
        raise ValueError(f"body_model.joint_names must be {NUM_JOINTS} distinct names")
    return BodyData(faces=faces.astype(np.int64), lbs_weights=weights.astype(np.float32),
                    parents=parents, joint_names=names)


def _camera(meta: dict, folder: Path) -> CameraData:
    width, height = int(meta["image"]["width"]), int(meta["image"]["height"])
    cam = meta["camera"]
    focal = float(cam["focal_length"][0])
    cx, cy = (float(c) for c in cam["principal_point"])
    if width < 1 or height < 1 or not focal > 0 or not np.isfinite([focal, cx, cy]).all():
        raise ValueError(f"invalid camera: image {width}x{height}, focal length {focal}")
    if max(width, height) > MAX_IMAGE_SIDE:
        raise ValueError(f"image size {width}x{height} px is not a photo size (at most {MAX_IMAGE_SIDE} px "
                         "a side); the file is damaged or not from DeforHMR, so the render size is left alone")
    resolved, note = _photo(meta["image"].get("path"), folder)
    return CameraData(width, height, focal, (cx, cy), resolved, note)


def _photo(image, folder: Path) -> tuple[str | None, str | None]:
    """The photo to show behind the camera, and a note when one is named but refused.

    Only an image file (suffix and file signature) inside the result's folder or its parent
    folder (any depth) is loaded: a result file cannot make Blender open /etc/passwd or a
    picture elsewhere on the disk. Tried in order: the path as written (absolute, or relative
    to the result's folder, then to its parent), then the file name next to the result.
    """
    if not isinstance(image, str) or not image:
        return None, None
    p = Path(image)
    cands = [p] if p.is_absolute() else [folder / p, folder.parent / p]
    root = folder.resolve().parent
    refused = None
    for cand in (*cands, folder / p.name):
        try:
            if not cand.is_file():
                continue
            real = cand.resolve()
        except OSError:
            continue
        if not real.is_relative_to(root):
            refused = refused or (f"photo {image} is outside the result's folder and its parent; not "
                                  "loaded (copy the photo next to the result file to show it)")
            continue
        if real.suffix.lower() not in IMAGE_SUFFIXES or not _has_image_signature(real):
            refused = refused or f"photo {image} is not an image file; not loaded"
            continue
        return str(real), None
    return None, refused


def _has_image_signature(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(12)
    except OSError:
        return False
    return head.startswith(_IMAGE_MAGIC) and (not head.startswith(b"RIFF") or head[8:12] == b"WEBP")


def _people(arrays: dict, meta: dict, num_vertices: int) -> tuple[PersonData, ...]:
    count = arrays["person_index"].shape[0] if arrays["person_index"].ndim == 1 else -1
    if count < 0:
        raise ValueError(f"person_index has shape {arrays['person_index'].shape}, expected (P,)")
    for key, shape in _PERSON_SHAPES.items():
        want = tuple(num_vertices if s == "V" else s for s in shape)
        got = arrays[key].shape
        if got[:1] != (count,) or len(got) != len(want) + 1 or any(
                w is not None and w != g for w, g in zip(want, got[1:])):
            raise ValueError(f"{key} has shape {got}, expected {(count, *want)} "
                             f"(P = {count} people, V = {num_vertices} vertices)")
        _finite(key, arrays[key])
    rots = np.concatenate([arrays["global_orient"][:, None], arrays["body_pose"]], 1)
    rots = rots.astype(np.float64).reshape(-1, 3, 3)
    ortho = np.abs(rots @ rots.transpose(0, 2, 1) - np.eye(3)).max(initial=0.0)
    det = np.abs(np.linalg.det(rots) - 1).max(initial=0.0)
    if ortho > _ROTATION_TOL or det > _ROTATION_TOL:
        raise ValueError("global_orient/body_pose are not rotation matrices")
    infos = meta.get("people") if isinstance(meta.get("people"), list) else []
    infos = [info if isinstance(info, dict) else {} for info in infos]
    infos += [{}] * (count - len(infos))
    f64 = lambda key, i: arrays[key][i].astype(np.float64)  # noqa: E731
    return tuple(PersonData(
        person_index=int(arrays["person_index"][i]),
        rest_vertices=f64("rest_vertices", i), rest_joints=f64("rest_joints", i),
        global_orient=f64("global_orient", i), body_pose=f64("body_pose", i),
        transl=f64("transl", i), joints=f64("joints", i), joints_2d=f64("joints_2d", i),
        betas=f64("betas", i), score=float(arrays["score"][i]),
        method=str(infos[i].get("method", "unknown")),
    ) for i in range(count))


def _finite(key: str, array: np.ndarray) -> np.ndarray:
    if array.dtype.kind not in "fiu" or not np.isfinite(array).all():
        raise ValueError(f"{key} holds non-finite or non-numeric values")
    return array
