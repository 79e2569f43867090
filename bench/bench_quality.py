"""Benchmark: detection and body quality on every annotated dev set (../shared/photos/dev).

Per set (COCO, MPII, CrowdPose, OCHuman, AI Challenger, MHP, ExLPose, Human-Art, JHMDB,
PoseTrack18; formats in ``shared/photos/README.md``) and for each detector, in one run:

* **found**: annotated people with >= 8 visible keypoints (the others are ignored) matched
  one-to-one (greedy, best IoU first) by a detected box with IoU >= 0.5.
* **kp PCK**: PCK@0.2 of the found people's 2D keypoints (threshold 0.2 x the annotated
  box's longer side; MPII has no box: the visible joints' box padded by 5% of its longer
  side), over the annotated visible limb keypoints (shoulders, elbows, wrists, hips, knees,
  ankles: every set labels them, and the body has joints for them).
* **body PCK**: the same for the projected joints of the fitted body (the full pipeline
  without a network, method fit, on the same detections): SMPL joints for the limbs
  (``fitting.fit.COCO_TO_SMPL_JOINT``).
* **false**: detections whose box has IoU < 0.5 with every annotated person of the image
  (any keypoint count). Most sets do not annotate every person in view (MPII, JHMDB,
  PoseTrack: the people of interest only), so this is an upper bound.
* **det s**: median wall time per image of detection + landmarks (image loading not
  timed), LiteRT with ``--threads`` threads; **cpu s**: the process CPU time of that call
  (all threads; on a loaded machine wall time grows with the load, CPU time much less);
  **fit s**: median fitting time per image (wall).

The baseline is the previous default, tiled BlazePose (``--detector blazepose``,
``min_person`` 0.2, one landmark pass), measured in the same run on the same images;
the last column is the time ratio to it. skates.png's people count is printed below.

    .venv/bin/python bench/bench_quality.py [--threads 2] [--no-fit] [--overlays DIR] [--sets AIC,JHMDB]
                                            [--no-baseline]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deforhmr_model.files.image_io import load_image  # noqa: E402
from deforhmr_model.body.layouts import COCO_TO_SMPL_JOINT  # noqa: E402
from deforhmr_model.people.blazepose import box_iou  # noqa: E402

COCO_NAMES = ("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
              "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
              "right_knee", "left_ankle", "right_ankle")
MPII_NAMES = ("right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle", "pelvis", "thorax",
              "upper_neck", "head_top", "right_wrist", "right_elbow", "right_shoulder", "left_shoulder",
              "left_elbow", "left_wrist")
LIMBS = tuple(range(5, 17))          # COCO indices scored (every set labels them)
MIN_VISIBLE = 8
SETS = (("COCO", "coco/test_coco.json", "coco"), ("MPII", "mpii/test_mpii.json", "mpii"),
        ("CrowdPose", "crowdpose/test_crowdpose.json", "crowdpose"),
        ("OCHuman", "ochuman/test_ochuman.json", "ochuman"), ("AIC", "aic/test_aic.json", "aic"),
        ("MHP", "mhp/test_mhp.json", "mhp"), ("ExLPose", "exlpose/test_exlpose.json", "exlpose"),
        ("Human-Art", "humanart/test_humanart.json", "humanart"),
        ("JHMDB", "jhmdb/test_jhmdb_sub1.json", "jhmdb"),
        ("PoseTrack18", "posetrack18/annotations/test_posetrack18_val.json", "posetrack18"))


@dataclass
class Person:
    box: np.ndarray              # (4,) xyxy px
    kps: np.ndarray              # (17, 3) COCO order, x, y, visible (0/1); unlabelled = 0
    visible: int                 # visible keypoints in the set's own annotation

    @property
    def size(self) -> float:
        return float(max(self.box[2] - self.box[0], self.box[3] - self.box[1]))


@dataclass
class Image:
    set: str
    path: Path
    people: list[Person] = field(default_factory=list)


def _norm(name: str) -> str:
    return name.lower().replace("-", "_").replace(" ", "_")


def _to_coco(values, names) -> np.ndarray:
    """Keypoints [x, y, v]*K with the set's names -> (17, 3) COCO order (x, y, visible 0/1)."""
    kp = np.asarray(values, float).reshape(-1, 3)
    out = np.zeros((17, 3))
    index = {n: i for i, n in enumerate(COCO_NAMES)}
    for k, name in enumerate(names[: len(kp)]):
        i = index.get(_norm(name))
        if i is not None and kp[k, 2] > 0:
            out[i] = (kp[k, 0], kp[k, 1], 1.0)
    return out


