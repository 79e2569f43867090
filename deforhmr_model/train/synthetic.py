"""Synthetic training/evaluation data with exact labels, so training runs anywhere.

Each sample is one body (the open body, or SMPL when installed) in a random
plausible pose and shape, rendered with the project's renderer
(:func:`deforhmr_model.files.render.render_meshes`) over a random background, and
written in the SPIN ``.npz`` layout (:mod:`.datasets`) next to its images:

* **Pose**: one of a few canonical poses (standing, walking, arms raised,
  reaching, sitting, crouching, T-pose) plus Gaussian noise (``pose_noise``
  radians per axis, halved for the spine/neck/head, none for hands and feet):
  small perturbations of plausible poses rather than joint-limit sampling.
* **Global orientation**: upright (SMPL's Y up -> camera's y down) with a
  uniform yaw in [-yaw_range, yaw_range] degrees and a small tilt.
* **Shape**: betas ~ N(0, shape_std²), clipped to ±2.5.
* **Camera**: pinhole, focal ``max(W, H) * U(1, 2)`` px, principal point at the
  image centre (OpenCV frame); the person fills 55-85 % of the image height at
  a random position.
* **Background**: coloured noise, a two-colour gradient, a random crop of a
  photo from ``backgrounds`` (a folder; never copied into the output) or flat grey
  (``background_kinds``). The body colour is random unless ``body_color`` is set.
* **Labels** (exact for this body and joint regressor): ``pose`` (72) / ``shape``
  (10), ``S`` (24, 4) J24 camera-frame joints (metres, conf 1 where the
  regressor defines the joint), ``part`` (24, 3) their projections (px),
  ``center``/``scale`` from the projected vertex box (SPIN: scale = 1.2 x longer
  side / 200), ``has_smpl`` = 1, plus ``transl`` (3), ``focal_length``,
  ``gender`` ('n') and ``body_model`` (id string).

The body's betas are its own shape space (for the open body: its PCA, not SMPL's).
"""
from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import roma
import torch
from PIL import Image

from deforhmr_model.files.render import render_meshes
from deforhmr_model.files.atomic import atomic_write
from deforhmr_model.geometry.rotation import axis_angle_to_rotmat, rotmat_to_axis_angle

_DEG = np.pi / 180
# canonical poses: {SMPL joint: axis-angle (radians)} in SMPL's rest frame (Y up, Z forward, X left)
_ARMS_DOWN = {16: (0, 0, -70 * _DEG), 17: (0, 0, 70 * _DEG)}


def _with(base: dict, more: dict) -> dict:
    return {**base, **more}



CANONICAL_POSES = {
    "t_pose": {},
    "stand": _with(_ARMS_DOWN, {18: (0, -15 * _DEG, 0), 19: (0, 15 * _DEG, 0)}),
    "walk": _with(_ARMS_DOWN, {1: (-25 * _DEG, 0, 0), 2: (20 * _DEG, 0, 0), 5: (35 * _DEG, 0, 0),
                                4: (10 * _DEG, 0, 0), 16: (0, 25 * _DEG, -70 * _DEG),
                                17: (0, 25 * _DEG, 70 * _DEG), 18: (0, -30 * _DEG, 0)}),
    "arms_up": {16: (0, 0, 60 * _DEG), 17: (0, 0, -60 * _DEG), 18: (0, 0, 20 * _DEG), 19: (0, 0, -20 * _DEG)},
    "reach": _with(_ARMS_DOWN, {17: (0, 80 * _DEG, 0), 3: (15 * _DEG, 0, 0), 18: (0, -60 * _DEG, 0)}),
    "sit": _with(_ARMS_DOWN, {1: (-85 * _DEG, 0, 0), 2: (-85 * _DEG, 0, 0), 4: (85 * _DEG, 0, 0),
                               5: (85 * _DEG, 0, 0), 18: (0, -50 * _DEG, 0), 19: (0, 50 * _DEG, 0)}),
    "crouch": _with(_ARMS_DOWN, {1: (-110 * _DEG, 0, 0), 2: (-110 * _DEG, 0, 0), 4: (130 * _DEG, 0, 0),
                                  5: (130 * _DEG, 0, 0), 3: (25 * _DEG, 0, 0), 7: (-20 * _DEG, 0, 0),
                                  8: (-20 * _DEG, 0, 0), 18: (0, -70 * _DEG, 0), 19: (0, 70 * _DEG, 0)}),
}
_NOISE_SCALE = np.ones(24)
_NOISE_SCALE[[3, 6, 9, 12, 15]] = 0.5      # spine, neck, head
_NOISE_SCALE[[10, 11, 22, 23]] = 0.0       # feet and hands


