"""Readers for the training/evaluation data formats the field already uses.

Two on-disk layouts, one in-memory record (:class:`PersonLabels`, photo space):

**SPIN / ProHMR ``.npz``** (one row per person; ``hmr2_reference.md`` §6-7):

===================  ===============  =============================================
key                  shape            meaning
===================  ===============  =============================================
imgname              (N,) str         image path relative to the image root
center               (N, 2)           person box centre, px
scale                (N,) or (N, 2)   box side / 200 (px / 200)
part                 (N, 24, 3)       SPIN: J24 2D keypoints (x px, y px, conf)
S                    (N, 24, 4)       SPIN: J24 3D joints (metres, camera frame, conf)
pose, shape          (N, 72), (N, 10) SPIN: SMPL axis-angle pose (radians), betas
has_smpl             (N,)             SPIN: 1 where ``pose``/``shape`` are valid
openpose             (N, 25, 3)       optional OpenPose 2D (fills J24 face points)
body_keypoints_2d    (N, 25, 3)       ProHMR/HMR 2.0: OpenPose 2D
extra_keypoints_2d   (N, 19, 3)       ProHMR/HMR 2.0: J19 2D
body_keypoints_3d    (N, 25, 4)       ProHMR/HMR 2.0: OpenPose 3D (ignored but checked)
extra_keypoints_3d   (N, 19, 4)       ProHMR/HMR 2.0: J19 3D
body_pose, betas     (N, 72), (N, 10) ProHMR/HMR 2.0 SMPL parameters
has_body_pose        (N,)             ProHMR/HMR 2.0 masks
has_betas            (N,)
gender               (N,) str         optional 'm' / 'f' / 'n' (evaluation)
===================  ===============  =============================================

``imgname``, ``center`` and ``scale`` are required, plus at least one label
(2D keypoints, 3D joints or SMPL parameters). The box side follows HMR 2.0
(``bbox_size = max(expand_to_aspect_ratio(scale * 200))``).

**HMR 2.0 webdataset tars** (read with the standard library's ``tarfile``, no
``webdataset`` dependency; random access keeps epochs reproducible): members
``<key>.jpg`` (or ``.jpeg``/``.png``) and ``<key>.data.pyd`` (a pickle of a
list of per-person dicts with ``center`` (2,), ``scale`` (2,), ``keypoints_2d``
(44, 3), ``keypoints_3d`` (44, 4), ``body_pose`` (72,), ``betas`` (10,),
``has_body_pose``, ``has_betas``). Pickles are read with an unpickler that
only rebuilds numpy arrays and plain containers. The 44 joints are the 25
OpenPose joints then J19 (§5.2).

Dataset images are read with OpenCV ignoring EXIF orientation (annotations
refer to the stored pixel grid, as HMR 2.0 / SPIN read them).
"""
from __future__ import annotations

import pickle
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from deforhmr_model.people.crop import expand_to_aspect_ratio
from deforhmr_model.body.joints import J24_FROM_OPENPOSE, safe_unpickle

__all__ = ["DatasetFileError", "SmplTargets", "PersonLabels", "NpzSource", "TarSource", "open_source", "read_image"]


class DatasetFileError(ValueError):
    """A dataset file is missing, unreadable or lacks required keys; the message lists all problems."""


@dataclass
class SmplTargets:
    """One person's supervision targets, the same set before and after cropping.

    keypoints_2d (24, 3) J24 (x, y, conf; the frame is the subclass's) | keypoints_3d (24, 4)
    J24 metres camera frame + conf | pose (72,) SMPL axis-angle radians | betas (10,) |
    has_smpl, has_betas: 0/1.
    """

    keypoints_2d: np.ndarray
    keypoints_3d: np.ndarray
    pose: np.ndarray
    betas: np.ndarray
    has_smpl: float
    has_betas: float


@dataclass
class PersonLabels(SmplTargets):
    """One person's labels in photo space: :class:`SmplTargets` with keypoints_2d in px, plus

    center (2,) px | size: square crop side px (HMR 2.0 rule) | gender 'n', 'm' or 'f' |
    imgname: path relative to the image root (or tar member key) | box_side: the original
    box's longer side, px (``max(scale) * 200``; PCK normaliser).
    """

    center: np.ndarray
    size: float
    gender: str
    imgname: str
    box_side: float = 0.0