def load_sets(dev: Path) -> list[Image]:
    """Every annotated image of the dev sets with its people (COCO-order keypoints)."""
    images: list[Image] = []
    for name, ann, folder in SETS:
        path = dev / ann
        if not path.is_file():
            print(f"warning: {path} missing, set {name} skipped", file=sys.stderr)
            continue
        data = json.loads(path.read_text())
        if name == "MPII":
            by_file: dict[str, Image] = {}
            for e in data:
                j, vis = np.array(e["joints"], float), np.array(e["joints_vis"]) > 0
                lo, hi = j[vis].min(0), j[vis].max(0)
                pad = 0.05 * float(max(hi - lo))
                kp = _to_coco(np.concatenate([j, vis[:, None]], 1).ravel(), MPII_NAMES)
                im = by_file.setdefault(e["image"], Image(name, dev / folder / e["image"]))
                im.people.append(Person(np.concatenate([lo - pad, hi + pad]), kp, int(vis.sum())))
            images += by_file.values()
            continue
        names = data["categories"][0]["keypoints"]
        for im in data["images"]:
            if im.get("is_labeled") is False:
                continue
            file = im["file_name"].removeprefix("HumanArt/images/")
            img = Image(name, dev / folder / file)
            for a in data["annotations"]:
                if a["image_id"] != im["id"] or not a.get("bbox"):
                    continue
                x, y, w, h = a["bbox"]
                raw = np.asarray(a["keypoints"], float).reshape(-1, 3)
                img.people.append(Person(np.array([x, y, x + w, y + h]), _to_coco(a["keypoints"], names),
                                         int((raw[:, 2] > 0).sum())))
            images.append(img)
    return images


def match(dets_boxes: np.ndarray, people: list[Person]) -> dict[int, int]:
    """Annotated person index -> detection index, one-to-one, greedy by IoU, IoU >= 0.5."""
    if not len(dets_boxes) or not people:
        return {}
    iou = box_iou(np.stack([p.box for p in people]), dets_boxes.astype(float))
    out: dict[int, int] = {}
    while True:
        i, j = np.unravel_index(np.argmax(iou), iou.shape)
        if iou[i, j] < 0.5:
            return out
        out[int(i)] = int(j)
        iou[i, :] = -1
        iou[:, j] = -1


def pck_hits(pred_xy: np.ndarray, person: Person) -> tuple[int, int]:
    """(correct, labelled) over the person's visible limb keypoints; pred_xy (17, 2) COCO order."""
    lab = [i for i in LIMBS if person.kps[i, 2] > 0]
    err = np.linalg.norm(pred_xy[lab] - person.kps[lab, :2], axis=1)
    return int((err < 0.2 * person.size).sum()), len(lab)


@dataclass
class Stats:
    people: int = 0
    found: int = 0
    kp: list = field(default_factory=lambda: [0, 0])
    body: list = field(default_factory=lambda: [0, 0])
    false: int = 0
    det_t: list = field(default_factory=list)
    cpu_t: list = field(default_factory=list)
    fit_t: list = field(default_factory=list)

    def add(self, o: "Stats"):
        self.people += o.people
        self.found += o.found
        self.false += o.false
        for a, b in ((self.kp, o.kp), (self.body, o.body)):
            a[0] += b[0]
            a[1] += b[1]
        self.det_t += o.det_t
        self.cpu_t += o.cpu_t
        self.fit_t += o.fit_t


def run_detector(pipe, images: list[Image], fit: bool, repeat: int, overlays: Path | None, tag: str
                 ) -> dict[str, Stats]:
    """Detect (through ``pipe.detect``, the pipeline's front door) and optionally fit every image."""
    stats: dict[str, Stats] = {}
    for im in images:
        image = load_image(im.path)
        best, cpu = float("inf"), 0.0
        for _ in range(repeat):
            t0, c0 = time.perf_counter(), time.process_time()
            dets = pipe.detect(image)
            if time.perf_counter() - t0 < best:
                best, cpu = time.perf_counter() - t0, time.process_time() - c0
        s = stats.setdefault(im.set, Stats())
        s.det_t.append(best)
        s.cpu_t.append(cpu)
        boxes = np.stack([d.bbox for d in dets]) if dets else np.zeros((0, 4))
        scored = [p for p in im.people if p.visible >= MIN_VISIBLE]
        m = match(boxes, scored)
        s.people += len(scored)
        s.found += len(m)
        if len(boxes) and im.people:
            best_iou = box_iou(boxes.astype(float), np.stack([p.box for p in im.people])).max(1)
            s.false += int((best_iou < 0.5).sum())
        else:
            s.false += len(boxes)
        for i, j in m.items():
            h, n = pck_hits(np.asarray(dets[j].keypoints_coco)[:, :2], scored[i])
            s.kp[0] += h
            s.kp[1] += n
        if fit and dets:
            t0 = time.perf_counter()
            result = pipe.recover([image], [dets])[0]
            s.fit_t.append(time.perf_counter() - t0)
            for i, j in m.items():
                j2d = result.people[j].joints_2d
                pred = np.zeros((17, 2))
                for c, smpl in COCO_TO_SMPL_JOINT.items():
                    pred[c] = j2d[smpl]
                h, n = pck_hits(pred, scored[i])
                s.body[0] += h
                s.body[1] += n
            if overlays is not None:
                from deforhmr_model.files.render import render_overlay
                from deforhmr_model.files.image_io import save_png
                overlays.mkdir(parents=True, exist_ok=True)
                save_png(overlays / f"{tag}_{im.set}_{im.path.stem}.png", render_overlay(image, result).overlay)
    return stats