@dataclass(frozen=True)
class SynthConfig:
    """Generator settings; see the module docstring."""

    num_samples: int = 256
    image_size: tuple[int, int] = (256, 256)      # (W, H) px
    seed: int = 0
    poses: tuple[str, ...] = tuple(CANONICAL_POSES)
    pose_noise: float = 0.15                      # radians, per axis-angle component
    yaw_range: float = 180.0                      # degrees
    tilt: float = 8.0                             # degrees (std of the pitch/roll)
    shape_std: float = 1.0
    backgrounds: str | None = None                # folder of photos, optional
    background_kinds: tuple[str, ...] = ("noise", "gradient", "photo")
    body_color: tuple[float, float, float] | None = None   # RGB 0..1; None: random per sample
    image_format: str = "jpg"


def sample_pose(rng: np.random.Generator, cfg: SynthConfig) -> np.ndarray:
    """(72,) axis-angle: camera-frame global orient + 23 body joints."""
    name = cfg.poses[rng.integers(len(cfg.poses))]
    pose = np.zeros((24, 3))
    for j, aa in CANONICAL_POSES[name].items():
        pose[j] = aa
    pose += rng.standard_normal((24, 3)) * cfg.pose_noise * _NOISE_SCALE[:, None]
    yaw = rng.uniform(-cfg.yaw_range, cfg.yaw_range)
    pitch, roll = rng.standard_normal(2) * cfg.tilt
    upright = roma.euler_to_rotmat("x", [180.0], degrees=True, dtype=torch.float64)  # SMPL Y up -> camera y down
    go = upright @ roma.euler_to_rotmat("zxy", [roll, pitch, yaw], degrees=True, dtype=torch.float64)
    pose[0] = rotmat_to_axis_angle(go).numpy()
    return pose.reshape(72).astype(np.float32)


BACKGROUND_KINDS = ("noise", "gradient", "photo", "flat")


def background(rng: np.random.Generator, size: tuple[int, int], photos: list[Path],
               kinds: tuple[str, ...] = ("noise", "gradient", "photo")) -> np.ndarray:
    """(H, W, 3) uint8 RGB: coloured noise, a two-colour gradient, a random crop of one of
    ``photos``, or a flat dark grey (``kinds``, drawn uniformly)."""
    W, H = size
    bad = [k for k in kinds if k not in BACKGROUND_KINDS]
    kinds = [k for k in kinds if k in BACKGROUND_KINDS and (k != "photo" or photos)]
    if bad or not kinds:
        raise ValueError(f"background kinds must be among {BACKGROUND_KINDS} ('photo' needs a folder of "
                         f"images), got {bad or 'none usable'}")
    kind = BACKGROUND_KINDS.index(kinds[rng.integers(len(kinds))])
    if kind == 3:
        return np.full((H, W, 3), 40, np.uint8)
    if kind == 0:
        base = rng.uniform(0, 255, 3)
        img = base + rng.normal(0, rng.uniform(10, 60), (H, W, 3))
    elif kind == 1:
        a, b = rng.uniform(0, 255, (2, 3))
        t = np.linspace(0, 1, W)[None, :, None] if rng.random() < 0.5 else np.linspace(0, 1, H)[:, None, None]
        img = a * (1 - t) + b * t + rng.normal(0, 5, (H, W, 3))
    else:
        with Image.open(photos[rng.integers(len(photos))]) as im:
            im = im.convert("RGB")
            s = max(W / im.width, H / im.height) * rng.uniform(1.0, 2.0)
            im = im.resize((max(W, int(im.width * s)), max(H, int(im.height * s))))
            x, y = rng.integers(im.width - W + 1), rng.integers(im.height - H + 1)
            img = np.asarray(im.crop((x, y, x + W, y + H)), np.float64)
    return np.clip(img, 0, 255).astype(np.uint8)