def read_image(path: str | Path) -> np.ndarray:
    """HxWx3 uint8 RGB from a dataset image file (EXIF orientation ignored).

    Raises DatasetFileError when the file is missing or not an image."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if img is None:
        raise DatasetFileError(f"cannot read dataset image {path} (missing or not an image)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def box_size_from_scale(scale: np.ndarray) -> np.ndarray:
    """(N,) or (N, 2) SPIN ``scale`` (px / 200) -> (N,) HMR 2.0 square crop side in px."""
    s = np.asarray(scale, np.float64) * 200.0
    wh = np.stack([s, s], -1) if s.ndim == 1 else s
    return np.array([max(expand_to_aspect_ratio(v)) for v in wh])


# ----------------------------------------------------------------------------- npz

_SCHEMA = {  # key -> trailing shape (None = any 1-D/2-D variant handled by hand)
    "imgname": (), "center": (2,), "part": (24, 3), "S": (24, 4), "pose": (72,), "shape": (10,),
    "has_smpl": (), "openpose": (25, 3), "body_keypoints_2d": (25, 3), "extra_keypoints_2d": (19, 3),
    "body_keypoints_3d": (25, 4), "extra_keypoints_3d": (19, 4), "body_pose": (72,), "betas": (10,),
    "has_body_pose": (), "has_betas": (), "gender": (),
}
_LABEL_KEYS = ("part", "S", "pose", "extra_keypoints_2d", "extra_keypoints_3d", "body_pose")


class NpzSource:
    """A SPIN/ProHMR-format ``.npz`` and its image folder (see the module table).

    Args:
        path: the ``.npz`` file.
        image_root: folder the ``imgname`` entries are relative to (default: the npz's folder).
        check_images: number of images (spread over the file) checked for existence now.
    Raises:
        DatasetFileError: missing file, missing/malformed keys (all listed), images not found.
    """

    def __init__(self, path: str | Path, image_root: str | Path | None = None, check_images: int = 3):
        self.path = Path(path)
        self.image_root = Path(image_root) if image_root is not None else self.path.parent
        self.name = self.path.stem
        if not self.path.is_file():
            raise DatasetFileError(f"dataset file not found: {self.path}")
        try:
            with np.load(self.path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        except Exception as exc:  # noqa: BLE001
            raise DatasetFileError(f"{self.path}: not a readable .npz ({exc})") from exc
        self._arrays = _validate_npz(self.path, data)
        self.imgname = [str(s) for s in data["imgname"]]
        self.sequence = [str(s) for s in data["sequence"]] if "sequence" in data else None
        if check_images:
            self.check_images(check_images)

    def __len__(self) -> int:
        return len(self.imgname)

    def labels(self, i: int) -> PersonLabels:
        a = self._arrays
        return PersonLabels(center=a["center"][i], size=float(a["size"][i]), keypoints_2d=a["kp2d"][i],
                            keypoints_3d=a["kp3d"][i], pose=a["pose"][i], betas=a["betas"][i],
                            has_smpl=float(a["has_smpl"][i]), has_betas=float(a["has_betas"][i]),
                            gender=a["gender"][i], imgname=self.imgname[i], box_side=float(a["side"][i]))

    def image(self, i: int) -> np.ndarray:
        return read_image(self.image_root / self.imgname[i])

    def check_images(self, count: int | None = None) -> None:
        """Raise DatasetFileError listing missing images among ``count`` spread samples (None: all)."""
        n = len(self)
        idx = range(n) if count is None else sorted({int(j) for j in np.linspace(0, n - 1, min(count, n))})
        missing = [self.imgname[j] for j in idx if n and not (self.image_root / self.imgname[j]).is_file()]
        if missing:
            raise DatasetFileError(
                f"{self.path}: {len(missing)} image(s) not found under image root {self.image_root}, "
                f"e.g. {self.image_root / missing[0]}; pass the folder the 'imgname' paths are relative to")


def _validate_npz(path: Path, d: dict) -> dict:
    problems = [f"missing key {k!r}" for k in ("imgname", "center", "scale") if k not in d]
    if not any(k in d for k in _LABEL_KEYS):
        problems.append(f"no labels: needs at least one of {list(_LABEL_KEYS)}")
    n = len(d["imgname"]) if "imgname" in d else None
    for k, trail in _SCHEMA.items():
        if k in d and n is not None and d[k].shape != (n, *trail):
            problems.append(f"key {k!r} has shape {d[k].shape}, expected {(n, *trail)}")
    if "scale" in d and n is not None and d["scale"].shape not in ((n,), (n, 2)):
        problems.append(f"key 'scale' has shape {d['scale'].shape}, expected ({n},) or ({n}, 2)")
    if problems:
        raise DatasetFileError(f"{path}: not a SPIN/ProHMR dataset file: " + "; ".join(problems)
                               + f" (keys present: {sorted(d)})")
    kp2d = np.zeros((n, 24, 3), np.float32)
    kp3d = np.zeros((n, 24, 4), np.float32)
    if "part" in d:
        kp2d[:] = d["part"]
    if "extra_keypoints_2d" in d:
        kp2d[:, :19] = d["extra_keypoints_2d"]
    op = d.get("openpose", d.get("body_keypoints_2d"))
    if op is not None:
        for j24, jop in J24_FROM_OPENPOSE.items():
            use = kp2d[:, j24, 2] <= 0
            kp2d[use, j24] = op[use, jop]
    if "S" in d:
        kp3d[:] = d["S"]
    if "extra_keypoints_3d" in d:
        kp3d[:, :19] = d["extra_keypoints_3d"]
    pose = d.get("pose", d.get("body_pose", np.zeros((n, 72)))).astype(np.float32)
    betas = d.get("shape", d.get("betas", np.zeros((n, 10)))).astype(np.float32)
    if "has_smpl" in d:
        has_smpl = has_betas = d["has_smpl"]
    elif "has_body_pose" in d:
        has_smpl, has_betas = d["has_body_pose"], d.get("has_betas", d["has_body_pose"])
    else:  # SMPL parameters present without a mask count as valid
        has_smpl = has_betas = np.full(n, float("pose" in d or "body_pose" in d))
    gender = [str(g)[:1].lower() or "n" for g in d["gender"]] if "gender" in d else ["n"] * n
    side = (d["scale"] if d["scale"].ndim == 1 else d["scale"].max(1)) * 200.0
    return dict(center=d["center"].astype(np.float32), size=box_size_from_scale(d["scale"]).astype(np.float32),
                side=side.astype(np.float32),
                kp2d=kp2d, kp3d=kp3d, pose=pose, betas=betas, has_smpl=np.asarray(has_smpl, np.float32),
                has_betas=np.asarray(has_betas, np.float32), gender=gender)


# ----------------------------------------------------------------------------- tar

_PERSON_KEYS = ("center", "scale", "keypoints_2d", "keypoints_3d", "body_pose", "betas",
                "has_body_pose", "has_betas")
_IMAGE_EXT = (".jpg", ".jpeg", ".png")


def expand_braces(pattern: str) -> list[str]:
    """Expand webdataset shard patterns: ``a/{000..017}.tar`` -> 18 names (zero padding kept)."""
    m = re.search(r"\{(\d+)\.\.(\d+)\}", pattern)
    if not m:
        return [pattern]
    lo, hi, width = int(m.group(1)), int(m.group(2)), len(m.group(1))
    return [n for i in range(lo, hi + 1)
            for n in expand_braces(pattern[:m.start()] + str(i).zfill(width) + pattern[m.end():])]


class TarSource:
    """HMR 2.0 webdataset shards (see the module docstring), one entry per person.

    Args:
        urls: shard paths or brace patterns (``shards/{000000..000017}.tar``).
    Raises:
        DatasetFileError: missing shard, sample without image or ``.data.pyd``, person dicts
            missing keys or with wrong shapes (the first problems are listed).
    """

    def __init__(self, urls: str | Path | list):
        urls = [urls] if isinstance(urls, (str, Path)) else list(urls)
        self.paths = [Path(p) for u in urls for p in expand_braces(str(u))]
        self.name = self.paths[0].parent.name if self.paths else "tar"
        missing = [str(p) for p in self.paths if not p.is_file()]
        if missing or not self.paths:
            raise DatasetFileError(f"webdataset shard(s) not found: {missing[:5] or urls}")
        self._entries: list[tuple[int, tarfile.TarInfo, PersonLabels]] = []
        problems: list[str] = []
        for t, path in enumerate(self.paths):
            self._index_shard(t, path, problems)
        if problems:
            raise DatasetFileError(f"{len(problems)} problem(s) in webdataset shards: " + "; ".join(problems[:5]))
        self._handles: dict[int, tarfile.TarFile] = {}
        self._pid = None

    def _index_shard(self, t: int, path: Path, problems: list[str]) -> None:
        try:
            with tarfile.open(path, "r:") as tf:
                groups: dict[str, dict[str, tarfile.TarInfo]] = {}
                for m in tf.getmembers():
                    if m.isfile():
                        key, _, ext = m.name.partition(".")
                        groups.setdefault(key, {})[ext] = m
                for key, members in groups.items():
                    img = next((members[e[1:]] for e in _IMAGE_EXT if e[1:] in members), None)
                    if img is None or "data.pyd" not in members:
                        problems.append(f"{path}: sample {key!r} needs an image (.jpg/.png) and .data.pyd, "
                                        f"has {sorted(members)}")
                        continue
                    people = safe_unpickle(tf.extractfile(members["data.pyd"]).read())
                    for p, person in enumerate(people if isinstance(people, list) else [people]):
                        lab = _tar_person(person, f"{path}:{key}[{p}]", problems)
                        if lab is not None:
                            lab.imgname = key
                            self._entries.append((t, img, lab))
        except (tarfile.TarError, OSError, ValueError, pickle.UnpicklingError, EOFError) as exc:
            problems.append(f"{path}: unreadable shard ({exc})")

    def __len__(self) -> int:
        return len(self._entries)

    def labels(self, i: int) -> PersonLabels:
        return self._entries[i][2]

    def image(self, i: int) -> np.ndarray:
        import os
        if self._pid != os.getpid():  # re-open after fork (data-loader workers)
            self._handles, self._pid = {}, os.getpid()
        t, member, _ = self._entries[i]
        tf = self._handles.get(t) or self._handles.setdefault(t, tarfile.open(self.paths[t], "r:"))
        buf = np.frombuffer(tf.extractfile(member).read(), np.uint8)
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        if img is None:
            raise DatasetFileError(f"{self.paths[t]}: member {member.name} is not a decodable image")
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _tar_person(d, where: str, problems: list[str]) -> PersonLabels | None:
    if not isinstance(d, dict):
        problems.append(f"{where}: expected a dict per person, got {type(d).__name__}")
        return None
    missing = [k for k in _PERSON_KEYS if k not in d]
    shapes = {"center": (2,), "keypoints_2d": (44, 3), "keypoints_3d": (44, 4), "body_pose": (72,), "betas": (10,)}
    bad = [f"{k} {np.shape(d[k])} != {s}" for k, s in shapes.items() if k in d and np.shape(d[k]) != s]
    if missing or bad:
        problems.append(f"{where}: missing keys {missing}, bad shapes {bad}")
        return None
    kp2, kp3 = np.asarray(d["keypoints_2d"], np.float32), np.asarray(d["keypoints_3d"], np.float32)
    j2, j3 = np.zeros((24, 3), np.float32), np.zeros((24, 4), np.float32)
    j2[:19], j3[:19] = kp2[25:], kp3[25:]
    for j24, jop in J24_FROM_OPENPOSE.items():
        j2[j24] = kp2[jop]
    scale = np.asarray(d["scale"], np.float64).reshape(-1)
    return PersonLabels(center=np.asarray(d["center"], np.float32),
                        size=float(box_size_from_scale(scale[None] if scale.size == 2 else scale)[0]),
                        keypoints_2d=j2, keypoints_3d=j3, pose=np.asarray(d["body_pose"], np.float32),
                        betas=np.asarray(d["betas"], np.float32), has_smpl=float(d["has_body_pose"]),
                        has_betas=float(d["has_betas"]), gender="n", imgname="", box_side=float(scale.max() * 200))


def open_source(path: str | Path, image_root: str | Path | None = None):
    """:class:`NpzSource` for ``.npz`` paths, :class:`TarSource` for ``.tar`` paths/patterns."""
    s = str(path)
    if s.endswith(".npz"):
        return NpzSource(s, image_root)
    if s.endswith(".tar"):
        return TarSource(s)
    raise DatasetFileError(f"unsupported dataset file {s!r}: expected a SPIN/ProHMR .npz or "
                           "HMR 2.0 webdataset .tar shard(s)")