def _fmt(s: Stats, base: Stats | None) -> str:
    pct = lambda a: f"{100 * a[0] / a[1]:5.1f}" if a[1] else "   - "  # noqa: E731
    found = f"{s.found:3d}/{s.people:<3d} {100 * s.found / max(s.people, 1):5.1f}%"
    det = float(np.median(s.det_t)) if s.det_t else float("nan")
    cpu = float(np.median(s.cpu_t)) if s.cpu_t else float("nan")
    fit = f"{np.median(s.fit_t):6.2f}" if s.fit_t else "     -"
    ratio = f"{det / float(np.median(base.det_t)):5.2f}x" if base is not None and base.det_t else "     -"
    return f"{found}  {pct(s.kp)}  {pct(s.body)}  {s.false:5d}  {det:6.3f} {cpu:6.3f} {fit}  {ratio}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1, help="timed detection calls per image (best kept)")
    ap.add_argument("--dev", type=Path, default=Path(os.environ.get("DEFORHMR_SHARED", ROOT.parent / "shared"))
                    / "photos" / "dev")
    ap.add_argument("--no-fit", action="store_true", help="detection only (no body fitting)")
    ap.add_argument("--baseline-fit", action="store_true", help="also fit bodies on the baseline's detections")
    ap.add_argument("--overlays", type=Path, default=None, help="write overlay PNGs of the default detector here")
    ap.add_argument("--sets", default="", help="comma-separated set names to run (default: all), e.g. AIC,JHMDB")
    ap.add_argument("--no-baseline", action="store_true", help="skip the baseline detector (quicker; no ratio)")
    args = ap.parse_args()
    import torch
    torch.set_num_threads(args.threads)
    from deforhmr_model.pipeline import HMRPipeline

    images = load_sets(args.dev)
    if args.sets:
        wanted = {n.strip().lower() for n in args.sets.split(",") if n.strip()}
        images = [im for im in images if im.set.lower() in wanted]
    if not images:
        sys.exit(f"no annotated sets under {args.dev}")
    runs = {"movenet (default)": "movenet", "blazepose tiled (baseline)": "blazepose"}
    if args.no_baseline:
        runs.pop("blazepose tiled (baseline)")
    results: dict[str, dict[str, Stats]] = {}
    skates: dict[str, int] = {}
    for label, name in runs.items():
        fit = not args.no_fit and (name == "movenet" or args.baseline_fit)
        pipe = HMRPipeline(model="none", detector=name)
        pipe.detect(load_image(images[0].path))                              # warm-up: interpreters
        results[label] = run_detector(pipe, images, fit, args.repeat,
                                      args.overlays if name == "movenet" else None, name)
        skates[label] = len(pipe.detect(load_image(args.dev / "skates.png")))
    base = results.get("blazepose tiled (baseline)", {})
    print(f"load average {os.getloadavg()[0]:.1f}; LiteRT/torch threads {args.threads}; "
          f"{len(images)} images; people = annotated with >= {MIN_VISIBLE} visible keypoints")
    head = f"{'detector':28s} {'set':12s} {'found':>17s}  {'kpPCK':>5s}  {'body':>5s}  {'false':>5s}  " \
           f"{'det s':>6s} {'cpu s':>6s} {'fit s':>6s}  {'vs base':>6s}"
    print(head)
    print("-" * len(head))
    for label, per_set in results.items():
        total = Stats()
        for name, _, _ in SETS:
            if name in per_set:
                total.add(per_set[name])
                print(f"{label:28s} {name:12s} {_fmt(per_set[name], base.get(name))}")
        all_base = Stats()
        for v in base.values():
            all_base.add(v)
        print(f"{label:28s} {'ALL':12s} {_fmt(total, all_base)}")
        print("-" * len(head))
    for label, n in skates.items():
        print(f"skates.png people ({label}): {n}")


if __name__ == "__main__":
    main()