def generate(out_dir: str | Path, body, joints, cfg: SynthConfig = SynthConfig(), progress: bool = False) -> Path:
    """Write ``out_dir/synthetic.npz`` and ``out_dir/images/*.jpg``; returns the npz path.

    Args:
        out_dir: output folder (created).
        body: ``deforhmr_model.body.model.BodyModel`` (its betas space is used as is).
        joints: the :class:`~deforhmr_model.body.joints.J24Regressor` that defines the labels
            (train with the same one).
        cfg: :class:`SynthConfig`.
    """
    from tqdm import tqdm
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    photos = sorted(p for p in Path(cfg.backgrounds).iterdir()
                    if p.suffix.lower() in (".jpg", ".jpeg", ".png")) if cfg.backgrounds else []
    W, H = cfg.image_size
    faces = body.faces.cpu().numpy()
    mask = joints.mask.cpu().numpy()
    rngs = [np.random.default_rng((cfg.seed, i)) for i in range(cfg.num_samples)]   # one stream per sample
    poses = np.stack([sample_pose(r, cfg) for r in rngs])
    betas = np.stack([np.clip(r.standard_normal(10) * cfg.shape_std, -2.5, 2.5) for r in rngs]).astype(np.float32)
    rec: dict[str, list] = {k: [] for k in ("imgname", "center", "scale", "part", "S", "transl", "focal_length")}
    for lo in tqdm(range(0, cfg.num_samples, 64), desc="synthesising", disable=not progress):
        with torch.no_grad():
            R = axis_angle_to_rotmat(torch.from_numpy(poses[lo:lo + 64]).reshape(-1, 24, 3))
            o = body(R[:, 0], R[:, 1:], torch.from_numpy(betas[lo:lo + 64]), None)
            verts, j24 = o.vertices.numpy(), joints(o.vertices, o.joints).numpy()
        for k in range(len(verts)):
            i = lo + k
            _render_sample(out, i, rngs[i], verts[k], j24[k], faces, mask, (W, H), photos, cfg, rec)
    rec["pose"], rec["shape"] = list(poses), list(betas)
    arrays = {k: np.asarray(v, np.float32) for k, v in rec.items() if k != "imgname"}
    arrays["imgname"] = np.asarray(rec["imgname"])
    arrays["has_smpl"] = np.ones(cfg.num_samples, np.float32)
    arrays["gender"] = np.asarray(["n"] * cfg.num_samples)
    arrays["body_model"] = np.asarray(getattr(body, "id", "body"))
    arrays["synth_config"] = np.asarray(json.dumps(asdict(cfg)))
    path = out / "synthetic.npz"
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write(path, lambda fo: fo.write(buf.getvalue()))
    return path


def _render_sample(out: Path, i: int, rng: np.random.Generator, verts: np.ndarray, j24: np.ndarray,
                   faces: np.ndarray, mask: np.ndarray, size: tuple[int, int], photos: list[Path],
                   cfg: SynthConfig, rec: dict[str, list]) -> None:
    """Place one posed body in front of a camera, render it over a background, record its labels."""
    W, H = size
    f = max(W, H) * rng.uniform(1.0, 2.0)
    lo, hi = verts.min(0), verts.max(0)
    z = f * (hi[1] - lo[1]) / (rng.uniform(0.55, 0.85) * H) + (hi[2] - lo[2]) / 2
    c = (lo + hi) / 2
    u, v = rng.uniform(0.4, 0.6) * W, rng.uniform(0.45, 0.55) * H
    transl = np.array([(u - W / 2) * z / f - c[0], (v - H / 2) * z / f - c[1], z - c[2]])
    K = np.array([[f, 0, W / 2], [0, f, H / 2], [0, 0, 1.0]])
    cam_v, cam_j = verts + transl, j24 + transl
    color = rng.uniform(0.35, 0.95, 3)
    r = render_meshes([cam_v], faces, K, (W, H), colors=[tuple(cfg.body_color or color)])
    img = background(rng, (W, H), photos, cfg.background_kinds)
    img[r.mask] = (r.color[r.mask] * 255).astype(np.uint8)
    uv = cam_v[:, :2] / cam_v[:, 2:] * f + [W / 2, H / 2]
    (x0, y0), (x1, y1) = uv.min(0), uv.max(0)
    name = f"images/{i:06d}.{cfg.image_format}"
    fmt = "JPEG" if cfg.image_format in ("jpg", "jpeg") else cfg.image_format.upper()
    opts = {"quality": 95} if fmt == "JPEG" else {}
    atomic_write(out / name, lambda fo: Image.fromarray(img).save(fo, fmt, **opts))
    proj = cam_j[:, :2] / cam_j[:, 2:] * f + [W / 2, H / 2]
    rec["imgname"].append(name)
    rec["center"].append([(x0 + x1) / 2, (y0 + y1) / 2])
    rec["scale"].append(1.2 * max(x1 - x0, y1 - y0) / 200)
    rec["part"].append(np.c_[proj * mask[:, None], mask])      # undefined joints: zeros, conf 0
    rec["S"].append(np.c_[cam_j * mask[:, None], mask])
    rec["transl"].append(transl)
    rec["focal_length"].append(f)
