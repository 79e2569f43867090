"""Fit quality on the annotated dev sets: does the fitted body keep what the keypoints know?

For every annotated person of ``../shared/photos/dev`` (each set's format: its README) that a
detection matches (box IoU >= 0.5), PCK@0.2 (of the annotated box's longer side) over the 12
limb joints (shoulders, elbows, wrists, hips, knees, ankles) of

* the detector's keypoints (what the fit is given),
* the fitted body's projected joints, for the current fitter and for the baseline: the previous
  fitter (``deforhmr_model/fitting/fit.py`` at commit :data:`BASELINE_COMMIT`, read from git
  and loaded as a module: one standing start facing either way, hinge limits on knees and
  elbows, no world landmarks),

plus the fit time per image (CPU, the threads given). One table per set and overall; the
target is body PCK >= keypoint PCK - 1 point on every set.

    PYTHONPATH=. OMP_NUM_THREADS=2 .venv/bin/python bench/bench_fit.py [--threads 2] [--sets coco,mpii]

Detections are computed once per run (the detector is not what is measured here).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.append(str(REPO))  # PYTHONPATH (e.g. another tree) wins
DEV = REPO.parent.parent / "shared" / "photos" / "dev"
if not DEV.is_dir():
    DEV = Path("/work/shared/photos/dev")

LIMBS = ("left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
         "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle")
COCO_INDEX = {n: 5 + i for i, n in enumerate(LIMBS)}  # COCO-17 order
BASELINE_COMMIT = "47212a5"
MPII_NAMES = ("right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle", "pelvis", "thorax",
              "upper_neck", "head_top", "right_wrist", "right_elbow", "right_shoulder", "left_shoulder",
              "left_elbow", "left_wrist")


def _norm(name: str) -> str:
    return name.lower().replace("-", "_").replace(" ", "_")


def load_sets(names=None) -> dict[str, list[tuple[Path, np.ndarray, np.ndarray]]]:
    """{set: [(image path, box xyxy (4,), limbs (12,3) x, y, visible)]}."""
    out: dict[str, list] = {}
    for js in sorted(DEV.glob("*/test_*.json")) + sorted(DEV.glob("posetrack18/annotations/test_*_val.json")):
        name = js.parent.name if js.parent.name != "annotations" else "posetrack18"
        if names and name not in names:
            continue
        root = js.parent if name != "posetrack18" else DEV / "posetrack18"
        d = json.loads(js.read_text())
        people = []
        if name == "mpii":
            for a in d:
                j = np.array(a["joints"], float)
                vis = np.array(a["joints_vis"], float)
                lim = np.stack([np.r_[j[MPII_NAMES.index(n)], vis[MPII_NAMES.index(n)]] for n in LIMBS])
                v = lim[:, 2] > 0
                lo, hi = lim[v, :2].min(0), lim[v, :2].max(0)
                pad = 0.1 * float(max(hi - lo))
                people.append((root / a["image"], np.r_[lo - pad, hi + pad], lim))
        else:
            kn = [_norm(n) for n in d["categories"][0]["keypoints"]]
            kn = kn[:17] if name == "humanart" else kn  # its "keypoints" are COCO-17 ("keypoints_21" adds 4)
            files = {im["id"]: im["file_name"].replace("HumanArt/images/", "") for im in d["images"]}
            for a in d["annotations"]:
                kp = np.array(a["keypoints"], float).reshape(-1, 3)
                if a.get("bbox") is None or kp.shape[0] != len(kn):
                    continue
                lim = np.stack([kp[kn.index(n)] if n in kn else np.zeros(3) for n in LIMBS])
                lim[:, 2] = lim[:, 2] > 0
                x, y, w, h = a["bbox"]
                people.append((root / files[a["image_id"]], np.array([x, y, x + w, y + h], float), lim))
        out[name] = [p for p in people if p[2][:, 2].sum() >= 4]
    return out


def _iou(a, b) -> float:
    x1, y1, x2, y2 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return inter / max(area(a) + area(b) - inter, 1e-9)


def _pck(pred: np.ndarray, gt: np.ndarray, size: float) -> tuple[int, int]:
    v = gt[:, 2] > 0
    ok = np.linalg.norm(pred[v, :2] - gt[v, :2], axis=1) <= 0.2 * size
    return int(ok.sum()), int(v.sum())


def body_coco(data, params, cam) -> np.ndarray:
    """(P,17,2) projected COCO-17 keypoints of fitted bodies."""
    from deforhmr_model.fitting.fit import KeypointBody
    from deforhmr_model.geometry.camera import perspective_projection
    kb = KeypointBody(data)
    R = torch.cat([params.global_orient[:, None], params.body_pose], 1)
    with torch.no_grad():
        k3 = kb.coco17(R, params.betas[:, :kb.num_betas], params.transl)
        return perspective_projection(k3, cam.focal_length, torch.tensor(cam.principal_point)).numpy()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sets", default=None, help="comma-separated subset of the dev sets")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from deforhmr_model.files.image_io import load_image
    from deforhmr_model.pipeline import HMRPipeline

    sets = load_sets(args.sets.split(",") if args.sets else None)
    pipe = HMRPipeline()
    fitters = {"current": pipe.fitter, "baseline": BaselineFit(pipe.body_data)}
    print(f"# fit quality, dev sets at {DEV}, torch threads {args.threads}; PCK@0.2 over 12 limb joints, %")
    print(f"{'set':12} {'people':>6} {'matched':>7} {'kp PCK':>7} {'body':>6} {'base body':>9} "
          f"{'fit s/img':>9} {'base s/img':>10}")
    tot = {k: [0, 0] for k in ("kp", "current", "baseline")}
    times = {"current": 0.0, "baseline": 0.0}
    n_img_all = 0
    for name, people in sets.items():
        by_image: dict[Path, list] = {}
        for p in people:
            by_image.setdefault(p[0], []).append(p)
        acc = {k: [0, 0] for k in tot}
        t_set = {k: 0.0 for k in times}
        matched = 0
        for path, gts in by_image.items():
            image = load_image(path)
            cam = pipe.camera(image, path)
            dets = pipe.detect(image)
            ppl = [pipe_person(d) for d in dets]
            fits = {}
            for k, fitter in fitters.items():
                t0 = time.perf_counter()
                params = fitter(ppl, cam.focal_length, cam.principal_point, None)
                t_set[k] += time.perf_counter() - t0
                fits[k] = body_coco(pipe.body_data, params, cam) if params is not None else None
            for _, box, lim in gts:
                ious = [_iou(box, d.bbox) for d in dets]
                if not ious or max(ious) < 0.5:
                    continue
                i = int(np.argmax(ious))
                matched += 1
                size = float(max(box[2] - box[0], box[3] - box[1]))
                kp = np.asarray(dets[i].keypoints_coco)[[COCO_INDEX[n] for n in LIMBS]]
                for k, pred in (("kp", kp), ("current", fits["current"][i][[COCO_INDEX[n] for n in LIMBS]]),
                                ("baseline", fits["baseline"][i][[COCO_INDEX[n] for n in LIMBS]])):
                    a, b = _pck(pred, lim, size)
                    acc[k][0] += a
                    acc[k][1] += b
        pc = {k: 100.0 * a / max(b, 1) for k, (a, b) in acc.items()}
        n_img = max(len(by_image), 1)
        n_img_all += n_img
        print(f"{name:12} {len(people):6d} {matched:7d} {pc['kp']:7.1f} {pc['current']:6.1f} {pc['baseline']:9.1f} "
              f"{t_set['current'] / n_img:9.2f} {t_set['baseline'] / n_img:10.2f}")
        for k in tot:
            tot[k][0] += acc[k][0]
            tot[k][1] += acc[k][1]
        for k in times:
            times[k] += t_set[k]
    pc = {k: 100.0 * a / max(b, 1) for k, (a, b) in tot.items()}
    print(f"{'all':12} {'':6} {'':7} {pc['kp']:7.1f} {pc['current']:6.1f} {pc['baseline']:9.1f} "
          f"{times['current'] / n_img_all:9.2f} {times['baseline'] / n_img_all:10.2f}")
    print(f"# fit time ratio current/baseline: {times['current'] / max(times['baseline'], 1e-9):.2f}")
    return 0


class BaselineFit:
    """The previous fitter (git ``BASELINE_COMMIT``), called like ``stages.FitStage``."""

    def __init__(self, body_data):
        import importlib.util
        import subprocess
        import tempfile
        src = subprocess.run(["git", "-C", str(REPO), "show", f"{BASELINE_COMMIT}:deforhmr_model/fitting/fit.py"],
                             check=True, capture_output=True, text=True).stdout
        self._tmp = tempfile.NamedTemporaryFile("w", suffix="_baseline_fit.py", delete=False)
        self._tmp.write(src)
        self._tmp.close()
        spec = importlib.util.spec_from_file_location("baseline_fit", self._tmp.name)
        self.mod = importlib.util.module_from_spec(spec)
        sys.modules["baseline_fit"] = self.mod
        spec.loader.exec_module(self.mod)
        self.body_data = body_data

    def __call__(self, people, focal, pp, init):
        from deforhmr_model.fitting.fit import FitInit
        if not people:
            return None
        kp = np.stack([p.keypoints_coco for p in people])
        bb = np.stack([p.bbox for p in people])
        extra = np.stack([p.keypoints_extra if p.keypoints_extra is not None else np.zeros((6, 3), np.float32)
                          for p in people])
        r = self.mod.fit_to_keypoints(self.body_data, kp, bb, focal, pp, extra_keypoints=extra)
        return FitInit(r.global_orient, r.body_pose, r.betas, r.transl)


def pipe_person(d):
    from deforhmr_model.pipeline import _extra_keypoints
    from deforhmr_model.stages import Person
    return Person(np.asarray(d.bbox, np.float32), float(d.score), np.asarray(d.keypoints_coco, np.float32),
                  _extra_keypoints(d), _world_landmarks(d))


def _world_landmarks(d):
    from deforhmr_model.pipeline import _world_landmarks as wl
    return wl(d)


if __name__ == "__main__":
    sys.exit(main())
